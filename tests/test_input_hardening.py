"""Hostile input at the two doors a user or a network peer can push bytes through.

The vendor service (real ``VendorServer`` on loopback, raw sockets sending
crafted requests) and WAV input (crafted files through the real readers and
the CLI). Each test states the limit it holds the code to.
"""

from __future__ import annotations

import secrets
import socket
import struct
import threading
import time
import tracemalloc
import wave

import cbor2
import numpy as np
import pytest

from omg_ta import commands as C
from omg_ta.errors import BadParametersError
from omgkit.errors import AudioFormatError, OmgWarning
from omgkit.guard import vendor as V
from omgkit.guard.vendor import Vendor, VendorClient, VendorServer, VendorUnreachableError

# -- the vendor service ------------------------------------------------------------------------


@pytest.fixture
def vendor(tmp_path):
    return Vendor.create(tmp_path / "vendor")


def _addr(srv: VendorServer) -> tuple[str, int]:
    return srv._httpd.server_address[:2]


def _recv_all(s: socket.socket) -> bytes:
    """Everything until the server closes; a socket timeout (the server hangs) fails the test."""
    out = bytearray()
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return bytes(out)
        out += chunk
    return bytes(out)


def _exchange(srv: VendorServer, raw: bytes, *, timeout: float = 5.0) -> bytes:
    with socket.create_connection(_addr(srv), timeout=timeout) as s:
        s.sendall(raw)
        return _recv_all(s)


def _parse(resp: bytes) -> tuple[int, dict]:
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), resp[:200]
    status = int(head.split()[1])
    headers = dict(
        line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line
    )
    assert headers.get("Content-Type") == "application/cbor", head
    assert int(headers["Content-Length"]) == len(body)
    return status, cbor2.loads(body)


def _is_error_reply(obj, code: int = C.RESULT_BAD_PARAMETERS) -> bool:
    """The one error shape every failure has: ``{ok: false, code, message}``."""
    return (
        isinstance(obj, dict)
        and obj.get("ok") is False
        and obj.get("code") == code
        and isinstance(obj.get("message"), str)
        and obj["message"] != ""
    )


def _post(path: str, body: bytes, *headers: str) -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode() + body


def test_body_limit_covers_the_largest_real_request(tmp_path):
    """A license request with the largest token a device of ours makes (64-byte nonce, both KEM
    keys, the longest certificate chain the vendor accepts: four certificates) fits the limit
    sixteen times over."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from omgkit.tee.pki import Manufacturer
    from omgkit.tee.token import Claims, make_token

    raw = (ser.Encoding.Raw, ser.PublicFormat.Raw)
    m = Manufacturer.create(tmp_path / "mfr")
    dk, did = Ed25519PrivateKey.generate(), secrets.token_bytes(16)
    cert = m.certify(dk.public_key(), did)
    xk = x25519.X25519PrivateKey.generate().public_key().public_bytes(*raw)
    mk = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes(*raw)
    claims = Claims(secrets.token_bytes(64), did, 2**40, bytes(32),
                    {"X25519": xk, "MLKEM768-X25519": [mk, xk]}, "x" * 64, bytes(16))  # fmt: skip
    token = make_token(dk, [cert, m.root_der, m.root_der, m.root_der], claims)
    req = cbor2.dumps({"token": token, "model_id": "m" * 128, "model_version": 2**63 - 1,
                       "kem": "MLKEM768-X25519"})  # fmt: skip
    assert 2_000 < len(req) and 16 * len(req) < V.MAX_BODY <= 1 << 20


@pytest.mark.parametrize(
    "value",
    ["-1", "abc", "", "1e3", "+12", " 0x10", "12 13", "-0", "9" * 40],
    ids=["negative", "word", "empty", "float", "plus", "hex", "two", "minus-zero", "40-digits"],
)
def test_bad_content_length_is_one_error_reply_at_once(vendor, value, capfd):
    """Not a plain byte count: 400 (or 413 for a number too large) with the error shape, at once:
    nothing is read to EOF (``rfile.read(-1)``), no thread dies with a traceback."""
    with VendorServer(vendor) as srv:
        t0 = time.monotonic()
        # the connection stays open after the body: a server reading to EOF never answers
        status, obj = _parse(
            _exchange(srv, _post("/v1/nonce", b"\xa0", f"Content-Length: {value}"))
        )
        assert time.monotonic() - t0 < 2
        assert status == (413 if value == "9" * 40 else 400)
        assert _is_error_reply(obj) and "Content-Length" in obj["message"]
        assert VendorClient(srv.url, timeout=2).new_nonce()  # the service lives on
    err = capfd.readouterr().err
    assert "Traceback" not in err and "internal error" not in err


def test_conflicting_lengths_and_chunked_bodies_are_refused(vendor):
    with VendorServer(vendor) as srv:
        two = _post("/v1/nonce", b"\xa0", "Content-Length: 1", "Content-Length: 2")
        status, obj = _parse(_exchange(srv, two))
        assert status == 400 and _is_error_reply(obj) and "Content-Length" in obj["message"]
        chunked = _post("/v1/nonce", b"1\r\n\xa0\r\n0\r\n\r\n", "Transfer-Encoding: chunked")
        status, obj = _parse(_exchange(srv, chunked))
        assert status == 411 and _is_error_reply(obj) and "Content-Length" in obj["message"]


def test_too_large_claim_is_refused_without_reading(vendor):
    """A claimed 200 MB: 413 with the error shape and the limit in the message, without waiting
    for (or storing) a byte of the body."""
    with VendorServer(vendor) as srv:
        t0 = time.monotonic()
        status, obj = _parse(_exchange(srv, _post("/v1/license", b"", "Content-Length: 209715200")))
        assert time.monotonic() - t0 < 2
        assert status == 413 and _is_error_reply(obj) and str(V.MAX_BODY) in obj["message"]


@pytest.mark.parametrize(("claim", "status"), [("-1", 400), ("209715200", 413)])
def test_memory_does_not_grow_with_what_a_client_sends(vendor, claim, status):
    """The client claims a length it may not, then really streams 32 MB: the server answers at
    once and discards the rest with a fixed buffer; its allocations stay under 2 MB."""
    sent = 32 << 20
    chunk = bytes(65536)
    with VendorServer(vendor) as srv:
        assert VendorClient(srv.url, timeout=2).new_nonce()  # lazy imports done before measuring
        tracemalloc.start()
        try:
            s = socket.create_connection(_addr(srv), timeout=10)
            s.sendall(_post("/v1/nonce", b"", f"Content-Length: {claim}"))

            def stream():
                try:
                    for _ in range(sent // len(chunk)):
                        s.sendall(chunk)
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            th = threading.Thread(target=stream)
            th.start()
            resp = _recv_all(s)
            th.join(10)
            s.close()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert not th.is_alive()
        got, obj = _parse(resp)
        assert got == status and _is_error_reply(obj)
        assert peak < 2 << 20, f"{peak / 1e6:.1f} MB allocated while a client sent {sent >> 20} MB"
        assert VendorClient(srv.url, timeout=2).new_nonce()


def test_idle_and_half_sent_requests_are_dropped_and_do_not_block_others(vendor):
    """With a 1 s read timeout: an idle connection, half-sent headers, a half-sent body and
    headers trickled a byte every 0.1 s are all closed within about the timeout, while a real
    client is served before any of them is dropped (one thread per connection)."""
    with VendorServer(vendor, timeout=1.0) as srv:
        conns = {name: socket.create_connection(_addr(srv), timeout=5) for name in
                 ("idle", "half headers", "half body", "trickle")}  # fmt: skip
        conns["half headers"].sendall(b"POST /v1/nonce HTTP/1.1\r\nContent-Le")
        conns["half body"].sendall(_post("/v1/nonce", b"\xa0" * 10, "Content-Length: 100"))
        t0 = time.monotonic()
        assert VendorClient(srv.url, timeout=2).new_nonce()
        assert time.monotonic() - t0 < 0.8

        closed_at: dict[str, float] = {}

        def trickle(s: socket.socket) -> None:
            s.settimeout(0.1)
            s.sendall(b"POST /v1/nonce HTTP/1.1\r\n")
            while time.monotonic() - t0 < 5:
                try:
                    if s.recv(4096) == b"":
                        break
                except TimeoutError:
                    pass
                except OSError:
                    break
                try:
                    s.send(b"X")
                except OSError:
                    break
            closed_at["trickle"] = time.monotonic() - t0

        th = threading.Thread(target=trickle, args=(conns.pop("trickle"),))
        th.start()
        for name, s in conns.items():
            data = _recv_all(s)
            closed_at[name] = time.monotonic() - t0
            if data:  # only a started request gets a reply: 408 with the error shape
                status, obj = _parse(data)
                assert status == 408 and _is_error_reply(obj), name
            s.close()
        th.join(6)
        assert all(0.7 < t < 3.0 for t in closed_at.values()), closed_at
        assert len(closed_at) == 4


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/v1/nonce", b"\xff\xfe\xfd", "not CBOR"),
        ("/v1/nonce", b"\x9f\x01", "not CBOR"),  # truncated
        ("/v1/nonce", b"\x81" * 5000 + b"\x00", "not CBOR"),  # nested past any sane depth
        ("/v1/nonce", b"\xa0\x00", "not CBOR"),  # trailing bytes
        ("/v1/nonce", cbor2.dumps([1, 2]), "map"),
        ("/v1/license", cbor2.dumps("token"), "map"),
        ("/v1/license", cbor2.dumps({}), "token"),
        ("/v1/license", cbor2.dumps({"token": 5, "model_id": "kws", "model_version": 1}), "token"),
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": 5, "model_version": 1}),
            "model_id",
        ),
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "", "model_version": 1}),
            "model_id",
        ),
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "k" * 129, "model_version": 1}),
            "model_id",
        ),  # fmt: skip
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "kws", "model_version": "1"}),
            "model_version",
        ),  # fmt: skip
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "kws", "model_version": True}),
            "model_version",
        ),  # fmt: skip
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "kws", "model_version": 1.5}),
            "model_version",
        ),  # fmt: skip
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "kws", "model_version": 0}),
            "model_version",
        ),  # fmt: skip
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "kws", "model_version": 2**64}),
            "CBOR tag 2",  # a bignum: refused with every tag but COSE's before decoding
        ),  # fmt: skip
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "kws", "model_version": 2**64 - 1}),
            "model_version",
        ),  # fmt: skip
        (
            "/v1/license",
            cbor2.dumps({"token": b"t", "model_id": "kws", "model_version": 1, "kem": 3}),
            "kem",
        ),  # fmt: skip
        ("/v1/nothing", cbor2.dumps({}), "no such endpoint"),
    ],
)
def test_malformed_bodies_get_one_error_reply(vendor, path, body, says, capfd):
    with VendorServer(vendor) as srv:
        status, obj = _parse(_exchange(srv, _post(path, body, f"Content-Length: {len(body)}")))
        assert status == (404 if path == "/v1/nothing" else 400)
        assert _is_error_reply(obj) and says in obj["message"], obj
        assert VendorClient(srv.url, timeout=2).new_nonce()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "internal error" not in err


def test_many_small_items_are_refused_before_decoding(vendor):
    """A 60 kB body of empty maps would decode into 60,000 dicts (~4 MB): refused by its item
    count (a request has 9; at most 64) before cbor2 makes any object."""
    body = b"\x9f" + b"\xa0" * 60000 + b"\xff"
    with VendorServer(vendor) as srv:
        assert VendorClient(srv.url, timeout=2).new_nonce()
        tracemalloc.start()
        try:
            resp = _exchange(srv, _post("/v1/nonce", body, f"Content-Length: {len(body)}"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    status, obj = _parse(resp)
    assert status == 400 and _is_error_reply(obj) and "more than 64 items" in obj["message"]
    assert peak < 1 << 20, f"{peak / 1e6:.1f} MB"


@pytest.mark.parametrize(
    "raw",
    [b"HELLO\r\n\r\n", b"GET /v1/nonce HTTP/1.1\r\n\r\n", b"POST /v1/nonce HTTP/9.9\r\n\r\n"],
    ids=["garbage", "get", "version"],
)
def test_protocol_errors_have_the_same_shape(vendor, raw):
    """Errors the HTTP layer finds itself (bad request line, method, version) are CBOR too."""
    with VendorServer(vendor) as srv:
        status, obj = _parse(_exchange(srv, raw))
        assert status in (400, 501, 505) and _is_error_reply(obj)


def test_a_malformed_license_request_does_not_spend_the_nonce(vendor, tmp_path):
    """Field types are checked before the token: a request with a bad field is refused without
    consuming its single-use nonce, so the well-formed retry gets past the nonce."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from omgkit.errors import ConfigError
    from omgkit.tee.pki import Manufacturer
    from omgkit.tee.token import Claims, make_token

    m = Manufacturer.create(tmp_path / "mfr")
    vendor.trust_manufacturer(m.root_der)
    vendor.approve(bytes(32))
    dk, did = Ed25519PrivateKey.generate(), secrets.token_bytes(16)
    xk = x25519.X25519PrivateKey.generate().public_key()
    xk = xk.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    with VendorServer(vendor) as srv:
        client = VendorClient(srv.url, timeout=5)
        claims = Claims(client.new_nonce(), did, int(time.time()), bytes(32), {"X25519": xk},
                        "test", bytes(16))  # fmt: skip
        token = make_token(dk, [m.certify(dk.public_key(), did)], claims)
        body = cbor2.dumps({"token": token, "model_id": "kws", "model_version": "1"})
        status, obj = _parse(
            _exchange(srv, _post("/v1/license", body, f"Content-Length: {len(body)}"))
        )
        assert status == 400 and _is_error_reply(obj) and "model_version" in obj["message"]
        # the nonce is still unused: the retry fails only because no model is sealed
        with pytest.raises(ConfigError, match="no model 'kws' version 1"):
            client.issue_license(token, model_id="kws", model_version=1)


def test_client_hears_the_limit_not_a_reset(vendor):
    """A request over the limit, sent whole by the real client: it reads the 413's error reply
    (the server drains what it will not read before closing) and raises it."""
    with VendorServer(vendor) as srv:
        with pytest.raises(BadParametersError, match=f"larger than .*{V.MAX_BODY}"):
            VendorClient(srv.url, timeout=5).issue_license(
                bytes(4 << 20), model_id="kws", model_version=1
            )


def _fake_service(response: bytes, sent: list[int]) -> tuple[socket.socket, threading.Thread]:
    """A one-shot HTTP peer on loopback that answers ``response`` (then streams zeros while
    ``sent[0]`` says so) to whatever it is asked."""
    ls = socket.create_server(("127.0.0.1", 0))

    def serve():
        c, _ = ls.accept()
        with c:
            c.settimeout(5)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += c.recv(65536)
            try:
                c.sendall(response)
                zeros = bytes(65536)
                while sent[0] > 0:
                    c.sendall(zeros)
                    sent[0] -= len(zeros)
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return ls, th


def _http(status: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return f"HTTP/1.0 {status} X\r\nContent-Length: {n}\r\n\r\n".encode() + body


@pytest.mark.parametrize(
    ("response", "stream"),
    [
        (_http(200, b"<html>not the vendor</html>"), 0),
        (_http(200, cbor2.dumps([1, 2])), 0),
        (_http(200, cbor2.dumps({"nonce": 5})), 0),
        (_http(200, b"\xa0", length=32 << 20), 32 << 20),  # a reply that does not end
        (_http(500, b"\xa0", length=32 << 20), 32 << 20),
    ],
    ids=["html", "list", "wrong-type", "huge", "huge-error"],
)
def test_client_refuses_replies_that_are_not_the_vendors(response, stream):
    """What is not a vendor reply is VendorUnreachableError (an OmgError: `error: ...`, not a
    CBOR traceback), and the client reads at most its limit of a reply."""
    sent = [stream]
    ls, th = _fake_service(response, sent)
    tracemalloc.start()
    try:
        with pytest.raises(VendorUnreachableError, match="vendor service"):
            VendorClient(f"http://127.0.0.1:{ls.getsockname()[1]}", timeout=5).new_nonce()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        ls.close()
    th.join(10)
    assert peak < 4 << 20, f"{peak / 1e6:.1f} MB for a reply"


# -- WAV input -----------------------------------------------------------------------------------


def _riff(rate: int, data: bytes = b"", *, channels: int = 1, width: int = 2, tag: int = 1,
          align: int | None = None, bits: int | None = None, data_size: int | None = None,
          fmt_extra: bytes = b"", chunks: bytes = b"") -> bytes:  # fmt: skip
    """A WAV with exactly the header fields given (nothing checked here)."""
    align = channels * width if align is None else align
    bits = 8 * width if bits is None else bits
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    fmt += fmt_extra
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + chunks
    body += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", (len(body)) & 0xFFFFFFFF) + body


def _tone(n: int, rate: int, amp: float = 8000) -> np.ndarray:
    t = np.arange(n) / rate
    return (np.sin(2 * np.pi * 440 * t) * amp).astype("<i2")


@pytest.fixture(autouse=True, scope="module")
def _imports_done():
    """Modules imported on first use are imported before any allocation is measured."""
    from omgkit.kws.audio import resample

    resample(np.zeros(100, np.float32), 44100)
    resample(np.zeros(100, np.float32), 11025)


def _measure(fn, *a, **kw):
    """(result or exception, seconds, tracemalloc peak bytes)."""
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        r = fn(*a, **kw)
    except Exception as e:  # returned, to be asserted on
        r = e
    finally:
        dt = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return r, dt, peak


@pytest.mark.parametrize(
    ("rate", "says"),
    [
        (4_000_001, "too high"),
        (4_000_000, "too high"),
        (0xFFFFFFFF, "too high"),
        (192_001, "too high"),
        (0, "too low"),
        (3_999, "too low"),
    ],  # fmt: skip
)
def test_absurd_sample_rate_is_refused_before_any_work(tmp_path, rate, says):
    """A 32 kB WAV claiming 4 MHz took ~20 s and 3.9 GB (resampling with a 80-million-tap
    filter); 4.29 GHz a numpy MemoryError. Now: AudioFormatError from the header, at once."""
    from omgkit.kws.audio import read_clip, read_pcm

    p = tmp_path / "fast.wav"
    p.write_bytes(_riff(rate, bytes(32000)))
    for fn in (read_clip, read_pcm):
        e, dt, peak = _measure(fn, p, **({"trim": True} if fn is read_clip else {}))
        assert isinstance(e, AudioFormatError), e
        assert f"sample rate {rate} Hz is {says}" in str(e) and "16000" in str(e)
        assert dt < 1 and peak < 64 << 10


def test_header_only_and_empty_wavs_are_refused(tmp_path):
    """No frames is no clip (it used to read as a second of silence)."""
    from omgkit.kws.audio import read_clip

    p = tmp_path / "empty.wav"
    p.write_bytes(_riff(16000))
    with pytest.raises(AudioFormatError, match="no audio"):
        read_clip(p)
    with wave.open(str(p), "wb") as w:  # the stdlib's own empty WAV
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    with pytest.raises(AudioFormatError, match="no audio"):
        read_clip(p)
    p.write_bytes(_riff(16000, b"\x01"))  # less than one frame
    with pytest.raises(AudioFormatError, match="no audio"):
        read_clip(p)
    p.write_bytes(_riff(16000, bytes(100))[:36])  # no data chunk at all
    with pytest.raises(AudioFormatError, match="no data chunk"):
        read_clip(p)


@pytest.mark.parametrize("claim", [1 << 30, 0xFFFFFFFF, 32_002])
def test_data_size_beyond_the_file_is_refused_without_allocating_it(tmp_path, claim):
    from omgkit.kws.audio import read_clip

    p = tmp_path / "trunc.wav"
    p.write_bytes(_riff(16000, bytes(32000), data_size=claim))
    e, dt, peak = _measure(read_clip, p, trim=True)
    assert isinstance(e, AudioFormatError) and "truncated" in str(e), e
    assert f"{claim} bytes" in str(e)
    assert peak < 64 << 10


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"channels": 0}, "channels"),
        ({"channels": 9}, "9 channels"),
        ({"channels": 65535, "align": 2}, "65535 channels"),
        ({"width": 5}, "sample width"),
        ({"width": 8}, "sample width"),
        ({"bits": 0}, "sample width"),
        ({"align": 3}, "block align"),
        ({"tag": 3}, "not integer PCM"),  # IEEE float
        ({"tag": 0x55}, "not integer PCM"),  # MP3 in a RIFF
        (
            {"tag": 0xFFFE, "fmt_extra": struct.pack("<HHI", 22, 16, 3) + b"\x03\x00" + bytes(14)},
            "not integer PCM",
        ),  # fmt: skip
    ],
)
def test_bad_header_fields_are_named(tmp_path, fields, says):
    from omgkit.kws.audio import read_clip

    p = tmp_path / "bad.wav"
    p.write_bytes(_riff(16000, bytes(3600), **fields))
    with pytest.raises(AudioFormatError, match=says):
        read_clip(p)


def test_extensible_pcm_and_odd_chunks_read(tmp_path):
    """WAVE_FORMAT_EXTENSIBLE with the PCM sub-format (what many tools write for 24-bit or
    multichannel audio) and chunks before the audio read like plain PCM."""
    from omgkit.kws.audio import read_clip

    x = _tone(16000, 16000)
    ext = struct.pack("<HHI", 22, 16, 4) + b"\x01\x00" + bytes(14)
    p = tmp_path / "ext.wav"
    p.write_bytes(_riff(16000, x.tobytes(), tag=0xFFFE, fmt_extra=ext,
                        chunks=b"LIST" + struct.pack("<I", 5) + b"abcde\x00"))  # fmt: skip
    assert np.array_equal(read_clip(p), x)


def _old_read_pcm(p):
    """The reader as it was before the header checks (stdlib wave), for valid files."""
    with wave.open(str(p), "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if width == 1:
        a = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        a = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        v = (
            b[:, 0].astype(np.int32)
            | (b[:, 1].astype(np.int32) << 8)
            | (b[:, 2].astype(np.int32) << 16)
        )
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        a = v.astype(np.float32) / float(1 << 23)
    else:
        a = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    return a.reshape(-1, ch).T.copy(), rate


def _noise_wav(p, rate: int, seconds: float, channels: int, width: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds) * channels * width
    p.write_bytes(_riff(rate, rng.integers(0, 256, n, dtype=np.uint8).tobytes(),
                        channels=channels, width=width))  # fmt: skip
    return p.stat().st_size


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2, 8])
def test_read_pcm_memory_is_a_small_multiple_of_the_file(tmp_path, width, channels):
    """``read_pcm``'s peak allocation is at most 5 × the file (8-bit: the bytes plus float32
    samples) plus 64 KiB, and its samples are exactly the old reader's."""
    from omgkit.kws.audio import read_pcm

    p = tmp_path / "x.wav"
    size = _noise_wav(p, 48000, 0.5, channels, width)
    (a, rate), dt, peak = _measure(read_pcm, p)
    ref, ref_rate = _old_read_pcm(p)
    assert rate == ref_rate == 48000 and a.dtype == np.float32 and np.array_equal(a, ref)
    assert peak <= 5 * size + (64 << 10), f"{peak / size:.2f} x the file"


@pytest.mark.parametrize(
    ("rate", "channels", "width", "seconds", "bound"),
    [
        (8000, 1, 1, 20, 1),
        (11025, 2, 2, 20, 2),
        (16000, 2, 2, 20, 2),
        (22050, 2, 2, 20, 2),
        (44100, 2, 2, 20, 2),
        (48000, 2, 2, 20, 2),
        (96000, 2, 3, 10, 4),
        (191_999, 2, 2, 20, 4),
        (192_000, 8, 4, 3, 16),
    ],  # fmt: skip
)
def test_read_clip_memory_is_bounded_for_any_length(tmp_path, rate, channels, width, seconds,
                                                    bound, recwarn):  # fmt: skip
    """``read_clip(trim=True)`` reads only the first second (and the resampling filter's reach)
    of a long file: its peak stays under ``bound`` MB (it grew with the file: 19 MB for 20 s at
    48 kHz stereo), and the clip is the same as resampling the whole file and keeping its first
    second."""
    from omgkit.kws.audio import CLIP_SAMPLES, read_clip, resample, to_int16

    p = tmp_path / "long.wav"
    size = _noise_wav(p, rate, seconds, channels, width, seed=rate)
    x, dt, peak = _measure(read_clip, p, trim=True)
    assert isinstance(x, np.ndarray) and x.shape == (CLIP_SAMPLES,), x
    assert peak < bound << 20, f"{peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
    a, r = _old_read_pcm(p)
    ref = to_int16(resample(a.mean(axis=0), r)[:CLIP_SAMPLES])
    assert np.array_equal(x, ref)


@pytest.mark.parametrize("rate", [191_999, 44_101, 16_001, 4_001])
def test_awkward_rates_resample_cheaply_and_keep_the_pitch(tmp_path, rate):
    """A rate whose ratio to 16 kHz reduces to no small fraction (191,999/16,000) used to build
    a filter of 20 × max(up, down) taps: 229 MB and seconds for a 1 s clip. The ratio is now
    approximated by one with terms ≤ 1000 (pitch off by < 0.1 %): a few MB, a fraction of a
    second, and a 440 Hz tone stays at 440 Hz."""
    from omgkit.kws.audio import read_clip

    p = tmp_path / "odd.wav"
    p.write_bytes(_riff(rate, _tone(rate, rate).tobytes()))
    with pytest.warns(OmgWarning, match=f"resampled from {rate} Hz"):
        x, dt, peak = _measure(read_clip, p)
    assert isinstance(x, np.ndarray), x
    assert dt < 1.5 and peak < 8 << 20, (dt, peak)
    spec = np.abs(np.fft.rfft(x.astype(np.float32)))
    assert abs(int(np.argmax(spec)) - 440) <= 1


def test_long_clip_is_refused_from_its_header(tmp_path):
    """Without trim, a clip over a second is refused before its audio is read."""
    from omgkit.kws.audio import read_clip

    p = tmp_path / "long.wav"
    size = _noise_wav(p, 44100, 30, 2, 2)
    e, dt, peak = _measure(read_clip, p)
    assert isinstance(e, AudioFormatError) and "clip is 30.000 s" in str(e)
    assert peak < size / 20


def test_every_reader_goes_through_the_checks(tmp_path, capsys):
    """The noise loader and `omg run` refuse a crafted WAV with the header's problem; the CLI
    says `error: ...` (exit 2) before it touches the board."""
    from omgkit.cli import main
    from omgkit.kws.dataset import load_noise

    bad = tmp_path / "bad.wav"
    bad.write_bytes(_riff(0xFFFFFFFF, bytes(32000)))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(_riff(16000))
    for p, says in ((bad, "sample rate 4294967295 Hz is too high"), (empty, "no audio")):
        with pytest.raises(AudioFormatError, match=says):
            load_noise(p)
        assert main(["run", "--board", "emu://no-such-board", str(p)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and str(p) in err
