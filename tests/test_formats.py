"""Formats: test vectors, an independent COSE implementation, and fuzzed parsers."""

from __future__ import annotations

import datetime as _dt
import json

import cbor2
import pytest
from conftest import REPO
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omg_ta import cose
from omg_ta import license as lic
from omg_ta.errors import LicenseInvalidError, OmgError, PackageIntegrityError, TokenInvalidError
from omg_ta.package import open_package, parse_header, seal_package
from omgkit.tee.token import verify_token

VEC = REPO / "data" / "vectors"


def _load(name: str) -> dict:
    return json.loads((VEC / f"{name}.json").read_text())


def test_package_vector_is_reproduced_and_opens():
    v = _load("package")
    vendor = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["vendor_seed"]))
    pkg = seal_package(bytes.fromhex(v["plaintext"]), bytes.fromhex(v["model_key"]), vendor,
                       model_id=v["model_id"], model_version=v["model_version"], runtime=v["runtime"],
                       input_spec=v["input_spec"], labels=v["labels"], seg_size=v["seg_size"],
                       nonce_prefix=bytes.fromhex(v["nonce_prefix"]))  # fmt: skip
    assert pkg.hex() == v["package"]
    h, pt = open_package(pkg, bytes.fromhex(v["model_key"]), vendor.public_key())
    assert pt.hex() == v["plaintext"] and h.num_segments == 4 and h.model_version == 3


def test_package_segments_cannot_be_dropped_or_reordered():
    v = _load("package")
    vendor = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["vendor_seed"]))
    key = bytes.fromhex(v["model_key"])
    pkg = bytes.fromhex(v["package"])
    h, _, off = parse_header(pkg)
    seg = h.seg_size + 16
    body = pkg[off:]
    swapped = pkg[:off] + body[seg : 2 * seg] + body[:seg] + body[2 * seg :]
    from omg_ta.package import iter_plaintext

    with pytest.raises(PackageIntegrityError):
        list(iter_plaintext(swapped, h, key))  # even with a valid signature, GCM refuses the order
    with pytest.raises(PackageIntegrityError):
        open_package(pkg[: off + 3 * seg], key, vendor.public_key())  # last segment dropped
    with pytest.raises(PackageIntegrityError):
        open_package(pkg, bytes(32), vendor.public_key())  # wrong key


def test_license_vector_verifies_and_unwraps():
    v = _load("license")
    vendor = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["vendor_seed"])).public_key()
    parsed = lic.parse(bytes.fromhex(v["license"]), vendor)
    assert parsed.device_id.hex() == v["device_id"] and parsed.policy.min_version == 2
    ta = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(v["ta_x25519_seed"]))
    assert lic.unwrap(parsed, ta).reveal().hex() == v["model_key"]
    with pytest.raises(LicenseInvalidError):
        lic.parse(bytes.fromhex(v["license"]), Ed25519PrivateKey.generate().public_key())


def test_token_vector_verifies():
    v = _load("token")
    root = x509.load_der_x509_certificate(bytes.fromhex(v["root_cert"]))
    c = verify_token(bytes.fromhex(v["token"]), root, now=_dt.datetime(2030, 1, 1, tzinfo=_dt.UTC))
    assert c.nonce.hex() == v["nonce"] and c.device_id.hex() == v["device_id"] and c.iat == v["iat"]
    with pytest.raises(TokenInvalidError, match="not valid now"):
        verify_token(bytes.fromhex(v["token"]), root, now=_dt.datetime(2050, 1, 1, tzinfo=_dt.UTC))


def _thaw(x):
    """cbor2 6's frozendict/tuple back to dict/list, as pycose 1.1.0 expects."""
    from collections.abc import Mapping

    if isinstance(x, Mapping):
        return {k: _thaw(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return [_thaw(v) for v in x]
    return x


@pytest.mark.parametrize("name,field", [("token", "token"), ("license", "license")])
def test_independent_cose_implementation_agrees(name, field):
    """pycose (an independent COSE library) verifies our COSE_Sign1 messages."""
    from pycose.keys import OKPKey
    from pycose.keys.curves import Ed25519
    from pycose.messages import Sign1Message

    v = _load(name)
    if name == "token":
        pub = bytes.fromhex(v["device_public"])
    else:
        from omgkit.tee.pki import raw_public

        pub = raw_public(
            Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["vendor_seed"])).public_key()
        )
    # pycose 1.1.0's decode() expects cbor2 5's lists; cbor2 6 returns arrays inside
    # tags as tuples, so unwrap the tag here and hand pycose plain lists and dicts.
    outer = cbor2.loads(bytes.fromhex(v[field]))
    assert outer.tag == 18
    msg = Sign1Message.from_cose_obj(_thaw(outer.value), True)
    msg.key = OKPKey(crv=Ed25519, x=pub)
    assert msg.verify_signature()
    # and our parser agrees with pycose on what was signed
    ours = cose.parse_sign1(bytes.fromhex(v[field]))
    assert ours.payload == msg.payload


def test_our_verifier_accepts_pycose_signatures():
    from pycose.algorithms import EdDSA
    from pycose.headers import Algorithm
    from pycose.keys import OKPKey
    from pycose.keys.curves import Ed25519
    from pycose.messages import Sign1Message

    key = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    from omgkit.tee.pki import raw_public

    d = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    msg = Sign1Message(phdr={Algorithm: EdDSA}, payload=b"made by pycose")
    msg.key = OKPKey(crv=Ed25519, d=d, x=raw_public(key.public_key()))
    parsed = cose.parse_sign1(msg.encode())
    assert cose.verify(parsed, key.public_key()) == b"made by pycose"


# --- fuzzing: only OmgError may escape a parser --------------------------------

_VALID = {}


def _valid(name: str) -> bytes:
    if name not in _VALID:
        _VALID[name] = bytes.fromhex(_load(name)[name])
    return _VALID[name]


def _mutations(name: str):
    base = st.sampled_from([_valid(name)])
    flips = st.tuples(
        base, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)
    ).map(
        lambda t: bytes(
            (lambda b: [b.__setitem__(i % len(b), x) for i, x in t[1]] and b or b)(bytearray(t[0]))
        )
    )
    cuts = st.tuples(base, st.integers(0, 5000)).map(lambda t: t[0][: t[1]])
    cbor = st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=64) | st.text(max_size=16),
        lambda c: (
            st.lists(c, max_size=5)
            | st.dictionaries(st.integers() | st.text(max_size=8), c, max_size=5)
        ),
        max_leaves=20,
    ).map(lambda o: cbor2.dumps(o))
    tagged = cbor.map(lambda b: cbor2.dumps(cbor2.CBORTag(18, [b, {}, b, b"\0" * 64])))
    return st.one_of(st.binary(max_size=2048), flips, cuts, cbor, tagged)


_VENDOR = Ed25519PrivateKey.from_private_bytes((b"vendor" * 32)[:32]).public_key()


def _parse_package(b: bytes) -> None:
    open_package(b, b"k" * 32, _VENDOR)


def _parse_license(b: bytes) -> None:
    lic.parse(b, _VENDOR)


def _parse_token(b: bytes) -> None:
    root = x509.load_der_x509_certificate(bytes.fromhex(_load("token")["root_cert"]))
    verify_token(b, root)


@pytest.mark.slow
@pytest.mark.parametrize("name,parse", [("package", _parse_package), ("license", _parse_license),
                                        ("token", _parse_token)])  # fmt: skip
def test_parsers_raise_only_omg_errors(name, parse):
    count = 0

    @settings(max_examples=10_000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(_mutations(name))
    def run(data: bytes) -> None:
        nonlocal count
        count += 1
        try:
            parse(data)
        except OmgError:
            pass

    run()
    assert count >= 10_000
