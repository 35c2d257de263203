"""The board-side agent, started over SSH exec from the board directory.

One-shot commands (JSON on stdout; a refused request is one line
``error: ...`` on stderr and exit status 2):

- ``state``: the current release, whether it is fully *installed* (its
  files complete and as its manifest says, the TA linked where the board's
  TEE looks for it, the package linked where the normal world reads it),
  every complete release's manifest (what a deployment may hard-link), the
  releases it refuses and why, and what a commit would still tidy (an
  interrupted pruning, releases beyond the few kept);
- ``link SRC DST``: hard-link a file of an earlier release into the one
  being uploaded (a deployment skips what the board already has);
- ``tee-up``: start the board's emulated TEE daemon if it is not running
  (a board with OP-TEE has its TEE already);
- ``commit RELEASE``: check every file of ``deploy/releases/RELEASE.partial``
  against its manifest (size and SHA-256), rename it into place, point the
  TEE's TA store and the normal-world package through ``deploy/current``,
  switch ``deploy/current`` atomically (a symlink replaced by ``rename``),
  and prune old releases. Every step is idempotent and is either done or
  not: ``commit`` run again after a cut anywhere completes the release.

Release file names are checked on both sides (``check_release_path``):
relative, ``/``-separated parts of letters, digits and ``._-`` that do not
start with ``.`` or ``-``, bounded in length. The board's own directories
(``deploy``, ``deploy/releases``, a release and its subdirectories,
``normal``, ``device``, ``device/ta``) are opened one component at a time
with ``O_NOFOLLOW`` relative to their parent's descriptor: a symlink planted
in their place is refused, never followed.

``serve``: a long-lived session over stdin/stdout, frames of a 4-byte
big-endian length and a CBOR map (docs/protocol.md): load_ta, attest,
provision, initialize, mic_play, classify_mic, classify_batch, ping, close. It drives
the board's TEE through the TEE Client API exactly as a local app would.
A malformed request gets one error reply and the session goes on; input
that ends inside a frame, or a frame over the limit, ends it with one line
on stderr. Imports nothing heavy: no TensorFlow on a board.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path

from omg_ta import commands as C

KEEP_RELEASES = 3
OPTEE_TA_DIR = "/data/ta"
"""Where an OP-TEE board's tee-supplicant finds TAs (its /lib/optee_armtz links here)."""

MAX_PART, MAX_PATH, MAX_DEPTH, MAX_FILES = 100, 255, 8, 1000
"""Bounds of a release file name: one part, the whole name, its parts; files in a release."""
MAX_MANIFEST = 1 << 20
PRUNING = ".pruning"
"""Suffix of a release being removed (renamed so first: a cut leaves no half release)."""
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_RELEASE = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RESERVED = ("manifest.json",)


class AgentError(Exception):
    """A request the agent refuses: one line that says what is wrong and what to do."""


class BadNameError(ValueError):
    """A release file name no release may have (refused by both sides, never repaired)."""


# -- names -----------------------------------------------------------------------


def check_release_path(p: object) -> str:
    """``p`` if it may name a file of a release; ValueError saying why not."""
    if not isinstance(p, str) or not p:
        raise BadNameError(f"release file name {p!r} is not a non-empty string")
    if len(p) > MAX_PATH:
        raise BadNameError(f"release file name {p[:40]!r}... is longer than {MAX_PATH} characters")
    parts = p.split("/")
    if len(parts) > MAX_DEPTH:
        raise BadNameError(f"release file name {p!r} is deeper than {MAX_DEPTH} directories")
    for part in parts:
        if len(part) > MAX_PART or not _PART.fullmatch(part):
            raise BadNameError(
                f"release file name {p!r} is not allowed: a relative path whose parts are letters, "
                f"digits and '._-', not starting with '.' or '-', at most {MAX_PART} characters "
                "(no absolute path, '..', '.' or empty part)"
            )
    if p in _RESERVED or p.endswith(".tmp"):
        raise BadNameError(
            f"release file name {p!r} is reserved (the manifest, or an upload's temporary name)"
        )
    return p


def check_release_id(r: object) -> str:
    if not isinstance(r, str) or not _RELEASE.fullmatch(r):
        raise ValueError(f"release id {r!r} is not 16 lowercase hex digits")
    return r


def check_manifest(man: object) -> dict[str, dict]:
    """The files of a manifest ``{"files": {name: {"size", "sha256"}}}``; ValueError if it is not one."""
    if not isinstance(man, dict) or set(man) != {"files"} or not isinstance(man["files"], dict):
        raise ValueError('manifest is not {"files": {name: {size, sha256}}}')
    files = man["files"]
    if not files or len(files) > MAX_FILES:
        raise BadNameError(f"manifest lists {len(files)} files (1 to {MAX_FILES})")
    for p, meta in files.items():
        check_release_path(p)
        if (
            not isinstance(meta, dict)
            or set(meta) != {"size", "sha256"}
            or not isinstance(meta["size"], int)
            or isinstance(meta["size"], bool)
            or meta["size"] < 0
            or not isinstance(meta["sha256"], str)
            or not _SHA256.fullmatch(meta["sha256"])
        ):
            raise ValueError(f"manifest entry for {p!r} is not {{size, sha256}}")
    dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    clash = sorted(dirs & set(files))
    if clash:
        raise BadNameError(f"release file name {clash[0]!r} is both a file and a directory")
    return files


def manifest_id(man: dict) -> str:
    """A release's id: the first 16 hex digits of the SHA-256 of its manifest (sorted JSON)."""
    return hashlib.sha256(json.dumps(man, sort_keys=True).encode()).hexdigest()[:16]


# -- the board directory, never through a link ----------------------------------------

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _root() -> Path:
    return Path(os.environ.get("OMG_BOARD_ROOT") or os.getcwd())


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class _Dirs:
    """Directory descriptors opened without following links; closed together."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def __enter__(self) -> _Dirs:
        return self

    def __exit__(self, *exc) -> None:
        for fd in reversed(self.fds):
            os.close(fd)
        self.fds.clear()

    def root(self) -> int:
        # the board directory itself is taken as given (OMG_BOARD_ROOT, or where SSH put us)
        fd = os.open(_root(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def open(self, parent: int, rel: str, base: str = "", *, create: bool = False) -> int | None:
        """``rel`` (``a/b``) under ``parent`` (shown as ``base``), one real directory at a time,
        made if ``create``; None if missing. A link or a file on the way is refused."""
        fd = parent
        parts = rel.split("/")
        for i, part in enumerate(parts):
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                fd = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = "/".join(x for x in (base, *parts[: i + 1]) if x)
                    raise AgentError(
                        f"{where} is a symlink or not a directory: the board's directories are never "
                        "followed through links; check who put it there, remove it and deploy again"
                    ) from None
                raise
            self.fds.append(fd)
        return fd

    def board(self, *, create: bool) -> tuple[int, int | None, int | None]:
        """(board root, deploy, deploy/releases)."""
        root = self.root()
        dep = self.open(root, "deploy", create=create)
        rel = self.open(dep, "releases", "deploy", create=create) if dep is not None else None
        return root, dep, rel


def _kind(dir_fd: int, name: str) -> str | None:
    """What ``name`` is in a directory, links not followed: 'dir', 'file', 'link', 'other' or None."""
    try:
        m = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(m):
        return "link"
    return "dir" if stat.S_ISDIR(m) else "file" if stat.S_ISREG(m) else "other"


def _open_file(dir_fd: int, path: str) -> int:
    """A file of a release for reading: every directory on the way and the file itself not a link."""
    parts = path.split("/")
    opened = []
    fd = dir_fd
    try:
        for part in parts[:-1]:
            fd = os.open(part, _DIR, dir_fd=fd)
            opened.append(fd)
        return os.open(parts[-1], _FILE, dir_fd=fd)
    finally:
        for f in opened:
            os.close(f)


def _file_problem(dir_fd: int, path: str, meta: dict, *, digest: bool) -> str | None:
    """Why a release file is not as its manifest says (None if it is)."""
    try:
        fd = _open_file(dir_fd, path)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return "a symlink" if e.errno in (errno.ELOOP, errno.ENOTDIR) else e.strerror
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size != meta["size"]:
            return f"{st.st_size} bytes, not {meta['size']}"
        if digest:
            h = hashlib.sha256()
            while chunk := f.read(1 << 20):
                h.update(chunk)
            if h.hexdigest() != meta["sha256"]:
                return "SHA-256 differs"
    return None


def _remove(dir_fd: int, path: str) -> None:
    """Remove a release file, or the first thing on its way that is not a real directory."""
    parts = path.split("/")
    opened = []
    fd = dir_fd
    try:
        for i, part in enumerate(parts):
            k = _kind(fd, part)
            if k is None:
                return
            if k == "dir" and i < len(parts) - 1:
                fd = os.open(part, _DIR, dir_fd=fd)
                opened.append(fd)
                continue
            if k == "dir":
                shutil.rmtree(part, dir_fd=fd)
            else:
                os.unlink(part, dir_fd=fd)
            return
    finally:
        for f in opened:
            os.close(f)


def _read_manifest(release_fd: int) -> dict:
    """A release's manifest (``manifest.json``, not a link); ValueError if absent or unreadable."""
    try:
        fd = os.open("manifest.json", _FILE, dir_fd=release_fd)
    except OSError as e:
        raise ValueError(f"manifest.json: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("manifest.json is not a regular file")
        data = f.read(MAX_MANIFEST + 1)
    if len(data) > MAX_MANIFEST:
        raise ValueError(f"manifest.json is over {MAX_MANIFEST} bytes")
    try:
        return json.loads(data)
    except ValueError:
        raise ValueError("manifest.json is not JSON") from None


def _check(release_fd: int, rid: str, *, digest: bool) -> tuple[dict, list[str]]:
    """A release directory's manifest and the files that are not as it says.

    A manifest with a name no release may have raises BadNameError (refused);
    a manifest that is missing, unreadable or not this release's is itself
    "bad" (it is sent again)."""
    try:
        man = _read_manifest(release_fd)
    except ValueError:
        return {}, ["manifest.json"]
    try:
        files = check_manifest(man)
    except BadNameError:
        raise
    except ValueError:
        return {}, ["manifest.json"]
    if manifest_id(man) != rid:
        return {}, ["manifest.json"]
    bad = [p for p, meta in files.items() if _file_problem(release_fd, p, meta, digest=digest)]
    return man, bad


# -- where the TEE and the normal world look ----------------------------------------


def _optee_ta_dir() -> Path:
    return Path(os.environ.get("OMG_OPTEE_TA_DIR", OPTEE_TA_DIR))


def _ta_file(optee: bool) -> str:
    """The release file the board's TEE loads (through the link ``commit`` makes)."""
    return f"ta/{C.TA_UUID}.ta" if optee else f"ta/{C.BUNDLE_SIG_FILE}"


def _links(optee: bool) -> list[tuple[str, str, str]]:
    """(directory, name, target) of every link that makes the current release the installed one."""
    if optee:
        # OP-TEE's supplicant loads <uuid>.ta from its TA directory: a link through
        # deploy/current, so the TA switches with the release, in the same rename
        target = os.path.join(
            os.path.realpath(_root()), "deploy", "current", "ta", f"{C.TA_UUID}.ta"
        )
        ta = (str(_optee_ta_dir()), f"{C.TA_UUID}.ta", target)
    else:
        ta = ("device/ta", str(C.TA_UUID), "../../deploy/current/ta")
    return [ta, ("normal", "model.omgpkg", "../deploy/current/model.omgpkg")]


def _open_link_dir(d: _Dirs, root: int, where: str, *, create: bool) -> int | None:
    if os.path.isabs(where):  # OP-TEE's TA directory: the system's, not the board directory
        if create:
            os.makedirs(where, exist_ok=True)
        try:
            fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        d.fds.append(fd)
        return fd
    return d.open(root, where, create=create)


def _readlink(dir_fd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _set_link(dir_fd: int, name: str, target: str) -> None:
    """Make ``name`` a link to ``target`` with one rename (idempotent; a cut leaves old or new)."""
    if _readlink(dir_fd, name) == target:
        return
    old = None
    if _kind(dir_fd, name) == "dir":  # an earlier layout's real directory: set aside first
        old = name + ".old"
        if _kind(dir_fd, old) == "dir":
            shutil.rmtree(old, dir_fd=dir_fd)
        os.replace(name, old, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    tmp = name + ".new"
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    os.symlink(target, tmp, dir_fd=dir_fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # rename(2): readers see old or new
    if old is not None:
        shutil.rmtree(old, dir_fd=dir_fd)


def _install_problems(d: _Dirs, root: int, rel: int, rid: str, man: dict, optee: bool) -> list[str]:
    """Why release ``rid`` (current) is not fully installed: empty if it is."""
    problems = []
    if _ta_file(optee) not in man["files"]:
        problems.append(f"release {rid} has no {_ta_file(optee)}, the TA this board's TEE loads")
    for where, name, target in _links(optee):
        fd = _open_link_dir(d, root, where, create=False)
        if fd is None or _readlink(fd, name) != target:
            problems.append(f"{where}/{name} is not a link to {target}")
    return problems


# -- the one-shot commands ---------------------------------------------------------


def state() -> dict:
    """The board's releases and whether the current one is fully installed (read-only)."""
    out: dict = {"current": None, "installed": False, "releases": {}, "invalid": {}, "problems": [],
                 "leftovers": []}  # fmt: skip
    optee = _optee_board()
    with _Dirs() as d:
        root, dep, rel = d.board(create=False)
        if rel is None:
            out["problems"].append("no release is deployed")
            return out
        for e in sorted(os.scandir(rel), key=lambda e: e.name):
            name = e.name
            if name.endswith(PRUNING):
                out["leftovers"].append(name)
                continue
            if not _RELEASE.fullmatch(name):
                continue  # uploads in progress (<id>.partial), and anything not ours
            if not e.is_dir(follow_symlinks=False):
                out["invalid"][name] = "a symlink or a file, not a directory"
                continue
            fd = d.open(rel, name, "deploy/releases")
            try:
                man, bad = _check(fd, name, digest=False)
            except BadNameError as err:
                out["invalid"][name] = _one_line(err)
                continue
            if bad:
                out["invalid"][name] = f"incomplete or damaged: {', '.join(bad[:5])}"
            else:
                out["releases"][name] = man
        target = _readlink(dep, "current")
        cur = target.split("/", 1)[1] if target and target.startswith("releases/") else None
        if cur is None or not _RELEASE.fullmatch(cur):
            out["problems"].append("deploy/current is not a link to a release" if target or
                                   _kind(dep, "current") else "no release is current")  # fmt: skip
            return out
        out["current"] = cur
        if cur not in out["releases"]:
            out["problems"].append(f"current release {cur}: {out['invalid'].get(cur, 'missing')}")
            return out
        fd = d.open(rel, cur, "deploy/releases")
        _, bad = _check(fd, cur, digest=True)  # what the TEE will load is checked whole
        if bad:
            out["problems"].append(
                f"current release {cur}: files differ from its manifest: {', '.join(bad[:5])}"
            )
        out["problems"] += _install_problems(d, root, rel, cur, out["releases"][cur], optee)
        out["installed"] = not out["problems"]
        out["leftovers"] += [f"{n} (to prune)" for n in _prunable(rel, cur)]
    return out


def _split(arg: str, *, partial: bool) -> tuple[str, str]:
    head, sep, path = arg.partition("/")
    rid = head[: -len(".partial")] if partial and head.endswith(".partial") else head
    if not sep or (partial and not head.endswith(".partial")):
        raise AgentError(f"link: {arg!r} is not {'RELEASE.partial' if partial else 'RELEASE'}/FILE")
    try:
        check_release_id(rid)
        check_release_path(path)
    except ValueError as e:
        raise AgentError(f"link: {e}") from None
    return head, path


def link(src: str, dst: str) -> dict:
    """Hard-link ``RELEASE/FILE`` of a release into ``RELEASE.partial/FILE`` (never through a link)."""
    s_rel, s_path = _split(src, partial=False)
    d_rel, d_path = _split(dst, partial=True)
    with _Dirs() as d:
        _, _, rel = d.board(create=False)
        sfd = d.open(rel, s_rel, "deploy/releases") if rel is not None else None
        if sfd is None:
            raise AgentError(f"link: no release {s_rel} on this board")
        s_dir, s_name = s_path.rpartition("/")[::2]
        sfd = d.open(sfd, s_dir, f"deploy/releases/{s_rel}") if s_dir else sfd
        if sfd is None or _kind(sfd, s_name) != "file":
            raise AgentError(f"link: {src} is not a file of a release on this board")
        dfd = d.open(rel, d_rel, "deploy/releases", create=True)
        t_dir, t_name = d_path.rpartition("/")[::2]
        dfd = d.open(dfd, t_dir, f"deploy/releases/{d_rel}", create=True) if t_dir else dfd
        if _kind(dfd, t_name) == "dir":
            raise AgentError(
                f"link: deploy/releases/{dst} is a directory; remove it and deploy again"
            )
        if _kind(dfd, t_name) is not None:
            os.unlink(t_name, dir_fd=dfd)
        os.link(s_name, t_name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
    return {"ok": True}


def _discard(rel: int, name: str) -> None:
    """Remove a release directory: renamed out of the releases first, then deleted."""
    gone = name + PRUNING
    k = _kind(rel, gone)
    if k == "dir":
        shutil.rmtree(gone, dir_fd=rel)
    elif k is not None:
        os.unlink(gone, dir_fd=rel)
    os.replace(name, gone, src_dir_fd=rel, dst_dir_fd=rel)
    shutil.rmtree(gone, dir_fd=rel)


def _prunable(rel: int, keep: str) -> list[str]:
    """The releases a commit of ``keep`` removes: all but ``keep`` and the newest others, so that
    KEEP_RELEASES are left."""
    others = [e for e in os.scandir(rel) if _RELEASE.fullmatch(e.name) and e.name != keep
              and e.is_dir(follow_symlinks=False)]  # fmt: skip
    others.sort(key=lambda e: (e.stat(follow_symlinks=False).st_mtime, e.name), reverse=True)
    return [e.name for e in others[KEEP_RELEASES - 1 :]]


def _prune(rel: int, keep: str) -> None:
    """Finish earlier prunings, then keep the newest few releases (``keep``, the current one, always)."""
    for e in list(os.scandir(rel)):
        if e.name.endswith(PRUNING):
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.name, dir_fd=rel)
            else:
                os.unlink(e.name, dir_fd=rel)
    for name in _prunable(rel, keep):
        _discard(rel, name)


def commit(release: str) -> dict:
    """Install release ``release`` (uploaded as ``RELEASE.partial``); idempotent, see the module doc."""
    try:
        rid = check_release_id(release)
    except ValueError as e:
        raise AgentError(f"commit: {e}") from None
    part = rid + ".partial"
    optee = _optee_board()
    with _Dirs() as d:
        root, dep, rel = d.board(create=True)
        for name in (rid, part):
            if _kind(rel, name) not in (None, "dir"):
                raise AgentError(f"deploy/releases/{name} is a symlink or not a directory: the board's "
                                 "directories are never followed through links; remove it and deploy again")  # fmt: skip
        try:
            if _kind(rel, rid) == "dir":  # committed before (a cut came later, or a re-run)
                man, bad = _check(d.open(rel, rid, "deploy/releases"), rid, digest=True)
                if bad and _kind(rel, part) == "dir":
                    _discard(rel, rid)  # damaged; the fresh upload replaces it
                elif bad:  # damaged: back to an upload, the deployment sends again what is bad
                    os.replace(rid, part, src_dir_fd=rel, dst_dir_fd=rel)
                    pfd = d.open(rel, part, "deploy/releases")
                    for p in bad:
                        _remove(pfd, p)
                    return {"ok": False, "bad": bad}
                elif _kind(rel, part) == "dir":
                    _discard(rel, part)  # a stale upload of a release already in place
            if _kind(rel, rid) is None:
                pfd = d.open(rel, part, "deploy/releases")
                if pfd is None:
                    raise AgentError(f"commit: release {rid} was not uploaded (no deploy/releases/{part}); "
                                     "deploy it with `omg deploy`")  # fmt: skip
                man, bad = _check(pfd, rid, digest=True)
                if bad:  # left by an interrupted run, or damaged on the way: removed, sent again
                    for p in bad:
                        _remove(pfd, p)
                    return {"ok": False, "bad": bad}
                os.replace(part, rid, src_dir_fd=rel, dst_dir_fd=rel)
        except BadNameError as e:
            raise AgentError(
                f"commit: release {rid} refused: {_one_line(e)}; remove deploy/releases/{rid} and "
                f"{part} on the board"
            ) from None
        if _ta_file(optee) not in man["files"]:
            raise AgentError(f"commit: release {rid} has no {_ta_file(optee)}, the TA this board's TEE "
                             f"({'OP-TEE' if optee else 'emulated'}) loads: deploy a TA built for it")  # fmt: skip
        # the links go through deploy/current: on a first deploy they dangle until the switch,
        # so the switch below is the one step that makes the release installed
        for where, name, target in _links(optee):
            _set_link(_open_link_dir(d, root, where, create=True), name, target)
        _set_link(dep, "current", f"releases/{rid}")
        try:
            os.fsync(dep)  # the switch on disk before anything is pruned
        except OSError:
            pass  # a file system that cannot sync a directory
        _prune(rel, rid)
        problems = _install_problems(d, root, rel, rid, man, optee)
    return {"ok": not problems, "current": rid, "installed": not problems, "problems": problems}


# -- the session ---------------------------------------------------------------


class _EndOfInput(Exception):
    """The input ended inside a frame or sent one over the limit: the session ends (one line)."""


class _Eof(Exception):
    """The input ended where a frame would start."""


def _read_map(stream) -> dict | None:
    """The next frame's CBOR map (``omgkit.tee.wire.read_frame``); None at the end of input.

    A frame that is not a CBOR map is BadParametersError (the session answers
    it and goes on); input that ends inside a frame, or a frame over the limit,
    is _EndOfInput."""
    from omg_ta.errors import BadParametersError, OmgError

    from ..tee import wire

    got = []

    def read_exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = stream.read(n - len(buf))
            if not chunk:
                if not got and not buf:
                    raise _Eof()
                raise _EndOfInput(f"input ended inside a frame ({len(buf)} of {n} bytes)")
            buf += chunk
        got.append(n)
        return bytes(buf)

    try:
        obj = wire.read_frame(read_exact)[0]
    except _Eof:
        return None
    except _EndOfInput:
        raise
    except wire.WireError as e:  # a length over the limit: the rest of the stream is out of step
        raise _EndOfInput(
            f"frame refused ({e}): frames are at most {wire.MAX_FRAME:,} bytes"
        ) from None
    except OmgError as e:  # the wire's own refusal of a malformed body
        raise BadParametersError(f"a request must be one CBOR map: {e}") from None
    except Exception as e:  # any other decoding failure (cbor2 raises several kinds)
        raise BadParametersError(f"a request must be one CBOR map ({type(e).__name__})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise BadParametersError("a request must be a CBOR map with text keys")
    return obj


def _write_frame(stream, obj: dict) -> None:
    from ..tee.wire import frame

    stream.write(frame(obj))
    stream.flush()


def _field(req: dict, name: str, kind: type):
    from omg_ta.errors import BadParametersError

    v = req.get(name)
    if kind is int:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise BadParametersError(f"{req['op']}: field {name!r} must be a non-negative integer")
    elif not isinstance(v, kind):
        raise BadParametersError(f"{req['op']}: field {name!r} must be a {kind.__name__} string")
    return v


def serve() -> int:
    import numpy as np

    from omg_ta.errors import BadParametersError

    from ..guard.host import GuardedModel
    from ..tee.client import mic_feed
    from ..tee.wire import error_reply

    def clips(blob: bytes) -> np.ndarray:
        if len(blob) % C.CLIP_BYTES:
            raise BadParametersError(f"audio must be whole clips of {C.CLIP_BYTES} bytes")
        return np.frombuffer(blob, "<i2").reshape(-1, C.CLIP_SAMPLES)

    root = _root()
    g = GuardedModel(root / "device", root / "normal")
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        while True:
            try:
                req = _read_map(inp)
                if req is None:
                    return 0
                op = req.get("op")
                if not isinstance(op, str):
                    raise BadParametersError("a request must name its op (a text string)")
                if op == "ping":
                    res = {}
                elif op == "info":
                    res = {k: v for k, v in device_info().items() if k != "ok"}
                    res["pid"] = os.getpid()  # this session's process (the leak scan skips it)
                elif op == "load_ta":  # open the TA session now (the TEE checks and loads the TA)
                    g._session()
                    res = {}
                elif op == "attest":
                    res = {"token": g.attest(_field(req, "nonce", bytes))}
                elif op == "provision":
                    g.provision(_field(req, "license", bytes))
                    res = {}
                elif op == "initialize":
                    res = {"info": g.initialize()}
                elif op == "mic_play":
                    mic_feed(g.device_dir, clips(_field(req, "audio", bytes)))
                    res = {}
                elif op == "classify_mic":
                    r = g.classify_mic(_field(req, "n", int))
                    res = {"labels": r.labels, "scores": r.scores, "seconds": r.seconds}
                elif op == "classify_batch":
                    r = g.classify_batch(clips(_field(req, "audio", bytes)))
                    res = {"labels": r.labels, "scores": r.scores, "seconds": r.seconds}
                elif op == "close":
                    _write_frame(out, {"ok": True})
                    return 0
                else:
                    raise BadParametersError(f"unknown op {op[:40]!r}")
                reply = {"ok": True, **res}
            except _EndOfInput as e:
                _write_frame(out, error_reply(BadParametersError(str(e)), "agent"))
                print(f"agent: {e}; session ended", file=sys.stderr)
                return 1
            except Exception as e:  # one error reply (code, message); keep serving
                reply = error_reply(e, "agent")
            _write_frame(out, reply)
    except (BrokenPipeError, ConnectionError):  # the workbench went away
        return 0
    finally:
        g.close()


def _bench() -> int:
    import inspect

    from omg_ta.errors import BadParametersError

    from ..tee.wire import error_reply
    from .board_bench import run

    try:
        req = _read_map(sys.stdin.buffer)
        if req is None:
            raise BadParametersError("bench takes one request on stdin")
        try:
            inspect.signature(run).bind(**req, root="")
        except TypeError as e:
            raise BadParametersError(f"bench: {e}") from None
        res = {"ok": True, "result": run(**req, root=str(_root()))}
    except _EndOfInput as e:
        res = error_reply(BadParametersError(str(e)), "agent")
    except Exception as e:
        res = error_reply(e, "agent")
    _write_frame(sys.stdout.buffer, res)
    return 0


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
        from omg_ta.runtime import installed_runtimes

        from ..tee.device import TEE_VERSION, Device

        d = Device(_root() / "device")
        # the runtimes of this environment, which the board's TEE runs in (a package sealed for
        # another would not load: the workbench seals for one of these)
        return {"ok": True, "device_id": d.device_id.hex(), "tee": TEE_VERSION, "mic": True,
                "runtimes": installed_runtimes()}  # fmt: skip
    from ..tee.optee import OpteeContext, pta_device_info

    with OpteeContext() as ctx:
        pub, device_id, version = pta_device_info(ctx)
    return {"ok": True, "public_key": pub.hex(), "device_id": device_id.hex(), "tee": version,
            "mic": False, "runtimes": ["c"]}  # fmt: skip


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


USAGE = ("usage: python -m omgkit.board.agent state | link SRC DST | commit RELEASE | tee-up | "
         "device-info | serve | bench")  # fmt: skip
_COMMANDS = {"state": (0, state), "link": (2, link), "commit": (1, commit), "tee-up": (0, tee_up),
             "device-info": (0, device_info), "serve": (0, serve), "bench": (0, _bench)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    a = list(sys.argv[1:] if argv is None else argv)
    if not a or a[0] not in _COMMANDS:
        what = f"unknown agent command {a[0][:40]!r}" if a else "no command"
        print(f"error: {what}; {USAGE}", file=sys.stderr)
        return 2
    cmd, args = a[0], a[1:]
    nargs, fn = _COMMANDS[cmd]
    if len(args) != nargs:
        print(f"error: agent {cmd} takes {nargs} argument{'s' * (nargs != 1)}, not {len(args)}; {USAGE}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        result = fn(*args)
    except (AgentError, ValueError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (
        Exception
    ) as e:  # no traceback on the workbench's screen: one line (OMG_TEE_DEBUG for more)
        if os.environ.get("OMG_TEE_DEBUG"):
            import traceback

            traceback.print_exception(e)
        print(f"error: agent {cmd} failed: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1
    if isinstance(result, int):  # serve, bench: their replies went out as frames
        return result
    print(json.dumps(result))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
