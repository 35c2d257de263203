"""A TA's own process in the emulated TEE (as a TA runs at S-EL0 under OP-TEE's core).

The TEE core (``omgkit.tee.world``) starts ``python -m omgkit.tee.ta_host FD``
with one end of a socket pair as FD, and nothing else: no file, socket or
secret of the core. The process loads the runtimes of the TEE image, waits
for its TA, loads it from the verified bundle bytes the core sends, confines
itself (``omgkit.tee.sandbox``) and then serves the core's calls. The TA's
internal API (``omg_ta.entry.TeeApi``) is a proxy: each call crosses the
channel to the core, which alone holds the hardware unique key, the device
key, counters, storage, the clock and the microphone.

Channel frames (``omgkit.tee.wire``), core to TA: ``load``, ``invoke``,
``register_shm`` (a sealed memfd, mapped read-only here), ``close``; TA to
core, during an ``invoke``: ``{svc, args}`` calls answered by the core,
then the invoke's reply.
"""

from __future__ import annotations

import mmap
import os
import socket
import sys
from typing import Any

from . import trace, wire

CHANNEL_MAX_FRAME = wire.TEE_MAX_FRAME + (1 << 20)
CHANNEL_MAX_ITEMS = wire.HW_MAX_ITEMS + 64


class _CoreProxy:
    """``omg_ta.entry.TeeApi`` across the channel: every call is the core's to answer."""

    def __init__(self, host: _Host, measurement: bytes, device_id: bytes):
        self._host, self.measurement, self.device_id = host, measurement, device_id

    def _svc(self, name: str, *args: Any) -> Any:
        return self._host.call_core(name, list(args))

    def bundle_file(self, name: str) -> bytes:
        return self._host.bundle_file(name)

    def attest(self, nonce: bytes, ta_keys: dict) -> bytes:
        return self._svc("attest", nonce, ta_keys)

    def seal(self, data: bytes) -> bytes:
        return self._svc("seal", data)

    def unseal(self, blob: bytes) -> bytes:
        return self._svc("unseal", blob)

    def counter(self, name: str) -> int:
        return self._svc("counter", name)

    def counter_advance(self, name: str, value: int) -> bool:
        return self._svc("counter_advance", name, value)

    def now(self) -> int:
        return self._svc("now")

    def storage_get(self, key: str) -> bytes | None:
        return self._svc("storage_get", key)

    def storage_put(self, key: str, value: bytes) -> None:
        self._svc("storage_put", key, value)

    def storage_compare_and_set(self, key: str, expected: bytes | None, value: bytes) -> bool:
        return self._svc("storage_compare_and_set", key, expected, value)

    def mic_read(self, max_clips: int, timeout: float) -> list[bytes]:
        return self._svc("mic_read", max_clips, timeout)

    def mark(self, stage: str) -> None:
        """A stage's timestamp when the core traces this invoke (``omgkit.tee.trace``)."""
        trace.mark(stage)


class _Host:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.rx = wire.FdReceiver(sock)
        self.files: dict[str, bytes] = {}
        self.ta = None
        self.shm: dict[int, memoryview] = {}
        self.confined: dict = {}

    def recv(self) -> dict:
        return self.rx.recv(CHANNEL_MAX_FRAME, CHANNEL_MAX_ITEMS)[0]

    def recv_any(self) -> tuple[dict, bool]:
        """The core's next request, and whether it came on the light path (a binary invoke)."""
        body = self.rx.recv_body(CHANNEL_MAX_FRAME)
        return wire.decode_any(body, CHANNEL_MAX_ITEMS), body[:1] == b"\x01"

    def bundle_file(self, name: str) -> bytes:
        from omg_ta.errors import TANotFoundError

        if name not in self.files:
            raise TANotFoundError(f"the TA bundle has no {name}: rebuild it with build_bundle")
        return self.files[name]

    def call_core(self, name: str, args: list) -> Any:
        wire.send(self.sock, {"svc": name, "args": args})
        reply = self.recv()
        wire.raise_for(reply)
        return reply.get("value")

    def load(self, req: dict) -> dict:
        import importlib

        from .world import install_ta_package

        if self.ta is not None:
            raise wire.MalformedFrameError("this process has its TA already")
        self.files = dict(req["files"])
        pkg = install_ta_package(self.files, req["measurement"])
        entry = importlib.import_module(pkg + ".entry")  # the TA's code runs from here on
        self.ta = entry.create(_CoreProxy(self, req["measurement"], req["device_id"]))
        return {"ok": True, "confined": self.confined, "pid": os.getpid()}

    def register_shm(self, fds: list[int]) -> dict:
        if len(fds) != 1:
            raise wire.MalformedFrameError("register_shm carries one file descriptor")
        size = os.fstat(fds[0]).st_size
        m = mmap.mmap(fds[0], size, prot=mmap.PROT_READ)
        sid = len(self.shm) + 1
        self.shm[sid] = memoryview(m)
        return {"ok": True, "shm": sid}

    def invoke(self, req: dict) -> dict:
        args = []
        for p in req["params"]:
            if isinstance(p, list) and p and p[0] == "s":
                args.append(self.shm[p[1]][p[2] : p[2] + p[3]])
            elif isinstance(p, list) and p and p[0] == "v":
                args.append((p[1], p[2]))
            elif isinstance(p, list) and p and p[0] == "o":
                args.append(p[1])  # an output memref: its size, as GP gives it to a TA
            else:
                args.append(p)
        trace.on = req.get("trace") is True  # marks wait here until the core takes them
        trace.mark("t.entry")
        try:
            out = self.ta.invoke(req["cmd"], req["types"], args)
            trace.mark("t.reply")
        finally:
            trace.on = False
            for a in args:
                if isinstance(a, memoryview):
                    try:
                        a.release()
                    except BufferError:
                        pass
        return {"ok": True, "out": [list(o) if isinstance(o, tuple) else o for o in out]}

    def serve(self) -> None:
        while True:
            try:
                req, binary = self.recv_any()
            except (wire.WireError, ConnectionError):
                return
            fds = self.rx.take()
            op = req.get("op")
            try:
                if op == "trace_take":
                    reply = {"ok": True, "marks": [list(m) for m in trace.take()]}
                elif op == "load":
                    reply = self.load(req)
                elif op == "register_shm":
                    reply = self.register_shm(fds)
                elif op == "invoke":
                    reply = self.invoke(req)
                elif op == "close":
                    return
                else:
                    raise wire.MalformedFrameError(f"unknown op {op!r}")
            except Exception as e:  # every failure becomes a reply with a result code
                reply = wire.error_reply(e, who="ta")
            finally:
                for fd in fds:
                    os.close(fd)

            slots = wire.out_slots(reply.get("out")) if binary else None  # the light path's
            wire.send_reply(self.sock, reply, slots, who="ta")


def _warm_up() -> None:
    """Load what the TA's primitives load lazily (cryptography's backend, the HPKE
    suites, error reporting), as a TEE image links its crypto library in: once
    confined, the process can load nothing from disk."""
    import traceback  # noqa: F401 - error reports (OMG_TEE_DEBUG)

    from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.hpke import MLKEM768X25519PrivateKey

    from omg_ta import license as lic
    from omg_ta.entry import _raw

    k = ed25519.Ed25519PrivateKey.generate()
    k.public_key().verify(k.sign(b"omg"), b"omg")
    lic.kid_of(k.public_key())
    gcm = AESGCM(bytes(32))
    gcm.decrypt(bytes(12), gcm.encrypt(bytes(12), b"omg", b""), b"")
    x = x25519.X25519PrivateKey.generate()
    pq = MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.generate(), x)
    _raw(x.public_key())
    for kem, key in (("X25519", x), ("MLKEM768-X25519", pq)):
        s = lic.suite(kem)
        s.decrypt(s.encrypt(b"omg", key.public_key(), info=b"i"), key, info=b"i")
    import numpy as np

    from omg_ta import commands as C
    from omg_ta.frontend import Frontend, FrontendSettings

    for kind in ("mfcc", "logmel"):  # numpy's FFT and what the frontends use
        try:
            Frontend(FrontendSettings(kind=kind))(np.zeros((1, C.CLIP_SAMPLES), "<i2"))
        except Exception:  # noqa: BLE001 - a frontend this build lacks loads nothing
            pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from ..util import fixed_heap

    fixed_heap()
    preload = argv[1].split(",") if len(argv) > 1 and argv[1] else None
    from omg_ta.runtime import available_runtimes

    available_runtimes(preload)  # the TEE image's runtimes: loaded before confinement
    # the TEE image's libraries: what the TA's modules import (cbor2, numpy,
    # cryptography's primitives) comes in with the workbench's copy of them;
    # a TA can import nothing the image does not hold once confined
    import omg_ta.entry  # noqa: F401

    from . import world  # noqa: F401 - the bundle importer

    _warm_up()

    sock = socket.socket(fileno=int(argv[0]))
    host = _Host(sock)
    from .sandbox import confine

    host.confined = confine()  # before any of the TA's code runs
    host.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
