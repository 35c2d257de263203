"""The emulated board: an asyncssh server on 127.0.0.1 over a board directory, plus its TEE.

``omg board create NAME`` makes ``$OMG_HOME/boards/NAME/``:

- ``board.json`` (port, user, python, runtime), ``ssh_host_key``, ``authorized_keys``
  (the workbench's key) — and pins the host key in the workbench's
  ``known_hosts``;
- ``root/``: the board's filesystem as the workbench sees it: ``device/``
  (the TEE's device state, with a device key certified by the emulated
  manufacturer), ``deploy/`` (releases), ``normal/`` (normal-world storage).

``omg board create NAME --runtime tflite-runtime`` gives the board a Python
environment of its own, ``venv/``, made with no index from the wheelhouse
of that runtime (``omgkit.board.wheelhouse``; built once, online, and kept
in the checkout's ``.cache/wheelhouses/``): tflite-runtime 2.14 and the numpy 1 it
needs. The board's agent and its TEE (and so the TA) run in it; the code
is this checkout's, as on every emulated board (a ``.pth`` file). Other
boards run in the workbench's environment (``litert``: ai-edge-litert,
tflite-micro and the C core).

``omg board up NAME`` starts a server process: SSH exec (commands run from
``root/`` with a known environment) and SFTP chrooted to ``root/``, and the
board's TEE daemon. Exec is not a jail — it runs as the emulator's user —
but SFTP cannot leave ``root/``. Several boards can run at once.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..util import atomic_write_text, write_secret
from . import home as _home
from .wheelhouse import (
    DEFAULT_BOARD_RUNTIME,
    REPO,
    REQUIREMENTS,
    build_wheelhouse,
    install_command,
    requirements_file,
)


def board_dir(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"bad board name {name!r}")
    return _home.boards_dir() / name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manufacturer():
    from ..tee import Manufacturer

    p = _home.home() / "manufacturer"
    return Manufacturer(p) if (p / "root_cert.der").is_file() else Manufacturer.create(p)


def create(name: str, *, port: int | None = None, runtime: str = DEFAULT_BOARD_RUNTIME,
           say=print) -> Path:  # fmt: skip
    """Make the board (see the module docstring); a failure leaves no half-made board."""
    d = board_dir(name)
    if (d / "board.json").exists():
        raise ConfigError(f"board {name!r} exists already ({d}); `omg board up {name}` starts it")
    requirements_file(runtime)  # a clear error for an unknown runtime, before anything is made
    try:
        python = (
            sys.executable if runtime == DEFAULT_BOARD_RUNTIME else _environment(d, runtime, say)
        )
        return _create(name, d, port, python, runtime)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise


WHEELHOUSES = REPO / ".cache" / "wheelhouses"
"""Where emulated boards' wheelhouses are kept, one per runtime (made once, then offline)."""


def wheelhouse(runtime: str, say=print) -> Path:
    """The kept wheelhouse of ``runtime`` (``WHEELHOUSES``): downloaded once, again when its pins change."""
    wh = WHEELHOUSES / runtime
    req = requirements_file(runtime).read_bytes()
    if not (wh / REQUIREMENTS).is_file() or (wh / REQUIREMENTS).read_bytes() != req:
        say(f"building the {runtime} wheelhouse in {wh} (pip download; once)")
        shutil.rmtree(wh, ignore_errors=True)
        build_wheelhouse(wh, runtime=runtime, omgkit_wheel=False)
    return wh


def _environment(d: Path, runtime: str, say) -> str:
    """The board's own Python environment for ``runtime``, from its wheelhouse, no index."""
    wh = wheelhouse(runtime, say)
    venv = d / "venv"
    say(f"making the board's environment in {venv} from {wh} (no index)")
    d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(install_command(sys.executable, str(venv), str(wh), omgkit=False), shell=True,
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        raise ConfigError(
            f"the board's {runtime} environment could not be made: {r.stderr.strip()[-800:]}"
        )
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # this checkout's code, like every emulated board (the wheelhouse's omgkit wheel is for SSH boards)
    Path(site, "omgkit-checkout.pth").write_text(f"{REPO}\n{REPO / 'ta'}\n")
    return str(py)


def _create(name: str, d: Path, port: int | None, python: str, runtime: str) -> Path:
    import asyncssh

    from ..tee import Device

    root = d / "root"
    for sub in ("deploy/releases", "normal"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    write_secret(d / "ssh_host_key", key.export_private_key())
    client_pub = Path(str(_home.client_key()) + ".pub").read_text()
    atomic_write_text(d / "authorized_keys", client_pub)
    Device.create(root / "device", manufacturer(), [_home.ta_signing_key().public_key()])
    port = port or _free_port()
    atomic_write_text(d / "board.json", json.dumps({"name": name, "kind": "emulated", "port": port, "user": getpass.getuser(),
                                                    "python": python, "runtime": runtime}, indent=2) + "\n")  # fmt: skip
    pub = key.export_public_key("openssh").decode().split()
    with open(_home.known_hosts(), "a") as f:
        f.write(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    return d


def _pid(name: str) -> int | None:
    p = board_dir(name) / "server.pid"
    if not p.is_file():
        return None
    pid = int(p.read_text().strip() or 0)
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def status(name: str) -> dict:
    d = board_dir(name)
    if not (d / "board.json").is_file():
        raise ConfigError(f"no emulated board {name!r}; `omg board create {name}` makes one")
    m = json.loads((d / "board.json").read_text())
    if m.get("kind", "emulated") != "emulated":
        raise ConfigError(f"board {name!r} is a {m['kind']} board, not an emulated one")
    from ..tee import Device

    dev = Device(d / "root" / "device")
    return {"name": name, "kind": "emulated", "url": f"emu://{name}", "port": m["port"], "up": _pid(name) is not None,
            "pid": _pid(name), "device_id": dev.device_id.hex(), "path": str(d),
            "runtime": m.get("runtime", DEFAULT_BOARD_RUNTIME)}  # fmt: skip


def _emulated(p: Path) -> bool:
    meta = p / "board.json"
    return meta.is_file() and json.loads(meta.read_text()).get("kind", "emulated") == "emulated"


def list_boards() -> list[dict]:
    """The emulated boards (``omgkit.board.lifecycle.list_boards`` lists every kind)."""
    return [status(p.name) for p in sorted(_home.boards_dir().iterdir()) if _emulated(p)]


def up(name: str, timeout: float = 30.0) -> dict:
    st = status(name)
    if st["up"]:
        return st
    d = board_dir(name)
    log = open(d / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "omgkit.board.emulator", str(d)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"board {name!r} failed to start; see {d / 'server.log'}")
        if (d / "server.ready").is_file():
            return status(name)
        time.sleep(0.05)
    proc.terminate()
    raise ConfigError(
        f"board {name!r} did not start within {timeout:.0f} s; see {d / 'server.log'}"
    )


def down(name: str, timeout: float = 15.0) -> bool:
    pid = _pid(name)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(name) is not None:
        time.sleep(0.05)
    if _pid(name) is not None:
        os.kill(pid, signal.SIGKILL)
    return True


def _board_sftp(root: Path):
    """An SFTP server factory: chrooted to the board's ``root/``, and refusing paths whose
    directory resolves outside it. asyncssh's chroot maps names, not links, so a link
    planted in the board directory would otherwise lead a write out of the board (issue
    13). The final name may be a link (lstat, remove); the workbench creates files
    exclusively, which never opens through one."""
    import asyncssh

    real_root = os.path.realpath(str(root)).encode()

    class BoardSFTP(asyncssh.SFTPServer):
        def map_path(self, path: bytes) -> bytes:
            local = super().map_path(path)
            parent = os.path.realpath(os.path.dirname(local))
            if parent != real_root and not parent.startswith(real_root + b"/"):
                raise asyncssh.SFTPPermissionDenied("the path leads out of the board's root")
            return local

    return lambda chan: BoardSFTP(chan, chroot=str(root).encode())


async def _serve(d: Path) -> None:
    import asyncssh

    from ..tee import TeeDaemon

    m = json.loads((d / "board.json").read_text())
    root = (d / "root").resolve()
    python = m.get("python", sys.executable)  # the board's environment: its agent's and its TEE's
    env = {"PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root),
           "LANG": "C.UTF-8", "OMG_BOARD": m["name"]}  # fmt: skip
    if os.environ.get("OMG_HOME"):
        env["OMG_HOME"] = os.environ["OMG_HOME"]

    async def handle(process: asyncssh.SSHServerProcess) -> None:
        if not process.command:
            process.stderr.write(b"this board offers exec and sftp, not interactive shells\n")
            process.exit(1)
            return
        proc = await asyncio.create_subprocess_shell(
            process.command, cwd=root, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

        async def pump_in() -> None:
            try:
                while data := await process.stdin.read(65536):
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            except Exception:  # the client went away: the command sees end of input
                pass
            finally:
                proc.stdin.close()

        async def pump_out(src, dst) -> None:
            while data := await src.read(65536):
                try:
                    dst.write(data)
                    await dst.drain()
                except Exception:  # keep reading so the command never blocks on a full pipe
                    pass

        feeder = asyncio.create_task(pump_in())
        # every byte of output is forwarded before the exit status is sent
        await asyncio.gather(
            pump_out(proc.stdout, process.stdout), pump_out(proc.stderr, process.stderr)
        )
        status = await proc.wait()
        feeder.cancel()
        try:
            process.exit(status)
        except Exception:
            pass

    tee = TeeDaemon(root / "device", python=python).start()
    server = await asyncssh.listen(
        "127.0.0.1", m["port"], server_host_keys=[str(d / "ssh_host_key")],
        authorized_client_keys=str(d / "authorized_keys"), process_factory=handle, encoding=None,
        sftp_factory=_board_sftp(root), allow_scp=False,
        keepalive_interval=15,
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    (d / "server.pid").write_text(f"{os.getpid()}\n")
    (d / "server.ready").write_text("")
    try:
        await stop.wait()
    finally:
        (d / "server.ready").unlink(missing_ok=True)
        server.close()
        await server.wait_closed()
        tee.stop()
        (d / "server.pid").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    asyncio.run(_serve(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
