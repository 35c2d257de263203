#!/usr/bin/env python3
"""Regenerate data/vectors/: test vectors for the package, license and token formats.

Keys come from fixed seeds, so the package (deterministic: Ed25519 and a
fixed nonce prefix) is reproduced byte for byte by the test. The license
(HPKE draws an ephemeral key) and the token (its certificates carry random
serials) are stored as made; the tests parse and verify them with the keys
given here. docs/formats.md describes the fields.
Run: .venv/bin/python tools/make_vectors.py
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from omg_ta.license import Policy, issue
from omg_ta.package import seal_package
from omg_ta.secret import Secret
from omgkit.tee.token import Claims, make_token

OUT = Path(__file__).resolve().parents[1] / "data" / "vectors"


def _seed(label: str) -> bytes:
    return (label.encode() * 32)[:32]


def _raw(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def main() -> None:
    vendor = Ed25519PrivateKey.from_private_bytes(_seed("vendor"))
    model = bytes(range(256)) * 3 + b"TFL3 not a real model"
    key = _seed("model-key")
    prefix = bytes.fromhex("0102030405060a")
    pkg = seal_package(model, key, vendor, model_id="kws-vector", model_version=3, runtime="litert",
                       input_spec={"frontend": {"kind": "mfcc"}}, labels=["a", "b"], seg_size=256,
                       nonce_prefix=prefix)  # fmt: skip
    (OUT / "package.json").write_text(json.dumps({
        "vendor_seed": _seed("vendor").hex(), "model_key": key.hex(), "plaintext": model.hex(),
        "model_id": "kws-vector", "model_version": 3, "runtime": "litert", "input_spec": {"frontend": {"kind": "mfcc"}},
        "labels": ["a", "b"], "seg_size": 256, "nonce_prefix": prefix.hex(), "package": pkg.hex(),
    }, indent=1) + "\n")  # fmt: skip

    ta_kt = x25519.X25519PrivateKey.from_private_bytes(_seed("ta-transport"))
    device_id, measurement = bytes(range(16)), bytes(range(32))
    lic = issue(vendor, license_id=bytes(range(100, 116)), model_id="kws-vector", model_version=3,
                device_id=device_id, measurement=measurement, issued_at=1_790_000_000,
                policy=Policy(not_after=1_800_000_000, min_version=2, budget=None, scores=False),
                kem="X25519", recipient=ta_kt.public_key(), model_key=Secret(key))  # fmt: skip
    (OUT / "license.json").write_text(json.dumps({
        "vendor_seed": _seed("vendor").hex(), "ta_x25519_seed": _seed("ta-transport").hex(),
        "device_id": device_id.hex(), "measurement": measurement.hex(), "model_key": key.hex(),
        "license": lic.hex(),
    }, indent=1) + "\n")  # fmt: skip

    root_key = Ed25519PrivateKey.from_private_bytes(_seed("manufacturer"))
    dev_key = Ed25519PrivateKey.from_private_bytes(_seed("device"))
    start = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
    end = _dt.datetime(2046, 1, 1, tzinfo=_dt.UTC)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vector root")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(1).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(root_key, None))  # fmt: skip
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id.hex())]))
            .issuer_name(root_name).public_key(dev_key.public_key()).serial_number(2)
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True).sign(root_key, None))  # fmt: skip
    der = serialization.Encoding.DER
    claims = Claims(b"N" * 32, device_id, 1_790_000_000, measurement, {"X25519": _raw(ta_kt.public_key())},
                    "omgkit-emulated-tee/1", bytes(16))  # fmt: skip
    tok = make_token(dev_key, [leaf.public_bytes(der), root.public_bytes(der)], claims)
    (OUT / "token.json").write_text(json.dumps({
        "root_cert": root.public_bytes(der).hex(), "device_public": _raw(dev_key.public_key()).hex(),
        "nonce": claims.nonce.hex(), "device_id": device_id.hex(), "measurement": measurement.hex(),
        "iat": claims.iat, "token": tok.hex(),
    }, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
