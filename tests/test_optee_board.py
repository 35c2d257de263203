"""The OP-TEE board in QEMU: the image built from Debian, the lifecycle, the board's python.

Real parts only: OP-TEE OS and TF-A built from Debian's sources, Debian's
arm64 kernel and userland, qemu-system-aarch64, dropbear, tee-supplicant.
The image is built once per session (a new TA key per session: the
firmware is rebuilt, the guest comes from the cache) and two boards boot
once per module. The HUK probe (``board_setup/optee-qemu/huk-probe``), a
tiny TA of our own signed with the workbench's key, shows the per-board
hardware unique key at work without revealing it.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, run_omg

PROBE = REPO / "board_setup" / "optee-qemu" / "huk-probe"
PROBE_UUID = "77532e52-456a-43f7-add2-28e3b53379de"
BOARDS = ("oq1", "oq2")  # the session's OP-TEE boards (conftest.optee_boards)


@pytest.fixture(scope="module")
def image(optee_image):
    return optee_image


@pytest.fixture(scope="module")
def probe(image, board_home, tmp_path_factory) -> dict[str, Path]:
    """The HUK probe TA (signed with the workbench's key) and its client (against Debian's libteec)."""
    from omgkit.board import home

    out = tmp_path_factory.mktemp("probe")
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    r = subprocess.run(["make", "-C", str(PROBE / "ta"), f"TA_DEV_KIT_DIR={image['ta_dev_kit']}",
                        "CROSS_COMPILE=aarch64-linux-gnu-", f"TA_SIGN_KEY={home.ta_signing_key_optee()}",
                        f"O={out / 'ta'}"], capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    sysroot = image["sysroot"]
    r = subprocess.run(["aarch64-linux-gnu-gcc", "-Wall", "-Werror", "-O2", f"-I{sysroot}/usr/include",
                        "-o", str(out / "huk_probe"), str(PROBE / "host" / "huk_probe.c"),
                        f"-L{sysroot}/usr/lib/aarch64-linux-gnu", "-lteec"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {"ta": out / "ta" / f"{PROBE_UUID}.ta", "client": out / "huk_probe"}


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _install_probe(b, probe) -> None:
    b.sftp.put(str(probe["ta"]), f"/data/ta/{PROBE_UUID}.ta")
    b.sftp.put(str(probe["client"]), "/data/board/huk_probe")
    b.sftp.chmod("/data/board/huk_probe", 0o755)


@pytest.mark.slow
def test_a_second_build_is_a_cache_hit(image):
    from omgkit.board import optee_image

    t = time.perf_counter()
    again = optee_image.build_image()
    assert time.perf_counter() - t < 5
    assert again == image
    fw = json.loads((image["firmware"] / "manifest.json").read_text())
    assert fw["optee_os"] == "4.10.0-2" and fw["huk_offset"] > 0
    assert (image["ta_dev_kit"] / "mk" / "ta_dev_kit.mk").is_file()
    guest = json.loads((image["guest"] / "manifest.json").read_text())
    assert {"tee", "optee", "virtio_blk", "virtio_net", "ext4"} <= set(guest["modules"])
    assert any(w.startswith("numpy-2.4.6-cp311") for w in guest["wheels"])


@pytest.mark.slow
def test_status_and_list_show_the_kind_and_the_tee(optee_boards):
    r = run_omg("board", "status", "oq1")
    assert "up, optee-qemu, OP-TEE 4.10.0 (QEMU)" in r.stdout
    st = json.loads(run_omg("board", "status", "oq1", "--json").stdout)
    assert st["up"] and st["kind"] == "optee-qemu" and st["tee"] == "OP-TEE 4.10.0 (QEMU)"
    assert 100 < st["rss_mb"] < 1200 and st["ssh_seconds"] < 120
    listed = run_omg("board", "list").stdout
    assert all(f"emu://{n}" in listed for n in BOARDS) and "optee-qemu" in listed


@pytest.mark.slow
def test_the_secure_world_is_there(optee_boards):
    from omgkit.board import Board, optee_qemu

    with Board(optee_boards[0]) as b:
        assert b.addr.root == "/data/board" and b.addr.user == "root"
        _, out, _ = b.run(
            "ls /dev/tee0 /dev/teepriv0 && pidof tee-supplicant && dmesg | grep 'optee: revision'"
        )
        assert "/dev/tee0" in out and "/dev/teepriv0" in out and "optee: revision 4.10" in out
        _, out, _ = b.run("cat /proc/cmdline; ip -4 addr show eth0")
        assert "10.0.2.15" in out  # user networking, forwarded from 127.0.0.1 only
    console = (Path(optee_qemu.status("oq1")["path"]) / "console.log").read_text()
    assert "Loading Environment from Flash... OK" in console  # u-boot.env: no autoboot delay


@pytest.mark.slow
def test_the_board_python_has_numpy_and_cbor2_and_no_tensorflow(optee_boards):
    from omgkit.board import Board
    from omgkit.board.deployment import _agent

    with Board(optee_boards[0]) as b:
        _, out, _ = b.run(
            b.addr.python + " -c 'import numpy, cbor2, omg_ta, omgkit; print(numpy.__version__)'"
        )
        assert out.strip() == "2.4.6"
        rc, _, err = b.run(b.addr.python + " -c 'import tensorflow'", check=False)
        assert rc != 0 and "No module named 'tensorflow'" in err
        state = _agent(b, "state")  # the agent's one-shot commands run on the board's python
        assert {"current", "installed", "releases"} <= set(state)
        assert isinstance(state["releases"], dict)


@pytest.mark.slow
def test_code_is_uploaded_only_when_it_changed(optee_boards):
    from omgkit.board import Board, optee_qemu

    with Board(optee_boards[0]) as b:
        ident, _ = optee_qemu.code_bundle()
        again = optee_qemu.sync_code(b)
        assert again["sent"] == 0 and again["id"] == ident
        _, out, _ = b.run("readlink /data/omgkit/current")
        assert out.strip() == f"site-{ident}"


@pytest.mark.slow
def test_each_board_has_its_own_hardware_unique_key(optee_boards, probe):
    """The HUK-derived key differs between boards, and one board's secure storage does not open on another."""
    from omgkit.board import Board

    with Board(optee_boards[0]) as a, Board(optee_boards[1]) as b:
        derived = {}
        for name, board in (("a", a), ("b", b)):
            _install_probe(board, probe)
            _, k1, _ = board.run("./huk_probe derive")
            _, k2, _ = board.run("./huk_probe derive")
            assert k1 == k2 and len(k1.strip()) == 64
            derived[name] = k1.strip()
            board.run(f"./huk_probe store secret-of-{name}")
            assert board.run("./huk_probe load")[1].strip() == f"secret-of-{name}"
        assert derived["a"] != derived["b"]
        # board a's storage files on board b: OP-TEE refuses them (keys from b's HUK do not open them)
        own = {n: b.sftp.open(f"/data/tee/{n}").read() for n in b.sftp.listdir("/data/tee")}
        try:
            for n in a.sftp.listdir("/data/tee"):
                b.sftp.putfo(io.BytesIO(a.sftp.open(f"/data/tee/{n}").read()), f"/data/tee/{n}")
            rc, out, err = b.run("./huk_probe load", check=False)
            assert (
                rc != 0 and "secret-of-a" not in out and "0xf0100001" in err
            )  # TEE_ERROR_CORRUPT_OBJECT
        finally:
            b.run("rm -f /data/tee/*")
            for n, data in own.items():
                b.sftp.putfo(io.BytesIO(data), f"/data/tee/{n}")
        assert b.run("./huk_probe load")[1].strip() == "secret-of-b"
        assert a.run("./huk_probe load")[1].strip() == "secret-of-a"


@pytest.mark.slow
def test_a_board_survives_down_and_up(optee_boards, probe):
    """down powers off and stops QEMU; up boots the same board: its files, storage and keys are there."""
    from omgkit.board import Board, optee_qemu

    with Board(optee_boards[1]) as b:
        _install_probe(b, probe)
        b.run("echo kept > kept.txt && ./huk_probe store survives-reboot")
        key = b.run("./huk_probe derive")[1]
    pid = optee_qemu.status("oq2")["pid"]
    assert run_omg("board", "down", "oq2").stdout.strip() == "board oq2 stopped"
    assert not _running(pid) and not optee_qemu.status("oq2")["up"]
    assert (
        "OMG-DOWN" in (Path(optee_qemu.status("oq2")["path"]) / "console.log").read_text()
    )  # /data unmounted
    up = run_omg("board", "up", "oq2", timeout=600).stdout
    assert "OP-TEE 4.10.0 (QEMU)" in up
    with Board(optee_boards[1]) as b:
        assert b.run("cat kept.txt")[1] == "kept\n"
        assert b.run("./huk_probe load")[1].strip() == "survives-reboot"
        assert b.run("./huk_probe derive")[1] == key


@pytest.mark.slow
def test_user_errors_are_one_line(optee_boards):
    r = run_omg("board", "create", "oq1", "--kind", "optee-qemu", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "exists already" in r.stderr
    r = run_omg("board", "status", "no-such-board", check=False)
    assert r.returncode == 2 and "no board 'no-such-board'" in r.stderr


def test_packages_unpack_into_merged_usr():
    from omgkit.board.optee_image import _usr

    assert _usr("./lib/aarch64-linux-gnu/libc.so.6") == "usr/lib/aarch64-linux-gnu/libc.so.6"
    assert (
        _usr("./bin/busybox") == "usr/bin/busybox"
        and _usr("./usr/sbin/dropbear") == "usr/sbin/dropbear"
    )
    assert _usr("./lib/") is None and _usr("./usr/share/doc/libc6/copyright") is None
    assert _usr("./etc/python3.11/sitecustomize.py") == "etc/python3.11/sitecustomize.py"


def test_the_pins_are_whole():
    from omgkit.board.optee_image import _board_txt_pins, pins

    p = pins()
    for src in p["sources"].values():
        assert src["files"] and all(len(h) == 64 and int(h, 16) >= 0 for h in src["files"].values())
    assert _board_txt_pins(p["wheels"]["from_board_txt"]) == ["numpy==2.4.6", "cbor2==6.3.0"]
