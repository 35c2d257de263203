"""The workbench's own state: ``$OMG_HOME`` (default ``~/.omgkit``).

- ``id_ed25519`` / ``.pub``: the workbench's SSH client key;
- ``known_hosts``: pinned board host keys (OpenSSH format);
- ``ta_signing_key.pem``: the TA signing key emulated boards trust;
- ``ta_signing_key_optee.pem``: the RSA key OP-TEE boards' firmware trusts
  (``TA_SIGN_KEY=`` when building a TA; never OP-TEE's default key);
- ``vendor/``: a default model vendor;
- ``boards/<name>/``: boards (emulated, and OP-TEE in QEMU).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..util import atomic_write_bytes, write_secret


def home() -> Path:
    h = Path(os.environ.get("OMG_HOME") or Path.home() / ".omgkit")
    h.mkdir(parents=True, exist_ok=True)
    return h


def known_hosts() -> Path:
    p = home() / "known_hosts"
    p.touch(exist_ok=True)
    return p


def client_key() -> Path:
    """The workbench's SSH key (OpenSSH format), made on first use."""
    p = home() / "id_ed25519"
    if not p.is_file():
        k = Ed25519PrivateKey.generate()
        pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                              serialization.NoEncryption())  # fmt: skip
        write_secret(p, pem)
        pub = k.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        atomic_write_bytes(p.with_suffix(".pub"), pub + b" omgkit-workbench\n")
    return p


def ta_signing_key() -> Ed25519PrivateKey:
    from ..tee.pki import read_private_key, write_private_key

    p = home() / "ta_signing_key.pem"
    if not p.is_file():
        write_private_key(p, Ed25519PrivateKey.generate())
    return read_private_key(p)


def ta_signing_key_optee() -> Path:
    """The workbench's RSA-3072 TA signing key for OP-TEE (PEM, 0600), made on first use.

    A path, as OP-TEE's make takes it: ``TA_SIGN_KEY=`` when building a
    TA; the OP-TEE boards' firmware is built with its public half
    (``TA_PUBLIC_KEY=``) and loads no TA signed with another key, in
    particular not with the development key OP-TEE's source ships.
    """
    p = home() / "ta_signing_key_optee.pem"
    if not p.is_file():
        k = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        write_secret(p, k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))  # fmt: skip
    return p


def ta_public_key_optee_pem() -> bytes:
    """The public half of :func:`ta_signing_key_optee`, PEM (what the firmware build takes)."""
    k = serialization.load_pem_private_key(ta_signing_key_optee().read_bytes(), password=None)
    return k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def boards_dir() -> Path:
    d = home() / "boards"
    d.mkdir(exist_ok=True)
    return d
