"""The emulated secure world: loads, measures and runs TAs; the TEE's services.

This code runs only in the TEE daemon's process (``omgkit.tee.daemon``).
A TA is loaded from ``<device>/ta/<uuid>/``: its files are read once, the
signature is checked against the TA signing keys the device trusts, the
measurement is computed, and the TA's modules are executed from those
verified bytes (a private importer), never re-read from disk.
"""

from __future__ import annotations

import collections
import importlib
import importlib.abc
import importlib.util
import os
import sys
import threading
import time
import uuid as _uuid
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from omg_ta import commands as C
from omg_ta.errors import (
    BadParametersError,
    BadStateError,
    TANotFoundError,
    UnsealError,
)

from .bundle import read_bundle, verify_bundle
from .device import TEE_VERSION, Device
from .token import Claims, make_token

SEAL_MAGIC = b"OMGSEAL1"


class _BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a TA package from verified in-memory sources."""

    def __init__(self, package: str, files: dict[str, bytes], label: str):
        self.package, self.files, self.label = package, files, label

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.package:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        if (
            fullname.startswith(self.package + ".")
            and f"{fullname.rsplit('.', 1)[1]}.py" in self.files
        ):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        name = (
            "__init__.py"
            if module.__name__ == self.package
            else module.__name__.rsplit(".", 1)[1] + ".py"
        )
        if module.__name__ == self.package:
            module.__path__ = []
        code = compile(self.files.get(name, b""), f"<TA {self.label}>/{name}", "exec")
        exec(code, module.__dict__)


class _Services:
    """The TEE internal API one TA session sees (``omg_ta.entry.TeeApi``)."""

    def __init__(
        self, world: SecureWorld, files: dict[str, bytes], measurement: bytes, ta_uuid: bytes
    ):
        self._world, self._files = world, files
        self.measurement, self.device_id, self._uuid = measurement, world.device.device_id, ta_uuid

    def bundle_file(self, name: str) -> bytes:
        if name not in self._files:
            raise TANotFoundError(f"the TA bundle has no {name}: rebuild it with build_bundle")
        return self._files[name]

    def attest(self, nonce: bytes, ta_keys: dict) -> bytes:
        d = self._world.device
        claims = Claims(
            nonce, d.device_id, self.now(), self.measurement, ta_keys, TEE_VERSION, self._uuid
        )
        return make_token(d.attestation_key(), d.chain(), claims)

    def _seal_key(self) -> bytes:
        hk = HKDF(hashes.SHA256(), 32, salt=b"OMG-SEAL-v1", info=self.measurement)
        return hk.derive(self._world.device.huk().reveal())

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(12)
        aad = SEAL_MAGIC + self.device_id + self.measurement
        return SEAL_MAGIC + nonce + AESGCM(self._seal_key()).encrypt(nonce, data, aad)

    def unseal(self, blob: bytes) -> bytes:
        if not isinstance(blob, bytes) or len(blob) < 8 + 12 + 16 or blob[:8] != SEAL_MAGIC:
            raise UnsealError()
        aad = SEAL_MAGIC + self.device_id + self.measurement
        try:
            return AESGCM(self._seal_key()).decrypt(blob[8:20], blob[20:], aad)
        except InvalidTag:
            raise UnsealError() from None

    def counter(self, name: str) -> int:
        return self._world.device.counters().get(name, 0)

    def counter_advance(self, name: str, value: int) -> None:
        if value > self.counter(name):
            self._world.device.set_counter(name, value)

    def now(self) -> int:
        return int(time.time()) + self._world.device.clock_offset()

    def storage_get(self, key: str) -> bytes | None:
        v = self._world.device.storage().get(f"{self.measurement.hex()}:{key}")
        return bytes.fromhex(v) if v is not None else None

    def storage_put(self, key: str, value: bytes) -> None:
        self._world.device.storage_put(f"{self.measurement.hex()}:{key}", value)

    def mic_read(self, max_clips: int, timeout: float) -> list[bytes]:
        return self._world.mic_read(max_clips, timeout)


class SecureWorld:
    def __init__(self, device: Device):
        self.device = device
        self.sessions: dict[int, Any] = {}
        self.measurements: dict[int, bytes] = {}
        self._next = 1
        self._mic: collections.deque[bytes] = collections.deque()
        self._mic_cv = threading.Condition()
        self._lock = threading.Lock()

    def open_session(self, ta_uuid: _uuid.UUID) -> tuple[int, bytes]:
        """Load, verify, measure and start a TA; returns (session id, measurement)."""
        d = self.device.ta_store / str(ta_uuid)
        sig_file = d / C.BUNDLE_SIG_FILE
        if not sig_file.is_file():
            raise TANotFoundError(
                f"no TA {ta_uuid} is installed on this device: deploy one (omg deploy)"
            )
        files = read_bundle(d)
        m = verify_bundle(files, sig_file.read_bytes(), self.device.ta_signers())
        pkg = f"_omg_ta_{m.hex()[:16]}"
        if pkg not in sys.modules:
            sys.meta_path.insert(0, _BundleImporter(pkg, files, m.hex()[:16]))
        entry = importlib.import_module(pkg + ".entry")
        ta = entry.create(_Services(self, files, m, ta_uuid.bytes))
        with self._lock:
            sid = self._next
            self._next += 1
            self.sessions[sid] = ta
            self.measurements[sid] = m
        return sid, m

    def invoke(self, sid: int, cmd: int, types: int, params: list) -> list:
        ta = self.sessions.get(sid)
        if ta is None:
            raise BadStateError("no such session")
        return ta.invoke(cmd, types, params)

    def close_session(self, sid: int) -> None:
        ta = self.sessions.pop(sid, None)
        self.measurements.pop(sid, None)
        if ta is not None:
            ta.invoke(C.CMD_CLOSE, C.SIGNATURES[C.CMD_CLOSE], [None] * 4)  # wipes model and keys

    # -- "hardware" ----------------------------------------------------------
    def mic_feed(self, clips: list[bytes]) -> None:
        with self._mic_cv:
            for c in clips:
                if len(c) != C.CLIP_BYTES:
                    raise BadParametersError(f"microphone clips are {C.CLIP_BYTES} bytes (int16)")
                self._mic.append(bytes(c))
            self._mic_cv.notify_all()

    def mic_read(self, max_clips: int, timeout: float) -> list[bytes]:
        with self._mic_cv:
            self._mic_cv.wait_for(lambda: bool(self._mic), timeout)
            out = []
            while self._mic and len(out) < max_clips:
                out.append(self._mic.popleft())
            return out
