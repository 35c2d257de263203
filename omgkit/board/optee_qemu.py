"""An OP-TEE board in QEMU: a real secure world, reached over SSH like any board.

``omg board create NAME --kind optee-qemu`` builds (or finds) the image
(``omgkit.board.optee_image``) and makes ``$OMG_HOME/boards/NAME/``:

- ``board.json`` (``kind``, port, user ``root``, the board directory
  ``/data/board``, the board's python ``/usr/local/bin/omg-python``);
- ``board_key.bin`` (0600): 32 random bytes, the board's hardware unique
  key: at every ``up`` they replace the marker in OP-TEE's image and the
  FIP is repacked into the board's ``flash.bin`` (0600), so each board
  derives its own keys and a firmware rebuilt for a new pseudo-TA keeps them;
- ``ssh_host_key`` (0600): the board's SSH host key, made on the host and
  pinned in the workbench's ``known_hosts`` at creation; the guest converts
  it to dropbear's format at first boot;
- ``data.img``: the board's own ext4 disk (``/data`` on the board):
  tee-supplicant's secure storage ``/data/tee``, TAs ``/data/ta``
  (``/lib/optee_armtz``), root's ``authorized_keys`` (the workbench's key),
  the host key, the board directory ``/data/board`` and the workbench's
  code ``/data/omgkit``. It survives ``down``/``up``.

``omg board up NAME`` starts ``qemu-system-aarch64`` (TF-A, OP-TEE, U-Boot,
Debian's kernel; SSH forwarded from 127.0.0.1 only, the guest has no other
network), waits for SSH and uploads the workbench's ``omgkit`` and
``omg_ta`` sources when they changed. QEMU's console goes to
``console.log``, the secure world's to ``secure.log``, QEMU's own messages
to ``qemu.log``. ``down`` powers the guest off (the data disk is unmounted
first) and stops QEMU.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import py_compile
import re
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..errors import BoardError, BoardImageError, ConfigError
from ..util import atomic_write_bytes, atomic_write_text, write_secret
from . import home as _home
from . import optee_image as _image

KIND = "optee-qemu"
USER, ROOT, PYTHON = "root", "/data/board", "/usr/local/bin/omg-python"
MEMORY_MB, CPUS, DATA_MB = 1024, 2, 512
REPO = _image.REPO
#: the workbench's code on the board: package name -> its source directory
CODE = {"omgkit": REPO / "omgkit", "omg_ta": REPO / "ta" / "omg_ta"}
CODE_DIR = "/data/omgkit"


def _say(msg: str) -> None:
    print(f"optee-qemu: {msg}", file=sys.stderr, flush=True)


def board_dir(name: str) -> Path:
    from .emulator import board_dir as _bd

    return _bd(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _meta(name: str) -> dict:
    p = board_dir(name) / "board.json"
    if not p.is_file():
        raise ConfigError(f"no board {name!r}; `omg board create {name} --kind {KIND}` makes one")
    return json.loads(p.read_text())


# -- create ----------------------------------------------------------------------------------


def create(name: str, *, port: int | None = None, progress=_say) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = board_dir(name)
    if (d / "board.json").exists():
        raise ConfigError(f"board {name!r} exists already ({d}); `omg board up {name}` starts it")
    img = _image.build_image(progress=progress)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    write_secret(d / "board_key.bin", os.urandom(32))
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())  # fmt: skip
    write_secret(d / "ssh_host_key", pem)
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    atomic_write_text(d / "ssh_host_key.pub", pub.decode() + f" omg-board-{name}\n")
    client_pub = Path(str(_home.client_key()) + ".pub").read_bytes()
    with tempfile.TemporaryDirectory(prefix="omg-data-") as tmp:
        s = Path(tmp)
        for sub in ("ssh", "root/.ssh", "board", "tee", "ta", "omgkit", "omg"):
            (s / sub).mkdir(parents=True)
        write_secret(s / "ssh" / "ssh_host_ed25519_key", pem)
        (s / "root" / ".ssh" / "authorized_keys").write_bytes(client_pub)
        (s / "omg" / "hostname").write_text(f"omg-{name}\n")
        for p in ("ssh", "root", "root/.ssh", "tee"):
            os.chmod(s / p, 0o700)
        _image.mkfs(s, d / "data.img", "omg-data", DATA_MB, d / "create.log")
    os.chmod(d / "data.img", 0o600)
    port = port or _free_port()
    meta = {"name": name, "kind": KIND, "port": port, "user": USER, "root": ROOT, "python": PYTHON,
            "memory_mb": MEMORY_MB, "cpus": CPUS, "firmware": img["firmware"].name, "guest": img["guest"].name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    atomic_write_text(d / "board.json", json.dumps(meta, indent=2) + "\n")
    kt, kb = pub.decode().split()[:2]
    with open(_home.known_hosts(), "a") as f:
        f.write(f"[127.0.0.1]:{port} {kt} {kb}\n")
    return d


# -- status ----------------------------------------------------------------------------------


def _pid(name: str) -> int | None:
    d = board_dir(name)
    p = d / "qemu.pid"
    if not p.is_file():
        return None
    try:
        pid = int(p.read_text().strip() or 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"qemu-system-aarch64" not in cmdline or str(d).encode() not in cmdline:
        return None  # another process has that pid now
    if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
        return None
    return pid


def tee_version(name: str) -> str | None:
    """The secure world's version, as OP-TEE printed it on its console at the last boot."""
    log = board_dir(name) / "secure.log"
    if not log.is_file():
        return None
    m = re.search(r"OP-TEE version: (\S+)", log.read_text(errors="replace"))
    return f"OP-TEE {m.group(1)} (QEMU)" if m else None


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def status(name: str) -> dict:
    m = _meta(name)
    d = board_dir(name)
    pid = _pid(name)
    run = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
    key = (d / "board_key.bin").read_bytes()
    return {"name": name, "kind": KIND, "url": f"emu://{name}", "port": m["port"], "up": pid is not None,
            "pid": pid, "tee": tee_version(name), "rss_mb": _rss_mb(pid) if pid else None,
            "board_id": hashlib.sha256(b"omgkit-board-id\0" + key).hexdigest()[:16],
            "boot_seconds": run.get("boot_seconds"), "ssh_seconds": run.get("ssh_seconds"),
            "device_id": run.get("device", {}).get("device_id"), "path": str(d)}  # fmt: skip


# -- up and down -------------------------------------------------------------------------------


def qemu_command(name: str, guest: Path, firmware: Path) -> list[str]:
    m = _meta(name)
    d = board_dir(name)
    return [
        "qemu-system-aarch64", "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-machine", "virt,secure=on,gic-version=3,virtualization=off,acpi=off",
        "-cpu", "max,sve=off,sme=off", "-smp", str(m.get("cpus", CPUS)), "-m", str(m.get("memory_mb", MEMORY_MB)),
        "-bios", str(d / "flash.bin"),
        "-drive", f"if=pflash,unit=1,format=raw,readonly=on,file={firmware / 'u-boot-env.img'}",
        "-kernel", str(guest / "Image"), "-initrd", str(guest / "initramfs.cpio.gz"),
        "-append", "console=ttyAMA0 rdinit=/init loglevel=4 panic=5",
        "-drive", f"if=none,id=sys,format=raw,readonly=on,file={guest / 'system.img'}",
        "-device", "virtio-blk-pci,drive=sys,serial=omg-system",
        "-drive", f"if=none,id=data,format=raw,file={d / 'data.img'}",
        "-device", "virtio-blk-pci,drive=data,serial=omg-data",
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{m['port']}-:22",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-chardev", f"file,id=con,path={d / 'console.log'}", "-serial", "chardev:con",
        "-chardev", f"file,id=sec,path={d / 'secure.log'}", "-serial", "chardev:sec",
    ]  # fmt: skip


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as QEMU's forwarding does
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def up(name: str, *, timeout: float = 300.0, progress=_say) -> dict:
    """Boot the board and wait for SSH; then put the workbench's code on it (if it changed)."""
    st = status(name)
    if st["up"]:
        return st
    d = board_dir(name)
    m = _meta(name)
    if not _port_free(m["port"]):
        raise BoardError(
            f"port {m['port']} on 127.0.0.1 is taken: board {name!r} cannot forward SSH there"
        )
    img = _image.build_image(progress=progress)
    _image.board_flash(img["firmware"], (d / "board_key.bin").read_bytes(), d / "flash.bin")
    for f in ("console.log", "secure.log", "qemu.log", "run.json"):
        (d / f).unlink(missing_ok=True)
    t0 = time.monotonic()
    # QEMU daemonizes once it is set up (its parent's status says whether it could start): the
    # board does not depend on the process that started it, and nobody has to reap it
    with open(d / "qemu.log", "wb") as log:
        cmd = qemu_command(name, img["guest"], img["firmware"])
        r = subprocess.run([*cmd, "-daemonize", "-pidfile", str(d / "qemu.pid")],
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=d,
                           start_new_session=True, timeout=120)  # fmt: skip
    if r.returncode != 0:
        raise BoardImageError(f"QEMU for board {name!r} did not start: {_tail(d / 'qemu.log')}")
    pid = _pid(name)
    if pid is None:
        raise BoardImageError(f"QEMU for board {name!r} stopped at once: {_tail(d / 'qemu.log')}")
    console = d / "console.log"
    try:
        while True:
            text = console.read_text(errors="replace") if console.is_file() else ""
            if "OMG-READY" in text:
                break
            if "OMG-FAILED" in text or "Kernel panic" in text:
                raise BoardImageError(
                    f"board {name!r} failed to boot: {_tail(console)}; see {console}"
                )
            if _pid(name) is None:
                raise BoardImageError(f"QEMU for board {name!r} exited: {_tail(d / 'qemu.log')}; "
                                      f"the console says {_tail(console)!r}")  # fmt: skip
            if time.monotonic() - t0 > timeout:
                raise BoardImageError(
                    f"board {name!r} did not boot within {timeout:.0f} s; see {console}"
                )
            time.sleep(0.1)
        boot = time.monotonic() - t0
        progress(
            f"board {name}: booted in {boot:.1f} s (TF-A, OP-TEE, U-Boot, Linux, tee-supplicant, dropbear)"
        )
        from .connection import Board

        while True:  # dropbear has just started: the first connection may be refused
            b = Board(f"emu://{name}", timeout=10)
            try:
                b.run("true", timeout=30)
                break
            except BoardError:
                b.close()
                if time.monotonic() - t0 > timeout or _pid(name) is None:
                    raise
                time.sleep(0.2)
        ssh = time.monotonic() - t0
        with b:
            sync = sync_code(b)
            device = enroll(b, name)
    except BaseException:
        _stop(pid, d)
        raise
    progress(
        f"board {name}: SSH ready {ssh:.1f} s after start; code {'sent' if sync['sent'] else 'unchanged'}"
        f" ({sync['seconds']:.1f} s)"
    )
    run = {"boot_seconds": round(boot, 2), "ssh_seconds": round(ssh, 2), "code": sync, "device": device,
           "firmware": img["firmware"].name, "guest": img["guest"].name,
           "started": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    atomic_write_text(d / "run.json", json.dumps(run, indent=2) + "\n")
    return status(name)


def _tail(p: Path) -> str:
    lines = (
        [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        if p.is_file()
        else []
    )
    return lines[-1][:200] if lines else "no output"


def _wait_gone(pid: int, d: Path, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cmd = Path(f"/proc/{pid}/cmdline")
        try:
            if str(d).encode() not in cmd.read_bytes():
                return True
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def _stop(pid: int, d: Path) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(pid, d, wait):
            break
    (d / "qemu.pid").unlink(missing_ok=True)


def down(name: str, *, timeout: float = 30.0) -> bool:
    """Power the board off (its data disk unmounted first); QEMU is stopped if it does not exit."""
    pid = _pid(name)
    d = board_dir(name)
    if pid is None:
        (d / "qemu.pid").unlink(missing_ok=True)
        return False
    from .connection import Board

    try:
        with Board(f"emu://{name}", timeout=5) as b:
            b.client.exec_command("poweroff", timeout=5)
            time.sleep(0.2)
    except (BoardError, OSError, EOFError):
        pass  # not reachable: QEMU is stopped below, and ext4's journal keeps the disk consistent
    if not _wait_gone(pid, d, timeout):
        _stop(pid, d)
    (d / "qemu.pid").unlink(missing_ok=True)
    return True


def list_boards() -> list[dict]:
    return [status(p.name) for p in sorted(_home.boards_dir().iterdir())
            if (p / "board.json").is_file() and json.loads((p / "board.json").read_text()).get("kind") == KIND]  # fmt: skip


# -- the device's identity -----------------------------------------------------------------------


def enroll(board, name: str) -> dict:
    """The manufacturer certifies the board's attestation key: the chain goes to ``device/chain.cbor``.

    The key is derived from the board's hardware unique key inside OP-TEE's
    core (the OMG pseudo-TA) and never leaves it; the board only says its
    public half. The workbench's manufacturer (the one emulated boards use,
    ``emulator.manufacturer()``) signs a certificate for it, as a device
    maker would in the factory, once: at the first ``up``, on first use, and
    the key is pinned in the board's directory on the host
    (``device_key.pub``). Later ``up``s only check it: a board that then
    says another key (its root lying about ``device-info``, or a firmware
    that derives keys otherwise) is refused, never certified again. The
    device id is computed here from the key (SHA-256, first 16 bytes), not
    taken from the board.
    """
    import hashlib

    import cbor2
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from .deployment import _agent
    from .emulator import manufacturer

    info = _agent(board, "device-info")
    if not info.get("ok") or "public_key" not in info:
        raise BoardError(f"the board's TEE did not say its device key: {info.get('message', info)}")
    pub = bytes.fromhex(info["public_key"])
    device_id = hashlib.sha256(pub).digest()[:16]
    if len(pub) != 32 or info.get("device_id") != device_id.hex():
        raise BoardError(f"board {name!r} says a device id that is not its key's; not enrolled")
    pinned = board_dir(name) / "device_key.pub"
    if pinned.is_file() and pinned.read_bytes() != pub:
        raise BoardError(f"board {name!r} now says another device key than the one enrolled at its "
                         f"first up ({pinned}); it is not certified again. A new firmware that "
                         f"derives keys otherwise needs a new board (`omg board create`)")  # fmt: skip
    path = board.sftp_path("device/chain.cbor")
    mfr = manufacturer()
    try:
        with board.sftp.open(path) as f:
            chain = cbor2.loads(f.read())
        cert = x509.load_der_x509_certificate(chain[0])
        if cert.public_key().public_bytes_raw() == pub and chain[1] == mfr.root_der:
            return {"device_id": device_id.hex(), "enrolled": False, "tee": info.get("tee")}
    except (OSError, ValueError, IndexError, TypeError, cbor2.CBORDecodeError):
        pass  # no chain yet (or a lost one): certify the pinned key
    cert = mfr.certify(Ed25519PublicKey.from_public_bytes(pub), device_id)
    board.run("mkdir -p device")
    board.sftp.putfo(io.BytesIO(cbor2.dumps([cert, mfr.root_der])), path + ".tmp")
    board.sftp.posix_rename(path + ".tmp", path)
    if not pinned.is_file():
        atomic_write_bytes(pinned, pub)
    return {"device_id": device_id.hex(), "enrolled": True, "tee": info.get("tee")}


# -- the workbench's code on the board ------------------------------------------------------------


def core_library_aarch64() -> Path:
    """The C core as a normal-world aarch64 library (the plain side of ``omg bench --board``).

    The same sources and code-generation flags as the TA's core (-O3, no FMA,
    -mstrict-align as OP-TEE builds TAs), through ta/optee/hostlib; ``make``
    rebuilds it only when a source changed."""
    out = REPO / "ta" / "optee" / "build" / "aarch64"
    r = subprocess.run(["make", "-s", "-C", str(REPO / "ta" / "optee" / "hostlib"),
                        "CC=aarch64-linux-gnu-gcc", "EXTRA_CFLAGS=-mstrict-align", f"OUT={out}", str(out / "libomgcore.so")],
                       capture_output=True, text=True, env=_image._env(), timeout=600)  # fmt: skip
    lib = out / "libomgcore.so"
    if r.returncode != 0 or not lib.is_file():
        raise BoardImageError(
            f"cross-compiling the C core for the board failed: {(r.stdout + r.stderr)[-1500:]}"
        )
    return lib


def code_bundle() -> tuple[str, bytes]:
    """``omgkit`` and ``omg_ta`` sources with their bytecode (checked-hash pycs), and the C core
    built for aarch64 (where ``omg_ta.ccore`` looks for it), as one tar; and its id."""
    files: dict[str, bytes] = {
        "optee/build/host/libomgcore.so": core_library_aarch64().read_bytes()
    }
    with tempfile.TemporaryDirectory() as tmp:
        for pkg, src in CODE.items():
            for f in sorted(src.rglob("*")):
                if "__pycache__" in f.parts or not f.is_file() or f.suffix not in (".py", ".typed"):
                    continue
                rel = f"{pkg}/{f.relative_to(src).as_posix()}"
                files[rel] = f.read_bytes()
                if f.suffix == ".py":
                    c = Path(tmp) / "c.pyc"
                    py_compile.compile(str(f), cfile=str(c), dfile=f"{CODE_DIR}/current/{rel}", doraise=True,
                                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)  # fmt: skip
                    parent, stem = rel.rsplit("/", 1)
                    files[
                        f"{parent}/__pycache__/{stem[:-3]}.{sys.implementation.cache_tag}.pyc"
                    ] = c.read_bytes()
    ident = hashlib.sha256(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())},
                                      sort_keys=True).encode()).hexdigest()[:16]  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for rel, data in sorted(files.items()):
            ti = tarfile.TarInfo(rel)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            tf.addfile(ti, io.BytesIO(data))
    return ident, buf.getvalue()


def sync_code(board) -> dict:
    """Upload the workbench's code if the board's differs: one tar over SFTP, unpacked beside the
    old one and switched with one rename (``/data/omgkit/current``)."""
    t = time.perf_counter()
    ident, blob = code_bundle()
    _, cur, _ = board.run(f"readlink {CODE_DIR}/current || true", raw=True)
    if cur.strip() == f"site-{ident}":
        return {"id": ident, "sent": 0, "seconds": round(time.perf_counter() - t, 2)}
    tmp = f"{CODE_DIR}/upload-{ident}.tar"
    board.sftp.putfo(io.BytesIO(blob), tmp + ".part", file_size=len(blob), confirm=True)
    board.sftp.posix_rename(tmp + ".part", tmp)
    site = f"{CODE_DIR}/site-{ident}"
    board.run(
        f"set -e; cd {CODE_DIR}; rm -rf {site}.new; mkdir {site}.new; tar -xf {tmp} -C {site}.new; "
        f"rm -rf {site}; mv {site}.new {site}; ln -sfn site-{ident} current.new; "
        f"/usr/bin/python3.11 -c \"import os; os.replace('current.new', 'current')\"; rm -f {tmp}; "
        f'for o in site-*; do [ "$o" = site-{ident} ] || rm -rf "$o"; done; sync',
        raw=True,
        timeout=120,
    )
    return {"id": ident, "sent": len(blob), "seconds": round(time.perf_counter() - t, 2)}
