"""The emulated manufacturer: a root CA that certifies device attestation keys."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ConfigError
from ..util import atomic_write_bytes, write_secret

_ROOT_KEY, _ROOT_CERT = "root_key.pem", "root_cert.der"


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    write_secret(path, pem)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 private key")
    return key


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Manufacturer:
    """Root CA of the emulated device maker."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / _ROOT_CERT).is_file():
            raise ConfigError(
                f"{self.path} is not a manufacturer directory; create it with Manufacturer.create"
            )
        # imported here, not at the top: the TEE daemon never parses X.509
        from cryptography import x509

        self.root_cert = x509.load_der_x509_certificate((self.path / _ROOT_CERT).read_bytes())

    @classmethod
    def create(
        cls, path: str | os.PathLike, name: str = "omgkit emulated manufacturer"
    ) -> Manufacturer:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root")])  # fmt: skip
        now = _dt.datetime.now(_dt.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, None)
        )  # fmt: skip
        write_private_key(p / _ROOT_KEY, key)
        atomic_write_bytes(p / _ROOT_CERT, cert.public_bytes(serialization.Encoding.DER))
        return cls(p)

    @property
    def root_der(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.DER)

    def certify(self, device_key: Ed25519PublicKey, device_id: bytes) -> bytes:
        """A device certificate (DER) binding the attestation key to the device id."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        key = read_private_key(self.path / _ROOT_KEY)
        now = _dt.datetime.now(_dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "omgkit emulated TEE"),
                                     x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id.hex())]))
            .issuer_name(self.root_cert.subject).public_key(device_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, None)
        )  # fmt: skip
        return cert.public_bytes(serialization.Encoding.DER)
