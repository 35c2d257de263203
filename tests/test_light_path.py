"""The light request path: an invoke and its reply as fixed binary layouts (docs/protocol.md)."""

from __future__ import annotations

import socket

import pytest

from omg_ta import commands as C
from omg_ta.errors import BadParametersError
from omgkit.tee import wire

# the vectors docs/protocol.md shows: session 7 classifies one clip from shared memory 2
INVOKE_VECTOR = bytes.fromhex(
    "01000000" "00000007" "00000003" "00000651"
    "01" "00000001" "00000001" "00000000"
    "02" "00000002" "00000000" "00007d00"
    "03" "00000040" "00000000" "00000000"
    "00" "00000000" "00000000" "00000000"
)  # fmt: skip
REPLY_VECTOR = bytes.fromhex("02000000" "00" "00" "04" "0000000a" "a1666c6162656c73810300")  # fmt: skip
SLOTS = [["v", C.SOURCE_BUFFER, 1], ["s", 2, 0, C.CLIP_BYTES], ["o", 64], None]


def test_vectors_pack_and_unpack_both_ways():
    assert wire.pack_invoke(7, C.CMD_CLASSIFY, C.SIGNATURES[C.CMD_CLASSIFY], SLOTS) == INVOKE_VECTOR
    req = wire.unpack_invoke(INVOKE_VECTOR)
    assert req == {"op": "invoke", "session": 7, "cmd": C.CMD_CLASSIFY, "types": 0x0651,
                   "params": SLOTS, "trace": False}  # fmt: skip
    slots = [None, None, ["m", bytes.fromhex("a1666c6162656c738103")], None]
    assert wire.pack_reply(slots) == REPLY_VECTOR and wire.unpack_reply(REPLY_VECTOR) == slots
    assert wire.decode_any(REPLY_VECTOR) == {"ok": True, "params": slots}
    # what does not fit the layout goes as CBOR: a temporary memref, a field over 32 bits
    assert wire.pack_invoke(7, 1, 0x55, [b"nonce", ["o", 64], None, None]) is None
    assert wire.pack_invoke(7, 2**32, 0x55, [None] * 4) is None


@pytest.mark.parametrize(
    "body, why",
    [
        (INVOKE_VECTOR[:-1], "67 bytes"),
        (INVOKE_VECTOR + b"\0", "69 bytes"),
        (b"\x03" + INVOKE_VECTOR[1:], "tag"),
        (INVOKE_VECTOR[:1] + b"\x02" + INVOKE_VECTOR[2:], "an unknown flag"),
        (INVOKE_VECTOR[:3] + b"\x01" + INVOKE_VECTOR[4:], "reserved field"),
        (INVOKE_VECTOR[:16] + b"\x05" + INVOKE_VECTOR[17:], "slot kind 5"),
        (INVOKE_VECTOR[:64] + b"\x01" + INVOKE_VECTOR[65:], "a none slot with a field"),
        (INVOKE_VECTOR[:50] + b"\x01" + INVOKE_VECTOR[51:], "an output slot with a second field"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_malformed_binary_invoke_is_refused(body, why):
    with pytest.raises(wire.MalformedFrameError):
        wire.decode_any(body)


@pytest.mark.parametrize(
    "body",
    [
        REPLY_VECTOR[:-1],  # an output cut short
        REPLY_VECTOR + b"\0",  # a byte after the slots
        REPLY_VECTOR[:6] + b"\x05" + REPLY_VECTOR[7:],  # slot kind 5
        REPLY_VECTOR[:7] + b"\xff\xff\xff\xff" + REPLY_VECTOR[11:],  # a length past the end
        b"\x02\0\0\0"
        + b"\x04"
        + (C.MAX_OUTPUT + 1).to_bytes(4, "big")
        + bytes(C.MAX_OUTPUT + 1)
        + b"\0\0\0",
        b"\x02\0\0\0\0\0",  # two slots of four
    ],
    ids=["cut", "trailing", "kind", "past the end", "over MAX_OUTPUT", "two slots"],
)
def test_a_malformed_binary_reply_is_refused(body):
    with pytest.raises(wire.MalformedFrameError):
        wire.unpack_reply(body)


def test_classify_takes_the_light_path_with_the_labels_of_cbor(
    guard_world, tiny_corpus, monkeypatch
):
    """Against a real TEE daemon: a classify goes binary both ways, gives what the CBOR path
    gives, and a bad window in a binary invoke is refused as in CBOR."""
    from omgkit.kws.dataset import load_dataset

    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.select("testing")[:6])
    frames: list[bytes] = []
    g = guard_world.prepared("light", recorder=frames.append)
    g.initialize()
    frames.clear()
    light = g.classify_batch(x).labels
    labelled = [f for f in frames if b"labels" in f]  # the classify replies (not register_shm's)
    assert labelled and all(f[4] == wire.REPLY_TAG for f in labelled)  # every one binary
    monkeypatch.setattr(wire, "pack_invoke", lambda *a, **k: None)  # CBOR all the way
    frames.clear()
    assert g.classify_batch(x).labels == light
    labelled = [f for f in frames if b"labels" in f]
    assert labelled and all(0xA0 <= f[4] <= 0xBF for f in labelled)
    monkeypatch.undo()
    # a window past the end of its shared memory, sent binary: the core's check answers (CBOR)
    shm = g._window
    s = g.session
    bad = wire.pack_invoke(s.id, C.CMD_CLASSIFY, C.SIGNATURES[C.CMD_CLASSIFY],
                           [["v", C.SOURCE_BUFFER, 1], ["s", shm.id, shm.size - 10, C.CLIP_BYTES],
                            ["o", 64], None])  # fmt: skip
    with pytest.raises(BadParametersError, match="out of range"):
        g.ctx._call_body(bad)
    # the session goes on
    assert g.classify_batch(x[:1]).labels == light[:1]
    # traced, every request's stages come back from all three processes, however many
    from omgkit.tee import trace
    from omgkit.tee.client import hardware

    hardware(g.device_dir, "trace", on=True)
    trace.enable(True)
    try:
        for _ in range(300):  # the TA's marks alone are more items than a TA's frame may carry
            g.classify_batch(x[:1])
    finally:
        mine = trace.take()
        trace.enable(False)
        theirs = hardware(g.device_dir, "trace", on=False)["marks"]
    b = trace.breakdown(mine + [tuple(m) for m in theirs])
    assert b["requests"] == 300 and b["stages"]["model"]["median_us"] > 0
    g.close()


def test_a_binary_invoke_on_the_hardware_socket_is_refused(guard_world):
    dev = guard_world.device("light-hw")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(dev / wire.HW_SOCKET))
        wire.send_body(s, INVOKE_VECTOR)
        reply, _ = wire.recv(s)
    assert reply["ok"] is False and reply["code"] == BadParametersError.result_code


def test_descriptors_belong_to_their_own_frame():
    """A peer that sends two frames at once, descriptors with the second: the first frame
    gets none (a read-ahead buffer used to hand them to it)."""
    import os
    import struct

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    try:
        first, second = wire.frame({"op": "one"}), wire.frame({"op": "two"})
        a.sendall(first)
        a.sendmsg([second], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", r))])
        rx = wire.FdReceiver(b)
        assert rx.recv()[0] == {"op": "one"} and rx.take() == []
        assert rx.recv()[0] == {"op": "two"}
        fds = rx.take()
        assert len(fds) == 1
        os.close(fds[0])
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


def test_the_normal_world_cannot_set_the_trace_flag():
    flagged = INVOKE_VECTOR[:1] + bytes([wire.FLAG_TRACE]) + INVOKE_VECTOR[2:]
    assert wire.decode_any(flagged)["trace"] is True  # core to TA
    with pytest.raises(wire.MalformedFrameError):
        wire.decode_any(flagged, invoke_flags=0)  # the daemon reads the client's so


def test_the_core_passes_on_only_slots_the_request_had():
    """A TA's process is not trusted to return only what fits (a value over 32 bits would
    have failed the light path's encoder in the core and dropped the connection)."""
    from omgkit.tee.world import _checked_slot

    assert _checked_slot(64, b"labels") == b"labels" and _checked_slot(None, [1, 2]) == (1, 2)
    assert _checked_slot(None, None) is None
    for param, slot in ((None, b"bytes where no output was asked"), (None, [2**32, 0]), (None, [1]),
                        (64, "text"), (64, [True, 0]), (None, [-1, 0])):  # fmt: skip
        with pytest.raises(BadParametersError):
            _checked_slot(param, slot)
