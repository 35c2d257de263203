"""Licenses: the vendor's signed grant of one model to one TA on one device.

A license is a COSE_Sign1 (EdDSA, kid = vendor key id) whose payload is a
CBOR map (docs/formats.md):

    v, license_id (16 bytes), model_id, model_version, device_id,
    measurement (32 bytes), issued_at, policy {not_after, min_version,
    budget, scores}, kem ("X25519" or "MLKEM768-X25519"), wrapped_key

``wrapped_key`` is the 32-byte model key, HPKE-encrypted (RFC 9180,
single shot, HKDF-SHA256, AES-256-GCM) to the TA's key-transport public key
from the attestation token, with ``info`` binding it to this license's id,
model, device and measurement.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from . import cose
from .errors import LicenseInvalidError
from .secret import Secret

FORMAT_VERSION = 1
KEMS = {"X25519": KEM.X25519, "MLKEM768-X25519": KEM.MLKEM768_X25519}
INFO_CONTEXT = b"OMG-LICENSE-KEY-v1"


@dataclasses.dataclass(frozen=True)
class Policy:
    not_after: int
    """Expiry, seconds since the epoch, checked against the TEE's clock."""
    min_version: int = 0
    """Lowest model version this license accepts."""
    budget: int | None = None
    """Inferences allowed over the license's life (None: unlimited)."""
    scores: bool = False
    """Whether scores may leave the TA (otherwise labels only)."""

    def to_cbor(self) -> dict:
        return {"not_after": self.not_after, "min_version": self.min_version, "budget": self.budget,
                "scores": self.scores}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class License:
    license_id: bytes
    model_id: str
    model_version: int
    device_id: bytes
    measurement: bytes
    issued_at: int
    policy: Policy
    kem: str
    wrapped_key: bytes
    vendor_kid: bytes
    raw: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


def suite(kem: str) -> Suite:
    return Suite(KEMS[kem], KDF.HKDF_SHA256, AEAD.AES_256_GCM)


def key_info(
    license_id: bytes, model_id: str, model_version: int, device_id: bytes, measurement: bytes
) -> bytes:
    return INFO_CONTEXT + cbor2.dumps([license_id, model_id, model_version, device_id, measurement])


def kid_of(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).digest()[:8]


def issue(signer: Ed25519PrivateKey, *, license_id: bytes, model_id: str, model_version: int, device_id: bytes,
          measurement: bytes, issued_at: int, policy: Policy, kem: str, recipient, model_key: Secret) -> bytes:  # fmt: skip
    """Wrap ``model_key`` to ``recipient`` (the TA's public key) and sign the license."""
    info = key_info(license_id, model_id, model_version, device_id, measurement)
    wrapped = suite(kem).encrypt(model_key.reveal(), recipient, info=info)
    payload = cbor2.dumps({
        "v": FORMAT_VERSION, "license_id": license_id, "model_id": model_id, "model_version": model_version,
        "device_id": device_id, "measurement": measurement, "issued_at": issued_at,
        "policy": policy.to_cbor(), "kem": kem, "wrapped_key": wrapped,
    }, canonical=True)  # fmt: skip
    return cose.sign1(payload, signer, kid=kid_of(signer.public_key()))


def parse(data: bytes, vendor: Ed25519PublicKey) -> License:
    """Verify the vendor's signature and the payload's shape."""
    err = LicenseInvalidError
    msg = cose.parse_sign1(data, err)
    if msg.kid != kid_of(vendor):
        raise err()
    return parse_payload(cose.verify(msg, vendor, err), vendor_kid=msg.kid or b"", raw=bytes(data))


def parse_payload(payload: bytes, *, vendor_kid: bytes = b"", raw: bytes = b"") -> License:
    """The payload's shape only (no signature): the map inside the COSE_Sign1.

    ``vendor_kid`` and ``raw`` (the whole signed license, whose digest the
    sealed key is bound to) are the caller's, as :func:`parse` gives them.
    The C core's ``omg_license_parse_payload`` checks the same shape.
    """
    err = LicenseInvalidError
    d = cose.loads(payload, err)
    types = {"v": int, "license_id": bytes, "model_id": str, "model_version": int, "device_id": bytes,
             "measurement": bytes, "issued_at": int, "policy": Mapping, "kem": str, "wrapped_key": bytes}  # fmt: skip
    if not cose.is_map(d) or any(not isinstance(d.get(k), t) for k, t in types.items()):
        raise err()
    p = d["policy"]
    budget = p.get("budget")
    if (d["v"] != FORMAT_VERSION or d["kem"] not in KEMS or len(d["measurement"]) != 32
            or len(d["license_id"]) != 16 or not isinstance(p.get("not_after"), int)
            or not isinstance(p.get("min_version"), int) or not isinstance(p.get("scores"), bool)
            or not (budget is None or (isinstance(budget, int) and budget >= 0))):  # fmt: skip
        raise err()
    pol = Policy(p["not_after"], p["min_version"], budget, p["scores"])
    return License(d["license_id"], d["model_id"], d["model_version"], d["device_id"], d["measurement"],
                   d["issued_at"], pol, d["kem"], d["wrapped_key"], vendor_kid, raw)  # fmt: skip


def unwrap(lic: License, private_key) -> Secret:
    """The model key, with the TA's key-transport private key."""
    info = key_info(lic.license_id, lic.model_id, lic.model_version, lic.device_id, lic.measurement)
    try:
        key = suite(lic.kem).decrypt(lic.wrapped_key, private_key, info=info)
    except Exception:  # wrong key, tampered ciphertext, wrong KEM: all one answer
        raise LicenseInvalidError() from None
    if len(key) != 32:
        raise LicenseInvalidError()
    return Secret(key)
