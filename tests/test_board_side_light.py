"""The TA, its runtimes and the TEE daemon import and run with TensorFlow unavailable."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = r"""
import sys
for name in ("tensorflow", "keras", "tf_keras"):
    sys.modules[name] = None  # any import of these now raises ImportError
import numpy as np
from omg_ta.frontend import Frontend
from omg_ta.runtime import load_runtime
import omg_ta.entry, omg_ta.package, omg_ta.license  # the whole TA
import omgkit.tee.daemon, omgkit.tee.world  # the emulated TEE that hosts it
blob = open(sys.argv[1], "rb").read()
audio = (np.random.default_rng(0).standard_normal((3, 16000)) * 3000).astype(np.int16)  # one second
feats = Frontend()(audio)[..., None]
for rt in ("litert", "tflm"):
    print(rt, load_runtime(rt, blob).classify(feats).tolist())
heavy = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras") and sys.modules[m] is not None]
print("heavy:", heavy)
"""


def test_ta_runs_without_tensorflow(tiny_run):
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_run / "model_int8.tflite")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "heavy: []"
    assert lines[0].split(" ", 1)[1] == lines[1].split(" ", 1)[1]  # same labels on both runtimes


def test_ta_package_never_imports_the_workbench():
    from conftest import REPO

    for src in (REPO / "ta" / "omg_ta").rglob("*.py"):
        text = src.read_text()
        assert "import omgkit" not in text and "from omgkit" not in text, src
        assert "tensorflow" not in text.replace("TensorFlow", "").split('"""', 2)[-1], src


def test_secure_world_does_not_load_the_vendor_or_the_host_app():
    """The TEE daemon is the 'secure world': no vendor HTTP server, no host app, no SSH."""
    probe = (
        "import sys, omgkit.tee.daemon\n"
        "bad = ('omgkit.guard.vendor', 'omgkit.guard.host', 'omgkit.board', 'http.server',"
        " 'paramiko', 'asyncssh', 'tensorflow')\n"
        "print(sorted(m for m in sys.modules if m.startswith(bad)))\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_tee_image_loads_only_its_runtimes(tmp_path):
    """A device's TEE image holds the runtimes it names: each TA process loads them before its
    TA (one waits warm for the next session); the TEE core itself loads none (the bench's TA memory)."""
    import time

    from omgkit.guard.local import LocalGuard

    def mapped(pid: int) -> str:
        return open(f"/proc/{pid}/maps").read()

    def warm_ta(daemon_pid: int, expect: tuple[str, ...]) -> str:
        """The maps of the core's waiting TA process, once it has loaded ``expect``."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for tid in os.listdir(f"/proc/{daemon_pid}/task"):
                try:  # a thread can end between the listing and the read
                    children = open(f"/proc/{daemon_pid}/task/{tid}/children").read().split()
                except FileNotFoundError:
                    continue
                for child in children:
                    try:  # and a process between the listing and its maps
                        m = mapped(int(child))
                    except FileNotFoundError:
                        continue
                    if all(name in m for name in expect):
                        return m
            time.sleep(0.2)
        raise AssertionError(f"no TA process with {expect} came up")

    with LocalGuard.create(tmp_path) as lg:
        lg.device("only-tflm", runtimes=("tflm",))
        lg.device("both")
        core = {n: mapped(lg.daemons[n].proc.pid) for n in ("only-tflm", "both")}
        only = warm_ta(lg.daemons["only-tflm"].proc.pid, ("tflite_micro",))
        both = warm_ta(lg.daemons["both"].proc.pid, ("tflite_micro", "ai_edge_litert"))
    assert "tflite_micro" in only and "ai_edge_litert" not in only
    assert "tflite_micro" in both and "ai_edge_litert" in both
    assert all("tflite_micro" not in m and "ai_edge_litert" not in m for m in core.values())


def test_an_optee_boards_normal_world_needs_only_numpy_and_cbor2():
    """On an OP-TEE board the agent drives the TA through libteec: no cryptography, no TensorFlow,
    no emulated TEE (the board has Debian's python3 with numpy and cbor2 only)."""
    probe = (
        "import sys\n"
        "for name in ('cryptography', 'tensorflow', 'paramiko', 'asyncssh', 'scipy'):\n"
        "    sys.modules[name] = None\n"
        "import omgkit.board.agent, omgkit.guard.host, omgkit.tee.optee, omg_ta.ccore\n"
        "from omgkit.guard.host import GuardedModel\n"
        "print(sorted(m for m in sys.modules if m.startswith(('omgkit.tee.daemon', 'omgkit.tee.world',"
        " 'omgkit.tee.device', 'omgkit.guard.vendor'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
