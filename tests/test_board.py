"""Boards over SSH: the emulated board, deployment, remote sessions, and failures.

Real parts: the asyncssh emulator in its own process, paramiko, SFTP, the
board's TEE daemon. Faults are injected by a TCP proxy on loopback that
cuts the connection after a chosen number of bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from omg_ta.frontend import Frontend
from omg_ta.runtime import load_runtime
from omgkit.errors import (
    BoardAuthError,
    BoardUnreachableError,
    HostKeyChangedError,
    UnknownHostKeyError,
)


@pytest.fixture(scope="module")
def board(board_home):
    from omgkit.board import emulator

    emulator.create("b1")
    emulator.up("b1")
    return "emu://b1"


def test_deploy_and_run_equal_plain_inference(board_home, any_tiny_run, tiny_corpus):
    """On each frontend: deploy, classify the test split, redeploy (nothing sent), new version."""
    from omgkit.board import emulator
    from omgkit.board.workflow import classify, deploy_run
    from omgkit.kws.dataset import load_dataset
    from omgkit.kws.release import Release

    name = f"b-{Release.from_run(any_tiny_run).frontend.kind}"
    release = Release.from_run(any_tiny_run, model_id=f"kws-{name}")
    emulator.create(name)
    emulator.up(name)
    board = f"emu://{name}"
    r = deploy_run(board, release)
    assert not r["skipped"] and "model.omgpkg" in r["sent"]
    version = r["model"]["model_version"]
    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.select("testing"))
    labels, t = classify(board, x)
    plain = load_runtime("litert", release.model).classify(Frontend(release.frontend)(x)[..., None])
    assert labels == plain.tolist()
    assert t["model"]["labels"] == list(release.labels)
    assert 0 < t["rtt_median_ms"] < 1000
    from conftest import run_omg  # the same through `omg run`, as a user runs it

    out = Path(emulator.status(name)["path"]) / "run.json"
    r = run_omg("run", "--board", board, "--data", str(tiny_corpus), "--split", "testing",
                "--json", str(out))  # fmt: skip
    res = json.loads(out.read_text())
    assert res["labels"] == plain.tolist()
    # the accuracy says whose voices it is over, engine by engine (the held-out one apart)
    items = ds.select("testing")
    engines = sorted({it.engine for it in items})
    assert sorted(res["accuracy_by_engine"]) == engines and "by engine: " in r.stdout
    y = ds.load(items)[1]
    for e in engines:
        mine = [i for i, it in enumerate(items) if it.engine == e]
        assert res["accuracy_by_engine"][e] == pytest.approx(float(np.mean(plain[mine] == y[mine])))
    again = deploy_run(board, release)  # same release: nothing sent, same version
    assert again["skipped"] and again["sent"] == [] and again["model"]["model_version"] == version
    newer = deploy_run(board, release, model_version=version + 1)
    assert newer["sent"] == ["model.omgpkg"] and len(newer["linked"]) >= 10  # the TA was there
    assert newer["model"]["model_version"] == version + 1
    emulator.down(name)


def test_a_bad_model_never_reaches_the_board(board_home, tiny_run, tiny_corpus, tmp_path):
    """A truncated model is refused in one line before deployment; the board keeps its good one."""
    import shutil

    from conftest import run_omg

    from omgkit.board import emulator
    from omgkit.board.workflow import classify

    emulator.create("b-bad")
    emulator.up("b-bad")
    good = run_omg("deploy", "--board", "emu://b-bad", "--run", str(tiny_run)).stdout
    version = int(good.split(" v")[-1].split()[0])  # "... model kws vN initialized ..."
    bad = tmp_path / "copy"
    shutil.copytree(tiny_run, bad)
    model = bad / "model_int8.tflite"
    model.write_bytes(model.read_bytes()[: len(model.read_bytes()) // 2])
    r = run_omg("deploy", "--board", "emu://b-bad", "--run", str(bad), check=False)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(model) in lines[0]
    assert "cannot load the model" in lines[0]
    from omgkit.kws.dataset import load_dataset

    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.select("testing")[:8])
    labels, t = classify("emu://b-bad", x)  # the good model still runs, at its version
    assert len(labels) == 8 and t["model"]["model_version"] == version
    again = run_omg("deploy", "--board", "emu://b-bad", "--run", str(tiny_run))
    assert "already deployed" in again.stdout
    emulator.down("b-bad")


def test_several_boards_at_once(board_home, board):
    from omgkit.board import Board, emulator

    emulator.create("b2")
    emulator.up("b2")
    ups = [st["name"] for st in emulator.list_boards() if st["up"]]
    assert {"b1", "b2"} <= set(ups)
    with Board("emu://b1") as a, Board("emu://b2") as b:
        assert a.run("cat device/secure/device_id")[1] != b.run("cat device/secure/device_id")[1]
    assert emulator.down("b2") and not emulator.status("b2")["up"]


def test_commands_run_from_the_board_directory(board):
    from omgkit.board import Board

    with Board(board) as b:
        _, out, _ = b.run('pwd; echo "$OMG_BOARD_ROOT"; echo "$LANG"')
        pwd, root, lang = out.split()
        assert pwd == root and pwd.endswith("boards/b1/root") and lang == "C.UTF-8"
        with pytest.raises(OSError):
            b.sftp.stat("../board.json")  # SFTP is confined to the board directory


def test_changed_host_key_names_both_fingerprints(board_home, board):
    from omgkit.board import Board
    from omgkit.board.connection import parse_url

    kh = board_home / "known_hosts"
    original = kh.read_text()
    addr = parse_url(board)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    try:
        kh.write_text(f"{addr.known_hosts_name} {pub}\n")
        with pytest.raises(HostKeyChangedError) as e:
            Board(board).open()
        msg = str(e.value)
        assert msg.count("SHA256:") == 2 and e.value.expected != e.value.got
        assert "HOST KEY CHANGED" in msg
        kh.write_text("")
        with pytest.raises(UnknownHostKeyError, match="omg board trust"):
            Board(board).open()
        from omgkit.board import trust

        fp = trust(board)
        assert fp.startswith("SHA256:")
        with Board(board) as b:
            assert b.run("echo ok")[1].strip() == "ok"
    finally:
        kh.write_text(original)


def test_wrong_client_key_is_an_authentication_error(board, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from omgkit.board.connection import parse_url

    a = parse_url(board)
    key = tmp_path / "other_key"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key, 0o600)
    from omgkit.board import Board

    url = f"ssh://{a.user}@127.0.0.1:{a.port}/.?key={key}"
    with pytest.raises(BoardAuthError, match="refused user") as e:
        Board(url).open()
    assert str(key) in str(e.value)


def test_board_down_fails_fast_and_clearly(board_home):
    from omgkit.board import Board, emulator

    emulator.create("b3")  # never started
    t = time.monotonic()
    with pytest.raises(BoardUnreachableError) as e:
        Board("emu://b3", timeout=5).open()
    assert time.monotonic() - t < 6
    msg = str(e.value)  # said once, naming the board and the command that starts it
    assert msg.count("unreachable") == 1 and "`omg board up b3`" in msg, msg


# --- fault injection -----------------------------------------------------------


class CuttingProxy:
    """A loopback TCP proxy that cuts every connection after ``limit`` bytes upstream."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.limit: int | None = None
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, False), daemon=True).start()

    def _pipe(self, a, b, upstream):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if upstream:
                    if self.limit is not None and self.sent + len(data) > self.limit:
                        b.sendall(data[: max(0, self.limit - self.sent)])
                        self.sent = self.limit
                        break
                    self.sent += len(data)
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()


def _board_state(root: Path) -> str | None:
    """The current release, after checking it is complete; None if there is none."""
    cur = root / "deploy" / "current"
    if not cur.is_symlink():
        return None
    rel = cur.resolve()
    man = json.loads((rel / "manifest.json").read_text())
    for path, meta in man["files"].items():
        data = (rel / path).read_bytes()
        assert len(data) == meta["size"] and hashlib.sha256(data).hexdigest() == meta["sha256"], (
            path
        )
    return rel.name


@pytest.mark.slow
def test_cut_connection_leaves_old_or_new_never_a_mix(board_home, board, tiny_run):
    from omgkit.board import Board, deploy, emulator, trust
    from omgkit.board.connection import parse_url
    from omgkit.board.deployment import manifest_of, release_files, release_id
    from omgkit.board.workflow import default_vendor, ta_bundle
    from omgkit.kws.release import Release

    v = default_vendor()
    bundle = ta_bundle(v)
    release = dataclasses.replace(Release.from_run(tiny_run), model_id="kws-cut")

    def package(n: int) -> bytes:
        return v.seal_model(release, model_version=n)

    def rid(pkg: bytes) -> str:
        return release_id(manifest_of(release_files(bundle, pkg)))

    a = parse_url(board)
    proxy = CuttingProxy(a.port)
    url = f"ssh://{a.user}@127.0.0.1:{proxy.port}/.?python={sys.executable}"
    trust(url)
    root = Path(emulator.status("b1")["path"]) / "root"
    with Board(url) as b:
        deploy(b, bundle, package(100))
    proxy.sent = 0
    with Board(url) as b:
        deploy(b, bundle, package(101))
    full = proxy.sent  # bytes one whole deployment of a new model sends upstream
    rng = random.Random(7)
    outcomes = []
    partial_left = 0
    for trial in range(20):
        old = _board_state(root)
        new_pkg = package(200 + trial)  # a release the board has never seen
        # anywhere in the deployment; every third trial in its last stretch (the commit)
        proxy.sent, proxy.limit = (
            0,
            rng.randint(1, full) if trial % 3 else full - rng.randint(0, 1500),
        )
        try:
            with Board(url, timeout=3) as b:
                deploy(b, bundle, new_pkg)
        except Exception:
            pass  # the cut: any error is fine, what matters is the board's state
        proxy.limit = None
        now = _board_state(root)
        assert now in (old, rid(new_pkg)), f"trial {trial}: a mix or nothing ({now})"
        outcomes.append("new" if now != old else "old")
        partial_left += any(
            p.name.endswith(".partial") for p in (root / "deploy" / "releases").iterdir()
        )
        if now == old:  # a rerun completes, reusing what the cut run left
            with Board(url) as b:
                deploy(b, bundle, new_pkg)
            assert _board_state(root) == rid(new_pkg)
    assert "old" in outcomes and partial_left > 0, (
        outcomes
    )  # cuts fell mid-upload, and the old release held


def test_missing_runtime_on_the_board_says_so(board):
    from omgkit.board import Board
    from omgkit.board.connection import parse_url
    from omgkit.board.deployment import _agent
    from omgkit.errors import RemoteCommandError

    a = parse_url(board)
    url = f"ssh://{a.user}@127.0.0.1:{a.port}/.?python=/nonexistent/python3"
    with Board(url) as b, pytest.raises(RemoteCommandError, match="runtime is missing"):
        _agent(b, "state")


def test_versions_follow_the_model_bytes(tiny_run, tmp_path):
    from omgkit.errors import ConfigError
    from omgkit.guard import Vendor
    from omgkit.kws.release import Release

    v = Vendor.create(tmp_path / "v")
    a = Release.from_run(tiny_run, model_id="m")
    b = Release.from_run(tiny_run, model_id="m", quantization="float32")  # other bytes
    assert v.version_for(a) == 1
    v.seal_model(a, model_version=1)
    assert v.version_for(a) == 1 and v.version_for(b) == 2
    with pytest.raises(ConfigError, match="new version"):
        v.seal_model(b, model_version=1)
    with pytest.raises(ConfigError, match="new version"):  # same bytes, other labels
        v.seal_model(dataclasses.replace(a, labels=tuple(reversed(a.labels))), model_version=1)


def test_disk_full_is_named(board_home, tiny_run):
    """A board whose release storage is a 64 kB tmpfs: the release does not fit."""
    import subprocess

    from omgkit.board import emulator
    from omgkit.board.workflow import deploy_run
    from omgkit.errors import DiskFullError

    emulator.create("b4")
    st = emulator.up("b4")
    releases = Path(st["path"]) / "root" / "deploy" / "releases"
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(releases)], capture_output=True
    )
    assert r.returncode == 0, f"this test mounts a small tmpfs and needs root: {r.stderr!r}"
    try:
        with pytest.raises(DiskFullError, match="no space left") as e:
            deploy_run("emu://b4", tiny_run)
        assert e.value.host == "127.0.0.1" and ".partial/" in e.value.path
    finally:
        emulator.down("b4")
        subprocess.run(["umount", str(releases)], check=True)
