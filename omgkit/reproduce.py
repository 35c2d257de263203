"""`make reproduce`: the paper artifact, resumable.

Corpus → training → conversion → evaluation → benchmark, each step skipped
when its output exists (an interrupted run resumes where it stopped).
Results are named after their parameters: ``results/<profile>-<model>-seed<seed>.json``,
a markdown table beside it with the paper's numbers and ours, and plots.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .util import atomic_write_text

#: Bayerl et al., DATE 2020: 12-class KWS under TFLM in a TrustZone enclave, HiKey 960.
PAPER = {"accuracy": 0.75, "plain_ms": 379.0, "guarded_ms": 387.0, "overhead": 387.0 / 379.0}


def params_name(profile: str, model: str, seed: int) -> str:
    return f"{profile}-{model}-seed{seed}"


def reproduce(*, profile: str = "paper", model: str = "ds_cnn_s", seed: int = 0, art: str = "artifacts",
              results: str = "results", say=print) -> dict:  # fmt: skip
    from .bench import guard_bench
    from .kws.convert import convert_run
    from .kws.corpus import synthesize
    from .kws.evaluate import evaluate_run
    from .kws.train import TrainSettings, train

    name = params_name(profile, model, seed)
    art_p, res_p = Path(art), Path(results)
    corpus, run = art_p / f"corpus-{profile}", art_p / f"run-{name}"
    times: dict[str, float] = {}

    def step(label: str, done: bool, fn) -> None:
        if done:
            say(f"[{label}] already done, skipped")
            return
        t = time.perf_counter()
        fn()
        times[label] = time.perf_counter() - t
        say(f"[{label}] {times[label]:.0f} s")

    step("corpus", (corpus / "corpus.json").is_file() and _corpus_complete(corpus),
         lambda: say(synthesize(corpus, profile, seed=seed).summary()))  # fmt: skip
    step(
        "train",
        _done(run, "train"),
        lambda: train(corpus, run, TrainSettings(model=model, seed=seed)),
    )
    step("convert", _done(run, "convert"), lambda: convert_run(run))
    step("evaluate", _done(run, "evaluate"), lambda: evaluate_run(run))
    bench_f = run / "bench.json"
    step("bench", bench_f.is_file(),
         lambda: atomic_write_text(bench_f, json.dumps(guard_bench(run, workdir=None, say=say), indent=2) + "\n"))  # fmt: skip
    guard_f = run / "guard.json"
    step("offline and attacks", guard_f.is_file(), lambda: atomic_write_text(guard_f, json.dumps(_guard(run), indent=2) + "\n"))  # fmt: skip
    ev = json.loads((run / "evaluation.json").read_text())
    bench = json.loads(bench_f.read_text())
    out = {"params": {"profile": profile, "model": model, "seed": seed}, "paper": PAPER,
           "evaluation": {k: v for k, v in ev.items() if not k.startswith("confusion")}, "bench": bench,
           **json.loads(guard_f.read_text()), "step_seconds": times}  # fmt: skip
    res_p.mkdir(parents=True, exist_ok=True)
    atomic_write_text(res_p / f"{name}.json", json.dumps(out, indent=2) + "\n")
    atomic_write_text(res_p / f"{name}.md", table(out))
    plots(bench, res_p / name)
    say(f"results: {res_p / name}.json, .md, -latency.png, -phases.png")
    return out


def _guard(run: Path) -> dict:
    """C3 and C4: the three phases with the vendor stopped after preparation; the staged attacks."""
    import tempfile

    from .guard.attacks import stage_run
    from .guard.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="omg-repro-") as tmp:
        steps = run_demo(run, Path(tmp) / "demo")
    outcomes = stage_run(run)
    offline_at = next(i for i, st in enumerate(steps) if st.name == "vendor offline")
    after = steps[offline_at + 1 :]
    return {
        "offline": {
            "steps": [{"phase": st.phase, "name": st.name, "ms": st.seconds * 1000, "outcome": st.outcome}
                      for st in steps],
            "works_offline": bool(after) and all(st.phase in ("initialization", "operation") for st in after),
        },
        "attacks": {
            "outcomes": [{"attack": o.attack.name, "expected": o.attack.expected.__name__, "error": o.error}
                         for o in outcomes],
            "all_blocked": all(o.blocked for o in outcomes),
            "blocked": sum(o.blocked for o in outcomes),
            "total": len(outcomes),
        },
    }  # fmt: skip


def _done(run: Path, step: str) -> bool:
    """A step is done when the manifest records it, which it does after its last file.

    A file alone says nothing: a training killed mid-way can leave ``model.keras``.
    """
    from .kws.run import RunDir

    if not (run / "manifest.json").is_file():
        return False
    return RunDir(run).manifest().done(step)


def _corpus_complete(corpus: Path) -> bool:
    # synthesize() writes corpus.json last; a corpus it finished has its split lists too
    return (corpus / "testing_list.txt").is_file()


def table(out: dict) -> str:
    ev, b, p = out["evaluation"], out["bench"], out["paper"]
    tf, _lit = b["runtimes"].get("tflm", {}), b["runtimes"].get("litert", {})
    rows = [
        ("accuracy, 12 classes (test split)", f"{p['accuracy']:.2f} (real speech)",
         f"{ev['test_accuracy_int8']:.4f} int8 (synthetic voices, speaker-disjoint)"),
        ("accuracy on voices never heard", "—", f"{ev['heldout_engine_accuracy_int8']:.4f} ({ev['heldout_engine']})"),
        ("guarded labels = plain labels", "—", str(b["labels_equal"])),
        ("plain inference per clip (TFLM)", f"{p['plain_ms']:.0f} ms (HiKey 960)",
         f"{tf.get('single', {}).get('plain', {}).get('median_ms', float('nan')):.2f} ms (x86, 2 cores)"),
        ("guarded inference per clip (TFLM)", f"{p['guarded_ms']:.0f} ms",
         f"{tf.get('single', {}).get('guarded', {}).get('median_ms', float('nan')):.2f} ms"),
        ("guarded / plain, TFLM", f"{p['overhead']:.3f}", f"{b.get('operation_ratio_tflm') or float('nan'):.3f}"),
        ("guarded / plain, LiteRT single clip", "—", f"{b.get('operation_ratio_litert_single') or float('nan'):.3f}"),
        ("guarded / plain, LiteRT batch", "—", f"{b.get('operation_ratio_litert_batch') or float('nan'):.3f}"),
        ("initialization overhead", "—", f"{b.get('initialization_overhead_ms') or float('nan'):.1f} ms"),
        ("TA process peak RSS", "—", f"{b['ta_peak_rss_mb']:.0f} MB (plain process {b['plain_peak_rss_mb']:.0f} MB)"),
    ]  # fmt: skip
    if "offline" in out:
        rows.append(
            (
                "initialization and operation with the vendor offline",
                "yes",
                "yes" if out["offline"]["works_offline"] else "NO",
            )
        )
        a = out["attacks"]
        rows.append(("attacks refused, each with its own error", "—", f"{a['blocked']}/{a['total']}"))  # fmt: skip
    lines = ["| | paper (Bayerl et al. 2020) | omgkit |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b_} | {c} |" for a, b_, c in rows]
    return "\n".join(lines) + "\n"


def plots(bench: dict, stem: os.PathLike | str) -> None:
    """``<stem>-latency.png`` and ``<stem>-phases.png`` (omgkit.show.bench_figures)."""
    from .show import bench_figures

    for fig, suffix in zip(bench_figures(bench), ("latency", "phases"), strict=True):
        fig.savefig(f"{stem}-{suffix}.png", dpi=110)
