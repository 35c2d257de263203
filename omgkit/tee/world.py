"""The emulated secure world: loads, measures and runs TAs; the TEE's services.

This code is the TEE *core*: it runs only in the TEE daemon's process
(``omgkit.tee.daemon``), which alone holds the device's secrets (hardware
unique key, device key), counters, storage, clock and microphone. A TA is
loaded from ``<device>/ta/<uuid>/``: its files are read once, the signature
is checked against the TA signing keys the device trusts and the
measurement is computed here; then each session's TA runs in a process of
its own (``omgkit.tee.ta_host``), confined by the kernel before any of the
TA's code runs (``omgkit.tee.sandbox``), and executes its modules from
those verified bytes (a private importer), never re-read from disk. The TA
reaches the core only through the internal API over its channel
(:class:`_Services`): as a TA at S-EL0 reaches OP-TEE's core only through
system calls.
"""

from __future__ import annotations

import collections
import importlib
import importlib.abc
import importlib.util
import os
import socket
import subprocess
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
    TeeError,
    UnsealError,
)

from . import trace
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


def install_ta_package(files: dict[str, bytes], measurement: bytes) -> str:
    """Make a verified bundle importable from memory; returns its package name."""
    pkg = f"_omg_ta_{measurement.hex()[:16]}"
    if pkg not in sys.modules and not any(
        isinstance(f, _BundleImporter) and f.package == pkg for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _BundleImporter(pkg, files, measurement.hex()[:16]))
    return pkg


class _Services:
    """The TEE internal API one TA session sees (``omg_ta.entry.TeeApi``), core side.

    The TA's process calls these by name over its channel (``SERVICES``);
    the core answers from what only it holds."""

    SERVICES = frozenset({"attest", "seal", "unseal", "counter", "counter_advance", "now",
                          "storage_get", "storage_put", "storage_compare_and_set", "mic_read"})  # fmt: skip

    def __init__(self, world: SecureWorld, measurement: bytes, ta_uuid: bytes):
        self._world = world
        self.measurement, self.device_id, self._uuid = measurement, world.device.device_id, ta_uuid

    def call(self, name: str, args: list) -> Any:
        """One call from the TA: only the internal API, with checked argument types."""
        if name not in self.SERVICES or not isinstance(args, list):
            raise BadParametersError(f"no TEE service {name!r}")
        try:
            return getattr(self, name)(*args)
        except TypeError:
            raise BadParametersError(f"{name}: wrong arguments") from None

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

    def counter_advance(self, name: str, value: int) -> bool:
        return self._world.device.advance_counter(name, value)

    def now(self) -> int:
        return int(time.time()) + self._world.device.clock_offset()

    def storage_get(self, key: str) -> bytes | None:
        v = self._world.device.storage().get(f"{self.measurement.hex()}:{key}")
        return bytes.fromhex(v) if v is not None else None

    def storage_put(self, key: str, value: bytes) -> None:
        self._world.device.storage_put(f"{self.measurement.hex()}:{key}", value)

    def storage_compare_and_set(self, key: str, expected: bytes | None, value: bytes) -> bool:
        return self._world.device.storage_compare_and_set(
            f"{self.measurement.hex()}:{key}", expected, value
        )

    def mic_read(self, max_clips: int, timeout: float) -> list[bytes]:
        if not isinstance(max_clips, int) or not 1 <= max_clips <= C.MAX_BATCH:
            raise BadParametersError("mic_read: 1 to MAX_BATCH clips")
        if not isinstance(timeout, (int, float)) or not 0.0 <= timeout <= 30.0:
            raise BadParametersError("mic_read: a timeout of 0 to 30 s")  # NaN too: it fails both
        return self._world.mic_read(max_clips, float(timeout))


class ShmWindow:
    """A window of registered shared memory, as the core hands it on to a TA's process."""

    def __init__(self, memory: Any, offset: int, size: int):
        self.memory, self.offset, self.size = memory, offset, size


def _checked_slot(param: Any, o: Any) -> Any:
    """One slot of a TA's reply, as the core passes it on: nothing, a value (two u32), or
    bytes where the request had an output memref. A TA's process is not trusted to send only
    these (a value over 32 bits, say, would fail the light path's encoder in the core)."""
    if o is None:
        return None
    if (
        isinstance(o, (list, tuple))
        and len(o) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32 for v in o)
    ):
        return (int(o[0]), int(o[1]))
    if isinstance(o, bytes) and isinstance(param, int) and not isinstance(param, bool):
        return o
    raise BadParametersError("the TA's reply has a slot of a kind its request did not have")


class _TaProcess:
    """One TA instance: a process of its own and the core's end of its channel."""

    def __init__(self, preload: list[str] | None):
        from . import wire

        self._wire = wire
        core_end, ta_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "omgkit.tee.ta_host", str(ta_end.fileno()),
               ",".join(preload or [])]  # fmt: skip
        self.proc = subprocess.Popen(cmd, pass_fds=[ta_end.fileno()], stdin=subprocess.DEVNULL,
                                     env=env, close_fds=True)  # fmt: skip
        ta_end.close()
        self.sock = core_end
        self.rx = wire.FdReceiver(core_end)
        self.shm: dict[int, int] = {}  # the core's registration serial -> the TA process's id
        self.lock = threading.Lock()
        self.confined: dict = {}
        self.measurement = b""
        self.pid = self.proc.pid
        self.services: _Services | None = None
        self.closed = False

    def _exchange(
        self,
        req: dict | None,
        services: _Services | None,
        fds: list[int] | None = None,
        max_items: int | None = None,
    ) -> dict:
        """Send a request; answer the TA's service calls until its reply comes."""
        w = self._wire
        if req is None:  # sent already
            pass
        elif fds:
            w.send_with_fds(self.sock, req, fds)
        else:
            w.send(self.sock, req)
        while True:
            try:
                body = self.rx.recv_body(w.TEE_MAX_FRAME + (1 << 20))
                if body[:1] == b"\x02":  # the light path's reply: the TA's four slots
                    trace.mark("k.from_ta")
                    out = [None if p is None else p[1] if p[0] == "m" else (p[1], p[2])
                           for p in w.unpack_reply(body)]  # fmt: skip
                    self.rx.close_all()  # a TA sends the core no descriptors
                    return {"ok": True, "out": out}
                msg = w.decode_body(body, max_items or w.HW_MAX_ITEMS + 64)
            except (w.WireError, ConnectionError, OSError):
                self.kill()
                raise TeeError(
                    C.RESULT_GENERIC, "the TA's process ended (it crashed or was killed)"
                ) from None
            self.rx.close_all()  # a TA sends the core no descriptors
            if "svc" not in msg:
                trace.mark("k.from_ta")
                w.raise_for(msg)
                return msg
            try:
                if services is None:
                    raise BadStateError("no TEE service before the TA is loaded")
                value = services.call(msg.get("svc"), msg.get("args"))
                w.send(self.sock, {"ok": True, "value": value})
            except Exception as e:  # a failed service call is the TA's to handle
                w.send(self.sock, w.error_reply(e))

    def _exchange_body(self, body: bytes) -> dict:
        self._wire.send_body(self.sock, body)
        return self._exchange(None, self.services)

    def take_marks(self) -> list:
        """The trace marks the TA's process made (``omgkit.tee.trace``), and forget them."""
        with self.lock:
            if self.closed:
                return []
            r = self._exchange(
                {"op": "trace_take"}, self.services, max_items=3 * trace.MAX_MARKS + 16
            )
        marks = r.get("marks")
        if not isinstance(marks, list):
            return []
        return [[m[0], m[1]] for m in marks if isinstance(m, list) and len(m) == 2
                and isinstance(m[0], str) and isinstance(m[1], int) and not isinstance(m[1], bool)]  # fmt: skip

    def load(self, files: dict[str, bytes], services: _Services) -> None:
        self.services = services
        self.measurement = services.measurement
        r = self._exchange({"op": "load", "files": files, "measurement": services.measurement,
                            "device_id": services.device_id}, services)  # fmt: skip
        self.confined = dict(r.get("confined") or {})
        self.pid = int(r.get("pid", self.proc.pid))

    def invoke(self, cmd: int, types: int, params: list) -> list:
        wire_params = []
        with self.lock:
            for p in params:
                if isinstance(p, ShmWindow):
                    key = p.memory.serial
                    if key not in self.shm:
                        r = self._exchange({"op": "register_shm"}, self.services, [p.memory.fd])
                        self.shm[key] = r["shm"]
                    wire_params.append(["s", self.shm[key], p.offset, p.size])
                elif isinstance(p, tuple):
                    wire_params.append(["v", p[0], p[1]])
                else:
                    wire_params.append(p)
            slots = [["o", p] if isinstance(p, int) else p for p in wire_params]
            body = self._wire.pack_invoke(
                0, cmd, types, slots, self._wire.FLAG_TRACE if trace.on else 0
            )
            trace.mark("k.to_ta")
            if body is not None:  # the light path, where it fits
                r = self._exchange_body(body)
            else:
                req = {"op": "invoke", "cmd": cmd, "types": types, "params": wire_params,
                       "trace": trace.on}  # fmt: skip
                r = self._exchange(req, self.services)
        out = r.get("out")
        if not isinstance(out, list) or len(out) != 4:
            raise BadParametersError("the TA's reply has not four slots")
        return [_checked_slot(p, o) for p, o in zip(params, out, strict=True)]

    def close(self) -> None:
        with self.lock:  # not while the trace port reads this channel
            self.closed = True
            try:
                self._wire.send(self.sock, {"op": "close"})
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
        self.sock.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class SecureWorld:
    def __init__(self, device: Device, preload: list[str] | None = None):
        self.device = device
        self.preload = preload
        self.sessions: dict[int, _TaProcess] = {}
        self._next = 1
        self._mic: collections.deque[bytes] = collections.deque()
        self._mic_cv = threading.Condition()
        self._lock = threading.Lock()
        self._spare: _TaProcess | None = None
        self._spare_ready = threading.Lock()
        self._refill()

    def _refill(self) -> None:
        """Start the next TA process now, so that opening a session finds it warm."""

        def start():
            with self._spare_ready:
                if self._spare is None:
                    self._spare = _TaProcess(self.preload)

        threading.Thread(target=start, daemon=True).start()

    def _take_process(self) -> _TaProcess:
        with self._spare_ready:
            p, self._spare = self._spare, None
        if p is None or p.proc.poll() is not None:
            p = _TaProcess(self.preload)
        self._refill()
        return p

    def open_session(self, ta_uuid: _uuid.UUID) -> tuple[int, bytes]:
        """Load, verify, measure and start a TA in its own process; returns (session id, measurement)."""
        d = self.device.ta_store / str(ta_uuid)
        sig_file = d / C.BUNDLE_SIG_FILE
        if not sig_file.is_file():
            raise TANotFoundError(
                f"no TA {ta_uuid} is installed on this device: deploy one (omg deploy)"
            )
        files = read_bundle(d)
        m = verify_bundle(files, sig_file.read_bytes(), self.device.ta_signers())
        ta = self._take_process()
        try:
            ta.load(files, _Services(self, m, ta_uuid.bytes))
        except BaseException:
            ta.kill()
            raise
        with self._lock:
            sid = self._next
            self._next += 1
            self.sessions[sid] = ta
        return sid, m

    def invoke(self, sid: int, cmd: int, types: int, params: list) -> list:
        ta = self.sessions.get(sid)
        if ta is None:
            raise BadStateError("no such session")
        return ta.invoke(cmd, types, params)

    def close_session(self, sid: int) -> None:
        with self._lock:
            ta = self.sessions.pop(sid, None)
        if ta is not None:
            try:  # wipes model and keys, then the process ends
                ta.invoke(C.CMD_CLOSE, C.SIGNATURES[C.CMD_CLOSE], [None] * 4)
            except Exception:  # noqa: BLE001 - the process goes either way
                pass
            ta.close()

    def ta_marks(self) -> list:
        """Every open session's TA process's trace marks (the trace port, ``omgkit.tee.trace``)."""
        with self._lock:
            tas = list(self.sessions.values())
        out: list = []
        for t in tas:
            try:
                out += t.take_marks()
            except Exception:  # noqa: BLE001 - a session ending meanwhile has no marks to give
                pass
        return out

    def ta_status(self) -> list[dict]:
        """Each open session's TA process: pid and what confines it (harness and bench)."""
        with self._lock:
            tas = list(self.sessions.items())
        return [{"session": s, "pid": t.pid, "confined": t.confined,
                 "measurement": t.measurement} for s, t in tas]  # fmt: skip

    def shutdown(self) -> None:
        with self._lock:
            tas, self.sessions = list(self.sessions.values()), {}
        with self._spare_ready:
            spare, self._spare = self._spare, None
        for t in tas + ([spare] if spare else []):
            t.kill()

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
