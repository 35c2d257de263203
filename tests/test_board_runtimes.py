"""A board whose environment runs tflite-runtime (issue 17), made from a wheelhouse.

tflite-runtime 2.14 needs numpy < 2, so it cannot live in the workbench's
environment (TensorFlow 2.21, numpy 2); a board's environment is its own.
``omg board create NAME --runtime tflite-runtime`` makes one from the
wheelhouse of ``requirements/board-tflite-runtime.txt`` with no index; the
workbench seals for the runtime the board reports, and the TA loads the
package with tflite-runtime from bytes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_omg

from omg_ta.frontend import Frontend
from omg_ta.runtime import load_runtime

NAME = "tfl"


@pytest.fixture(scope="module")
def tfl_board(board_home):
    r = run_omg("board", "create", NAME, "--runtime", "tflite-runtime")
    assert "runtime tflite-runtime" in r.stdout, r.stdout + r.stderr
    run_omg("board", "up", NAME)
    return f"emu://{NAME}"


def test_the_boards_environment_is_its_own(tfl_board):
    from omgkit.board import emulator

    st = emulator.status(NAME)
    meta = json.loads((Path(st["path"]) / "board.json").read_text())
    assert st["runtime"] == "tflite-runtime" and meta["python"].endswith("/venv/bin/python")
    probe = (
        "import importlib.util as u, json, numpy, tflite_runtime, omg_ta.runtime as r;"
        "print(json.dumps([numpy.__version__, tflite_runtime.__version__, r.installed_runtimes(),"
        "[m for m in ('tensorflow', 'ai_edge_litert', 'keras') if u.find_spec(m)]]))"
    )
    out = subprocess.run([meta["python"], "-c", probe], capture_output=True, text=True, check=True)
    numpy_v, tfl_v, runtimes, heavy = json.loads(out.stdout)
    assert numpy_v.startswith("1.") and tfl_v == "2.14.0"
    assert "tflite-runtime" in runtimes and "litert" not in runtimes and heavy == []


def test_labels_equal_litert_on_the_whole_test_split(tfl_board, tiny_run, tiny_corpus):
    from omgkit.bench import board_rtt
    from omgkit.board.workflow import classify, deploy_run
    from omgkit.kws.dataset import load_dataset
    from omgkit.kws.release import Release

    release = Release.from_run(tiny_run, model_id="kws-tfl")
    r = deploy_run(tfl_board, release)
    assert r["model"]["runtime"] == "tflite-runtime"  # sealed for the runtime the board has
    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.select("testing"))
    labels, _ = classify(tfl_board, x)
    litert = load_runtime("litert", release.model).classify(
        Frontend(release.frontend)(x)[..., None]
    )
    assert len(labels) == len(x) >= 30 and len(set(labels)) > 3  # the whole split, many labels
    assert labels == litert.tolist()
    assert board_rtt(tfl_board, n=3, warmup=1)["runtime"] == "tflite-runtime"


def test_runtime_choices_are_checked(board_home, monkeypatch):
    from omgkit.board import emulator, lifecycle
    from omgkit.errors import ConfigError, UnknownNameError

    with pytest.raises(UnknownNameError, match="board runtime"):
        emulator.create("nope", runtime="tensorflow")
    with pytest.raises(ConfigError, match="--runtime is for emulated boards"):
        lifecycle.create("nope", kind="optee-qemu", runtime="tflite-runtime")
    # the environment cannot be made (injected: pip fails once the board directory exists):
    # a clear error, and no half-made board
    monkeypatch.setattr(
        emulator, "install_command", lambda *a, **k: "echo 'no space left' >&2; exit 3"
    )
    with pytest.raises(ConfigError, match="environment could not be made: no space left"):
        emulator.create("half", runtime="tflite-runtime", say=lambda s: None)
    assert not emulator.board_dir("half").exists()
    assert "half" not in {b["name"] for b in emulator.list_boards()}
