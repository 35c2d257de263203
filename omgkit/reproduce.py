"""`make reproduce`: the paper artifact, resumable.

Corpus → training → conversion → evaluation → benchmark, each step skipped
when its output exists (an interrupted run resumes where it stopped).
Results are named after their parameters: ``results/<profile>-<model>-seed<seed>.json``,
a markdown table beside it with the paper's numbers and ours, and plots.

With ``optee=True`` (``make reproduce``'s default) a second table comes
from a real secure world: the same model deployed to an OP-TEE board in
QEMU, the whole test split classified by its TA, and plain against
guarded measured inside the board (``omgkit.bench.optee_board_bench``).
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
              results: str = "results", optee: bool = False, optee_clips: int = 128, say=print) -> dict:  # fmt: skip
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
    # the paired design's full size, but on the tiny profile (make kick, the tests) a small one
    bench_size = {"n": 4, "repeats": 2, "block": 2, "batch_clips": 16} if profile == "tiny" else {}
    step("bench", bench_f.is_file(),
         lambda: atomic_write_text(bench_f, json.dumps(guard_bench(run, workdir=None, say=say, **bench_size),
                                                  indent=2) + "\n"))  # fmt: skip
    guard_f = run / "guard.json"
    step("offline and attacks", guard_f.is_file(), lambda: atomic_write_text(guard_f, json.dumps(_guard(run), indent=2) + "\n"))  # fmt: skip
    optee_f = run / "optee.json"
    if optee:
        step("OP-TEE board", optee_f.is_file(),
             lambda: atomic_write_text(optee_f, json.dumps(_optee(run, corpus, clips=optee_clips, say=say),
                                                           indent=2) + "\n"))  # fmt: skip
    res_f = res_p / f"{name}.json"
    times = {
        **_earlier_times(res_f),
        **times,
    }  # a resumed run keeps the times of the steps it skipped
    ev = json.loads((run / "evaluation.json").read_text())
    bench = json.loads(bench_f.read_text())
    out = {"params": {"profile": profile, "model": model, "seed": seed}, "paper": PAPER,
           "evaluation": {k: v for k, v in ev.items() if not k.startswith("confusion")}, "bench": bench,
           **json.loads(guard_f.read_text()), "step_seconds": times}  # fmt: skip
    if optee and optee_f.is_file():
        out["optee"] = json.loads(optee_f.read_text())
    res_p.mkdir(parents=True, exist_ok=True)
    atomic_write_text(res_f, json.dumps(out, indent=2) + "\n")
    atomic_write_text(res_p / f"{name}.md", table(out))
    plots(bench, res_p / name)
    say(f"results: {res_p / name}.json, .md, -latency.png, -phases.png")
    return out


def _earlier_times(res_f: Path) -> dict[str, float]:
    try:
        times = json.loads(res_f.read_text()).get("step_seconds", {})
    except (OSError, ValueError, AttributeError):
        return {}  # none yet, or not ours: the steps run now are all there is to say
    return (
        {k: float(v) for k, v in times.items() if isinstance(v, (int, float))}
        if isinstance(times, dict)
        else {}
    )


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


#: the board make reproduce boots (its own: a user's boards are left alone)
OPTEE_BOARD = "repro-optee"


def _optee(run: Path, corpus: Path, *, clips: int, say) -> dict:
    """The run on an OP-TEE board in QEMU: deploy, the whole test split by the TA against plain
    inference, then plain against guarded inside the board. The board is stopped afterwards."""
    import numpy as np

    from .bench import optee_board_bench
    from .board import lifecycle
    from .board.workflow import classify, deploy_run, plain_labels
    from .errors import ConfigError
    from .kws.dataset import load_dataset

    try:
        lifecycle.status(OPTEE_BOARD)
    except ConfigError:
        say(f"creating board {OPTEE_BOARD} (OP-TEE in QEMU; the first build takes a minute or two)")
        lifecycle.create(OPTEE_BOARD, kind="optee-qemu")
    lifecycle.up(OPTEE_BOARD)
    url = f"emu://{OPTEE_BOARD}"
    try:
        deployed = deploy_run(url, run)
        ds = load_dataset(corpus)
        audio, truth = ds.load(board_test_items(run, ds))
        labels, t = classify(url, audio, mic=False)
        plain = plain_labels(t["model"], audio)
        bench = optee_board_bench(url, run, data=corpus, clips=clips, n=30, say=say)
    finally:
        lifecycle.down(OPTEE_BOARD)
    return {
        "tee": t["tee"], "clips": len(labels),
        "labels_equal_plain": labels == plain,
        "accuracy_on_the_board": float(np.mean(np.asarray(labels) == truth)),
        "initialization_seconds": t["initialization_seconds"], "operation_seconds": t["operation_seconds"],
        "deploy_seconds": deployed["deploy_seconds"], "preparation_seconds": deployed["preparation_seconds"],
        "bench": bench,
    }  # fmt: skip


def board_test_items(run: Path, ds) -> list:
    """The clips the board classifies: the test split the evaluation scores (without the held-out
    engine's speech), so that its accuracy on the board reads against ``test_accuracy_int8``."""
    from .kws.run import RunDir

    return ds.evaluation_items("testing", RunDir(run).manifest().holdout_engine)


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
        ("guarded / plain, TFLM [95 % CI]", f"{p['overhead']:.3f}", _ratio(b, "operation_ratio_tflm")),
        ("guarded / plain, C core [95 % CI]", "—", _ratio(b, "operation_ratio_c")),
        ("guarded / plain, LiteRT single clip [95 % CI]", "—", _ratio(b, "operation_ratio_litert_single")),
        ("guarded / plain, LiteRT batch [95 % CI]", "—", _ratio(b, "operation_ratio_litert_batch")),
        ("CPU time guarded / plain, TFLM (both worlds)", "—", _ratio(b, "cpu_ratio_tflm")),
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
    if "optee" in out:
        lines += ["", optee_table(out["optee"], p)]
    return "\n".join(lines) + "\n"


def _ratio(b: dict, key: str) -> str:
    """A ratio with its interval, marked ✓ only when the interval's upper end meets its target."""
    from .bench import TARGETS, fmt_ratio

    return fmt_ratio(b.get(key), b.get(f"{key}_ci95"), TARGETS.get(key))


def optee_table(o: dict, p: dict = PAPER) -> str:
    """The second table: the C TA under OP-TEE in QEMU, plain and guarded measured on the board."""
    from .bench import fmt_ratio

    b = o["bench"]
    s, bt, i, m = b["single"], b["batch"], b["initialization"], b["memory"]
    heap = m["ta_heap"] or {}
    rows = [
        ("TEE", "OP-TEE on a HiKey 960", f"{o['tee']} — QEMU's emulated Arm CPU, not a HiKey"),
        ("test split labels by the TA = plain labels", "—",
         f"{o['labels_equal_plain']} ({o['clips']} clips; accuracy on the board {o['accuracy_on_the_board']:.4f})"),
        ("plain inference per clip (C core, normal world)", f"{p['plain_ms']:.0f} ms (TFLM)",
         f"{s['plain']['median_ms']:.1f} ms"),
        ("guarded inference per clip (C TA)", f"{p['guarded_ms']:.0f} ms", f"{s['guarded']['median_ms']:.1f} ms"),
        ("guarded / plain, single clip [95 % CI]", f"{p['overhead']:.3f}", fmt_ratio(s["ratio"], s.get("ratio_ci95"))),
        ("guarded / plain, batch [95 % CI]", "—",
         f"{fmt_ratio(bt['ratio'], bt.get('ratio_ci95'))} ({b['clips']} clips, {bt['window_clips']} per call)"),
        ("initialization, guarded (TA load) / plain", "—",
         f"{i['guarded']['median_ms']:.0f} ms ({i['ta_load']['median_ms']:.0f} ms) / {i['plain']['median_ms']:.1f} ms"),
        ("TA heap peak / heap size", "—",
         f"{heap.get('max_allocated', 0) / 1024:.0f} / {heap.get('size', 0) / 1024:.0f} KiB"),
        ("secure RAM held by the TA", "—", f"{m['ta_ram_held_bytes'] / 1024:.0f} KiB"),
        ("plain C core's memory (model, arena, frontend)", "—", f"{sum(m['plain_bytes'].values()) / 1024:.0f} KiB"),
    ]  # fmt: skip
    lines = ["| OP-TEE in QEMU | paper (HiKey 960) | omgkit |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b_} | {c} |" for a, b_, c in rows]
    return "\n".join(lines)


def plots(bench: dict, stem: os.PathLike | str) -> None:
    """``<stem>-ratios.png`` and ``<stem>-breakdown.png`` (omgkit.show.bench_figures)."""
    from .show import bench_figures

    for fig, suffix in zip(bench_figures(bench), ("ratios", "breakdown"), strict=True):
        fig.savefig(f"{stem}-{suffix}.png", dpi=110)
