"""Shared fixtures: a tiny synthetic corpus and a model trained on it.

Everything is real: the TTS engines, TensorFlow training, the TFLite
converter and both runtimes. Sizes are small so the suite stays fast; the
full-size runs are `make demo` and the benchmarks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from omgkit.corpus import synthesize

    out = tmp_path_factory.mktemp("corpus") / "tiny"
    synthesize(out, "tiny", seed=0, show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus, tmp_path_factory) -> Path:
    """A DS-CNN-S trained for a few epochs on the tiny corpus, converted."""
    from omgkit.augment import AugmentSettings
    from omgkit.convert import convert_run
    from omgkit.train import TrainSettings, train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_corpus, run, TrainSettings(epochs=4, augment=AugmentSettings(copies=1)), verbose=0)
    convert_run(run)
    return run


def run_omg(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the installed `omg` CLI in a subprocess, as a user would."""
    exe = Path(sys.executable).with_name("omg")
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(
            f"omg {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        )
    return r
