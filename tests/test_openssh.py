"""The same client code against a real OpenSSH sshd on 127.0.0.1.

As root, the test runs sshd with its own config for a dedicated
unprivileged user of its own (``omgb-`` and a random suffix, so two suites
on one machine never share one; removed afterwards), who gets the board runtime from an offline
wheelhouse (Debian's python3 and a venv, no TensorFlow), as a real board
would. Then: pin the host key, give the board the emulated TEE's device
state, deploy, provision and classify — the code paths of a HiKey 960.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from omg_ta.frontend import Frontend
from omg_ta.runtime import load_runtime

USER = f"omgb-{uuid.uuid4().hex[:12]}"
"""This run's board user: unique, so concurrent suites do not log in as each other."""
SSHD = "/usr/sbin/sshd"


def _as_user(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    home = pwd.getpwnam(USER).pw_dir
    return subprocess.run(["runuser", "-u", USER, "--", "env", f"HOME={home}", *cmd], capture_output=True,
                          text=True, cwd=home, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def sshd_board(board_home, tmp_path_factory):
    assert os.geteuid() == 0, (
        "this test runs sshd as root for a dedicated user: run `make test` as root"
    )
    assert Path(SSHD).is_file(), (
        "OpenSSH's sshd is missing: `python3 tools/sysdeps.py ssh` (as root) installs it"
    )
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    # no password, but not "locked": sshd without PAM refuses locked accounts even with a key
    subprocess.run(["usermod", "-p", "*", USER], check=True)
    tmp = tmp_path_factory.mktemp("sshd")
    os.chmod(tmp, 0o755)
    for p in tmp.parents:  # the wheelhouse must be readable by the board user
        if str(p).startswith("/tmp/") and p != Path("/tmp"):
            os.chmod(p, os.stat(p).st_mode | 0o755)

    from omgkit.board.wheelhouse import build_wheelhouse

    wh = build_wheelhouse(
        tmp / "wheelhouse"
    )  # the board's runtime, for setup_runtime over SSH below

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "host_key")], check=True
    )
    keys = tmp / "authorized_keys"
    keys.mkdir()
    from omgkit.board import home as omg_home

    shutil.copy(str(omg_home.client_key()) + ".pub", keys / USER)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    # sshd cannot take port 0: pick a free one, and if another process takes it
    # first (another suite on this machine), sshd fails to bind: pick again. Ready
    # means sshd itself says it listens, not that *something* answers on the port.
    for _attempt in range(10):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = tmp / "sshd_config"
        conf.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\nPidFile {tmp / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {keys}/%u\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            f"AllowUsers {USER}\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
        )
        log_path = tmp / f"sshd-{port}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if f"Server listening on 127.0.0.1 port {port}" in log_path.read_text():
                break
            time.sleep(0.1)
        if proc.poll() is None:
            break
    assert proc.poll() is None, log_path.read_text()
    url = f"ssh://{USER}@127.0.0.1:{port}/omg-board?python=omg-venv/bin/python"
    yield url, wh
    proc.terminate()
    proc.wait(10)
    subprocess.run(["pkill", "-u", USER], capture_output=True)
    time.sleep(0.5)
    subprocess.run(["userdel", "--remove", "--force", USER], capture_output=True)


@pytest.mark.slow
def test_openssh_deploy_and_classify(sshd_board, tiny_run, tiny_corpus):
    from omgkit.board import Board, trust
    from omgkit.board.workflow import classify, deploy_run, init_remote_device
    from omgkit.errors import UnknownHostKeyError
    from omgkit.kws.dataset import load_dataset

    url, _ = sshd_board
    with pytest.raises(UnknownHostKeyError, match="SHA256:"):
        Board(url).open()  # not pinned yet: refused, with the key's fingerprint
    assert trust(url).startswith("SHA256:")
    with Board(url) as b:
        _, out, _ = b.run("pwd; whoami")
        assert out.split() == [str(Path(pwd.getpwnam(USER).pw_dir) / "omg-board"), USER]
    from omgkit.board.wheelhouse import setup_runtime

    url, wh = sshd_board
    py = setup_runtime(
        url, wh, python="/usr/bin/python3"
    )  # offline: from the wheelhouse, over SFTP
    assert py == "omg-venv/bin/python"
    r = _as_user([str(Path(pwd.getpwnam(USER).pw_dir) / "omg-board" / py), "-c",
                  "import sys, omgkit.board.agent, omgkit.tee.daemon, omg_ta.entry; print('tensorflow' in sys.modules)"])  # fmt: skip
    assert r.stdout.strip() == "False", r.stderr  # the board side never imports TensorFlow
    init_remote_device(url)
    r = deploy_run(url, tiny_run)
    assert r["model"]["model_id"] == "kws" and not r["skipped"]
    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.select("testing"))
    labels, t = classify(url, x)
    plain = load_runtime("litert", (tiny_run / "model_int8.tflite").read_bytes()).classify(
        Frontend()(x)[..., None]
    )
    assert labels == plain.tolist()
    assert deploy_run(url, tiny_run)["skipped"]
