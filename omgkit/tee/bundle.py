"""TA bundles: canonical form, measurement and signature.

A bundle is a directory of files (the TA's Python modules and the vendor's
public key). Its canonical encoding is the files sorted by relative path,
each as ``u32 len(path) || path || u64 len(data) || data``, after the
context string ``OMG-TA-BUNDLE-v1``; the measurement M is the SHA-256 of
that. ``bundle.sig`` (not part of the bundle) is an Ed25519 signature by the
TA signing key over ``OMG-TA-SIG-v1 || M``: the TEE loads only bundles
whose signature verifies with a signing key it trusts, as OP-TEE does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from omg_ta.commands import BUNDLE_SIG_FILE, VENDOR_KEY_FILE
from omg_ta.errors import TALoadError

from ..util import atomic_write_bytes

BUNDLE_CONTEXT = b"OMG-TA-BUNDLE-v1"
SIG_CONTEXT = b"OMG-TA-SIG-v1"
TA_SOURCE = Path(__file__).resolve().parents[2] / "ta" / "omg_ta"
MAX_BUNDLE = 16 << 20


def read_bundle(path: str | os.PathLike) -> dict[str, bytes]:
    """All files of a bundle directory (without the signature), by relative path."""
    root = Path(path)
    files: dict[str, bytes] = {}
    total = 0
    for f in sorted(root.rglob("*")):
        if f.is_dir() or f.name == BUNDLE_SIG_FILE or "__pycache__" in f.parts:
            continue
        rel = f.relative_to(root).as_posix()
        files[rel] = f.read_bytes()
        total += len(files[rel])
        if total > MAX_BUNDLE:
            raise TALoadError("TA bundle is too large")
    return files


def canonical(files: dict[str, bytes]) -> bytes:
    out = [BUNDLE_CONTEXT]
    for rel in sorted(files):
        p = rel.encode()
        out += [struct.pack(">I", len(p)), p, struct.pack(">Q", len(files[rel])), files[rel]]
    return b"".join(out)


def measure(files: dict[str, bytes]) -> bytes:
    return hashlib.sha256(canonical(files)).digest()


def sign_bundle(path: str | os.PathLike, key: Ed25519PrivateKey) -> bytes:
    """Sign a bundle directory in place; returns its measurement."""
    m = measure(read_bundle(path))
    atomic_write_bytes(Path(path) / BUNDLE_SIG_FILE, key.sign(SIG_CONTEXT + m))
    return m


def verify_bundle(
    files: dict[str, bytes], signature: bytes, trusted: list[Ed25519PublicKey]
) -> bytes:
    m = measure(files)
    for k in trusted:
        try:
            k.verify(signature, SIG_CONTEXT + m)
            return m
        except InvalidSignature:
            continue
    raise TALoadError()


def build_bundle(out: str | os.PathLike, vendor_public_raw: bytes, signer: Ed25519PrivateKey,
                 source: Path = TA_SOURCE) -> bytes:  # fmt: skip
    """Copy the TA sources and the vendor key into ``out``, sign; return M."""
    o = Path(out)
    if o.exists():
        shutil.rmtree(o)
    o.mkdir(parents=True)
    for f in sorted(source.glob("*.py")):
        shutil.copy2(f, o / f.name)
    atomic_write_bytes(o / VENDOR_KEY_FILE, vendor_public_raw)
    return sign_bundle(o, signer)
