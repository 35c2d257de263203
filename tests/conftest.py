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


class GuardWorld:
    """Every party (omgkit.guard.local.LocalGuard) plus sealed packages of the tiny model.

    All real parts: each device runs its own TEE daemon process; the vendor
    serves over HTTP on loopback in the tests that need it.
    """

    def __init__(self, root: Path, model: bytes):
        from omg_ta.frontend import FrontendSettings
        from omgkit.guard.local import LocalGuard
        from omgkit.labels import LABELS

        self.local = LocalGuard.create(root)
        self.root, self.model = root, model
        self.manufacturer, self.ta_key = self.local.manufacturer, self.local.ta_key
        self.vendor, self.measurement = self.local.vendor, self.local.measurement
        self.daemons = self.local.daemons
        self.labels = list(LABELS)
        self.frontend = FrontendSettings().to_dict()
        self.packages = {
            v: self.vendor.seal_model(
                model, model_id="kws", model_version=v, labels=self.labels, frontend=self.frontend
            )  # fmt: skip
            for v in (1, 2)
        }

    def device(self, name: str):
        return self.local.device(name)

    def host(self, name: str, storage: str | None = None, **kw):
        return self.local.host(name, storage, **kw)

    def close(self) -> None:
        self.local.close()


@pytest.fixture(scope="session")
def guard_world(tiny_run, tmp_path_factory):
    w = GuardWorld(tmp_path_factory.mktemp("guard"), (tiny_run / "model_int8.tflite").read_bytes())
    yield w
    w.close()


@pytest.fixture(scope="session")
def board_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("omghome")
    old = os.environ.get("OMG_HOME")
    os.environ["OMG_HOME"] = str(home)
    yield home
    from omgkit.board import emulator

    for st in emulator.list_boards():
        emulator.down(st["name"])
    if old is None:
        os.environ.pop("OMG_HOME", None)
    else:
        os.environ["OMG_HOME"] = old
