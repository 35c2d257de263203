"""The sealed model package: a vendor-signed header and AES-256-GCM segments.

Layout (all integers big-endian; docs/formats.md has the full description
and ``data/vectors/`` a test vector)::

    magic      8  b"OMGPKG\\x00\\x01"
    hlen       4  length of the header
    header  hlen  CBOR map (model id, version, runtime, input spec, labels,
                  plaintext SHA-256 and length, segment size, nonce prefix)
    slen       2  length of the signature (64)
    signature 64  Ed25519 by the vendor over
                  "OMG-PKG-SIG-v1" || SHA-256(magic||hlen||header) || SHA-256(segments)
    segments      AES-256-GCM of each plaintext segment:
                  nonce = prefix(7) || counter(4) || last(1), AAD = SHA-256(magic||hlen||header)

The nonce is STREAM-style (Hoang et al.): a per-package random prefix, the
segment number and a flag on the last segment, so segments cannot be
reordered, dropped or truncated without failing authentication, and a TA can
decrypt with one segment of working memory beyond the model itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from collections.abc import Iterator, Mapping

import cbor2
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .cose import is_map, loads
from .errors import PackageIntegrityError

MAGIC = b"OMGPKG\x00\x01"
SIG_CONTEXT = b"OMG-PKG-SIG-v1"
FORMAT_VERSION = 1
DEFAULT_SEGMENT = 64 * 1024
MAX_HEADER = 64 * 1024
TAG = 16

_REQUIRED = {
    "v": int, "model_id": str, "model_version": int, "runtime": str, "input": Mapping,
    "labels": (list, tuple), "pt_sha256": bytes, "pt_len": int, "seg_size": int, "nonce_prefix": bytes,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PackageHeader:
    model_id: str
    model_version: int
    runtime: str
    input: dict
    labels: list
    pt_sha256: bytes
    pt_len: int
    seg_size: int
    nonce_prefix: bytes
    raw: bytes  # the exact CBOR bytes, as signed

    @property
    def num_segments(self) -> int:
        return max(1, -(-self.pt_len // self.seg_size))

    @property
    def ciphertext_len(self) -> int:
        return self.pt_len + TAG * self.num_segments

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("raw")
        return d


def _nonce(prefix: bytes, i: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", i, 1 if last else 0)


def _prefix_bytes(header_raw: bytes) -> bytes:
    return MAGIC + struct.pack(">I", len(header_raw)) + header_raw


def seal_package(model: bytes, key: bytes, signer: Ed25519PrivateKey, *, model_id: str, model_version: int,
                 runtime: str, input_spec: dict, labels: list[str], seg_size: int = DEFAULT_SEGMENT,
                 nonce_prefix: bytes | None = None) -> bytes:  # fmt: skip
    """Encrypt and sign a model. ``nonce_prefix`` is random unless given (test vectors)."""
    if len(key) != 32:
        raise ValueError("the model key is 32 bytes (AES-256)")
    if seg_size < 1:
        raise ValueError("segment size must be positive")
    prefix = nonce_prefix if nonce_prefix is not None else os.urandom(7)
    header = {
        "v": FORMAT_VERSION, "model_id": model_id, "model_version": int(model_version), "runtime": runtime,
        "input": input_spec, "labels": list(labels), "pt_sha256": hashlib.sha256(model).digest(),
        "pt_len": len(model), "seg_size": seg_size, "nonce_prefix": prefix,
    }  # fmt: skip
    raw = cbor2.dumps(header, canonical=True)
    head = _prefix_bytes(raw)
    aad = hashlib.sha256(head).digest()
    aes = AESGCM(key)
    n = max(1, -(-len(model) // seg_size))
    segs = [
        aes.encrypt(_nonce(prefix, i, i == n - 1), model[i * seg_size : (i + 1) * seg_size], aad)
        for i in range(n)
    ]
    body = b"".join(segs)
    sig = signer.sign(SIG_CONTEXT + aad + hashlib.sha256(body).digest())
    return head + struct.pack(">H", len(sig)) + sig + body


def parse_header(blob: bytes) -> tuple[PackageHeader, bytes, int]:
    """Header, signature and the offset of the first segment. Checks shape only."""
    err = PackageIntegrityError
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise err()
    blob = memoryview(blob)
    if len(blob) < 14 or bytes(blob[:8]) != MAGIC:
        raise err("not an OMG model package")
    (hlen,) = struct.unpack(">I", blob[8:12])
    if hlen > MAX_HEADER or 12 + hlen + 2 > len(blob):
        raise err()
    raw = bytes(blob[12 : 12 + hlen])
    (slen,) = struct.unpack(">H", blob[12 + hlen : 14 + hlen])
    if slen != 64 or 14 + hlen + slen > len(blob):
        raise err()
    sig = bytes(blob[14 + hlen : 14 + hlen + slen])
    d = loads(raw, err)
    if not is_map(d) or any(not isinstance(d.get(k), t) for k, t in _REQUIRED.items()):
        raise err()
    if (
        d["v"] != FORMAT_VERSION
        or len(d["nonce_prefix"]) != 7
        or d["seg_size"] < 1
        or d["pt_len"] < 0
    ):
        raise err()
    if len(d["pt_sha256"]) != 32 or not all(isinstance(x, str) for x in d["labels"]):
        raise err()
    fields = {k: d[k] for k in _REQUIRED if k != "v"}
    fields["input"], fields["labels"] = dict(d["input"]), list(d["labels"])
    h = PackageHeader(**fields, raw=raw)
    return h, sig, 14 + hlen + slen


def verify_package(blob: bytes, vendor: Ed25519PublicKey) -> PackageHeader:
    """Check the vendor's signature over header and ciphertext (no key needed)."""
    h, sig, off = parse_header(blob)
    body = memoryview(blob)[off:]
    if len(body) != h.ciphertext_len:
        raise PackageIntegrityError()
    aad = hashlib.sha256(_prefix_bytes(h.raw)).digest()
    try:
        vendor.verify(sig, SIG_CONTEXT + aad + hashlib.sha256(body).digest())
    except InvalidSignature:
        raise PackageIntegrityError() from None
    return h


def iter_plaintext(blob: bytes, h: PackageHeader, key: bytes) -> Iterator[bytes]:
    """Decrypt segment by segment (bounded working memory)."""
    _, _, off = parse_header(blob)
    body = memoryview(blob)[off:]
    aad = hashlib.sha256(_prefix_bytes(h.raw)).digest()
    aes = AESGCM(key)
    n = h.num_segments
    pos = 0
    for i in range(n):
        pt_len = h.seg_size if i < n - 1 else h.pt_len - h.seg_size * (n - 1)
        seg = body[pos : pos + pt_len + TAG]
        pos += pt_len + TAG
        try:
            yield aes.decrypt(_nonce(h.nonce_prefix, i, i == n - 1), bytes(seg), aad)
        except InvalidTag:
            raise PackageIntegrityError() from None


def open_package(blob: bytes, key: bytes, vendor: Ed25519PublicKey) -> tuple[PackageHeader, bytes]:
    """Verify, decrypt and check the plaintext hash; return header and model bytes."""
    h = verify_package(blob, vendor)
    out = bytearray()
    digest = hashlib.sha256()
    for chunk in iter_plaintext(blob, h, key):
        digest.update(chunk)
        out += chunk
    if digest.digest() != h.pt_sha256 or len(out) != h.pt_len:
        raise PackageIntegrityError()
    return h, bytes(out)
