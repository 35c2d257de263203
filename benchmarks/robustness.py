"""What each training change does to accuracy under the evaluation conditions (issue 15).

    python benchmarks/robustness.py --data artifacts/corpus-quick [--variants a,b,...]
        [--out artifacts/robustness] [--epochs 40] [--json PATH] [--evaluate-only]

Each variant is a set of training settings (``_STEPS``: each step adds one
change to the one before, ending at today's defaults); for each, the script
trains the DS-CNN-S on the corpus, converts it and runs
``omg evaluate --conditions`` (every condition, test split and held-out
engine), then prints one table: int8 accuracy per condition and variant,
the held-out engine's clean accuracy and the label stability under ±1 LSB.
A variant already trained in ``--out`` with the same settings is evaluated
again, not retrained; ``--evaluate-only`` evaluates whatever is there (after a
change to the evaluation). ``TRIALS`` are single ideas on top of the
defaults of their day (``TRIAL_FE``), measured to be kept or rejected.
Figures are reported, never asserted; the note on issue 15 and
``docs/pipeline.md`` quote them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from omgkit.kws.augment import AugmentSettings
from omgkit.kws.features import WHEN_ABSENT, FrontendSettings
from omgkit.kws.train import TrainSettings, recorded_settings

OLD_AUG = AugmentSettings(copies=2, gain_db=(-8.0, 3.0), snr_db=(10.0, 30.0), reverb_prob=0.3,
                          rooms=0, bandlimit_prob=0.0, floor_dbfs=None, babble_prob=0.0,
                          tones_prob=0.0, fluctuating_prob=0.0, impulses_prob=0.0)  # fmt: skip
OLD_FE = FrontendSettings(log_offset=1e-6, log_floor=0.0)


def _aug(**kw) -> AugmentSettings:
    return dataclasses.replace(OLD_AUG, **kw)


# cumulative: each variant is the one before plus one change
_STEPS = [
    ("before", {}, {}),
    ("floor", {}, {"log_offset": 1e-2}),
    ("dither", {"floor_dbfs": (-90.0, -60.0)}, {}),
    ("rooms", {"rooms": 48, "reverb_prob": 0.5}, {}),
    ("bandlimit", {"bandlimit_prob": 0.3}, {}),
    ("snr_gain", {"snr_db": (0.0, 30.0), "gain_db": (-30.0, 6.0)}, {}),
    ("mixtures", {"babble_prob": 0.3, "tones_prob": 0.2}, {}),
    ("nonstationary", {"fluctuating_prob": 0.15, "impulses_prob": 0.15}, {}),
    ("clamp", {}, {"log_offset": 0.0, "log_floor": 5e-3}),
]


# trials: one idea each, not cumulative, on top of the defaults of the day they were tried:
# today's augmentation with the frontend of step nonstationary (low_snr and babble_half on
# part 1's defaults: they turn the fluctuating and impulsive noises off)
TRIAL_FE = dataclasses.replace(FrontendSettings(), **WHEN_ABSENT)  # offset 1e-2, no clamp
TRIALS = {  # name: (augmentation, frontend, training) settings changed from the defaults
    "low_snr": (
        {"snr_db": (-5.0, 25.0), "noise_prob": 1.0, "fluctuating_prob": 0.0, "impulses_prob": 0.0},
        {},
        {},
    ),
    "babble_half": ({"babble_prob": 0.5, "fluctuating_prob": 0.0, "impulses_prob": 0.0}, {}, {}),
    "copies3": ({"copies": 3}, {}, {}),
    "more_nonstationary": (
        {"fluctuating_prob": 0.3, "babble_prob": 0.25, "noise_prob": 1.0},
        {},
        {},
    ),
    "wideband": ({}, {"upper_hz": 7600.0}, {}),
    "floor3": ({}, {"log_offset": 3e-2}, {}),
    "time_masks": ({"time_masks": 2}, {}, {}),
    "seed1": ({}, {}, {"seed": 1}),
    "babble_more": ({"babble_prob": 0.45}, {}, {}),
    "log_floor": ({}, {"log_offset": 0.0, "log_floor": 1e-2}, {}),
    "log_floor_5e-3": ({}, {"log_offset": 0.0, "log_floor": 5e-3}, {}),
    "log_floor_5e-3_seed1": ({}, {"log_offset": 0.0, "log_floor": 5e-3}, {"seed": 1}),
}


def variants() -> dict[str, TrainSettings]:
    out, aug, fe = {}, {}, {}
    for name, a, f in _STEPS:
        aug, fe = {**aug, **a}, {**fe, **f}
        out[name] = TrainSettings(augment=_aug(**aug), frontend=dataclasses.replace(OLD_FE, **fe))
    out["defaults"] = TrainSettings()
    for name, (a, f, t) in TRIALS.items():
        out[name] = TrainSettings(augment=dataclasses.replace(AugmentSettings(), **a),
                                  frontend=dataclasses.replace(TRIAL_FE, **f), **t)  # fmt: skip
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="artifacts/robustness")
    ap.add_argument("--variants", default=",".join(variants()))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--json")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="evaluate the runs already in --out again, whatever their settings "
                    "(after a change to the evaluation)")  # fmt: skip
    a = ap.parse_args(argv)
    from omgkit.kws.convert import convert_run
    from omgkit.kws.evaluate import evaluate_run
    from omgkit.kws.train import train

    table = {}
    all_v = variants()
    for name in a.variants.split(","):
        s = dataclasses.replace(all_v[name], epochs=a.epochs)
        run = Path(a.out) / name
        t0 = time.perf_counter()
        man = run / "manifest.json"
        same = man.is_file() and recorded_settings(json.loads(man.read_text())) == s
        if a.evaluate_only and not (run / "model_int8.tflite").is_file():
            raise SystemExit(f"{run}: no trained model to evaluate")
        if not (a.evaluate_only or same and (run / "model_int8.tflite").is_file()):
            m = train(a.data, run, s, verbose=2)
            convert_run(run)
        else:
            m = json.loads((run / "manifest.json").read_text())["train"]["metrics"]
        ev = evaluate_run(run, conditions=True, plots=True)
        table[name] = {
            "conditions": {k: v["int8"] for k, v in ev["conditions"].items()},
            "heldout": ev["heldout_engine_accuracy_int8"],
            "label_stability_lsb": ev["label_stability_lsb"],
            "epochs": m.get("epochs_run"),
            "seconds": round(time.perf_counter() - t0),
        }
        print(f"{name}: {json.dumps(table[name])}", flush=True)
    names = list(table)
    conds = list(next(iter(table.values()))["conditions"])
    print("\n| condition | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for c in conds:
        print(f"| {c} | " + " | ".join(f"{table[n]['conditions'][c]:.3f}" for n in names) + " |")
    print(
        "| held-out engine (clean) | "
        + " | ".join(f"{table[n]['heldout']:.3f}" for n in names)
        + " |"
    )
    print(
        "| labels unchanged ±1 LSB | "
        + " | ".join(f"{table[n]['label_stability_lsb']:.4f}" for n in names)
        + " |"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
