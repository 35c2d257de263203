"""`omg deploy`: push a TA bundle and a sealed model package to a board, atomically.

A deployment is a *release*: a directory ``deploy/releases/<id>/`` with
the files and a manifest (size and SHA-256 of each), ``id`` being a hash of
the manifest. Files go up over SFTP into ``<id>.partial/`` (each under a
temporary name, renamed when complete); files an earlier release already
has are hard-linked on the board instead of sent. Then the board agent
checks every size and hash, renames the directory into place and switches
``deploy/current`` with one ``rename``. Until that instant the previous
release stays current and complete; a cut connection leaves at worst a
``.partial`` directory, which the next run reuses.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import time
from pathlib import Path

from omg_ta.commands import BUNDLE_SIG_FILE

from ..errors import DiskFullError, RemoteCommandError
from ..tee.bundle import read_bundle
from .connection import Board

AGENT = "-m omgkit.board.agent"


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
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def _agent(board: Board, args: str) -> dict:
    rc, out, err = board.run(board.addr.python + f" {AGENT} {args}", check=False)
    if rc != 0 and not out.strip().startswith("{"):
        raise RemoteCommandError(f"agent {args}", rc, err)
    return json.loads(out.strip().splitlines()[-1])


def _mkdirs(sftp, path: str) -> None:
    """mkdir -p over SFTP, for a path relative to the login directory or absolute."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        p = "/".join(parts[:i])
        if not p:  # the root of an absolute path
            continue
        try:
            sftp.stat(p)
        except OSError:
            sftp.mkdir(p)


def deploy(board: Board, bundle_dir: str | os.PathLike, package: bytes) -> DeployReport:
    t0 = time.perf_counter()
    files = release_files(bundle_dir, package)
    man = manifest_of(files)
    rid = release_id(man)
    st = _agent(board, "state")
    if st["current"] == rid:
        return DeployReport(rid, [], [], True, time.perf_counter() - t0)
    have = {}
    for r, m in st["releases"].items():
        for p, meta in m["files"].items():
            have.setdefault(meta["sha256"], f"{r}/{p}")
    sftp = board.sftp
    base = board.sftp_path(f"deploy/releases/{rid}.partial")
    sent, linked = [], []
    if rid not in st["releases"]:
        for path, data in files.items():
            target = f"{base}/{path}"
            _mkdirs(sftp, target.rsplit("/", 1)[0])
            meta = man["files"][path]
            try:
                cur = sftp.stat(target)
                if cur.st_size == meta["size"]:
                    # left by an interrupted run: trust it only if the hash matches (checked at commit)
                    sent.append(path)
                    continue
            except OSError:
                pass
            src = have.get(meta["sha256"])
            if src is not None:
                _agent(board, f"link {src} {rid}.partial/{path}")
                linked.append(path)
                continue
            tmp = target + ".tmp"
            try:
                sftp.putfo(io.BytesIO(data), tmp, file_size=len(data), confirm=True)
                sftp.posix_rename(tmp, target)
            except OSError as e:
                # SFTP servers report a full disk in different ways (ENOSPC, a bare
                # "Failure", or a short write that paramiko sees as a size mismatch)
                free = _free_bytes(board, "deploy/releases")
                if e.errno == errno.ENOSPC or (free is not None and free < len(data)):
                    raise DiskFullError(board.addr.host, target) from None
                raise
            sent.append(path)
        mbytes = json.dumps(man, sort_keys=True).encode()
        sftp.putfo(io.BytesIO(mbytes), f"{base}/manifest.json.tmp", confirm=True)
        sftp.posix_rename(f"{base}/manifest.json.tmp", f"{base}/manifest.json")
    res = _agent(board, f"commit {rid}")
    if not res.get("ok"):
        # a file from an interrupted run was bad: remove those and send again
        for p in res.get("bad", []):
            try:
                sftp.remove(f"{base}/{p}")
            except OSError:
                pass
        return deploy(board, bundle_dir, package)
    return DeployReport(rid, sent, linked, False, time.perf_counter() - t0)


def _free_bytes(board: Board, rel: str) -> int | None:
    """Free bytes where ``rel`` lives on the board (None if df cannot tell)."""
    rc, out, _ = board.run(f"df -Pk {rel} | tail -1", check=False)
    try:
        return int(out.split()[3]) * 1024 if rc == 0 else None
    except (IndexError, ValueError):
        return None
