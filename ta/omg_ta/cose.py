"""COSE_Sign1 (RFC 9052) with EdDSA/Ed25519, the envelope of tokens and licenses.

Only what OMG needs: one signer, algorithm EdDSA (-8) in the protected
header, optional key id (4) and x5chain (33, a list of DER certificates) in
the unprotected header, no external AAD. Parsing is strict and turns any
malformed input into the caller's error class, never another exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .cbor_limits import check_cbor
from .errors import IntegrityError

ALG_EDDSA = -8
H_ALG, H_KID, H_X5CHAIN = 1, 4, 33
TAG_SIGN1 = 18
MAX_MESSAGE = 1 << 20
MAX_ITEMS = 1 << 16
"""Items of one message (a license, a token, a package header): far above any real one."""


@dataclasses.dataclass(frozen=True)
class Sign1:
    protected_raw: bytes
    protected: dict
    unprotected: dict
    payload: bytes
    signature: bytes

    @property
    def kid(self) -> bytes | None:
        kid = self.protected.get(H_KID, self.unprotected.get(H_KID))
        return kid if isinstance(kid, bytes) else None

    def to_be_signed(self) -> bytes:
        return sig_structure(self.protected_raw, self.payload)


def is_map(x: Any) -> bool:
    """cbor2 decodes maps inside tags as frozendict: accept any mapping."""
    return isinstance(x, Mapping)


def is_array(x: Any) -> bool:
    """cbor2 decodes arrays inside tags as tuples: accept both."""
    return isinstance(x, (list, tuple))


def sig_structure(protected_raw: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected_raw, b"", payload])


def sign1(payload: bytes, key: Ed25519PrivateKey, *, kid: bytes | None = None,
          unprotected: dict | None = None) -> bytes:  # fmt: skip
    """A tagged COSE_Sign1 over ``payload``."""
    prot: dict[int, Any] = {H_ALG: ALG_EDDSA}
    if kid is not None:
        prot[H_KID] = kid
    prot_raw = cbor2.dumps(prot)
    sig = key.sign(sig_structure(prot_raw, payload))
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [prot_raw, unprotected or {}, payload, sig]))


def loads(data: bytes, error: type[IntegrityError] = IntegrityError) -> Any:
    """cbor2.loads that raises only ``error``."""
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_MESSAGE:
        raise error()
    try:
        check_cbor(data, MAX_ITEMS)  # bounds and tags before cbor2 builds anything
        return cbor2.loads(bytes(data))
    except Exception:  # cbor2 raises many types on hostile input
        raise error() from None


def parse_sign1(data: bytes, error: type[IntegrityError] = IntegrityError) -> Sign1:
    """Parse a COSE_Sign1 (tagged or not); check its shape and algorithm only."""
    obj = loads(data, error)
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != TAG_SIGN1:
            raise error()
        obj = obj.value
    if not (is_array(obj) and len(obj) == 4):
        raise error()
    prot_raw, unprot, payload, sig = obj
    if not (isinstance(prot_raw, bytes) and is_map(unprot) and isinstance(payload, bytes)
            and isinstance(sig, bytes) and len(sig) == 64):  # fmt: skip
        raise error()
    prot = loads(prot_raw, error) if prot_raw else {}
    if not is_map(prot) or prot.get(H_ALG) != ALG_EDDSA:
        raise error()
    return Sign1(prot_raw, dict(prot), dict(unprot), payload, sig)


def verify(
    msg: Sign1, key: Ed25519PublicKey, error: type[IntegrityError] = IntegrityError
) -> bytes:
    """Check the signature; return the payload."""
    try:
        key.verify(msg.signature, msg.to_be_signed())
    except InvalidSignature:
        raise error() from None
    return msg.payload
