"""The board-side agent, started over SSH exec from the board directory.

One-shot commands (JSON on stdout):

- ``state``: the current release and every release's manifest;
- ``link SRC DST``: hard-link a file of an earlier release into the one
  being uploaded (a deployment skips what the board already has);
- ``tee-up``: start the board's emulated TEE daemon if it is not running
  (a board with OP-TEE has its TEE already);
- ``commit RELEASE``: check every file of ``deploy/releases/RELEASE.partial``
  against its manifest (size and SHA-256), rename it into place, switch
  ``deploy/current`` atomically (a symlink replaced by ``rename``), and
  point the TEE's TA store and the normal-world package at it.

``serve``: a long-lived session over stdin/stdout, frames of a 4-byte
big-endian length and a CBOR map (docs/protocol.md): attest, provision,
initialize, mic_play, classify_mic, classify_batch, ping, close. It drives
the board's TEE through the TEE Client API exactly as a local app would.
Imports nothing heavy: no TensorFlow on a board.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from omg_ta import commands as C

from ..util import sha256_file

KEEP_RELEASES = 3
OPTEE_TA_DIR = "/data/ta"
"""Where an OP-TEE board's tee-supplicant finds TAs (its /lib/optee_armtz links here)."""


def _root() -> Path:
    return Path(os.environ.get("OMG_BOARD_ROOT") or os.getcwd())


def state() -> dict:
    rel = _root() / "deploy" / "releases"
    cur = _root() / "deploy" / "current"
    out = {"current": os.readlink(cur).split("/")[-1] if cur.is_symlink() else None, "releases": {}}
    if rel.is_dir():
        for d in sorted(rel.iterdir()):
            if d.is_dir() and not d.name.endswith(".partial") and (d / "manifest.json").is_file():
                out["releases"][d.name] = json.loads((d / "manifest.json").read_text())
    return out


def link(src: str, dst: str) -> dict:
    root = _root() / "deploy" / "releases"
    s, t = (root / src).resolve(), (root / dst).resolve()
    if root.resolve() not in s.parents or root.resolve() not in t.parents:
        raise SystemExit("link: paths must stay under deploy/releases")
    t.parent.mkdir(parents=True, exist_ok=True)
    t.unlink(missing_ok=True)
    os.link(s, t)
    return {"ok": True}


def _switch(link_path: Path, target: str) -> None:
    tmp = link_path.with_name(link_path.name + ".new")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link_path)  # rename(2) is atomic: readers see the old or the new link


def commit(release: str) -> dict:
    root = _root()
    rel = root / "deploy" / "releases"
    part, final = rel / f"{release}.partial", rel / release
    if not final.is_dir():
        man = json.loads((part / "manifest.json").read_text())
        bad = []
        for path, meta in man["files"].items():
            f = part / path
            if (
                not f.is_file()
                or f.stat().st_size != meta["size"]
                or sha256_file(f) != meta["sha256"]
            ):
                bad.append(path)
        if bad:
            return {"ok": False, "bad": bad}
        os.replace(part, final)
    _switch(root / "deploy" / "current", f"releases/{release}")
    if _optee_board():
        # OP-TEE's supplicant loads <uuid>.ta from its TA directory: a link through
        # deploy/current, so the TA switches with the release, in the same rename
        ta_dir = Path(os.environ.get("OMG_OPTEE_TA_DIR", OPTEE_TA_DIR))
        ta_link = ta_dir / f"{C.TA_UUID}.ta"
        target = str(root.resolve() / "deploy" / "current" / "ta" / f"{C.TA_UUID}.ta")
        if not ta_link.is_symlink() or os.readlink(ta_link) != target:
            ta_link.unlink(missing_ok=True)
            _switch(ta_link, target)
    else:
        ta_store = root / "device" / "ta"
        ta_store.mkdir(parents=True, exist_ok=True)
        ta_link = ta_store / str(C.TA_UUID)
        if ta_link.exists() and not ta_link.is_symlink():
            shutil.rmtree(ta_link)
        if not ta_link.is_symlink():
            _switch(ta_link, "../../deploy/current/ta")
    (root / "normal").mkdir(exist_ok=True)
    pkg = root / "normal" / "model.omgpkg"
    if not pkg.is_symlink():
        pkg.unlink(missing_ok=True)
        _switch(pkg, "../deploy/current/model.omgpkg")
    # keep the newest few releases (the current one always)
    releases = sorted((d for d in rel.iterdir() if d.is_dir() and not d.name.endswith(".partial")),
                      key=lambda d: d.stat().st_mtime, reverse=True)  # fmt: skip
    for d in releases[KEEP_RELEASES:]:
        if d.name != release:
            shutil.rmtree(d, ignore_errors=True)
    return {"ok": True, "current": release}


# -- the session ---------------------------------------------------------------


def _read_frame(stream) -> dict | None:
    """The next request (the framing of omgkit.tee.wire), or None at end of input."""
    from ..tee.wire import WireError, read_frame

    def read_exact(n: int) -> bytes:
        data = stream.read(n)
        if len(data) < n:
            raise WireError("end of input")
        return data

    try:
        return read_frame(read_exact)[0]
    except WireError:
        return None


def _write_frame(stream, obj: dict) -> None:
    from ..tee.wire import frame

    stream.write(frame(obj))
    stream.flush()


def serve() -> None:
    import numpy as np

    from omg_ta.errors import BadParametersError

    from ..guard.host import GuardedModel
    from ..tee.client import mic_feed
    from ..tee.wire import error_reply

    def clips(blob: bytes) -> np.ndarray:
        if not isinstance(blob, bytes) or len(blob) % C.CLIP_BYTES:
            raise BadParametersError(f"audio must be whole clips of {C.CLIP_BYTES} bytes")
        return np.frombuffer(blob, "<i2").reshape(-1, C.CLIP_SAMPLES)

    root = _root()
    g = GuardedModel(root / "device", root / "normal")
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        while True:
            req = _read_frame(inp)
            if req is None:
                return
            op = req.get("op")
            try:
                if op == "ping":
                    res = {}
                elif op == "info":
                    res = {k: v for k, v in device_info().items() if k != "ok"}
                    res["pid"] = (
                        os.getpid()
                    )  # this session's process (what the leak scan leaves out)
                elif op == "attest":
                    res = {"token": g.attest(req["nonce"])}
                elif op == "provision":
                    g.provision(req["license"])
                    res = {}
                elif op == "initialize":
                    res = {"info": g.initialize()}
                elif op == "mic_play":
                    mic_feed(g.device_dir, clips(req["audio"]))
                    res = {}
                elif op == "classify_mic":
                    r = g.classify_mic(int(req["n"]))
                    res = {"labels": r.labels, "scores": r.scores, "seconds": r.seconds}
                elif op == "classify_batch":
                    r = g.classify_batch(clips(req["audio"]))
                    res = {"labels": r.labels, "scores": r.scores, "seconds": r.seconds}
                elif op == "close":
                    _write_frame(out, {"ok": True})
                    return
                else:
                    raise BadParametersError(f"unknown op {op!r}")
                _write_frame(out, {"ok": True, **res})
            except Exception as e:  # one error reply (code, message); keep serving
                _write_frame(out, error_reply(e, "agent"))
    finally:
        g.close()


def _optee_board() -> bool:
    """A board whose TEE is OP-TEE (its device directory holds no emulated TEE)."""
    from ..tee import optee

    dev = _root() / "device"
    return not (dev / "secure").is_dir() and optee.available()


def device_info() -> dict:
    """What the TEE says of this device: its attestation key, its id and its TEE's version.

    On OP-TEE, the OMG pseudo-TA answers (the key is derived from the
    hardware unique key inside the TEE core and never leaves it); this is
    what the manufacturer certifies when the board is made."""
    if not _optee_board():
        from ..tee.device import TEE_VERSION, Device

        d = Device(_root() / "device")
        return {"ok": True, "device_id": d.device_id.hex(), "tee": TEE_VERSION, "mic": True}
    from ..tee.optee import OpteeContext, pta_device_info

    with OpteeContext() as ctx:
        pub, device_id, version = pta_device_info(ctx)
    return {"ok": True, "public_key": pub.hex(), "device_id": device_id.hex(), "tee": version,
            "mic": False}  # fmt: skip


def tee_up(timeout: float = 30.0) -> dict:
    """Start the board's (emulated) TEE daemon if it is not running; OP-TEE is always up."""
    import socket as _socket
    import subprocess
    import time

    if _optee_board():
        return {"ok": True, "started": False}
    dev = _root() / "device"
    sock = dev / "tee.sock"

    def alive() -> bool:
        try:
            with _socket.socket(_socket.AF_UNIX) as s:
                s.connect(str(sock))
            return True
        except OSError:
            return False

    if alive():
        return {"ok": True, "started": False}
    log = open(dev / "tee.log", "ab")
    subprocess.Popen([sys.executable, "-m", "omgkit.tee", "--device", str(dev)], stdin=subprocess.DEVNULL,
                     stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive():
            return {"ok": True, "started": True}
        time.sleep(0.05)
    return {"ok": False, "message": f"TEE daemon did not start; see {dev / 'tee.log'}"}


def main(argv: list[str] | None = None) -> int:
    a = list(sys.argv[1:] if argv is None else argv)
    if not a:
        print(
            "usage: python -m omgkit.board.agent state|link SRC DST|commit RELEASE|serve|bench",
            file=sys.stderr,
        )
        return 2
    cmd = a[0]
    if cmd == "serve":
        serve()
        return 0
    if cmd == "bench":  # one request on stdin (it holds a plaintext model: never on disk)
        from omg_ta.errors import BadParametersError

        from ..tee.wire import error_reply
        from .board_bench import run

        req = _read_frame(sys.stdin.buffer)
        try:
            if req is None:
                raise BadParametersError("bench takes one request on stdin")
            res = {"ok": True, "result": run(**req, root=str(_root()))}
        except Exception as e:
            res = error_reply(e, "agent")
        _write_frame(sys.stdout.buffer, res)
        return 0
    commands = {"state": lambda: state(), "link": lambda: link(a[1], a[2]), "commit": lambda: commit(a[1]),
                "tee-up": lambda: tee_up(), "device-info": lambda: device_info()}  # fmt: skip
    if cmd not in commands:
        print(f"unknown agent command {cmd!r}", file=sys.stderr)
        return 2
    result = commands[cmd]()
    print(json.dumps(result))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
