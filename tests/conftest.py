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
HOSTLIB = REPO / "ta" / "optee" / "hostlib"
CORE_BUILD = REPO / "ta" / "optee" / "build" / "host"


def pytest_collection_modifyitems(config, items):
    """``OMG_TEST_ORDER=reverse`` or ``shuffle:SEED`` runs the suite in another order.

    Tests must not depend on each other's order; this is how that is checked
    (session fixtures are shared either way)."""
    order = os.environ.get("OMG_TEST_ORDER", "")
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle:"):
        import random

        random.Random(int(order.split(":", 1)[1])).shuffle(items)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from omgkit.kws.corpus import synthesize

    out = tmp_path_factory.mktemp("corpus") / "tiny"
    synthesize(out, "tiny", seed=0, show_progress=False)
    return out


def _train_tiny(corpus: Path, out: Path, **settings) -> Path:
    from omgkit.kws.augment import AugmentSettings
    from omgkit.kws.convert import convert_run
    from omgkit.kws.train import TrainSettings, train

    train(
        corpus,
        out,
        TrainSettings(epochs=4, augment=AugmentSettings(copies=1), **settings),
        verbose=0,
    )
    convert_run(out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus, tmp_path_factory) -> Path:
    """A DS-CNN-S (MFCC 49x10) trained for a few epochs on the tiny corpus, converted."""
    return _train_tiny(tiny_corpus, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="session")
def tiny_run_logmel(tiny_corpus, tmp_path_factory) -> Path:
    """The same on the micro_speech log-mel frontend (49x40): every guard path runs with it too."""
    from omg_ta.frontend import FrontendSettings

    out = tmp_path_factory.mktemp("runs") / "tiny-logmel"
    return _train_tiny(tiny_corpus, out, frontend=FrontendSettings.micro_speech())


@pytest.fixture(scope="session")
def tiny_run_tinyconv(tiny_corpus, tmp_path_factory) -> Path:
    """tiny_conv, the micro_speech model family the paper ran (MFCC 49x10)."""
    return _train_tiny(
        tiny_corpus, tmp_path_factory.mktemp("runs") / "tiny-tinyconv", model="tiny_conv"
    )


@pytest.fixture(scope="session", params=["mfcc", "logmel"])
def any_tiny_run(request) -> Path:
    """The tiny run of each frontend, for the tests every guard path must pass with both."""
    return request.getfixturevalue("tiny_run" if request.param == "mfcc" else "tiny_run_logmel")


def make_core(*targets: str) -> None:
    """``make -C ta/optee/hostlib TARGETS``: the TA's C core as a host library."""
    r = subprocess.run(["make", "-s", "-C", str(HOSTLIB), *targets], capture_output=True, text=True)
    if r.returncode:
        pytest.fail(f"make {' '.join(targets)} in {HOSTLIB} failed:\n{r.stdout}\n{r.stderr}")


@pytest.fixture(scope="session")
def core_lib():
    """The C core's host library, built and checked (it imports only mem*) as `make` does."""
    make_core("all", "check")
    from omg_ta import ccore

    return ccore.load()


@pytest.fixture(scope="session")
def asan_env() -> dict[str, str]:
    """The environment of a process that loads the AddressSanitizer + UBSan build of the core."""
    make_core("asan")
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = libasan.stdout.strip()
    assert os.path.isabs(path) and os.path.exists(path), f"gcc has no libasan.so ({path!r})"
    return dict(os.environ, OMG_CORE_LIB=str(CORE_BUILD / "libomgcore-asan.so"),
                ASAN_OPTIONS="detect_leaks=0", LD_PRELOAD=path)  # fmt: skip


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
    """Every party (omgkit.guard.local.LocalGuard) plus sealed packages of a tiny run's release.

    All real parts: each device runs its own TEE daemon process; the vendor
    serves over HTTP on loopback in the tests that need it.
    """

    def __init__(self, root: Path, run: Path):
        from omgkit.guard.local import LocalGuard
        from omgkit.kws.release import Release

        self.local = LocalGuard.create(root)
        self.root = root
        self.release = Release.from_run(run)
        self.model, self.labels = self.release.model, list(self.release.labels)
        self.frontend = self.release.frontend
        self.manufacturer, self.ta_key = self.local.manufacturer, self.local.ta_key
        self.vendor, self.measurement = self.local.vendor, self.local.measurement
        self.daemons = self.local.daemons
        self.packages = {v: self.vendor.seal_model(self.release, model_version=v) for v in (1, 2)}

    def device(self, name: str):
        return self.local.device(name)

    def host(self, name: str, storage: str | None = None, **kw):
        return self.local.host(name, storage, **kw)

    def prepared(self, name: str, version: int = 1, *, recorder=None, **prepare_kw):
        """A host on a fresh device, prepared over the vendor's HTTP service, package installed."""
        from omgkit.guard import VendorClient, VendorServer

        g = self.host(name, recorder=recorder)
        with VendorServer(self.vendor) as srv:
            g.prepare(VendorClient(srv.url), model_id="kws", model_version=version, **prepare_kw)
        g.install_package(self.packages[version])
        return g

    def close(self) -> None:
        self.local.close()


@pytest.fixture(scope="session")
def guard_world(tiny_run, tmp_path_factory):
    w = GuardWorld(tmp_path_factory.mktemp("guard"), tiny_run)
    yield w
    w.close()


@pytest.fixture(scope="session")
def guard_world_logmel(tiny_run_logmel, tmp_path_factory):
    w = GuardWorld(tmp_path_factory.mktemp("guard-logmel"), tiny_run_logmel)
    yield w
    w.close()


@pytest.fixture(scope="session", params=["mfcc", "logmel"])
def any_guard_world(request):
    """The guard world of each frontend."""
    return request.getfixturevalue(
        "guard_world" if request.param == "mfcc" else "guard_world_logmel"
    )


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


# -- OP-TEE in QEMU: built once per session (the session's TA key), two boards booted once ----------


@pytest.fixture(scope="session")
def optee_image(board_home):
    """Firmware (OP-TEE with the workbench's TA key and our pseudo-TA, TF-A) and the guest."""
    from omgkit.board import optee_image

    return optee_image.build_image()


@pytest.fixture(scope="session")
def optee_boards(optee_image, board_home):
    """Two OP-TEE boards in QEMU, oq1 and oq2, created and up (enrolled by the manufacturer);
    down at the end of the session."""
    from omgkit.board import optee_qemu

    names = ("oq1", "oq2")
    try:
        for n in names:
            optee_qemu.create(n)
            optee_qemu.up(n)
        yield [f"emu://{n}" for n in names]
    finally:
        for n in names:
            try:
                optee_qemu.down(n)
            except Exception:  # a board that was never made
                pass
