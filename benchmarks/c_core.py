"""The TA's C core against the runtimes it replaces: speed and memory, side by side in one run.

    python benchmarks/c_core.py --run artifacts/demo [--n 300] [--json PATH]

- engine: one inference of the same int8 tensor by the C engine, by
  tflite-micro and by ai-edge-litert, interleaved (one thread each); the
  medians and the ratio C / tflite-micro (target: at most 2);
- frontend: features of the same clips by the C frontend and by numpy, per
  clip, interleaved; the ratio C / numpy (target: at most 1);
- memory: a fresh process loads the C engine and frontend and classifies
  clips; how much its resident memory grows beyond a process that only
  holds the model's bytes (target: at most 1 MiB), beside what the engine
  and the frontend planned (arena and state: all they ever use).

Figures are reported, never asserted: the tests check agreement, this
checks speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_MEM = r"""
import sys, numpy as np
model = open(sys.argv[1], "rb").read()
def rss():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) * 1024
from omg_ta import ccore
from omg_ta.commands import CLIP_SAMPLES as ccore_clip
from omg_ta.frontend import FrontendSettings
import json
ccore.load()
x = (np.random.default_rng(0).standard_normal((8, ccore_clip)) * 3000).astype(np.int16)
before = rss()
if sys.argv[2] == "c":
    s = FrontendSettings.from_dict(json.loads(sys.argv[3]))
    fe, eng = ccore.CFrontend(s), ccore.CEngine(model)
    for clip in x:
        f = fe(clip[None])
        eng.invoke(ccore.quantize(f, eng.io.input_scale, eng.io.input_zero_point))
print(rss() - before)
"""


def _median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def engine_times(model: bytes, n: int) -> dict:
    from omg_ta.runtime import load_runtime

    rts = {name: load_runtime(name, model) for name in ("c", "tflm", "litert")}
    rng = np.random.default_rng(0)
    shape = (1, *rts["c"].input_shape[1:])
    xs = [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(16)]
    times: dict[str, list[float]] = {k: [] for k in rts}
    for i in range(n + 10):
        for name, rt in rts.items():
            t = time.perf_counter()
            rt.invoke_raw(xs[i % len(xs)])
            if i >= 10:  # warm-up
                times[name].append(time.perf_counter() - t)
    med = {k: _median_ms(v) for k, v in times.items()}
    return {"per_inference_ms": med, "ratio_c_tflm": med["c"] / med["tflm"],
            "ratio_c_litert": med["c"] / med["litert"], "n": n}  # fmt: skip


def frontend_times(settings, clips: np.ndarray, reps: int) -> dict:
    from omg_ta import ccore
    from omg_ta.frontend import Frontend

    c, py = ccore.CFrontend(settings), Frontend(settings)
    tc, tp = [], []
    for _ in range(reps):
        t = time.perf_counter()
        c(clips)
        tc.append((time.perf_counter() - t) / len(clips))
        t = time.perf_counter()
        py(clips)
        tp.append((time.perf_counter() - t) / len(clips))
    return {"kind": settings.kind, "per_clip_ms": {"c": _median_ms(tc), "numpy": _median_ms(tp)},
            "ratio_c_numpy": statistics.median(tc) / statistics.median(tp), "clips": len(clips)}  # fmt: skip


def memory(model_path: Path, settings) -> dict:
    from omg_ta import ccore

    out = {}
    for what in ("c", "model-only"):
        p = subprocess.run([sys.executable, "-c", _MEM, str(model_path), what,
                            json.dumps(settings.to_dict())], capture_output=True, text=True, timeout=300)  # fmt: skip
        if p.returncode != 0:
            raise SystemExit(f"memory probe failed: {p.stderr[-800:]}")
        out[what] = int(p.stdout.strip())
    beyond = max(0, out["c"] - out["model-only"])
    return {"rss_growth_bytes": out, "beyond_the_model_bytes": beyond,
            "arena_bytes": ccore.plan(model_path.read_bytes()).arena_bytes,
            "frontend_state_bytes": ccore.CFrontend(settings).plan.state_bytes}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a converted run")
    ap.add_argument("--n", type=int, default=300, help="inferences per engine")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from omgkit.kws.dataset import load_dataset
    from omgkit.kws.release import Release
    from omgkit.kws.run import RunDir

    release = Release.from_run(a.run)
    man = RunDir(a.run).manifest()
    ds = load_dataset(man.data_path)
    clips, _ = ds.load(ds.evaluation_items("testing", man.holdout_engine)[:64])
    with threadpool_limits(limits=1):
        res = {
            "run": str(a.run),
            "model": man.model,
            "engine": engine_times(release.model, a.n),
            "frontend": frontend_times(release.frontend, clips, reps=7),
            "memory": memory(Path(release.source), release.frontend),
        }
    e, f, m = res["engine"], res["frontend"], res["memory"]
    print(f"engine per inference: C {e['per_inference_ms']['c']:.3f} ms, tflite-micro "
          f"{e['per_inference_ms']['tflm']:.3f} ms, litert {e['per_inference_ms']['litert']:.3f} ms; "
          f"C/tflm {e['ratio_c_tflm']:.2f} (target <= 2)")  # fmt: skip
    print(f"frontend ({f['kind']}) per clip: C {f['per_clip_ms']['c']:.3f} ms, numpy "
          f"{f['per_clip_ms']['numpy']:.3f} ms; C/numpy {f['ratio_c_numpy']:.2f} (target <= 1)")  # fmt: skip
    print(f"memory beyond the model: {m['beyond_the_model_bytes'] / 1024:.0f} KiB of resident growth "
          f"(target <= 1024); planned: arena {m['arena_bytes'] / 1024:.1f} KiB, frontend "
          f"{m['frontend_state_bytes'] / 1024:.1f} KiB")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
