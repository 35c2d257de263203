"""`omg deploy`: push a TA bundle and a sealed model package to a board, atomically.

A deployment is a *release*: a directory ``deploy/releases/<id>/`` with
the files and a manifest (size and SHA-256 of each), ``id`` being a hash of
the manifest. Files go up over SFTP into ``<id>.partial/`` (each under a
temporary name, created exclusively and renamed when complete); files an
earlier release already has are hard-linked on the board instead of sent.
Then the board agent checks every size and hash, renames the directory into
place and switches ``deploy/current`` with one ``rename``. Until that
instant the previous release stays current and complete; a cut connection
leaves at worst a ``.partial`` directory, which the next run reuses, or a
commit cut half-way, which the next run completes: a deployment is done
only when the agent's ``state`` says the release is current *and* fully
installed (the TA linked where the TEE looks, the package where the
normal world reads it), never merely because ``current`` names it.

File names are checked before anything is sent (``agent.check_release_path``),
and nothing is written through a link: every directory on the way is
``lstat``-ed and refused if it is a symlink, and files are created with
``O_EXCL`` (which does not follow a link at the name) before the rename.
SFTP has no ``openat``: a link swapped in *between* the check and the write
is not caught here (see the agent's checks, and docs/design.md).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import posixpath
import shlex
import stat
import time
from pathlib import Path

from omg_ta.commands import BUNDLE_SIG_FILE

from ..errors import ConfigError, DeploymentError, DiskFullError, RemoteCommandError
from ..tee.bundle import read_bundle
from .agent import check_manifest, check_release_id, manifest_id
from .connection import Board

AGENT = "-m omgkit.board.agent"
TRIES = 3
"""Commits per deployment: a release that still fails the board's checks after this many is an error."""


@dataclasses.dataclass
class DeployReport:
    release: str
    sent: list[str]
    linked: list[str]
    skipped: bool
    seconds: float


def release_files(bundle_dir: str | os.PathLike, package: bytes) -> dict[str, bytes]:
    """The files of a release: the TA (the emulated TEE's signed bundle, or OP-TEE's signed
    ``<uuid>.ta``, which carries its signature inside) and the sealed package."""
    files = {f"ta/{k}": v for k, v in read_bundle(bundle_dir).items()}
    sig = Path(bundle_dir) / BUNDLE_SIG_FILE
    if sig.is_file():
        files[f"ta/{BUNDLE_SIG_FILE}"] = sig.read_bytes()
    files["model.omgpkg"] = package
    return files


def manifest_of(files: dict[str, bytes]) -> dict:
    return {
        "files": {
            p: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in sorted(files.items())
        }
    }


def release_id(manifest: dict) -> str:
    return manifest_id(manifest)


def _agent(board: Board, args: str) -> dict:
    rc, out, err = board.run(board.addr.python + f" {AGENT} {args}", check=False)
    if rc != 0 and not out.strip().startswith("{"):
        raise RemoteCommandError(f"agent {args}", rc, err)
    try:
        reply = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RemoteCommandError(
            f"agent {args}", rc, f"no JSON reply: {out[-200:]!r} {err}"
        ) from None
    if not isinstance(reply, dict):
        raise RemoteCommandError(f"agent {args}", rc, f"reply is not an object: {out[-200:]!r}")
    return reply


def _lstat(sftp, path: str):
    try:
        return sftp.lstat(path)
    except OSError:  # paramiko: FileNotFoundError (or IOError) for a missing path
        return None


class _Uploader:
    """Writes into ``deploy/releases/<id>.partial`` over SFTP, never through a link."""

    def __init__(self, board: Board, rid: str):
        self.board, self.sftp = board, board.sftp
        self.base = f"deploy/releases/{rid}.partial"
        self.checked: set[str] = set()

    def dirs(self, rel: str) -> None:
        """mkdir -p of ``rel`` (under the board directory), refusing any part that is not a real directory."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p in self.checked:
                continue
            path = self.board.sftp_path(p)
            st = _lstat(self.sftp, path)
            if st is None:
                self.sftp.mkdir(path)
            elif not stat.S_ISDIR(st.st_mode):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise DeploymentError(
                    f"board {self.board.addr.host}: {p} is {kind}; a deployment never writes through "
                    f"links. Check who put it there, remove it on the board and deploy again"
                )
            self.checked.add(p)

    def clear(self, path: str) -> None:
        """Remove whatever is at ``path`` that is not a directory (a link is removed, not followed)."""
        st = _lstat(self.sftp, path)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            raise DeploymentError(f"board {self.board.addr.host}: {path} is a directory where a release "
                                  "file belongs; remove it on the board and deploy again")  # fmt: skip
        self.sftp.remove(path)

    def put(self, rel: str, data: bytes) -> None:
        """``data`` to ``base/rel``: a new file (O_EXCL) under a temporary name, renamed into place."""
        target = self.board.sftp_path(f"{self.base}/{rel}")
        tmp = target + ".tmp"
        try:
            self.clear(tmp)
            with self.sftp.open(tmp, "wxb") as f:  # exclusive: never opens through a planted link
                f.set_pipelined(True)
                f.write(data)
            size = self.sftp.lstat(tmp).st_size
            if size != len(data):
                raise OSError(f"size mismatch: {size} != {len(data)}")
            self.sftp.posix_rename(tmp, target)
        except OSError as e:
            # SFTP servers report a full disk in different ways (ENOSPC, a bare
            # "Failure", or a short write seen as a size mismatch)
            free = _free_bytes(self.board, "deploy/releases")
            if e.errno == errno.ENOSPC or (free is not None and free < len(data)):
                raise DiskFullError(self.board.addr.host, target) from None
            raise


def _sources(st: dict) -> dict[str, str]:
    """SHA-256 -> ``RELEASE/FILE`` of a file the board has in a complete release (what `link` takes)."""
    have: dict[str, str] = {}
    releases = st.get("releases")
    for r, m in (releases if isinstance(releases, dict) else {}).items():
        try:
            check_release_id(r)
            files = check_manifest(m)
        except ValueError:
            continue  # the agent lists only what it checked; anything else is not used
        for p, meta in files.items():
            have.setdefault(meta["sha256"], f"{r}/{p}")
    return have


def _upload(board: Board, files: dict[str, bytes], man: dict, rid: str, have: dict[str, str],
            sent: list[str], linked: list[str]) -> None:  # fmt: skip
    up = _Uploader(board, rid)
    up.dirs(up.base)
    for path, data in files.items():
        parent = posixpath.dirname(path)
        if parent:
            up.dirs(f"{up.base}/{parent}")
        meta = man["files"][path]
        target = board.sftp_path(f"{up.base}/{path}")
        cur = _lstat(board.sftp, target)
        if cur is not None and stat.S_ISREG(cur.st_mode) and cur.st_size == meta["size"]:
            continue  # sent by an interrupted run: trusted only if its hash matches (at commit)
        up.clear(target)
        src = have.get(meta["sha256"])
        if src is not None:
            try:
                _agent(board, f"link {shlex.quote(src)} {shlex.quote(f'{rid}.partial/{path}')}")
                linked.append(path)
                continue
            except RemoteCommandError:
                pass  # the source is gone (pruned meanwhile): send the file instead
        up.put(path, data)
        sent.append(path)
    up.put("manifest.json", json.dumps(man, sort_keys=True).encode())


def _done(st: dict, rid: str) -> bool:
    return st.get("current") == rid and st.get("installed", True) and not st.get("leftovers")


def deploy(board: Board, bundle_dir: str | os.PathLike, package: bytes) -> DeployReport:
    """Deploy a TA bundle and a sealed package as one release (``deploy_files``)."""
    return deploy_files(board, release_files(bundle_dir, package))


def deploy_files(board: Board, files: dict[str, bytes]) -> DeployReport:
    """Deploy a release of ``files`` (name -> bytes); see the module's docstring."""
    t0 = time.perf_counter()
    man = manifest_of(files)
    try:
        check_manifest(man)
    except ValueError as e:
        raise ConfigError(f"release not deployed: {e}") from None
    rid = release_id(man)
    sent: list[str] = []
    linked: list[str] = []
    why = ""
    for attempt in range(TRIES + 1):
        st = _agent(board, "state")
        if _done(st, rid):
            return DeployReport(rid, sent, linked, attempt == 0, time.perf_counter() - t0)
        if attempt == TRIES:
            why = why or "; ".join(map(str, st.get("problems") or []))
            break
        if rid not in (st.get("releases") or {}):
            _upload(board, files, man, rid, _sources(st), sent, linked)
        res = _agent(board, f"commit {rid}")
        if res.get("ok") and res.get("installed", True):
            return DeployReport(rid, sent, linked, False, time.perf_counter() - t0)
        # files that failed the board's check (the agent removed them: sent again next round),
        # or what the board says is still not installed
        bad = res.get("bad") or []
        why = (f"files that failed their check on the board: {', '.join(map(str, bad))}" if bad
               else "; ".join(map(str, res.get("problems") or [])))  # fmt: skip
    raise DeploymentError(
        f"release {rid} did not install on board {board.addr.host} after {TRIES} commits ({why}). "
        f"Its disk may be full or failing, or something on the board changes the files: check "
        f"deploy/releases/{rid}.partial there (`python -m omgkit.board.agent state` in the board "
        f"directory says what it sees) and deploy again"
    )


def _free_bytes(board: Board, rel: str) -> int | None:
    """Free bytes where ``rel`` lives on the board (None if df cannot tell)."""
    rc, out, _ = board.run(f"df -Pk {rel} | tail -1", check=False)
    try:
        return int(out.split()[3]) * 1024 if rc == 0 else None
    except (IndexError, ValueError):
        return None
