"""Hardening of deployment and the board agent (issue 13).

Release file names are checked on both sides; nothing is written through a
link planted in the board directory; a commit cut at any step is completed
by the next deployment, which retries a bounded number of times; malformed
requests to the agent get one error reply (a session goes on) or one line.

Real parts: an emulated board (asyncssh server, SFTP, its TEE daemon),
paramiko, the agent in its own process or in this one. Cuts are made by an
audit hook that kills the commit (a BaseException nothing catches) at the
k-th file-system change it makes, for every k.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import pytest

from omg_ta import commands as C
from omgkit.errors import BoardError, ConfigError, DeploymentError

UUID = str(C.TA_UUID)

# -- a cut at the k-th change a commit makes to the file system --------------------


class Cut(BaseException):
    """The agent's process dies here: nothing after this change runs (nothing catches it)."""


_CUT = {"at": None, "n": 0, "thread": None, "events": []}
_MUTATING = {"os.rename", "os.symlink", "os.link", "os.remove", "os.rmdir", "os.mkdir",
             "shutil.rmtree", "os.truncate", "os.chmod", "os.chown", "os.utime"}  # fmt: skip
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC


def _hook(event: str, args: tuple) -> None:
    c = _CUT
    if c["at"] is None or threading.get_ident() != c["thread"]:
        return
    if event in _MUTATING or (event == "open" and isinstance(args[2], int) and args[2] & _WRITE):
        if c["n"] >= c["at"]:
            raise Cut(event)
        c["n"] += 1
        c["events"].append(event)


sys.addaudithook(_hook)  # inert unless a test arms it, and then only in its own thread


@contextlib.contextmanager
def cut_at(k: int):
    """Run the body, killing it before its k-th file-system change (0: before the first)."""
    _CUT.update(at=k, n=0, thread=threading.get_ident(), events=[])
    try:
        yield _CUT
    finally:
        _CUT["at"] = None


# -- fixtures and helpers ----------------------------------------------------------


@pytest.fixture(scope="module")
def hboard(board_home):
    """An emulated board, up: (url, its board directory)."""
    from omgkit.board import emulator

    emulator.create("hd1")
    st = emulator.up("hd1")
    return "emu://hd1", Path(st["path"]) / "root"


@pytest.fixture(scope="module")
def bundle(board_home) -> Path:
    """The emulated TEE's TA, signed by the workbench, its measurement approved by the vendor."""
    from omgkit.board.workflow import default_vendor, ta_bundle

    return ta_bundle(default_vendor())


def package(n: int) -> bytes:
    """A release's package: any bytes do for deployment (the TA reads it only at initialization)."""
    return hashlib.sha256(b"%d" % n).digest() * (200 + n)


def stage(root: Path, files: dict[str, bytes]) -> str:
    """What a complete upload leaves: ``deploy/releases/<id>.partial`` with the files and manifest."""
    from omgkit.board.deployment import manifest_of, release_id

    man = manifest_of(files)
    rid = release_id(man)
    part = root / "deploy" / "releases" / f"{rid}.partial"
    for p, data in files.items():
        (part / p).parent.mkdir(parents=True, exist_ok=True)
        (part / p).write_bytes(data)
    (part / "manifest.json").write_text(json.dumps(man, sort_keys=True))
    return rid


def reset(root: Path) -> None:
    """A board with no release: what `omg board create` makes."""
    shutil.rmtree(root / "deploy", ignore_errors=True)
    (root / "deploy" / "releases").mkdir(parents=True)
    (root / "normal" / "model.omgpkg").unlink(missing_ok=True)
    (root / "device" / "ta" / UUID).unlink(missing_ok=True)


def release_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "deploy" / "releases").iterdir())


def check_installed(root: Path, rid: str, files: dict[str, bytes]) -> None:
    """Current is release ``rid``, complete; the TEE's TA store and the package point at it."""
    cur = root / "deploy" / "current"
    assert os.readlink(cur) == f"releases/{rid}"
    rel = root / "deploy" / "releases" / rid
    assert stat.S_ISDIR(os.lstat(rel).st_mode)
    for p, data in files.items():
        assert (rel / p).read_bytes() == data, p
    ta = root / "device" / "ta" / UUID
    assert os.path.realpath(ta) == os.path.realpath(rel / "ta")
    assert (ta / C.BUNDLE_SIG_FILE).read_bytes() == files[f"ta/{C.BUNDLE_SIG_FILE}"]
    assert (root / "normal" / "model.omgpkg").read_bytes() == files["model.omgpkg"]
    names = release_dirs(root)
    assert not [n for n in names if not n.endswith(".partial") and len(n) != 16], names  # leftovers
    from omgkit.board.agent import KEEP_RELEASES

    assert len([n for n in names if len(n) == 16]) <= KEEP_RELEASES, names


def session_runs(b, bundle: Path) -> None:
    """A session on the board: the TEE loads the deployed TA and it attests (its measurement)."""
    from omgkit.board import RemoteEnclave
    from omgkit.tee.bundle import measure, read_bundle

    with RemoteEnclave(b) as r:
        token = r.attest(os.urandom(32))
    assert measure(read_bundle(bundle)) in token


def in_process(monkeypatch, root: Path) -> None:
    monkeypatch.setenv("OMG_BOARD_ROOT", str(root))


@pytest.fixture
def aroot(tmp_path, monkeypatch) -> Path:
    """A board directory for the agent in this process (an emulated TEE's device directory)."""
    root = tmp_path / "board"
    (root / "device" / "secure").mkdir(parents=True)
    (root / "device" / "ta").mkdir()
    (root / "deploy" / "releases").mkdir(parents=True)
    in_process(monkeypatch, root)
    return root


def small_files(n: int) -> dict[str, bytes]:
    return {f"ta/{C.BUNDLE_SIG_FILE}": b"sig", "ta/entry.py": b"pass\n", "model.omgpkg": package(n)}


def agent_main(capsys, *args: str) -> tuple[int, str, str]:
    from omgkit.board import agent

    rc = agent.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str) -> None:
    assert rc != 0
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


# -- 1. release file names -----------------------------------------------------------

BAD_NAMES = ["../escape", "ta/../../escape", "./x", "a//b", "ta/", "", "x\ny", "-x", ".hidden",
             "a" * 101, "/".join(["d"] * 9) + "/f", "manifest.json", "ta/entry.py.tmp", "ta/é"]  # fmt: skip


def test_bad_release_names_are_refused_before_anything_is_sent(hboard, bundle, monkeypatch):
    from omgkit.board import Board, deployment

    url, root = hboard
    reset(root)
    before = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    with Board(url) as b:
        for name in BAD_NAMES:
            files = {**deployment.release_files(bundle, package(1)), name: b"x"}
            monkeypatch.setattr(deployment, "release_files", lambda *a, f=files: f)
            with pytest.raises(ConfigError, match="release file name"):
                deployment.deploy(b, bundle, package(1))
    assert sorted(p.relative_to(root.parent) for p in root.parent.rglob("*")) == before


@pytest.mark.timeout(120)
def test_an_absolute_name_is_refused_not_retried_forever(hboard, bundle, monkeypatch, tmp_path):
    from omgkit.board import Board, deployment

    url, root = hboard
    reset(root)
    outside = tmp_path / "abs" / "escape"
    files = {**deployment.release_files(bundle, package(2)), str(outside): b"x"}
    monkeypatch.setattr(deployment, "release_files", lambda *a: files)
    with Board(url) as b, pytest.raises(ConfigError, match="release file name"):
        deployment.deploy(b, bundle, package(2))
    assert release_dirs(root) == [] and not outside.exists()


def test_the_agent_refuses_manifests_with_bad_names(aroot, capsys):
    from omgkit.board import agent
    from omgkit.board.deployment import release_id

    rel = aroot / "deploy" / "releases"
    (rel / "escape").write_bytes(b"x")  # what a '../escape' in <id>.partial would name
    files = {**small_files(1), "../escape": b"x"}
    man = {"files": {p: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                     for p, d in sorted(files.items())}}  # fmt: skip
    rid = release_id(man)
    part = rel / f"{rid}.partial"
    for p, d in small_files(1).items():
        (part / p).parent.mkdir(parents=True, exist_ok=True)
        (part / p).write_bytes(d)
    (part / "manifest.json").write_text(json.dumps(man, sort_keys=True))
    rc, out, err = agent_main(capsys, "commit", rid)
    one_line_error(rc, err)
    assert "'../escape'" in err and out == ""
    assert not (aroot / "deploy" / "current").exists() and not (rel / rid).exists()

    # a release directory in place whose manifest has such a name is not a release
    os.replace(part, rel / rid)
    st = agent.state()
    assert rid not in st["releases"] and "'../escape'" in st["invalid"][rid]
    assert st["current"] is None and not st["installed"]

    # link takes RELEASE/FILE and RELEASE.partial/FILE, nothing else
    good = stage(aroot, small_files(2))
    agent.commit(good)
    for src, dst in [(f"{good}/ta/../model.omgpkg", "0123456789abcdef.partial/m"),
                     (f"{good}/model.omgpkg", "0123456789abcdef.partial/../../x"),
                     (f"{good}/model.omgpkg", "0123456789abcdef/m"),
                     (f"{good}/model.omgpkg", "/tmp/x.partial/m"),
                     ("../releases/model.omgpkg", "0123456789abcdef.partial/m")]:  # fmt: skip
        rc, _, err = agent_main(capsys, "link", src, dst)
        one_line_error(rc, err)
    assert release_dirs(aroot) == sorted([good, rid, "escape"])


# -- 2. links planted in the board directory ---------------------------------------------


def test_deployment_never_writes_through_a_planted_link(hboard, bundle, tmp_path):
    from omgkit.board import Board, deploy
    from omgkit.board.deployment import manifest_of, release_files, release_id

    url, root = hboard
    reset(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    files = release_files(bundle, package(3))
    rid = release_id(manifest_of(files))
    rel = root / "deploy" / "releases"
    with Board(url) as b:
        # the release's upload directory is a link out of the board directory
        (rel / f"{rid}.partial").symlink_to(outside)
        with pytest.raises(DeploymentError, match=f"{rid}.partial is a symlink"):
            deploy(b, bundle, package(3))
        assert list(outside.iterdir()) == [] and not (root / "deploy" / "current").exists()
        (rel / f"{rid}.partial").unlink()

        # deploy/releases itself is a link
        os.rename(rel, root / "deploy" / "releases.real")
        rel.symlink_to(outside)
        with pytest.raises(BoardError, match="deploy/releases is a symlink"):
            deploy(b, bundle, package(3))
        assert list(outside.iterdir()) == []
        rel.unlink()
        os.rename(root / "deploy" / "releases.real", rel)

        # a file of the upload (and its temporary name) is a link: replaced, never written through
        part = rel / f"{rid}.partial"
        (part / "ta").mkdir(parents=True)
        (outside / "victim").write_bytes(b"keep")
        (part / "model.omgpkg").symlink_to(outside / "victim")
        (part / "model.omgpkg.tmp").symlink_to(outside / "victim")
        r = deploy(b, bundle, package(3))
        assert r.release == rid and (outside / "victim").read_bytes() == b"keep"
        check_installed(root, rid, files)
        session_runs(b, bundle)


def test_the_emulated_boards_sftp_does_not_follow_a_link_out_of_the_board(hboard, tmp_path):
    """The race the workbench's lstat cannot close (a link swapped in after the check): the
    emulated board's SFTP refuses a path whose directory resolves outside its root."""
    import io

    from omgkit.board import Board

    url, root = hboard
    outside = tmp_path / "outside-sftp"
    outside.mkdir()
    (root / "swapped").symlink_to(outside)
    try:
        with Board(url) as b:
            with pytest.raises(PermissionError):
                b.sftp.putfo(io.BytesIO(b"x"), b.sftp_path("swapped/written"))
            with pytest.raises(PermissionError):
                b.sftp.mkdir(b.sftp_path("swapped/d"))
            assert list(outside.iterdir()) == []
            b.sftp.lstat(b.sftp_path("swapped"))  # the link itself is still seen (and removable)
            b.sftp.putfo(io.BytesIO(b"y"), b.sftp_path("inside"))  # paths inside still work
        assert (root / "inside").read_bytes() == b"y"
    finally:
        (root / "swapped").unlink(missing_ok=True)
        (root / "inside").unlink(missing_ok=True)


def test_the_agent_never_follows_a_planted_link(aroot, tmp_path, capsys):
    from omgkit.board import agent

    outside = tmp_path / "outside"
    rel = aroot / "deploy" / "releases"
    files = small_files(4)
    rid = stage(aroot, files)
    part = rel / f"{rid}.partial"

    # a directory of the upload is a link to a copy of the right files elsewhere
    shutil.move(part / "ta", outside)
    (part / "ta").symlink_to(outside)
    res = agent.commit(rid)
    assert not res["ok"] and sorted(res["bad"]) == ["ta/bundle.sig", "ta/entry.py"]
    assert not (part / "ta").exists() and sorted(os.listdir(outside)) == ["bundle.sig", "entry.py"]
    assert not (aroot / "deploy" / "current").exists()

    # the upload directory itself is a link: refused in one line
    shutil.copytree(outside, outside.with_name("o2") / "ta")
    (outside.with_name("o2") / "model.omgpkg").write_bytes(files["model.omgpkg"])
    shutil.copy(part / "manifest.json", outside.with_name("o2"))
    shutil.rmtree(part)
    part.symlink_to(outside.with_name("o2"))
    rc, _, err = agent_main(capsys, "commit", rid)
    one_line_error(rc, err)
    assert "symlink" in err and not (rel / rid).exists()
    part.unlink()

    # the normal world's directory is a link: nothing is made through it
    stage(aroot, files)
    (aroot / "normal").symlink_to(outside)
    rc, _, err = agent_main(capsys, "commit", rid)
    one_line_error(rc, err)
    assert "normal is a symlink" in err and not (outside / "model.omgpkg").exists()
    (aroot / "normal").unlink()
    assert agent.commit(rid)["installed"]

    # link's source is a link to a file elsewhere: refused
    (outside / "secret").write_bytes(b"s")
    (rel / rid / "evil").symlink_to(outside / "secret")
    rc, _, err = agent_main(capsys, "link", f"{rid}/evil", "0123456789abcdef.partial/evil")
    one_line_error(rc, err)
    assert not (rel / "0123456789abcdef.partial" / "evil").exists()

    # state never lists a release that is a link
    (rel / "fedcba9876543210").symlink_to(rel / rid)
    st = agent.state()
    assert "fedcba9876543210" not in st["releases"] and "fedcba9876543210" in st["invalid"]


# -- 3. a commit cut at any step ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("before", [0, 1, 3], ids=["first-deploy", "upgrade", "pruning"])
def test_a_commit_cut_at_any_step_is_completed_by_the_next_deploy(hboard, bundle, monkeypatch,
                                                                  before):  # fmt: skip
    """``before`` releases are in place; the next one's commit dies before its k-th file-system
    change, for every k; the next deployment must leave the board installed and working."""
    from omgkit.board import Board, agent, deploy
    from omgkit.board.deployment import release_files

    url, root = hboard
    in_process(monkeypatch, root)
    new = release_files(bundle, package(100))
    later = release_files(bundle, package(101))
    k = 0
    with Board(url) as b:
        while True:
            reset(root)
            for i in range(before):
                rid = stage(root, release_files(bundle, package(10 + i)))
                assert agent.commit(rid)["ok"]
                t = time.time() - 1000 + i  # the older, the earlier pruned
                os.utime(root / "deploy" / "releases" / rid, (t, t))
            rid = stage(root, new)
            try:
                with cut_at(k) as c:
                    agent.commit(rid)
                done = True
            except Cut:
                done = False
            if done:
                break
            r = deploy(b, bundle, package(100))  # the next deployment
            assert r.release == rid and not r.skipped, (k, c["events"])
            check_installed(root, rid, new)
            st = agent.state()
            assert st["current"] == rid and st.get("installed") is True and not st["leftovers"], st
            if k % 4 == 0:
                session_runs(b, bundle)
            k += 1
        changes = c["events"]
        assert k == len(changes) and k >= (6 if before == 0 else 8), changes
        if before == 3:
            assert "os.rmdir" in changes  # the cuts fell inside the pruning too
        # and the deployment after that: it hard-links from the releases left
        r = deploy(b, bundle, package(101))
        assert r.linked and not r.skipped
        check_installed(root, r.release, later)
        session_runs(b, bundle)


def test_a_commit_cut_on_an_optee_board_is_completed_too(aroot, tmp_path, monkeypatch):
    """The OP-TEE path: the TA linked into the supplicant's TA directory through deploy/current."""
    from omgkit.board import agent
    from omgkit.board.deployment import _done

    ta_dir = tmp_path / "data-ta"
    monkeypatch.setenv("OMG_OPTEE_TA_DIR", str(ta_dir))
    monkeypatch.setattr(agent, "_optee_board", lambda: True)

    def optee_files(n: int) -> dict[str, bytes]:
        return {f"ta/{UUID}.ta": b"signed TA %d" % (n % 2), "model.omgpkg": package(n)}

    for before in (0, 1, 3):
        k = 0
        while True:
            shutil.rmtree(aroot / "deploy")
            shutil.rmtree(ta_dir, ignore_errors=True)
            (aroot / "normal" / "model.omgpkg").unlink(missing_ok=True)
            for i in range(before):
                rid = stage(aroot, optee_files(10 + i))
                assert agent.commit(rid)["ok"]
                t = time.time() - 1000 + i
                os.utime(aroot / "deploy" / "releases" / rid, (t, t))
            files = optee_files(100)
            rid = stage(aroot, files)
            try:
                with cut_at(k):
                    agent.commit(rid)
                break
            except Cut:
                pass
            # what deploy() does next, with its own decision (the upload is still in place)
            st = agent.state()
            assert not _done(st, rid), (before, k, st)
            assert agent.commit(rid)["installed"]
            st = agent.state()
            assert _done(st, rid), st
            link = ta_dir / f"{UUID}.ta"
            assert os.readlink(link) == str(
                aroot.resolve() / "deploy" / "current" / "ta" / f"{UUID}.ta"
            )
            assert link.read_bytes() == files[f"ta/{UUID}.ta"]
            assert (aroot / "normal" / "model.omgpkg").read_bytes() == files["model.omgpkg"]
            assert len([n for n in release_dirs(aroot) if len(n) == 16]) <= agent.KEEP_RELEASES
            k += 1
        assert k >= 5


def test_a_current_release_that_is_not_installed_is_committed_again(hboard, bundle):
    """What attacks and cuts leave (the package a plain file, the TA store's link gone) is no
    "already deployed": the next deployment links them again."""
    from omgkit.board import Board, deploy
    from omgkit.board.deployment import _agent, release_files

    url, root = hboard
    reset(root)
    files = release_files(bundle, package(5))
    with Board(url) as b:
        rid = deploy(b, bundle, package(5)).release
        pkg = root / "normal" / "model.omgpkg"
        data = pkg.read_bytes()
        pkg.unlink()
        pkg.write_bytes(data)
        (root / "device" / "ta" / UUID).unlink()
        st = _agent(b, "state")
        assert st["current"] == rid and st.get("installed") is False
        assert any("normal/model.omgpkg" in p for p in st["problems"])
        assert any(f"device/ta/{UUID}" in p for p in st["problems"])
        r = deploy(b, bundle, package(5))
        assert r.release == rid and not r.skipped and r.sent == [] and r.linked == []
        check_installed(root, rid, files)
        session_runs(b, bundle)
        assert deploy(b, bundle, package(5)).skipped
        # a damaged file of the current release: sent again, not "already deployed"
        ta = root / "deploy" / "releases" / rid / "ta" / "entry.py"
        ta.write_bytes(b"tampered" + ta.read_bytes()[8:])
        r = deploy(b, bundle, package(5))
        assert not r.skipped and r.sent == ["ta/entry.py"]
        check_installed(root, rid, files)


@pytest.mark.timeout(180)
def test_retries_are_bounded(hboard, bundle, tmp_path):
    """A board whose disk changes what it was sent: three commits, then one clear error."""
    from omgkit.board import Board, deploy, deployment
    from omgkit.board.connection import parse_url
    from omgkit.board.deployment import _agent, manifest_of, release_files, release_id

    url, root = hboard
    reset(root)
    with Board(url) as b:
        old = deploy(b, bundle, package(6)).release
    log = tmp_path / "commits.log"
    wrapper = tmp_path / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$3" = commit ]; then\n'
        f'  echo "$4" >> {log}\n'
        "  for f in deploy/releases/*.partial/model.omgpkg; do\n"
        '    printf Z | dd of="$f" bs=1 count=1 conv=notrunc 2>/dev/null\n'
        "  done\n"
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    a = parse_url(url)
    bad_url = f"ssh://{a.user}@127.0.0.1:{a.port}/.?python={wrapper}"
    rid = release_id(manifest_of(release_files(bundle, package(7))))
    with Board(bad_url) as b, pytest.raises(DeploymentError) as e:
        deploy(b, bundle, package(7))
    msg, TRIES = str(e.value), deployment.TRIES
    assert f"after {TRIES} commits" in msg and "model.omgpkg" in msg and f"{rid}.partial" in msg
    assert log.read_text().split() == [rid] * TRIES
    with Board(url) as b:
        st = _agent(b, "state")
    assert st["current"] == old and st["installed"]  # the previous release still works


# -- 4. malformed input to the agent -------------------------------------------------------


def _frame(obj) -> bytes:
    data = cbor2.dumps(obj)
    return len(data).to_bytes(4, "big") + data


def _raw(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def _replies(out: bytes) -> list[dict]:
    replies = []
    while out:
        n = int.from_bytes(out[:4], "big")
        replies.append(cbor2.loads(out[4 : 4 + n]))
        out = out[4 + n :]
    return replies


def _agent_proc(root: Path, args: list[str], stdin: bytes) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMG_BOARD_ROOT=str(root))
    env.pop("OMG_TEE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "omgkit.board.agent", *args], input=stdin,
                          capture_output=True, env=env, timeout=120)  # fmt: skip


MALFORMED = [
    _raw(b""),  # a length of 0: no CBOR at all
    _raw(b"\xff\xfe\xfd"),  # not CBOR
    _raw(b"\x5a\xff\xff\xff\xff"),  # CBOR that claims 4 GiB inside a 5-byte frame
    _frame([1, 2, 3]),  # not a map
    _frame({1: "ping"}),  # not text keys
    _frame({"nonce": b"x"}),  # no op
    _frame({"op": 7}),  # op not text
    _frame({"op": "format-disk"}),  # unknown op
    _frame({"op": "attest"}),  # a field missing
    _frame({"op": "attest", "nonce": "not bytes"}),
    _frame({"op": "provision", "license": 12}),
    _frame({"op": "classify_mic", "n": "3"}),
    _frame({"op": "classify_mic", "n": True}),
    _frame({"op": "classify_mic", "n": -1}),
    _frame({"op": "mic_play", "audio": [1, 2]}),
    _frame({"op": "classify_batch", "audio": b"\x00" * 7}),
]


def test_serve_answers_every_malformed_request_and_goes_on(hboard):
    _, root = hboard
    stdin = b"".join(MALFORMED) + _frame({"op": "ping"})
    r = _agent_proc(root, ["serve"], stdin)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    replies = _replies(r.stdout)
    assert len(replies) == len(MALFORMED) + 1
    for i, rep in enumerate(replies[:-1]):
        assert rep["ok"] is False and rep["code"] == C.RESULT_BAD_PARAMETERS, (i, rep)
        assert rep["message"], (i, rep)
    assert replies[-1] == {"ok": True}


@pytest.mark.parametrize(
    "tail, says",
    [(b"\x00\x00", "inside a frame"),  # input ends inside a length
     (b"\x00\x00\x01\x00" + b"\xa1" * 10, "inside a frame"),  # and inside a body
     ((1 << 31).to_bytes(4, "big"), "at most")],  # a frame over the limit
    ids=["cut-length", "cut-body", "oversized"],
)  # fmt: skip
def test_serve_ends_in_one_line_on_a_broken_stream(hboard, tail, says):
    _, root = hboard
    r = _agent_proc(root, ["serve"], _frame({"op": "ping"}) + tail)
    replies = _replies(r.stdout)
    assert replies[0] == {"ok": True}
    assert all(rep["ok"] is False for rep in replies[1:]) and len(replies) == 2
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and says in err and "Traceback" not in err, (
        err
    )
    # the end of input where a frame would start is the normal end
    clean = _agent_proc(root, ["serve"], _frame({"op": "ping"}))
    assert (
        clean.returncode == 0 and clean.stderr == b"" and _replies(clean.stdout) == [{"ok": True}]
    )


def test_bench_answers_a_malformed_request_with_one_error(hboard):
    _, root = hboard
    for stdin in (
        b"",
        _raw(b"\xff"),
        _frame([1]),
        _frame({"model": b"x", "audio": b"", "bogus": 1}),
    ):
        r = _agent_proc(root, ["bench"], stdin)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
        (rep,) = _replies(r.stdout)
        assert rep["ok"] is False and rep["code"] == C.RESULT_BAD_PARAMETERS, rep


ONE_SHOT_BAD = [[], ["bogus"], ["state", "extra"], ["link"], ["link", "a"], ["link", "a/b", "c/d"],
                ["link", "a", "b", "c"], ["commit"], ["commit", "a", "b"], ["commit", "../x"],
                ["commit", "0123456789abcdef"], ["tee-up", "now"], ["device-info", "x"],
                ["serve", "x"]]  # fmt: skip


def test_one_shot_commands_refuse_bad_arguments_in_one_line(aroot, capsys):
    for args in ONE_SHOT_BAD:
        rc, out, err = agent_main(capsys, *args)
        one_line_error(rc, err)
        assert out == "", args
    # and as a process, as the workbench runs it
    r = _agent_proc(aroot, ["link", "x"], b"")
    assert r.returncode == 2 and r.stderr.decode().startswith("error: ") and r.stdout == b""
    assert r.stderr.count(b"\n") == 1
