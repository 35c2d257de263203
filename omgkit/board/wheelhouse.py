"""An offline wheelhouse for a board: its runtime without internet.

A board's Python environment is its own, made from a wheelhouse with no
index (``pip install --no-index``). Which inference runtime it carries is
a choice (``BOARD_RUNTIMES``), each with its own pinned requirements:

- ``litert`` (the default): ``requirements/board.txt`` — numpy 2, cbor2,
  cryptography, ai-edge-litert, tflite-micro;
- ``tflite-runtime``: ``requirements/board-tflite-runtime.txt`` — the
  legacy wheel many Arm boards in the field run, built against numpy 1,
  so numpy < 2 (it cannot share the workbench's environment).

``build_wheelhouse(out, runtime=...)`` downloads those wheels (online,
once) with the requirements file as ``requirements.txt`` beside them, and
omgkit's own wheel. For another platform (a HiKey 960 on Debian bookworm:
``DEBIAN_AARCH64``) pass ``platform`` and ``python_version``: pip then
fetches binary wheels for that platform. ``setup_runtime(url, wh)``
installs it on any board over SSH; ``omg board create NAME --runtime
tflite-runtime`` makes an emulated board whose environment comes from one
(``omgkit.board.emulator``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError, UnknownNameError

REPO = Path(__file__).resolve().parents[2]

BOARD_RUNTIMES = {"litert": "board.txt", "tflite-runtime": "board-tflite-runtime.txt"}
"""A board environment's inference runtime -> its requirements file (``requirements/``)."""
DEFAULT_BOARD_RUNTIME = "litert"
REQUIREMENTS = "requirements.txt"
"""The requirements file's name inside a wheelhouse."""


def requirements_file(runtime: str) -> Path:
    if runtime not in BOARD_RUNTIMES:
        raise UnknownNameError("board runtime", runtime, list(BOARD_RUNTIMES))
    return REPO / "requirements" / BOARD_RUNTIMES[runtime]


DEBIAN_AARCH64 = ("manylinux_2_34_aarch64", "manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                  "manylinux_2_17_aarch64", "manylinux2014_aarch64")  # fmt: skip
"""Wheel platforms an arm64 Debian bookworm board (glibc 2.36; a HiKey 960, say) runs: pip takes
the given tags only, and the pinned wheels span them (tflite-runtime 2.14 and cryptography are
``manylinux_2_34``, numpy 1.26 ``manylinux2014``). tflite-micro publishes no aarch64 wheel, so
on such a board the Python runtime is ``tflite-runtime`` (the default one's wheelhouse fails)."""


def build_wheelhouse(out: str | os.PathLike, *, runtime: str = DEFAULT_BOARD_RUNTIME,
                     platform: str | tuple[str, ...] | None = None, python_version: str = "3.11",
                     omgkit_wheel: bool = True) -> Path:  # fmt: skip
    """Download a board environment's wheels into ``out`` (needs the package index, once).

    ``platform``: another machine's wheel tag(s), e.g. ``DEBIAN_AARCH64``;
    default: this machine's."""
    req = requirements_file(runtime)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "-r", str(req), "-d", str(o)]
    if platform:
        cmd += ["--only-binary=:all:", "--python-version", python_version]
        for p in (platform,) if isinstance(platform, str) else platform:
            cmd += ["--platform", p]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"pip download for the board ({runtime}) failed: {_tail(r.stderr)}")
    shutil.copyfile(req, o / REQUIREMENTS)
    if omgkit_wheel:
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", str(o), str(REPO)], capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            raise ConfigError(f"building the omgkit wheel failed: {_tail(r.stderr)}")
    return o


def install_command(python: str, venv: str, wheelhouse: str, *, omgkit: bool = True) -> str:
    """The shell command that makes ``venv`` from ``wheelhouse`` with no index.

    The wheelhouse's requirements first (its pins: numpy < 2 for
    tflite-runtime), then omgkit without its declared dependencies (which
    name the default runtime's)."""
    py, v, wh = shlex.quote(python), shlex.quote(venv), shlex.quote(wheelhouse)
    pip = f"{v}/bin/pip install --quiet --no-index --find-links {wh}"
    cmd = f"{py} -m venv {v} && {pip} -r {wh}/{REQUIREMENTS}"
    return cmd + (f" && {pip} --no-deps omgkit" if omgkit else "")


def setup_runtime(url: str, wheelhouse: str | os.PathLike, *, python: str = "python3",
                  venv: str = "omg-venv") -> str:  # fmt: skip
    """Install the board's runtime offline: upload the wheelhouse, make a venv, pip install from it.

    Returns the venv's python, relative to the board directory (use it as
    ``?python=`` in the board URL).
    """
    from .connection import Board

    wh = Path(wheelhouse)
    wheels = sorted(wh.glob("*.whl"))
    if not wheels or not (wh / REQUIREMENTS).is_file():
        raise ConfigError(f"{wh} holds no wheelhouse; build it with build_wheelhouse")
    with Board(url) as b:
        b.run("mkdir -p wheelhouse")
        sftp = b.sftp
        have = set(sftp.listdir(b.sftp_path("wheelhouse")))
        for w in wheels:
            if w.name not in have:
                sftp.put(str(w), b.sftp_path(f"wheelhouse/{w.name}"))
        sftp.put(str(wh / REQUIREMENTS), b.sftp_path(f"wheelhouse/{REQUIREMENTS}"))
        b.run(install_command(python, venv, "wheelhouse"), timeout=900)
    return f"{venv}/bin/python"


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("WARNING: Location")]
    return "\n".join(lines)[-800:]
