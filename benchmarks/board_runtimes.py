"""tflite-runtime against ai-edge-litert as a board's TA runtime, side by side in one run (issue 17).

    python benchmarks/board_runtimes.py --run artifacts/demo [--pairs 20] [--block 32] [--json PATH]

Two emulated boards on this machine (so the same CPU): one in the default
environment (``litert``: ai-edge-litert), one made with ``--runtime
tflite-runtime`` (its own environment, numpy 1.26). The same run is
deployed to both, each package sealed for its board's runtime. In each
pair, one batch of ``block`` clips goes to each board, in random order
(drift hits both alike); per clip it reports

- ``ta``: the time the TA reports for the batch (frontend and inference
  inside the TEE; the runtimes differ only here);
- ``wall``: the request's round trip from the workbench (SSH, agent, TEE,
  TA), which both sides share;

with the ratio tflite-runtime / litert and its 95 % bootstrap interval
(``omgkit.stats.paired_ratio``), whether the labels agree on the block's
clips (random noise: ``tests/test_board_runtimes.py`` checks a real test
split), and each board
environment's size (its wheelhouse, and its installed packages). The
boards live in a temporary ``OMG_HOME`` and are stopped at the end.
Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _du(path: Path, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink() and not any(s in p.parts for s in skip):
            total += p.stat().st_size
    return total


def environment_sizes(runtime: str, work: Path) -> dict:
    """A board environment of ``runtime``: its wheelhouse, and its packages once installed."""
    from omgkit.board.emulator import wheelhouse
    from omgkit.board.wheelhouse import install_command

    wh = wheelhouse(runtime)  # the checkout's kept one (.cache/wheelhouses), made once
    venv = work / f"venv-{runtime}"
    subprocess.run(install_command(sys.executable, str(venv), str(wh), omgkit=False), shell=True,
                   check=True, capture_output=True)  # fmt: skip
    site = next(venv.glob("lib/python3*/site-packages"))
    skip = ("pip", "setuptools", "_distutils_hack")  # the venv's own tools, on every board
    return {"wheelhouse_mb": round(_du(wh) / 2**20, 1),
            "installed_mb": round(_du(site, skip) / 2**20, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run", required=True, help="a converted run (omg convert), e.g. artifacts/demo"
    )
    ap.add_argument("--pairs", type=int, default=20, help="pairs of blocks (default 20)")
    ap.add_argument(
        "--block", type=int, default=32, help="clips per block: one request (default 32)"
    )
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="omg-board-runtimes-"))
    os.environ["OMG_HOME"] = str(home)
    from omgkit.board import Board, RemoteEnclave, emulator
    from omgkit.board.workflow import deploy_run
    from omgkit.kws.release import Release
    from omgkit.stats import paired_ratio

    release = Release.from_run(a.run)
    boards = {"litert": "bench-litert", "tflite-runtime": "bench-tflite"}
    rng = np.random.default_rng(0)
    clips = (rng.standard_normal((a.block, 16000)) * 2000).astype(np.int16)
    res: dict = {"run": str(a.run), "pairs": a.pairs, "block": a.block, "cpu": os.cpu_count()}
    try:
        for rt, name in boards.items():
            print(f"board {name}: making it ({rt})", flush=True)
            emulator.create(name, runtime=rt, say=lambda s: print("  " + s, flush=True))
            emulator.up(name)
            info = deploy_run(f"emu://{name}", release)["model"]
            assert info["runtime"] == rt, info
        sessions = {}
        for rt, name in boards.items():
            b = Board(f"emu://{name}").open()
            sessions[rt] = (b, RemoteEnclave(b).open())
            sessions[rt][1].initialize()
        labels = {}
        fig: dict = {rt: {"ta": [], "wall": []} for rt in boards}

        def block(rt: str) -> None:
            r = sessions[rt][1]
            t = time.perf_counter()
            out = r.call("classify_batch", audio=clips.tobytes())
            fig[rt]["wall"].append((time.perf_counter() - t) / a.block)
            fig[rt]["ta"].append(out["seconds"] / a.block)
            labels[rt] = list(out["labels"])

        for rt in boards:  # warm-up: first loads, caches
            block(rt)
            fig[rt] = {"ta": [], "wall": []}
        for i in range(a.pairs):
            order = list(boards) if rng.integers(2) else list(boards)[::-1]
            for rt in order:
                block(rt)
            print(f"\rpair {i + 1}/{a.pairs}", end="", flush=True)
        print()
        for rt in boards:
            res[rt] = {
                k: {"median_ms": round(statistics.median(v) * 1000, 4)} for k, v in fig[rt].items()
            }
        for k in ("ta", "wall"):
            res[f"ratio_{k}"] = paired_ratio(fig["tflite-runtime"][k], fig["litert"][k])
        res["labels_equal"] = labels["tflite-runtime"] == labels["litert"]
        for b, r in sessions.values():
            r.close()
            b.close()
        work = home / "sizes"
        work.mkdir()
        res["environment"] = {rt: environment_sizes(rt, work) for rt in boards}
    finally:
        for name in boards.values():
            try:
                emulator.down(name)
            except Exception:
                pass
        shutil.rmtree(home, ignore_errors=True)

    for rt in boards:
        e = res["environment"][rt]
        print(f"{rt:<15} per clip: TA {res[rt]['ta']['median_ms']:.3f} ms, round trip "
              f"{res[rt]['wall']['median_ms']:.3f} ms; environment: wheelhouse {e['wheelhouse_mb']} MB, "
              f"installed {e['installed_mb']} MB")  # fmt: skip
    for k in ("ta", "wall"):
        r = res[f"ratio_{k}"]
        print(
            f"tflite-runtime / litert ({k}): {r['ratio']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        )
    print(f"labels equal: {res['labels_equal']} ({a.block} clips of random noise)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
