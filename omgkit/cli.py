"""The ``omg`` command line. Every subcommand has ``--help``.

Errors that a user can cause are :class:`~omgkit.errors.OmgError` and are
printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .errors import OmgError, OmgWarning


def _cmd_synth(a: argparse.Namespace) -> int:
    from .corpus import synthesize

    engines = a.engines.split(",") if a.engines else None
    r = synthesize(
        a.out, a.profile, engines=engines, seed=a.seed, workers=a.workers, show_progress=not a.quiet
    )
    print(r.summary())
    return 0


def _cmd_fetch(a: argparse.Namespace) -> int:
    from .fetch import fetch

    path = fetch(a.dataset, a.out, data_dir=a.data_dir, show_progress=not a.quiet)
    print(f"{a.dataset} ready at {path}")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from .augment import AugmentSettings
    from .features import FrontendSettings
    from .train import TrainSettings, train

    fe = FrontendSettings() if a.features == "mfcc" else FrontendSettings.micro_speech()
    s = TrainSettings(
        model=a.model,
        epochs=a.epochs,
        batch_size=a.batch_size,
        seed=a.seed,
        holdout_engine=a.holdout_engine,
        frontend=fe,
        augment=AugmentSettings(copies=a.augment_copies),
    )
    m = train(a.data, a.out, s)
    print(
        f"trained {a.model}: validation accuracy {m['val_accuracy']:.4f} at epoch "
        f"{m['best_epoch']} of {m['epochs_run']} ({m['seconds_features']:.0f} s features, "
        f"{m['seconds_fit']:.0f} s fit); run in {a.out}"
    )
    return 0


def _cmd_convert(a: argparse.Namespace) -> int:
    from .convert import convert_run

    sizes = convert_run(a.run, tuple(a.quantization))
    for q, n in sizes.items():
        print(f"{q}: {n} bytes -> {os.path.join(a.run, f'model_{q}.tflite')}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    r = evaluate_run(a.run, a.json, data=a.data, plots=not a.no_plots)
    ho = r["heldout_engine"]
    print(
        f"test accuracy: float32 {r['test_accuracy_float32']:.4f}, int8 {r['test_accuracy_int8']:.4f}"
    )
    if ho:
        print(f"held-out engine {ho}: int8 {r['heldout_engine_accuracy_int8']:.4f}")
    agree = r["labels_agree_litert_tflm_detail"]
    print(
        "int8 labels litert vs tflm: "
        + ", ".join(f"{k} {v['agree']}/{v['total']}" for k, v in agree.items())
    )
    if a.json:
        print(f"wrote {a.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .corpus.synth import PROFILES
    from .models import MODELS

    p = argparse.ArgumentParser(prog="omg", description="Offline Model Guard workbench")
    p.add_argument(
        "--version", action="version", version=f"omgkit {__import__('omgkit').__version__}"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="make or fetch a keyword corpus").add_subparsers(
        dest="data_command", required=True, metavar="ACTION"
    )
    s = data.add_parser(
        "synth",
        help="make the offline synthetic corpus (Speech Commands layout)",
        description="Synthesize keyword clips with every offline TTS engine found.",
    )
    s.add_argument(
        "--profile",
        default="quick",
        choices=list(PROFILES),
        help="corpus size (tiny: tests; quick: ~6k clips; paper: >=1000 clips per keyword)",
    )
    s.add_argument(
        "--out", default="artifacts/corpus-quick", help="output directory (resumes if it exists)"
    )
    s.add_argument("--engines", help="comma-separated subset of engines (default: all found)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_synth)

    f = data.add_parser(
        "fetch",
        help="download Speech Commands v0.02 (needs internet)",
        description="Download and verify a dataset, or check a local copy.",
    )
    f.add_argument("dataset", choices=["speech-commands"])
    f.add_argument("--out", default="artifacts/speech_commands_v0.02")
    f.add_argument("--data-dir", help="an already extracted copy to check and use instead")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_cmd_fetch)

    t = sub.add_parser(
        "train", help="train a keyword model", description="Train a keyword model on a corpus."
    )
    t.add_argument("--data", required=True, help="corpus directory (Speech Commands layout)")
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument("--model", default="ds_cnn_s", help=f"one of: {', '.join(MODELS)}")
    t.add_argument("--features", default="mfcc", choices=["mfcc", "logmel"])
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--augment-copies", type=int, default=2)
    t.add_argument(
        "--holdout-engine", default="auto", help="engine kept out of training: auto, none or a name"
    )
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser(
        "convert",
        help="convert a trained run to TFLite float32 and int8",
        description="Convert model.keras of a run to TFLite builtins only.",
    )
    c.add_argument("--run", required=True, help="run directory made by `omg train`")
    c.add_argument(
        "--quantization", nargs="+", default=["float32", "int8"], choices=["float32", "int8"]
    )
    c.set_defaults(func=_cmd_convert)

    e = sub.add_parser(
        "evaluate",
        help="accuracy per split, held-out engine, runtime agreement",
        description="Evaluate the converted models of a run.",
    )
    e.add_argument("--run", required=True)
    e.add_argument("--json", help="also write the results to this path")
    e.add_argument("--data", help="corpus to evaluate on (default: the one trained on)")
    e.add_argument("--no-plots", action="store_true")
    e.set_defaults(func=_cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default", OmgWarning)
    try:
        return args.func(args)
    except OmgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
