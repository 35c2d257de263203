"""Per-device secure state of the emulated TEE.

``<device>/secure/`` holds what TrustZone hardware would keep out of the
normal world's reach: the hardware unique key (HUK), the device attestation
key and its certificate, the TA signing keys the TEE trusts, monotonic
counters, persistent TA storage and the clock offset. In emulation these
are files readable by whoever runs the emulator (see docs/threat-model.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from omg_ta.secret import Secret

from ..errors import ConfigError
from ..util import atomic_write_bytes, atomic_write_text, write_secret
from .pki import Manufacturer, raw_public, read_private_key, write_private_key

TEE_VERSION = "omgkit-emulated-tee/1"


class Device:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.secure = self.path / "secure"
        if not (self.secure / "huk.bin").is_file():
            raise ConfigError(
                f"{self.path} is not an emulated device; create it with Device.create"
            )
        self.device_id = bytes.fromhex((self.secure / "device_id").read_text().strip())
        self._lock = threading.RLock()
        """Read-modify-write of counters and storage is one step for every session."""

    @classmethod
    def create(cls, path: str | os.PathLike, manufacturer: Manufacturer,
               ta_signers: list[Ed25519PublicKey]) -> Device:  # fmt: skip
        p = Path(path)
        s = p / "secure"
        s.mkdir(parents=True, exist_ok=True)
        os.chmod(s, 0o700)
        write_secret(s / "huk.bin", os.urandom(32))
        key = Ed25519PrivateKey.generate()
        device_id = hashlib.sha256(raw_public(key.public_key())).digest()[:16]
        write_private_key(s / "attest_key.pem", key)
        atomic_write_text(s / "device_id", device_id.hex() + "\n")
        atomic_write_bytes(s / "device_cert.der", manufacturer.certify(key.public_key(), device_id))
        atomic_write_bytes(s / "root_cert.der", manufacturer.root_der)
        signers = s / "ta_signers"
        signers.mkdir(exist_ok=True)
        for i, k in enumerate(ta_signers):
            atomic_write_bytes(signers / f"signer{i}.pub", raw_public(k))
        atomic_write_text(s / "counters.json", "{}\n")
        atomic_write_text(s / "storage.json", "{}\n")
        atomic_write_text(s / "clock_offset", "0\n")
        (p / "ta").mkdir(exist_ok=True)  # normal-world TA store: <uuid>/ bundles
        return cls(p)

    # -- secrets (read by the secure world only) ---------------------------
    def huk(self) -> Secret:
        return Secret((self.secure / "huk.bin").read_bytes())

    def attestation_key(self) -> Ed25519PrivateKey:
        return read_private_key(self.secure / "attest_key.pem")

    def chain(self) -> list[bytes]:
        return [
            (self.secure / "device_cert.der").read_bytes(),
            (self.secure / "root_cert.der").read_bytes(),
        ]

    def ta_signers(self) -> list[Ed25519PublicKey]:
        d = self.secure / "ta_signers"
        return [Ed25519PublicKey.from_public_bytes(f.read_bytes()) for f in sorted(d.glob("*.pub"))]

    # -- persistent state ----------------------------------------------------
    def _read_json(self, name: str) -> dict:
        return json.loads((self.secure / name).read_text())

    def counters(self) -> dict[str, int]:
        return self._read_json("counters.json")

    def set_counter(self, name: str, value: int) -> None:
        with self._lock:
            c = self.counters()
            if value < c.get(name, 0):
                raise ConfigError("monotonic counters never go down")
            c[name] = int(value)
            atomic_write_text(self.secure / "counters.json", json.dumps(c, sort_keys=True) + "\n")

    def advance_counter(self, name: str, value: int) -> bool:
        """Raise a counter to ``value``, in one step for all sessions; False (and no
        change) if it is already past ``value``."""
        with self._lock:
            cur = self.counters().get(name, 0)
            if value < cur:
                return False
            if value > cur:
                self.set_counter(name, value)
            return True

    def storage(self) -> dict[str, str]:
        return self._read_json("storage.json")

    def storage_put(self, key: str, value: bytes) -> None:
        with self._lock:
            st = self.storage()
            st[key] = value.hex()
            atomic_write_text(self.secure / "storage.json", json.dumps(st, sort_keys=True) + "\n")

    def storage_compare_and_set(self, key: str, expected: bytes | None, value: bytes) -> bool:
        """Write ``value`` only if ``key`` still holds ``expected``; one step for all sessions."""
        with self._lock:
            cur = self.storage().get(key)
            if (None if cur is None else bytes.fromhex(cur)) != expected:
                return False
            self.storage_put(key, value)
            return True

    def clock_offset(self) -> int:
        return int((self.secure / "clock_offset").read_text().strip())

    def set_clock_offset(self, seconds: int) -> None:
        atomic_write_text(self.secure / "clock_offset", f"{int(seconds)}\n")

    @property
    def ta_store(self) -> Path:
        return self.path / "ta"
