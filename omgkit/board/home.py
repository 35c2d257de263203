"""The workbench's own state: ``$OMG_HOME`` (default ``~/.omgkit``).

- ``id_ed25519`` / ``.pub``: the workbench's SSH client key;
- ``known_hosts``: pinned board host keys (OpenSSH format);
- ``ta_signing_key.pem``: the TA signing key emulated boards trust;
- ``vendor/``: a default model vendor;
- ``boards/<name>/``: emulated boards.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
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


def boards_dir() -> Path:
    d = home() / "boards"
    d.mkdir(exist_ok=True)
    return d
