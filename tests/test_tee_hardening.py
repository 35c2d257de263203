"""The emulated TEE under attack through its own API: races, floods and shrinking memory.

Each test is a finding of issue 13 that broke the daemon or a policy before
its fix: concurrent sessions overspending a budget, frames of tiny CBOR
items taking gigabytes, shared memory the normal world shrinks under the
TEE. Real daemons, real sockets, real shared memory throughout.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import cbor2
import pytest

from omg_ta import commands as C
from omg_ta.cbor_limits import CborLimitError, check_cbor
from omg_ta.errors import BadParametersError, BudgetExhaustedError
from omg_ta.license import Policy
from omgkit.tee import open_context, wire
from omgkit.tee.client import Value


@pytest.fixture(scope="module")
def clips(tiny_corpus):
    from omgkit.kws.dataset import load_dataset

    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.select("testing"))
    return x


def _daemon_alive(world, name: str) -> bool:
    d = world.local.daemons[name]
    return d.proc is not None and d.proc.poll() is None


def test_concurrent_sessions_never_overspend_a_budget(guard_world, clips):
    """Eight sessions on one device race for a budget of 16 clips, one clip a call."""
    budget, sessions = 16, 8
    g0 = guard_world.host("dev-race")
    token = g0.attest(guard_world.vendor.new_nonce())
    pol = Policy(not_after=int(time.time()) + 600, budget=budget)
    g0.provision(
        guard_world.vendor.issue_license(token, model_id="kws", model_version=1, policy=pol)
    )
    g0.install_package(guard_world.packages[1])
    hosts = [g0] + [guard_world.host("dev-race") for _ in range(sessions - 1)]
    for h in hosts:
        assert h.initialize()["budget_left"] == budget
    done, refused, errors = [], [], []
    start = threading.Barrier(sessions)

    def spend(h):
        start.wait()
        for _ in range(budget):  # each tries for the whole budget
            try:
                done.append(len(h.classify_batch(clips[:1]).labels))
            except BudgetExhaustedError:
                refused.append(1)
                return
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=spend, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors, errors
        assert sum(done) == budget, f"{sum(done)} clips classified on a budget of {budget}"
        assert len(refused) == sessions
        assert hosts[0].initialize()["budget_left"] == 0
    finally:
        for h in hosts:
            h.close()


def test_cbor_limits_refuse_floods_before_decoding():
    tiny_items = b"\x9b" + struct.pack(">Q", 4_000_000) + b"\x00" * 4_000_000
    with pytest.raises(CborLimitError, match="items"):
        check_cbor(tiny_items, max_items=100_000)
    with pytest.raises(CborLimitError, match="nest"):
        check_cbor(b"\x81" * 200 + b"\x00", max_items=1000)
    with pytest.raises(CborLimitError, match="beyond"):  # a claimed length past the end
        check_cbor(b"\x5b" + struct.pack(">Q", 1 << 40) + b"ab", max_items=10)
    with pytest.raises(CborLimitError, match="after"):
        check_cbor(cbor2.dumps(1) + b"\x00", max_items=10)
    ok = cbor2.dumps({"op": "invoke", "params": [["m", b"x" * 100_000], None, ["v", 1, 2], None]})
    assert check_cbor(ok, max_items=64) == 14
    # indefinite lengths, tags and floats are walked too
    tagged = cbor2.dumps(cbor2.CBORTag(24, [1.5, "ab", True]))
    assert check_cbor(tagged, max_items=10, tags=frozenset({24})) == 5
    assert check_cbor(b"\x9f\x01\x02\xff", max_items=10) == 3
    # cbor2's shared references (tags 28/29) in a set (tag 258): each level refers four times
    # to the one before, and hashing the set walks 4**60 nodes. A kilobyte of it hung the
    # parsers before (found by benchmarks/fuzz.py); now only tag 18 passes.
    laughs = b"\xd9\x01\x02\x98\x3d" + b"\xd8\x1c\x82\x01\x68" + b"x" * 8
    for i in range(60):
        ref = b"\xd8\x1d" + (bytes([i]) if i < 24 else b"\x18" + bytes([i]))
        laughs += b"\xd8\x1c\x84" + ref * 4
    with pytest.raises(CborLimitError, match="tag 258"):
        check_cbor(laughs, max_items=10_000)
    with pytest.raises(CborLimitError, match="tag 3"):  # a bignum: its digits are code to run
        check_cbor(b"\xc3\x59\x4e\x20" + b"\xff" * 20_000, max_items=10)
    from omg_ta import cose
    from omg_ta.errors import IntegrityError

    t = time.perf_counter()
    with pytest.raises(IntegrityError):
        cose.loads(laughs)
    assert time.perf_counter() - t < 1.0


def test_a_flood_of_tiny_items_costs_the_daemon_nothing(guard_world):
    """One 32 MB frame of tiny CBOR items: refused with one reply, the daemon stays small."""
    g = guard_world.host("dev-flood")
    pid = guard_world.local.daemons["dev-flood"].proc.pid
    n = (32 << 20) - 64  # a frame of 32 MiB, within the request bound: only items are too many
    flood = b"\xa3" + cbor2.dumps("op") + cbor2.dumps("invoke")  # {op, session, params: [0]*n}
    flood += cbor2.dumps("session") + cbor2.dumps(1) + cbor2.dumps("params")
    flood += b"\x9b" + struct.pack(">Q", n) + b"\xa0" * n  # empty maps: 64 bytes each once decoded
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(g.device_dir / wire.TEE_SOCKET))
        s.sendall(struct.pack(">I", len(flood)) + flood)
        reply, _ = wire.recv(s)
        assert reply["ok"] is False and reply["code"] == C.RESULT_BAD_PARAMETERS
        assert "items" in reply["message"]
        # the connection still serves
        wire.send(s, {"op": "close_session", "session": 99})
        assert wire.recv(s)[0] == {"ok": True}
    rss_kb = int(
        next(ln for ln in open(f"/proc/{pid}/status") if ln.startswith("VmHWM")).split()[1]
    )
    assert rss_kb < 600_000, f"the daemon's peak RSS reached {rss_kb // 1024} MB"
    # a frame over the socket's limit is refused without reading it
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(g.device_dir / wire.TEE_SOCKET))
        s.sendall(struct.pack(">I", wire.TEE_MAX_FRAME + 1))
        reply, _ = wire.recv(s)
        assert reply["ok"] is False and "frame" in reply["message"]
    g.close()
    assert _daemon_alive(guard_world, "dev-flood")


@pytest.mark.parametrize(
    "request_",
    [
        b"\xff\xfe",  # not CBOR
        cbor2.dumps([1, 2, 3]),  # not a map
        cbor2.dumps({"op": 7}),
        cbor2.dumps({"op": "invoke", "session": "x", "cmd": 1, "types": 0, "params": []}),
        cbor2.dumps({"op": "invoke", "session": 1, "cmd": 1, "types": 0, "params": "abc"}),
        cbor2.dumps({"op": "open_session", "uuid": b"short"}),
        cbor2.dumps({"op": "register_shm"}),
        cbor2.dumps({"op": "close_session", "session": cbor2.CBORTag(2, b"\x01" * 3000)}),
    ],
)
def test_every_malformed_request_gets_one_error_reply(guard_world, request_):
    g = guard_world.host("dev-malformed")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(g.device_dir / wire.TEE_SOCKET))
        s.sendall(struct.pack(">I", len(request_)) + request_)
        reply, _ = wire.recv(s)
        assert reply["ok"] is False and reply["code"] == C.RESULT_BAD_PARAMETERS, reply
        wire.send(s, {"op": "close_session", "session": 99})
        assert wire.recv(s)[0] == {"ok": True}
    g.close()
    assert _daemon_alive(guard_world, "dev-malformed")


def test_a_frame_with_too_many_descriptors_gets_one_reply(guard_world):
    """More descriptors than a channel takes: one error reply, the connection ends, the daemon stays."""
    import mmap

    g = guard_world.host("dev-fds")
    fds = []
    for _ in range(wire.MAX_FDS + 2):
        fd = os.memfd_create("omg-many", os.MFD_CLOEXEC)
        os.ftruncate(fd, mmap.PAGESIZE)
        fds.append(fd)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(g.device_dir / wire.TEE_SOCKET))
        socket.send_fds(s, [wire.frame({"op": "register_shm"})], fds)
        reply, _ = wire.recv(s)
        assert reply["ok"] is False and "descriptors" in reply["message"]
    for fd in fds:
        os.close(fd)
    g.close()
    assert _daemon_alive(guard_world, "dev-fds")


def test_shared_memory_the_normal_world_shrinks_is_refused_not_fatal(guard_world, clips):
    """Registered shared memory is a memfd sealed against shrinking; an unsealed one is refused."""
    import fcntl
    import mmap

    g = guard_world.host("dev-shrink")
    ctx = g.ctx
    shm = ctx.allocate_shared_memory(C.CLIP_BYTES)
    seals = fcntl.fcntl(shm.fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_SEAL
    with pytest.raises(PermissionError):
        os.ftruncate(shm.fd, 0)  # the attack of issue 13: shrink what the TEE has mapped
    # an unsealed memfd registered by hand (the old attack) is refused by the daemon
    fd = os.memfd_create("omg-unsealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, mmap.PAGESIZE)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(g.device_dir / wire.TEE_SOCKET))
        data = wire.frame({"op": "register_shm"})
        socket.send_fds(s, [data], [fd])
        reply, _ = wire.recv(s)
        assert reply["ok"] is False and "sealed" in reply["message"]
        # nor can a window name shared memory by a POSIX name any more
        wire.send(s, {"op": "invoke", "session": 1, "cmd": 3, "types": 0,
                      "params": [["s", "psm_victim", 0, 16], None, None, None]})  # fmt: skip
        reply, _ = wire.recv(s)
        assert reply["ok"] is False
    os.close(fd)
    with pytest.raises(BadParametersError, match="out of range"):
        g._session().invoke(
            C.CMD_CLASSIFY, C.SIGNATURES[C.CMD_CLASSIFY],
            [Value(C.SOURCE_BUFFER, 1), shm.window(0, 2 * C.CLIP_BYTES), None, None],
        )  # fmt: skip
    g.close()
    assert _daemon_alive(guard_world, "dev-shrink")
    # and the sealed window still carries a batch, end to end
    g2 = guard_world.host("dev-shrink2")
    with open_context(g2.device_dir) as c:
        assert c.allocate_shared_memory(64).buffer.nbytes == 64
    g2.close()


_EVIL_ENTRY = b"""
# appended by a "vendor" holding a leaked TA signing key: at import and at every
# command, try what the TEE core alone may do, and report what worked
import json as _json, os as _os, socket as _socket

def _try(f):
    try:
        r = f()
        return "GOT " + (r.hex()[:16] if isinstance(r, bytes) else repr(r)[:40])
    except BaseException as e:
        return "refused " + type(e).__name__

def _huk():
    with open(_DEVICE + "/secure/huk.bin", "rb") as f:
        return f.read()

def _core_memory():
    with open(f"/proc/{_os.getppid()}/mem", "rb") as f:
        return f.read(16)

def _vm_read():
    import ctypes
    buf = ctypes.create_string_buffer(16)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 16)
    remote = (ctypes.c_void_p * 2)(0x400000, 16)
    n = ctypes.CDLL(None, use_errno=True).process_vm_readv(_os.getppid(), local, 1, remote, 1, 0)
    if n < 0:
        raise OSError(ctypes.get_errno(), "process_vm_readv")
    return buf.raw

def _hw_socket():
    s = _socket.socket(_socket.AF_UNIX)
    s.connect(_DEVICE + "/hw.sock")
    return b"connected"

def _report(tee):
    return {
        "huk": _try(_huk),
        "core_memory": _try(_core_memory),
        "process_vm_readv": _try(_vm_read),
        "hw_socket": _try(_hw_socket),
        "core_service": _try(lambda: tee._svc("_seal_key")),
        "other_storage": _try(lambda: tee.storage_get("budget:" + _LICENSE)),
    }

_base_create = create

def create(tee):
    ta = _base_create(tee)
    report = _report(tee)

    def invoke(cmd, types, params):
        return [None, _json.dumps(report).encode(), None, None]

    ta.invoke = invoke
    return ta
"""


def test_a_resigned_ta_cannot_reach_the_cores_secrets(guard_world, clips):
    """A TA validly re-signed with a leaked signing key runs confined in its own process."""
    import json

    from omgkit.guard.attacks import ta_dir
    from omgkit.tee.bundle import sign_bundle

    g = guard_world.host("dev-evil")
    token = g.attest(guard_world.vendor.new_nonce())
    blob = guard_world.vendor.issue_license(
        token, model_id="kws", model_version=1,
        policy=Policy(not_after=int(time.time()) + 600, budget=5),
    )  # fmt: skip
    g.provision(blob)
    g.install_package(guard_world.packages[1])
    assert g.initialize()["budget_left"] == 5  # the genuine TA keeps a budget in storage
    g.close()
    from omg_ta import cose
    from omg_ta.license import parse_payload

    license_id = parse_payload(cose.parse_sign1(blob).payload).license_id.hex()
    entry = ta_dir(g.device_dir) / "entry.py"
    entry.write_bytes(
        entry.read_bytes()
        + f"\n_DEVICE = {str(g.device_dir)!r}\n_LICENSE = {license_id!r}\n".encode()
        + _EVIL_ENTRY
    )
    sign_bundle(ta_dir(g.device_dir), guard_world.ta_key)
    evil = guard_world.host("dev-evil")
    from omgkit.tee.client import Output

    out = evil._session().invoke(C.CMD_GET_ATTESTATION, C.SIGNATURES[C.CMD_GET_ATTESTATION],
                                 [bytes(16), Output(), None, None])  # fmt: skip
    report = json.loads(out[1])
    assert report == {
        "huk": "refused PermissionError",
        "core_memory": "refused PermissionError",
        "process_vm_readv": "refused PermissionError",
        "hw_socket": "refused PermissionError",
        "core_service": "refused BadParametersError",
        "other_storage": "GOT None",  # its own namespace: the genuine TA's budget is not there
    }, report
    # and what the core reports of the process it runs in
    from omgkit.tee.client import hardware

    tas = hardware(g.device_dir, "ta_status")["tas"]
    mine = [t for t in tas if t["pid"] != os.getpid()]
    assert mine and all(t["confined"]["landlock"] >= 1 and t["confined"]["seccomp"] for t in mine)
    evil.close()


def test_the_cores_services_check_what_a_ta_passes():
    """A TA's service calls are the core's input too: a NaN timeout would have blocked the
    core's thread for good (``Condition.wait_for(nan)`` never returns; found reading the
    fuzz tool's report)."""
    import types

    from omgkit.tee.world import _Services

    world = types.SimpleNamespace(device=types.SimpleNamespace(device_id=b"d" * 16),
                                  mic_read=lambda n, t: [b"clip"] * 0)  # fmt: skip
    svc = _Services(world, b"m" * 32, b"u" * 16)
    for bad in (float("nan"), float("inf"), -1.0, 31.0, "5"):
        with pytest.raises(BadParametersError, match="timeout"):
            svc.call("mic_read", [1, bad])
    assert svc.call("mic_read", [1, 0.5]) == []
    with pytest.raises(BadParametersError, match="no TEE service"):
        svc.call("huk", [])
    with pytest.raises(BadParametersError, match="wrong arguments"):
        svc.call("seal", [])
