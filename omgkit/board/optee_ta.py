"""The keyword TA for OP-TEE (ta/optee/ta), built for one vendor, and its measurement.

OP-TEE runs a TA that is one ELF, signed with the TA signing key its OS was
built with, in a file named by the TA's UUID (``<uuid>.ta``). Its signed
header carries the SHA-256 of the image; OP-TEE verifies the image against
it as it loads the TA, and our OP-TEE build records it for the OMG
pseudo-TA (ta/optee/patches). That digest is the TA's **measurement** M:
what the attestation token reports, what the vendor approves, what the
sealing key is bound to. The vendor's public key is compiled into the TA,
so M covers it, as the emulated TEE's bundle measurement covers its
``vendor_ed25519.pub``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

from omg_ta import commands as C

from ..errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TA_SOURCE = REPO / "ta" / "optee" / "ta"
TA_FILE = f"{C.TA_UUID}.ta"

SHDR_MAGIC = 0x4F545348  # "OTSH"
SHDR_FORMAT = "<IIIIHH"  # magic, img_type, img_size, algo, hash_size, sig_size


def measurement(ta: bytes) -> bytes:
    """The digest in a signed TA's header (OP-TEE's ``struct shdr``): its measurement."""
    if len(ta) < struct.calcsize(SHDR_FORMAT):
        raise ConfigError("not a signed OP-TEE TA: too short")
    magic, _, img_size, _, hash_size, sig_size = struct.unpack_from(SHDR_FORMAT, ta)
    head = struct.calcsize(SHDR_FORMAT)
    if magic != SHDR_MAGIC or hash_size != 32 or head + hash_size + sig_size > len(ta):
        raise ConfigError("not a signed OP-TEE TA (no SHA-256 signed header)")
    return bytes(ta[head : head + hash_size])


def build(out: str | os.PathLike, vendor_public_raw: bytes, *, dev_kit: str | os.PathLike,
          sign_key: str | os.PathLike, cross_compile: str = "aarch64-linux-gnu-",
          log_level: int = 1) -> tuple[Path, bytes]:  # fmt: skip
    """Build and sign the TA for a vendor into ``out/<uuid>.ta``; return (path, measurement).

    ``dev_kit`` is OP-TEE's ``export-ta_arm64``; ``sign_key`` the TA signing
    key the board's OP-TEE trusts; ``log_level`` OP-TEE's TA trace level (a
    different level is different code: another measurement). The build runs in a directory of
    its own (``out`` with ``.build`` appended), emptied first.
    """
    if len(vendor_public_raw) != 32:
        raise ConfigError("the vendor's key is a 32-byte Ed25519 public key")
    o = Path(out)
    work = o.with_name(o.name + ".build")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    o.mkdir(parents=True, exist_ok=True)
    key_bytes = "{" + ",".join(f"0x{b:02x}" for b in vendor_public_raw) + "}"
    env = dict(
        os.environ, PATH="/usr/bin:" + os.environ.get("PATH", "")
    )  # Debian's python3 for the scripts
    cmd = ["make", "-s", "-C", str(TA_SOURCE), f"CROSS_COMPILE={cross_compile}",
           f"TA_DEV_KIT_DIR={Path(dev_kit).resolve()}", f"TA_SIGN_KEY={Path(sign_key).resolve()}",
           f"OMG_VENDOR_KEY_BYTES={key_bytes}", f"O={work.resolve()}",
           f"CFG_TEE_TA_LOG_LEVEL={log_level}"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    built = work / TA_FILE
    if r.returncode != 0 or not built.is_file():
        raise ConfigError(f"building the OP-TEE TA failed: {(r.stdout + r.stderr).strip()[-1500:]}")
    dest = o / TA_FILE
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(built, tmp)
    os.replace(tmp, dest)
    return dest, measurement(dest.read_bytes())


def image_digest(ta: bytes) -> bytes:
    """SHA-256 over the signed header's fields and the image, as OP-TEE's sign script computes it.

    Equal to :func:`measurement` for an intact TA (tests/test_optee_guard.py
    checks it on the deployed TA): the header's digest is not taken on trust."""
    magic, img_type, img_size, algo, hash_size, sig_size = struct.unpack_from(SHDR_FORMAT, ta)
    head = struct.calcsize(SHDR_FORMAT)
    body = ta[head + hash_size + sig_size :]
    return hashlib.sha256(ta[:head] + body).digest()
