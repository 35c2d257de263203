"""An offline wheelhouse for a board: its runtime without internet.

``build_wheelhouse(out)`` collects wheels for ``requirements/board.txt``
(numpy, cbor2, cryptography, ai-edge-litert, tflite-micro) and omgkit
itself. For another platform (a HiKey 960 is ``manylinux2014_aarch64``)
pass ``platform`` and ``python_version``: pip then fetches binary wheels
for that platform. On the board:
``python3 -m venv ~/omg-venv && ~/omg-venv/bin/pip install --no-index
--find-links WHEELHOUSE omgkit``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def build_wheelhouse(
    out: str | os.PathLike, *, platform: str | None = None, python_version: str = "3.11"
) -> Path:
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    req = REPO / "requirements" / "board.txt"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "-r", str(req), "-d", str(o)]
    if platform:
        cmd += ["--only-binary=:all:", "--platform", platform, "--python-version", python_version]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"pip download for the board failed: {r.stderr.strip()[-800:]}")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "-w", str(o), str(REPO)], capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        raise ConfigError(f"building the omgkit wheel failed: {r.stderr.strip()[-800:]}")
    return o


def setup_runtime(
    url: str, wheelhouse: str | os.PathLike, *, python: str = "python3", venv: str = "omg-venv"
) -> str:
    """Install the board's runtime offline: upload the wheelhouse, make a venv, pip install from it.

    Returns the venv's python, relative to the board directory (use it as
    ``?python=`` in the board URL).
    """
    import shlex

    from .connection import Board

    wh = Path(wheelhouse)
    wheels = sorted(wh.glob("*.whl"))
    if not wheels:
        raise ConfigError(f"{wh} holds no wheels; build it with build_wheelhouse")
    with Board(url) as b:
        b.run("mkdir -p wheelhouse")
        sftp = b.sftp
        have = set(sftp.listdir(b.sftp_path("wheelhouse")))
        for w in wheels:
            if w.name not in have:
                sftp.put(str(w), b.sftp_path(f"wheelhouse/{w.name}"))
        v = shlex.quote(venv)
        b.run(f"{shlex.quote(python)} -m venv {v} && {v}/bin/pip install --quiet --no-index "
              f"--find-links wheelhouse omgkit", timeout=900)  # fmt: skip
    return f"{venv}/bin/python"
