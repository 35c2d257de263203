"""The threat model's attacks on a board, as its normal world's root over SSH and SFTP.

``omgkit.guard.attacks`` stages the attacks on a local emulated TEE; these
are the same attacks on a board (meant for OP-TEE in QEMU, where the secure
world is real): the attacker is root in the board's Linux, edits and
replays any file, swaps the TA file, asks the vendor with a TA of its own,
and reads every normal-world process's memory. Each must fail with its own
error; the memory scan must find no window of the model or of the audio.

Two more are **limits**, staged to show what QEMU does not protect (the
docs say so): the TA's clock is the normal world's (an expired license runs
again once root sets the clock back), and OP-TEE's secure storage has no
RPMB here (restoring an older copy of ``/data/tee`` rolls a counter back).
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from omg_ta import commands as C
from omg_ta.errors import (
    DeviceMismatchError,
    LicenseExpiredError,
    LicenseInvalidError,
    MeasurementNotApprovedError,
    OmgError,
    PackageIntegrityError,
    RollbackError,
    TALoadError,
    UnsealError,
)

from ..guard.host import LICENSE, PACKAGE, SEALED
from .connection import Board
from .remote import RemoteEnclave

TA_FILE = f"{C.TA_UUID}.ta"
WINDOW = 64


@dataclasses.dataclass(frozen=True)
class BoardAttack:
    name: str
    what: str
    expected: type[OmgError] | None
    """The error that stops it; None for a limit (it goes through, and the docs say why)."""
    why: str
    stage: Callable[[BoardStage], None]


@dataclasses.dataclass(frozen=True)
class BoardOutcome:
    attack: BoardAttack
    error: str | None
    message: str
    seconds: float

    @property
    def as_expected(self) -> bool:
        want = self.attack.expected
        return self.error is None if want is None else self.error == want.__name__


class BoardStage:
    """What the attacks work with: the board, the vendor, the deployed release and model id."""

    def __init__(self, url: str, vendor, release, *, other_url: str | None = None, workdir: Path):
        self.url, self.vendor, self.release, self.other_url = url, vendor, release, other_url
        self.workdir = workdir
        self.model_id = release.model_id

    def board(self, url: str | None = None) -> Board:
        return Board(url or self.url)

    def deploy(self, version: int | None = None, url: str | None = None) -> dict:
        from .workflow import deploy_run

        return deploy_run(url or self.url, self.release, model_version=version, vendor=self.vendor)

    def initialize(self, url: str | None = None) -> dict:
        with self.board(url) as b, RemoteEnclave(b) as r:
            return r.initialize()

    def replace(self, b: Board, rel: str, data: bytes) -> None:
        replace_file(b, rel, data)

    def read(self, b: Board, rel: str) -> bytes:
        return read_file(b, rel)


def replace_file(b: Board, rel: str, data: bytes) -> None:
    """Write a file on the board as its root would: a new file renamed over the old name (a link
    in its place becomes a file)."""
    path = b.sftp_path(rel)
    b.sftp.putfo(io.BytesIO(data), path + ".atk")
    b.sftp.posix_rename(path + ".atk", path)


def read_file(b: Board, rel: str) -> bytes:
    with b.sftp.open(b.sftp_path(rel)) as f:
        return f.read()


def _flip(blob: bytes, index: int) -> bytes:
    b = bytearray(blob)
    b[index] ^= 0x01
    return bytes(b)


def _ta_path() -> str:
    return f"deploy/current/ta/{TA_FILE}"


def _with_restored(st: BoardStage, rels: list[str], fn: Callable[[Board], None]) -> None:
    with st.board() as b:
        saved = {rel: st.read(b, rel) for rel in rels}
        try:
            fn(b)
        finally:
            for rel, data in saved.items():
                st.replace(b, rel, data)


def _unsigned(st: BoardStage) -> None:
    def go(b: Board) -> None:
        ta = st.read(b, _ta_path())
        st.replace(b, _ta_path(), _flip(ta, len(ta) - 200))  # one byte of the code
        st.initialize()

    _with_restored(st, [_ta_path()], go)


def patched_optee_ta(vendor, workdir: Path) -> bytes:
    """The attacker's own build of the TA (other code), signed with the trusted key (say, leaked)."""
    from . import home, optee_image, optee_ta

    out = workdir / "attacker-ta"
    img = optee_image.build_image()
    path, _ = optee_ta.build(out, vendor.public_raw, dev_kit=img["ta_dev_kit"],
                             sign_key=home.ta_signing_key_optee(), log_level=3)  # fmt: skip
    return path.read_bytes()


def _patched_ta(st: BoardStage) -> bytes:
    return patched_optee_ta(st.vendor, st.workdir)


def _resigned(st: BoardStage) -> None:
    patched = _patched_ta(st)
    _with_restored(
        st, [_ta_path()], lambda b: (st.replace(b, _ta_path(), patched), st.initialize())
    )


def _license_for_patched(st: BoardStage) -> None:
    patched = _patched_ta(st)

    def go(b: Board) -> None:
        st.replace(b, _ta_path(), patched)
        with RemoteEnclave(b) as r:
            token = r.attest(st.vendor.new_nonce())
            st.vendor.issue_license(token, model_id=st.model_id, model_version=1)

    _with_restored(st, [_ta_path()], go)


def _other_device(st: BoardStage) -> None:
    if st.other_url is None:
        raise OmgError("this attack needs a second board (other_url)")
    st.deploy(
        url=st.other_url
    )  # the other board runs the same TA and model, provisioned for itself
    with st.board() as a, st.board(st.other_url) as b:
        mine = {n: st.read(a, f"normal/{n}") for n in (SEALED, LICENSE, PACKAGE)}
        theirs = {n: st.read(b, f"normal/{n}") for n in (SEALED, LICENSE)}
        try:
            for n in (SEALED, LICENSE):
                st.replace(b, f"normal/{n}", mine[n])
            st.initialize(st.other_url)
        finally:
            for n, data in theirs.items():
                st.replace(b, f"normal/{n}", data)


def _replay(st: BoardStage) -> None:
    with st.board() as b:
        st.initialize()
        old = {n: st.read(b, f"normal/{n}") for n in (SEALED, LICENSE, PACKAGE)}
        current = st.initialize()["model_version"]
        st.deploy(version=current + 1)  # a newer version: it runs once, the counter moves
        new = {n: st.read(b, f"normal/{n}") for n in (SEALED, LICENSE, PACKAGE)}
        try:
            for n, data in old.items():
                st.replace(b, f"normal/{n}", data)
            st.initialize()
        finally:
            for n, data in new.items():
                st.replace(b, f"normal/{n}", data)


def _tampered_package(st: BoardStage) -> None:
    def go(b: Board) -> None:
        pkg = st.read(b, f"normal/{PACKAGE}")
        st.replace(b, f"normal/{PACKAGE}", _flip(pkg, len(pkg) - 40))
        st.initialize()

    _with_restored(st, [f"normal/{PACKAGE}"], go)


def _tampered_license(st: BoardStage) -> None:
    def go(b: Board) -> None:
        lic = st.read(b, f"normal/{LICENSE}")
        st.replace(b, f"normal/{LICENSE}", _flip(lic, len(lic) - 100))
        st.initialize()

    _with_restored(st, [f"normal/{LICENSE}"], go)


BOARD_ATTACKS = [
    BoardAttack("modified TA, unsigned", "flip one byte of the TA file on the board",
                TALoadError, "OP-TEE loads only TAs whose signed header verifies with the key built into it",
                _unsigned),
    BoardAttack("modified TA, re-signed", "install a TA of other code signed with the trusted (leaked) key",
                UnsealError, "the sealing key derives from the HUK and the digest OP-TEE verified at load",
                _resigned),
    BoardAttack("modified TA asks for a license", "attest with that TA and ask the vendor",
                MeasurementNotApprovedError, "the OMG pseudo-TA signs the measurement OP-TEE recorded, "
                "not one the TA claims; the vendor licenses approved ones only", _license_for_patched),
    BoardAttack("files copied to another device", "put this board's license and sealed key on another board",
                DeviceMismatchError, "the license names one device id (derived from that board's HUK)",
                _other_device),
    BoardAttack("replayed old model", "after a newer version ran, restore the old package, license, sealed key",
                RollbackError, "a counter in OP-TEE's secure storage remembers the highest version run",
                _replay),
    BoardAttack("tampered package", "flip one byte of the encrypted model",
                PackageIntegrityError, "vendor signature over header and ciphertext; AES-GCM per segment",
                _tampered_package),
    BoardAttack("tampered license", "flip one byte of the license",
                LicenseInvalidError, "the vendor's COSE_Sign1 signature", _tampered_license),
]  # fmt: skip


def stage_board(url: str, vendor, release, *, other_url: str | None = None, workdir: Path,
                attacks: list[BoardAttack] | None = None,
                say: Callable[[BoardOutcome], None] = lambda o: None) -> list[BoardOutcome]:  # fmt: skip
    """Stage each attack on a board where ``release`` is deployed; the board works again after each."""
    from ..guard.attacks import run_each

    st = BoardStage(url, vendor, release, other_url=other_url, workdir=workdir)
    return run_each(attacks or BOARD_ATTACKS, st, BoardOutcome, say)


# -- limits of QEMU, staged ---------------------------------------------------------------------


def expired_license_runs_with_the_clock_set_back(st: BoardStage, policy_seconds: int = 120) -> dict:
    """The TA's clock is the normal world's (TEE_GetREETime): root sets it back, an expired license runs.

    Returns what happened: the refusal once expired, then the run after the
    clock was set back. On a HiKey with a secure timer and a trusted time
    source this would be ``LicenseExpiredError`` both times."""
    from omg_ta.license import Policy

    version = st.initialize()["model_version"]
    with st.board() as b:
        now = int(b.run("date +%s")[1])
        with RemoteEnclave(b) as r:
            token = r.attest(st.vendor.new_nonce())
            lic = st.vendor.issue_license(token, model_id=st.model_id, model_version=version,
                                          policy=Policy(not_after=now + policy_seconds))  # fmt: skip
            r.provision(lic)
        out: dict = {}
        try:
            b.run(f"date -s @{now + 10 * policy_seconds} > /dev/null")
            try:
                st.initialize()
                out["after_expiry"] = "ran"
            except LicenseExpiredError:
                out["after_expiry"] = "LicenseExpiredError"
            b.run(f"date -s @{now} > /dev/null")  # root sets the clock back
            try:
                st.initialize()
                out["clock_set_back"] = "ran"
            except LicenseExpiredError:
                out["clock_set_back"] = "LicenseExpiredError"
        finally:
            b.run(f"date -s @{int(time.time())} > /dev/null")
    st.deploy(version=version)  # a fresh license of the usual length
    return out


# -- a TA of the attacker's choosing UUID, against the pseudo-TA's keys ---------------------------

KEY_THIEF = Path(__file__).resolve().parents[2] / "board_setup" / "optee-qemu" / "key-thief"
DEVICE_KEY_CONTEXT = b"OMG-DEVICE-KEY-v1"
"""The input from which the OMG pseudo-TA derives the device's key (ta/optee/pta/omg_pta.c)."""


def uuid_spelling(b16: bytes):
    """The UUID whose TEE_UUID lies in an aarch64 TA's memory as these 16 bytes.

    OP-TEE's system pseudo-TA derives a TA's key from HMAC(HUK, usage ||
    the TEE_UUID's bytes || extra data); in memory the UUID's three first
    fields are little-endian."""
    import uuid

    if len(b16) != 16:
        raise ValueError("a UUID is 16 bytes")
    return uuid.UUID(fields=(int.from_bytes(b16[0:4], "little"), int.from_bytes(b16[4:6], "little"),
                             int.from_bytes(b16[6:8], "little"), b16[8], b16[9],
                             int.from_bytes(b16[10:16], "big")))  # fmt: skip


_THIEF_CLIENT = """
import sys, uuid
from omgkit.tee.client import Output
from omgkit.tee.optee import OpteeContext
with OpteeContext() as ctx:
    s = ctx.open_session(uuid.UUID(sys.argv[1]))
    print(s.invoke(0, 0, [bytes.fromhex(sys.argv[2]), Output(32), None, None], _fetch_message=False)[1].hex())
    s.close()
"""


def steal_the_device_key(url: str, workdir: Path) -> dict:
    """A TA re-signed with the trusted key, named so that the system pseudo-TA's derivation input
    spells the pseudo-TA's device-key input: does the key it gets sign as the device?

    The thief TA (board_setup/optee-qemu/key-thief) gets HMAC(HUK, usage ||
    "OMG-DEVICE-KEY-v" || "1") and hands it to the normal world; the host
    turns it into an Ed25519 public key and compares it with the device's.
    Equal would mean the attacker can forge tokens for any measurement; the
    pseudo-TA's own HUK usage (ta/optee/patches/0002) keeps them apart."""
    import subprocess

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from . import home, optee_image
    from .deployment import _agent

    u = uuid_spelling(DEVICE_KEY_CONTEXT[:16])
    f = u.fields
    clock = ",".join(f"0x{x:02x}" for x in u.bytes[8:])
    init = f"{{0x{f[0]:08x},0x{f[1]:04x},0x{f[2]:04x},{{{clock}}}}}"
    img = optee_image.build_image()
    out = Path(workdir) / "key-thief"
    r = subprocess.run(["make", "-s", "-C", str(KEY_THIEF), "CROSS_COMPILE=aarch64-linux-gnu-",
                        f"TA_DEV_KIT_DIR={img['ta_dev_kit']}", f"TA_SIGN_KEY={home.ta_signing_key_optee()}",
                        f"O={out}", f"THIEF_UUID={u}", f"CPPFLAGS=-DTHIEF_UUID_C='{init}'"],
                       capture_output=True, text=True, env=optee_image._env(), timeout=600)  # fmt: skip
    ta = out / f"{u}.ta"
    if r.returncode != 0 or not ta.is_file():
        raise OmgError(f"building the key-thief TA failed: {(r.stdout + r.stderr)[-1500:]}")
    with Board(url) as b:
        remote = f"/data/ta/{u}.ta"
        b.sftp.put(str(ta), remote)
        b.sftp.putfo(io.BytesIO(_THIEF_CLIENT.encode()), b.sftp_path("thief.py"))
        try:
            _, stolen, _ = b.run(f"{b.addr.python} thief.py {u} {DEVICE_KEY_CONTEXT[16:].hex()}")
        finally:
            b.run(f"rm -f {remote} thief.py")
        device_pub = bytes.fromhex(_agent(b, "device-info")["public_key"])
    key = bytes.fromhex(stolen.strip())
    pub = Ed25519PrivateKey.from_private_bytes(key).public_key().public_bytes_raw()
    return {"uuid": str(u), "derived": len(key), "signs_as_the_device": pub == device_pub}


_DUMP = r"""
import os, re, struct, sys
skip = {int(p) for p in sys.argv[1].split(",") if p} | {os.getpid(), os.getppid()}
out = sys.stdout.buffer
names = {}
for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    if pid in skip:
        continue
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", 0)
    except OSError:
        continue
    for line in maps:
        f = line.split(None, 5)
        path = f[5] if len(f) > 5 else ""
        # memory a process made (heap, stack, anonymous, shared memory), not copies of files
        if "r" not in f[1] or (f[4] != "0" and not path.startswith(("/dev/", "/memfd:", "/SYSV"))):
            continue
        if path in ("[vvar]", "[vsyscall]", "[vdso]"):
            continue
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        try:
            mem.seek(lo)
            data = mem.read(hi - lo)
        except (OSError, OverflowError, ValueError):
            continue
        out.write(struct.pack(">IQI", pid, lo, len(data)) + data)
    mem.close()
    try:
        names[pid] = open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        pass
# files: all of /data (the board's disk), and every other file written since boot (the root is
# a tmpfs overlay over the read-only system image: what is new there is in RAM, "disk" all the same)
import time
boot = time.time() - float(open("/proc/uptime").read().split()[0])
files = []
for top in ("/", "/data"):
    dev = os.stat(top).st_dev
    for d, subdirs, fnames in os.walk(top):
        subdirs[:] = [x for x in subdirs if os.lstat(os.path.join(d, x)).st_dev == dev]
        for fn in fnames:
            path = os.path.join(d, fn)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not (st.st_mode & 0o170000 == 0o100000) or path in files:
                continue
            if top == "/" and (st.st_mtime < boot and st.st_ctime < boot):
                continue
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            out.write(struct.pack(">IQI", 0xFFFFFFFF, len(files), len(data)) + data)
            files.append(path)
import json
info = json.dumps({"names": names, "files": files}).encode()
out.write(struct.pack(">IQI", 0, 0, len(info)) + info)
out.flush()
"""


def _windows(secret: bytes, count: int) -> list[bytes]:
    """Up to ``count`` WINDOW-byte windows of a secret, spread over it, each with 40 or more
    distinct byte values: a run of zeros or silence would be found anywhere and say nothing."""
    cands = [secret[i : i + WINDOW] for i in range(0, len(secret) - WINDOW + 1, WINDOW)]
    good = [w for w in cands if len(set(w)) >= 40]
    step = max(1, len(good) // count)
    return good[::step][:count]


def scan_normal_world(url: str, secrets: dict[str, bytes], *, exclude_pids: tuple[int, ...] = (),
                      windows: int = 32) -> dict:  # fmt: skip
    """Search the memory every normal-world process on the board made for windows of each secret.

    As the board's root: every process's heap, stacks, anonymous and shared
    memory (not its mappings of files) is read from ``/proc/PID/mem``, and
    the files: all of ``/data`` (the board's disk) and every other file
    written since boot (the root is a tmpfs overlay). All of it is streamed
    back and searched here, so no byte of a secret is sent to the board for
    the search; a scan cut short is an error, never "nothing found". Returns
    {name: {"windows": n, "found": k, "processes": m, "files": f, "bytes": b,
    "where": {"comm (pid)" or "file PATH": windows found}}}."""
    import json
    import struct

    wins = {k: _windows(v, windows) for k, v in secrets.items()}
    found = dict.fromkeys(secrets, 0)
    where: dict[str, dict[int, int]] = {k: {} for k in secrets}
    pids: set[int] = set()
    total = 0
    files: dict[int, int] = {}  # file index -> bytes
    done = None
    with Board(url) as b:
        b.sftp.putfo(io.BytesIO(_DUMP.encode()), b.sftp_path("memdump.py"))
        try:
            chan = b.exec_channel(
                f"{b.addr.python} memdump.py '{','.join(map(str, exclude_pids))}'"
            )
            chan.settimeout(600)
            buf = bytearray()
            while True:
                chunk = chan.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 16:
                    pid, index, n = struct.unpack_from(">IQI", buf)
                    if len(buf) < 16 + n:
                        break
                    data = bytes(buf[16 : 16 + n])
                    del buf[: 16 + n]
                    if pid == 0:  # the last record: the processes' names and the files' paths
                        done = json.loads(data)
                        continue
                    key: int | str = pid
                    if pid == 0xFFFFFFFF:
                        key = f"file {index}"
                        files[index] = n
                    else:
                        pids.add(pid)
                    total += n
                    for k, ws in wins.items():
                        hits = sum(1 for w in ws if w in data)
                        found[k] += hits
                        if hits:
                            where[k][key] = where[k].get(key, 0) + hits
            status = chan.recv_exit_status()
            err = (
                chan.recv_stderr(65536).decode(errors="replace") if chan.recv_stderr_ready() else ""
            )
            chan.close()
        finally:
            b.run("rm -f memdump.py", check=False)
    if status != 0 or done is None or buf:  # a scan cut short must not read as "nothing found"
        raise OmgError(f"the memory scan on {url} did not finish (status {status}): {err[-500:]}")
    names, paths = done["names"], done["files"]

    def label(key) -> str:
        if isinstance(key, str):
            return f"file {paths[int(key.split()[1])]}"
        return f"{names.get(str(key), '?')} ({key})"

    return {k: {"windows": len(wins[k]), "found": found[k], "processes": len(pids), "files": len(files),
                "bytes": total, "where": {label(p): n for p, n in where[k].items()}}
            for k in secrets}  # fmt: skip


def workdir_for(base: Path) -> Path:
    d = Path(base)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def silence(n: int = 1) -> np.ndarray:
    return np.zeros((n, C.CLIP_SAMPLES), np.int16)
