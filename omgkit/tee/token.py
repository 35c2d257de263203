"""Attestation tokens: EAT-style claims in a COSE_Sign1, with an x5chain.

The TEE signs with the device attestation key; the chain is [device
certificate, manufacturer root]. Claims (CBOR map, integer labels):

| label | claim | value |
| --- | --- | --- |
| 10 | eat_nonce (RFC 9711) | the vendor's nonce, 16-64 bytes |
| 256 | ueid (RFC 9711) | 0x01 (RAND type) then the 16-byte device id |
| 6 | iat | TEE clock, seconds |
| 265 | eat_profile | "tag:omgkit.dev,2026:omg-eat-v1" |
| -75000 | TA measurement | 32 bytes |
| -75001 | TA key-transport public keys | {"X25519": 32 bytes, "MLKEM768-X25519": [1184 bytes, 32 bytes]} |
| -75002 | TEE version | text |
| -75003 | TA UUID | 16 bytes |
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

import cbor2
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hpke import MLKEM768X25519PublicKey

from omg_ta import cose

if TYPE_CHECKING:
    from cryptography import x509
from omg_ta.errors import TokenInvalidError

NONCE, UEID, IAT, PROFILE = 10, 256, 6, 265
MEASUREMENT, TA_KEYS, TEE_VERSION, TA_UUID = -75000, -75001, -75002, -75003
EAT_PROFILE = "tag:omgkit.dev,2026:omg-eat-v1"
UEID_RAND = 0x01


@dataclasses.dataclass(frozen=True)
class Claims:
    nonce: bytes
    device_id: bytes
    iat: int
    measurement: bytes
    ta_keys: dict
    tee_version: str
    ta_uuid: bytes

    def recipient(self, kem: str):
        """The TA's public key for ``kem``, as the HPKE suite wants it."""
        k = self.ta_keys.get(kem)
        try:
            if kem == "X25519":
                return x25519.X25519PublicKey.from_public_bytes(k)
            if kem == "MLKEM768-X25519":
                return MLKEM768X25519PublicKey(
                    mlkem.MLKEM768PublicKey.from_public_bytes(k[0]),
                    x25519.X25519PublicKey.from_public_bytes(k[1]),
                )
        except Exception:
            raise TokenInvalidError() from None
        raise TokenInvalidError(f"token has no {kem} key")


def make_token(key: Ed25519PrivateKey, chain: list[bytes], claims: Claims) -> bytes:
    payload = cbor2.dumps({
        NONCE: claims.nonce, UEID: bytes([UEID_RAND]) + claims.device_id, IAT: claims.iat,
        PROFILE: EAT_PROFILE, MEASUREMENT: claims.measurement, TA_KEYS: claims.ta_keys,
        TEE_VERSION: claims.tee_version, TA_UUID: claims.ta_uuid,
    }, canonical=True)  # fmt: skip
    return cose.sign1(payload, key, unprotected={cose.H_X5CHAIN: list(chain)})


def verify_token(
    token: bytes, root: x509.Certificate, *, now: _dt.datetime | None = None
) -> Claims:
    """Verify the chain to ``root`` and the signature; return the claims.

    Nonce freshness and measurement approval are the vendor's checks.
    """
    from cryptography import x509  # here: the TEE makes tokens and never parses X.509

    err = TokenInvalidError
    msg = cose.parse_sign1(token, err)
    chain = msg.unprotected.get(cose.H_X5CHAIN)
    if not (
        cose.is_array(chain) and 1 <= len(chain) <= 4 and all(isinstance(c, bytes) for c in chain)
    ):
        raise err()
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
        leaf.verify_directly_issued_by(root)
    except Exception:
        raise err() from None
    now = now or _dt.datetime.now(_dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise err("device certificate is not valid now")
    pub = leaf.public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise err()
    d = cose.loads(cose.verify(msg, pub, err), err)
    types = {NONCE: bytes, UEID: bytes, IAT: int, PROFILE: str, MEASUREMENT: bytes, TA_KEYS: Mapping,
             TEE_VERSION: str, TA_UUID: bytes}  # fmt: skip
    if not cose.is_map(d) or any(not isinstance(d.get(k), t) for k, t in types.items()):
        raise err()
    if (
        d[PROFILE] != EAT_PROFILE
        or len(d[MEASUREMENT]) != 32
        or len(d[UEID]) != 17
        or d[UEID][0] != UEID_RAND
    ):
        raise err()
    device_id = d[UEID][1:]
    cn = leaf.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    if not cn or cn[0].value != device_id.hex():
        raise err("token's device id differs from its certificate's")
    return Claims(
        d[NONCE], device_id, d[IAT], d[MEASUREMENT], dict(d[TA_KEYS]), d[TEE_VERSION], d[TA_UUID]
    )
