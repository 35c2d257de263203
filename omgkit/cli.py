"""The ``omg`` command line. Every subcommand has ``--help``.

Errors that a user can cause are :class:`~omgkit.errors.OmgError` and are
printed as one line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from .errors import ConfigError, OmgError, OmgWarning


def _cmd_synth(a: argparse.Namespace) -> int:
    from .kws.corpus import synthesize

    engines = a.engines.split(",") if a.engines else None
    r = synthesize(
        a.out, a.profile, engines=engines, seed=a.seed, workers=a.workers, show_progress=not a.quiet
    )
    print(r.summary())
    return 0


def _cmd_fetch(a: argparse.Namespace) -> int:
    from .kws.fetch import fetch

    path = fetch(a.dataset, a.out, data_dir=a.data_dir, show_progress=not a.quiet)
    print(f"{a.dataset} ready at {path}")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from .kws.augment import AugmentSettings
    from .kws.features import FrontendSettings
    from .kws.train import TrainSettings, train

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
    from .kws.convert import convert_run

    sizes = convert_run(a.run, tuple(a.quantization))
    for q, n in sizes.items():
        print(f"{q}: {n} bytes -> {os.path.join(a.run, f'model_{q}.tflite')}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .kws.evaluate import evaluate_run

    conds = a.conditions
    if conds is not None:
        conds = True if conds == "all" else [c.strip() for c in conds.split(",") if c.strip()]
    r = evaluate_run(
        a.run,
        a.json,
        data=a.data,
        plots=not a.no_plots,
        conditions=conds or False,
        show_progress=not a.quiet,
    )
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
    if "labels_agree_c_litert" in r:
        c = r["labels_agree_c_litert"]
        print("the TA's C core (C frontend + C engine) vs numpy + litert: "
              + ", ".join(f"{k} {v['agree']}/{v['total']}" for k, v in c.items())
              + f"; C engine int8 outputs identical to litert's on {r['c_engine_outputs_identical']:.2%} "
              f"of clips, to tflite-micro's on {r['c_engine_outputs_identical_tflm']:.2%}")  # fmt: skip
    else:
        print(f"the TA's C core: {r['c_core']}")
    if "conditions" in r:
        from .kws.conditions import TARGETS

        print(
            f"{'condition':<13} {'int8':>6} {'float32':>8} {'held-out int8':>14}  worst words (int8)"
        )
        for name, c in r["conditions"].items():
            ho = c.get("heldout", {}).get("int8")
            mark = (
                f" (target {TARGETS[name]:.2f})"
                if name in TARGETS and c["int8"] < TARGETS[name]
                else ""
            )
            worst = ", ".join(
                f"{w['word']} {w['accuracy']:.2f}" for w in c.get("worst_words_int8", [])
            )
            print(f"{name:<13} {c['int8']:>6.3f} {c['float32']:>8.3f} "
                  f"{'-' if ho is None else f'{ho:.3f}':>14}  {worst}{mark}")  # fmt: skip
        if r.get("label_stability_lsb") is not None:
            print(f"labels unchanged under ±1 LSB dither: {r['label_stability_lsb']:.2%}")
    if a.json:
        print(f"wrote {a.json}")
    return 0


def _cmd_guard_demo(a: argparse.Namespace) -> int:
    from .guard.demo import run_demo

    def say(step) -> None:
        print(
            f"[{step.phase:>14}] {step.name:<15} {step.seconds * 1000:8.1f} ms  {step.outcome}",
            flush=True,
        )

    steps = run_demo(a.run, a.workdir, kem=a.kem, say=say)
    by_phase: dict[str, float] = {}
    for st in steps:
        by_phase[st.phase] = by_phase.get(st.phase, 0.0) + st.seconds
    print("phase totals: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in by_phase.items()))
    return 0


def _cmd_guard_attacks(a: argparse.Namespace) -> int:
    from .guard.attacks import stage_run

    def say(o) -> None:
        mark = "blocked" if o.blocked else ("WRONG ERROR" if o.error else "NOT BLOCKED")
        print(f"{o.attack.name:<32} {mark:<8} {o.error or '-':<28} {o.attack.why}", flush=True)

    outcomes = stage_run(a.run, say=say)
    bad = [o for o in outcomes if not o.blocked]
    print(f"{len(outcomes) - len(bad)}/{len(outcomes)} attacks failed with their own error")
    return 1 if bad else 0


def _cmd_vendor(a: argparse.Namespace) -> int:
    from pathlib import Path

    from .guard import Vendor

    if a.vendor_command == "init":
        v = Vendor.create(a.dir)
        print(f"vendor created in {a.dir}; public key {v.public_raw.hex()}")
        return 0
    v = Vendor(a.dir)
    if a.vendor_command == "trust":
        v.trust_manufacturer(Path(a.root_cert).read_bytes())
        print(f"trusting manufacturer root {a.root_cert}")
    elif a.vendor_command == "approve":
        if a.bundle:
            from .tee.bundle import measure, read_bundle

            m = measure(read_bundle(a.bundle))
        else:
            m = bytes.fromhex(a.measurement)
        v.approve(m)
        print(f"approved measurement {m.hex()}")
    elif a.vendor_command == "seal":
        from .kws.release import Release
        from .util import atomic_write_bytes

        release = Release.from_run(a.run, model_id=a.model_id, quantization=a.quantization,
                                   runtime=a.runtime)  # fmt: skip
        pkg = v.seal_model(release, model_version=a.version)
        atomic_write_bytes(a.out, pkg)
        print(f"sealed {a.model_id} v{a.version} -> {a.out} ({len(pkg)} bytes)")
    elif a.vendor_command == "serve":
        import time

        from .guard import VendorServer

        srv = VendorServer(v, a.host, a.port).start()
        print(f"vendor service at {srv.url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        finally:
            srv.stop()
    elif a.vendor_command == "ledger":
        for row in v.ledger():
            print(json.dumps(row))
    return 0


def _board_line(st: dict) -> str:
    if st.get("kind", "emulated") == "emulated":
        return (f"{st['name']}: {'up' if st['up'] else 'down'}, emulated, port {st['port']}, "
                f"device {st['device_id']}")  # fmt: skip
    run = (
        f", pid {st['pid']}, QEMU RSS {st['rss_mb']:.0f} MB, SSH ready {st['ssh_seconds']} s after start"
        if st["up"]
        else ""
    )
    return (f"{st['name']}: {'up' if st['up'] else 'down'}, {st['kind']}, {st['tee'] or 'TEE not seen yet'}, "
            f"port {st['port']}, board {st['board_id']}{run}")  # fmt: skip


def _cmd_board(a: argparse.Namespace) -> int:
    from .board import lifecycle

    c = a.board_command
    if c == "create":
        d = lifecycle.create(a.name, kind=a.kind, port=a.port, runtime=a.runtime)
        st = lifecycle.status(a.name)
        ident = f"device {st['device_id']}" if a.kind == "emulated" else f"board {st['board_id']}"
        rt = f", runtime {st['runtime']}" if st.get("runtime") else ""
        print(f"board {a.name} ({a.kind}{rt}) created in {d} (port {st['port']}, {ident}); "
              f"its host key is pinned. Start it: omg board up {a.name}")  # fmt: skip
    elif c == "up":
        st = lifecycle.up(a.name)
        extra = (
            f", {st['tee']}, SSH ready {st['ssh_seconds']} s after start" if st.get("tee") else ""
        )
        print(
            f"board {a.name} is up at {st['url']} (127.0.0.1:{st['port']}, pid {st['pid']}{extra})"
        )
    elif c == "down":
        print(
            f"board {a.name} stopped"
            if lifecycle.down(a.name)
            else f"board {a.name} was not running"
        )
    elif c == "status":
        st = lifecycle.status(a.name)
        print(json.dumps(st, indent=2) if a.json else _board_line(st))
    elif c == "list":
        boards = lifecycle.list_boards()
        for st in boards:
            print(f"{st['url']:<20} {'up' if st['up'] else 'down':<5} {st['kind']:<11} port {st['port']}"
                  + (f"  {st['tee']}" if st.get("tee") else "")
                  + (f"  runtime {st['runtime']}" if st.get("runtime", "litert") != "litert" else ""))  # fmt: skip
        from pathlib import Path

        from .board.home import home as omg_home

        home = omg_home()
        print(f"{len(boards)} board(s) in {home} (OMG_HOME)" if boards else
              f"no boards in {home} (OMG_HOME); `omg board create NAME [--kind optee-qemu]` makes one")  # fmt: skip
        demo = Path("artifacts/omg-home").resolve()  # make demo's and make lab's (Makefile)
        if demo.is_dir() and demo != home.resolve():
            print(f"`make demo` keeps its boards apart: OMG_HOME={demo} omg board list")
    elif c == "trust":
        from .board import trust

        print(f"pinned {a.url}: {trust(a.url)}")
    elif c == "init-device":
        from .board.workflow import init_remote_device

        print(f"board {a.url} has an emulated TEE, device {init_remote_device(a.url)}")
    return 0


def _cmd_deploy(a: argparse.Namespace) -> int:
    from .board.workflow import deploy_run

    r = deploy_run(a.board, a.run, model_version=a.version, kem=a.kem)
    what = (
        "already deployed"
        if r["skipped"]
        else f"sent {len(r['sent'])} files, linked {len(r['linked'])}"
    )
    print(f"release {r['release']} on {a.board}: {what} ({r['deploy_seconds']:.2f} s); "
          f"prepared in {r['preparation_seconds']:.2f} s; model {r['model']['model_id']} "
          f"v{r['model']['model_version']} initialized in the board's TEE")  # fmt: skip
    return 0


def _cmd_run(a: argparse.Namespace) -> int:
    import numpy as np

    from .board.workflow import classify
    from .kws.audio import read_clip

    names: list[str] = []
    engines: list[str] = []
    if a.data:
        from .kws.dataset import load_dataset

        ds = load_dataset(a.data)
        items = ds.select(a.split)
        audio, truth = ds.load(items)
        names = [it.path for it in items]
        engines = [it.engine for it in items]
    elif a.clips:
        audio = np.stack([read_clip(p, trim=True) for p in a.clips])
        truth = None
        names = list(a.clips)
    else:
        raise ConfigError("give clips (WAV files) or --data DIR [--split testing]")
    from .board.workflow import plain_labels

    labels, t = classify(a.board, audio, mic=not a.buffer)
    names_of = t["model"]["labels"]  # the class names the deployed package carries
    plain = plain_labels(t["model"], audio)
    same = None if plain is None else sum(x == y for x, y in zip(labels, plain, strict=True))
    if truth is None or a.verbose:
        for n, lab in zip(names, labels, strict=True):
            print(f"{n}: {names_of[lab]}")
    by_engine: dict[str, float] = {}
    acc = None
    if truth is not None:
        hit = np.asarray(labels) == truth
        acc = float(np.mean(hit))
        print(f"{len(labels)} clips of {a.split}, every engine's: accuracy {acc:.4f} on the board")
        if engines:  # a voice the model never heard scores lower: say which
            eng = np.asarray(engines)
            by_engine = {e: float(np.mean(hit[eng == e])) for e in sorted(set(engines))}
            print("  by engine: " + ", ".join(f"{e} {v:.4f} ({int(np.sum(eng == e))})" for e, v in by_engine.items())
                  + "\n  (omg evaluate scores a run without the engine it held out of training, and that one apart)")  # fmt: skip
    print(f"initialization {t['initialization_seconds'] * 1000:.0f} ms, operation {t['operation_seconds']:.2f} s, "
          f"round trip {t['rtt_median_ms']:.2f} ms (median); TEE: {t['tee']}, audio through {t['source']}")  # fmt: skip
    if same is not None:
        print(
            f"labels equal to plain inference (the vendor's copy, no TEE) on {same}/{len(labels)} clips"
        )
    if a.json:
        from .util import atomic_write_text

        out = {"tee": t["tee"], "clips": len(labels), "labels_equal_plain": same == len(labels) if plain else None,
               "labels_equal_plain_count": same, "labels": labels, "plain_labels": plain, "names": names,
               "accuracy": acc, "accuracy_by_engine": by_engine, **t}  # fmt: skip
        atomic_write_text(a.json, json.dumps(out) + "\n")
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from .bench import board_rtt, board_tee, fmt_ratio, guard_bench, optee_board_bench

    if not (a.board or a.run):
        raise ConfigError(
            "give --run RUN (plain against guarded) and/or --board URL (round trips to a board)"
        )
    res: dict = {}
    tee = board_tee(a.board) if a.board else ""
    if a.run and tee.startswith("OP-TEE"):  # measured on the board: its normal world against its TA
        res = optee_board_bench(a.board, a.run, data=a.data, clips=a.clips, n=a.n)
        s, bt, i, m = res["single"], res["batch"], res["initialization"], res["memory"]
        heap = m["ta_heap"] or {}
        print(f"on {a.board} ({res['tee']}; QEMU's figures, not a HiKey's), {res['clips']} clips, "
              f"labels equal: {res['labels_equal']}")  # fmt: skip
        print(f"  single clip      guarded {s['guarded']['median_ms']:8.2f} ms  plain {s['plain']['median_ms']:8.2f} ms"
              f"  ratio {fmt_ratio(s['ratio'], s['ratio_ci95'])}  CPU {fmt_ratio(s['cpu_ratio'], s['cpu_ratio_ci95'])}")  # fmt: skip
        print(f"  batch, per clip  guarded {bt['per_clip_guarded_ms']:8.2f} ms  plain "
              f"{bt['per_clip_plain_ms']:8.2f} ms  ratio {fmt_ratio(bt['ratio'], bt['ratio_ci95'])}")  # fmt: skip
        print(f"  initialization   guarded {i['guarded']['median_ms']:8.1f} ms  plain {i['plain']['median_ms']:8.1f} ms"
              f"  (TA load {i['ta_load']['median_ms']:.1f} ms)")  # fmt: skip
        print(f"  TA heap peak {heap.get('max_allocated', 0) / 1024:.1f} KiB of {heap.get('size', 0) / 1024:.0f} KiB; "
              f"TA secure RAM {m['ta_ram_held_bytes'] / 1024:.0f} KiB; plain C core "
              f"{sum(m['plain_bytes'].values()) / 1024:.1f} KiB")  # fmt: skip
    elif a.run:
        from .bench import report_lines

        res = guard_bench(a.run, data=a.data, n=a.n, repeats=a.repeats, block=a.block,
                          batch_clips=a.batch_clips, placement=a.placement)  # fmt: skip
        print("\n".join(report_lines(res)))
    if a.board:
        r = res["board_rtt"] = board_rtt(a.board, a.n)
        print(f"board {a.board}: the TA runs its model with {r['runtime']}")
        for k in ("ping", "classify_one_clip"):
            s = r[k]
            print(f"board {k:<18} median {s['median_ms']:.3f} ms  (p10 {s['p10_ms']:.3f}, p90 {s['p90_ms']:.3f}, "
                  f"n={s['n']})")  # fmt: skip
    if a.json:
        from .util import atomic_write_text

        atomic_write_text(a.json, json.dumps(res, indent=2) + "\n")
    return 0


def _cmd_plan(a: argparse.Namespace) -> int:
    from .kws.release import Release
    from .tee.plan import plan

    release = Release.from_run(a.run)
    release.check()
    m = plan(release.model, release.frontend, a.target)
    t = m.target
    kib = 1024

    def row(name: str, n: int, note: str = "") -> None:
        print(f"  {name:<34} {n / kib:9.1f} KiB  {note}")

    print(f"{release!r} in a C TA on {t.name} ({t.note})")
    row("decrypted model (weights read in place)", m.model_bytes)
    row("engine arena (activations, multipliers)", m.arena_bytes,
        f"{m.engine['num_ops']} operators, {m.engine['macs']:,} MACs per clip")  # fmt: skip
    row("frontend state (window, twiddles, mel)", m.frontend_bytes)
    row("one clip's features and scores", m.buffers_bytes)
    row("copied license, sealed blob, header", m.inputs_bytes)
    row("GP crypto and session state", m.crypto_and_state_bytes, "(allowance)")
    row("TA heap", m.ta_heap_bytes, f"of {t.ta_heap_bytes / kib:.0f} KiB (TA_DATA_SIZE)")
    row("TA stack", m.ta_stack_bytes, f"of {t.ta_stack_bytes / kib:.0f} KiB (TA_STACK_SIZE)")
    print(
        "fits"
        if m.fits
        else "does NOT fit: raise TA_DATA_SIZE/TA_STACK_SIZE or take a smaller model"
    )
    if a.json:
        from .util import atomic_write_text

        d = {"run": str(a.run), "release": repr(release), "arena_bytes": m.arena_bytes,
             "ta_heap_bytes": m.ta_heap_bytes, "ta_stack_bytes": m.ta_stack_bytes, "fits": m.fits,
             **m.to_dict()}  # fmt: skip
        atomic_write_text(a.json, json.dumps(d, indent=2) + "\n")
    return 0 if m.fits else 1


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from .reproduce import reproduce

    out = reproduce(profile=a.profile, model=a.model, seed=a.seed, art=a.artifacts, results=a.results,
                    optee=a.optee, optee_clips=a.optee_clips)  # fmt: skip
    from .reproduce import table

    print(table(out))
    return 0


URL_HELP = (
    "a board: emu://NAME (made by `omg board create NAME`), or "
    "ssh://user@host:port/ROOT?python=PATH&key=PATH (any board over SSH; pin its host key "
    "first with `omg board trust URL`)"
)
VENDOR_DIR = "the vendor's directory (omg vendor init)"


def _profile_clips(p) -> int:
    """About how many clips a corpus profile makes: each speaker says every keyword, and
    ``unknown_per_speaker`` other words (the silence class is cut from noise on top)."""
    from .kws.labels import KEYWORDS

    return sum(p.speakers.values()) * (len(KEYWORDS) + p.unknown_per_speaker)


def build_parser() -> argparse.ArgumentParser:
    from omg_ta.runtime import RUNTIMES

    from .kws.corpus.synth import PROFILES
    from .kws.models import MODELS

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
        help="corpus size: "
        + "; ".join(f"{k}: ~{_profile_clips(v):,} clips" for k, v in PROFILES.items()),
    )
    s.add_argument(
        "--out", default="artifacts/corpus-quick", help="output directory (resumes if it exists)"
    )
    s.add_argument("--engines", help="comma-separated subset of engines (default: all found)")
    s.add_argument(
        "--seed", type=int, default=0, help="random seed: speakers, words, noise (default 0)"
    )
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_synth)

    f = data.add_parser(
        "fetch",
        help="download Speech Commands v0.02 (needs internet)",
        description="Download and verify a dataset, or check a local copy.",
    )
    f.add_argument(
        "dataset", choices=["speech-commands"], help="the dataset (Speech Commands v0.02, 2.3 GB)"
    )
    f.add_argument("--out", default="artifacts/speech_commands_v0.02",
                   help="where to download and extract it (default: %(default)s)")  # fmt: skip
    f.add_argument("--data-dir", help="an already extracted copy to check and use instead")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_cmd_fetch)

    t = sub.add_parser(
        "train", help="train a keyword model", description="Train a keyword model on a corpus."
    )
    t.add_argument("--data", required=True, help="corpus directory (Speech Commands layout)")
    t.add_argument("--out", required=True, help="run directory to write")
    t.add_argument("--model", default="ds_cnn_s", help=f"one of: {', '.join(MODELS)}")
    t.add_argument("--features", default="mfcc", choices=["mfcc", "logmel"],
                   help="the frontend: mfcc (49x10, the paper's) or logmel (49x40, micro_speech's)")  # fmt: skip
    t.add_argument(
        "--epochs", type=int, default=40, help="at most this many (early stopping; default 40)"
    )
    t.add_argument(
        "--batch-size", type=int, default=64, help="clips per training step (default 64)"
    )
    t.add_argument("--augment-copies", type=int, default=2,
                   help="augmented copies of each training clip: noise, shift, gain (default 2)")  # fmt: skip
    t.add_argument(
        "--holdout-engine", default="auto", help="engine kept out of training: auto, none or a name"
    )
    t.add_argument(
        "--seed", type=int, default=0, help="random seed of initialization and augmentation"
    )
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser(
        "convert",
        help="convert a trained run to TFLite float32 and int8",
        description="Convert model.keras of a run to TFLite builtins only.",
    )
    c.add_argument("--run", required=True, help="run directory made by `omg train`")
    c.add_argument("--quantization", nargs="+", default=["float32", "int8"], choices=["float32", "int8"],
                   help="the models to write (default: both; int8 is what the TA runs)")  # fmt: skip
    c.set_defaults(func=_cmd_convert)

    e = sub.add_parser(
        "evaluate",
        help="accuracy per split, held-out engine, runtime agreement",
        description="Evaluate the converted models of a run.",
    )
    e.add_argument("--run", required=True, help="a converted run (omg convert)")
    e.add_argument("--json", help="also write the results to this path")
    e.add_argument("--data", help="corpus to evaluate on (default: the one trained on)")
    e.add_argument("--no-plots", action="store_true", help="no confusion matrices (PNG) in the run")
    e.add_argument("--conditions", nargs="?", const="all", metavar="NAMES",
                   help="also score under reverberation, band-limiting, noise, gain, shift and "
                        "±1 LSB dither: all of them, or a comma-separated list of "
                        "(omgkit.kws.conditions.NAMES); plotted in conditions.png")  # fmt: skip
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_evaluate)

    g = sub.add_parser("guard", help="the model guard on an emulated TEE").add_subparsers(
        dest="guard_command", required=True, metavar="ACTION"
    )
    gd = g.add_parser("demo", help="preparation, initialization and operation on a local emulated TEE",
                      description="Run the three OMG phases locally and print each step's outcome and time.")  # fmt: skip
    gd.add_argument(
        "--run",
        default="artifacts/demo",
        help="a converted run (default: the one `make demo` makes)",
    )
    gd.add_argument("--workdir", help="where the parties live (default: a new temporary directory)")
    gd.add_argument("--kem", default="X25519", choices=["X25519", "MLKEM768-X25519"],
                    help="key transport for the license (MLKEM768-X25519: post-quantum hybrid)")  # fmt: skip
    gd.set_defaults(func=_cmd_guard_demo)
    ga = g.add_parser("attacks", help="stage the threat model's attacks on a local emulated TEE",
                      description="Stage each attack (modified TA, another device, replayed model, tampered "
                                  "files, ...) and check that it fails with its own error. Exit 1 if one does not.")  # fmt: skip
    ga.add_argument(
        "--run", default="artifacts/demo", help="a converted run (default: `make demo`'s)"
    )
    ga.set_defaults(func=_cmd_guard_attacks)

    b = sub.add_parser(
        "board",
        help="local boards (create, up, down, status, list): emulated or OP-TEE in QEMU; SSH boards",
    ).add_subparsers(dest="board_command", required=True, metavar="ACTION")
    bc = b.add_parser("create", help="make a board: emulated (default) or OP-TEE in QEMU",
                      description="emulated: SSH keys and the Python TEE's device state. optee-qemu: builds "
                                  "(or finds) the OP-TEE image from Debian, then the board's HUK, host key "
                                  "and data disk.")  # fmt: skip
    bc.add_argument("name", help="the board's name: its URL is emu://NAME")
    bc.add_argument("--kind", default="emulated", choices=["emulated", "optee-qemu"],
                    help="emulated (a Python TEE) or optee-qemu (OP-TEE in QEMU)")  # fmt: skip
    bc.add_argument("--port", type=int, help="SSH port on 127.0.0.1 (default: a free one)")
    bc.add_argument("--runtime", choices=["litert", "tflite-runtime"],
                    help="emulated boards: the inference runtime of the board's Python environment. litert "
                         "(default): the workbench's (ai-edge-litert, tflite-micro, the C core); "
                         "tflite-runtime: an environment of its own with tflite-runtime 2.14 and numpy<2, "
                         "from a wheelhouse (downloaded once, then offline)")  # fmt: skip
    for name, text in (
        ("up", "start a board (emulated: SSH server and TEE; optee-qemu: QEMU, wait for SSH)"),
        ("down", "stop it (an OP-TEE board powers off; its data disk stays)"),
        ("status", "is it up; its kind, port, device id or TEE version"),
    ):
        bp = b.add_parser(name, help=text)
        bp.add_argument("name", help="a board made by `omg board create` (omg board list)")
        if name == "status":
            bp.add_argument("--json", action="store_true", help="as JSON")
    b.add_parser("list", help="every local board")
    bt = b.add_parser("trust", help="fetch a board's SSH host key, show its fingerprint and pin it")
    bt.add_argument("url", help=URL_HELP)
    bi = b.add_parser(
        "init-device", help="give an SSH board without OP-TEE the emulated TEE's device state"
    )
    bi.add_argument("url", help=URL_HELP)
    for sp in b.choices.values():
        sp.set_defaults(func=_cmd_board)

    d = sub.add_parser(
        "deploy",
        help="seal a run's model, deploy it and the TA to a board, provision it",
        description="Deploy atomically over SFTP, then attest, license and provision on the board.",
    )
    d.add_argument("--board", required=True, help=URL_HELP)
    d.add_argument(
        "--run", default="artifacts/demo", help="a converted run (default: `make demo`'s)"
    )
    d.add_argument(
        "--version",
        type=int,
        default=None,
        help="model version, monotonic on each device (default: the version this model was "
        "sealed under, or the next unused one)",
    )
    d.add_argument("--kem", default="X25519", choices=["X25519", "MLKEM768-X25519"],
                   help="key transport for the license (MLKEM768-X25519: post-quantum hybrid)")  # fmt: skip
    d.set_defaults(func=_cmd_deploy)

    r = sub.add_parser(
        "run",
        help="classify clips on a board through its secure microphone",
        description="Initialize the deployed model in the board's TEE and classify.",
    )
    r.add_argument("--board", required=True, help=URL_HELP)
    r.add_argument("clips", nargs="*", help="WAV files")
    r.add_argument("--data", help="a corpus: classify a whole split (evaluation mode)")
    r.add_argument("--split", default="testing", choices=["training", "validation", "testing"],
                   help="the split of --data to classify (default: testing)")  # fmt: skip
    r.add_argument(
        "--buffer",
        action="store_true",
        help="hand audio in through shared memory, not the microphone",
    )
    r.add_argument("--json", help="write labels and timings here")
    r.add_argument("--verbose", action="store_true", help="print every clip's label")
    r.set_defaults(func=_cmd_run)

    be = sub.add_parser(
        "bench",
        help="plain against guarded, per phase; round trips to a board",
        description="Plain against guarded in paired blocks, each ratio with its 95 %% interval, CPU "
        "time and where a guarded request's time goes; measured, never asserted.",
    )
    be.add_argument("--run", help="a converted run: plain against guarded (on a local emulated TEE; "
                    "on the board itself when --board is an OP-TEE board with this run deployed)")  # fmt: skip
    be.add_argument("--data", help="corpus for the test split (default: the run's)")
    be.add_argument("--board", help="a board with a deployed model: round-trip times")
    be.add_argument("-n", type=int, default=24,
                    help="pairs of plain and guarded blocks per repeat and measurement (default 24); "
                    "rounds of --board round trips")  # fmt: skip
    be.add_argument("--repeats", type=int, default=3,
                    help="repeats of each paired measurement, pooled for the interval (default 3)")  # fmt: skip
    be.add_argument("--block", type=int, default=8, help="clips per single-clip block (default 8)")
    be.add_argument("--batch-clips", type=int, default=128,
                    help="clips per batch block (default 128, at most the test split)")  # fmt: skip
    be.add_argument("--placement", choices=("shared", "split"), default="shared",
                    help="the normal world's client on the TEE's CPU, as under TrustZone (shared, "
                    "the default), or on a CPU of its own (split)")  # fmt: skip
    be.add_argument("--clips", type=int, default=64,
                    help="test clips per batch on an OP-TEE board (default 64; QEMU is slow)")  # fmt: skip
    be.add_argument(
        "--json", help="write every figure here (ratios, intervals, CPU time, breakdown)"
    )
    be.set_defaults(func=_cmd_bench)

    pl = sub.add_parser(
        "plan",
        help="will a run's model fit a C TA? heap, stack and arena against a TEE's limits",
        description="Add up what the C TA holds for this model (the C engine's own plan, the "
        "frontend, buffers, copies, crypto) and compare it with a target's TA_DATA_SIZE, "
        "TA_STACK_SIZE and TA RAM. Exit 1 if it does not fit.",
    )
    pl.add_argument("--run", required=True, help="a converted run")
    pl.add_argument("--target", default="optee-qemu", choices=["optee-qemu", "hikey960", "optee-example"],
                    help="the TEE whose limits count (default: optee-qemu)")  # fmt: skip
    pl.add_argument(
        "--json",
        help="also write the figures here (ta_heap_bytes, ta_stack_bytes, arena_bytes, fits)",
    )
    pl.set_defaults(func=_cmd_plan)

    rp = sub.add_parser(
        "reproduce",
        help="the paper artifact: corpus to benchmark, resumable",
        description="Run every step whose output is missing; write results/<parameters>.json/.md/.png.",
    )
    rp.add_argument("--profile", default="paper", choices=list(PROFILES),
                    help="corpus profile (default: paper; tiny for a quick check)")  # fmt: skip
    rp.add_argument(
        "--model", default="ds_cnn_s", help=f"one of: {', '.join(MODELS)} (default ds_cnn_s)"
    )
    rp.add_argument("--seed", type=int, default=0, help="corpus and training seed (default 0)")
    rp.add_argument(
        "--artifacts", default="artifacts", help="corpus and run directories (default: %(default)s)"
    )
    rp.add_argument(
        "--results",
        default="results",
        help="where the JSON, table and plots go (default: %(default)s)",
    )
    rp.add_argument("--optee", action=argparse.BooleanOptionalAction, default=False,
                    help="also on an OP-TEE board in QEMU (board repro-optee): the second table")  # fmt: skip
    rp.add_argument("--optee-clips", type=int, default=128,
                    help="test clips in the on-board batch measurement (default 128)")  # fmt: skip
    rp.set_defaults(func=_cmd_reproduce)

    v = sub.add_parser(
        "vendor", help="the model vendor's keys, approvals, packages and service"
    ).add_subparsers(dest="vendor_command", required=True, metavar="ACTION")
    vi = v.add_parser("init", help="create a vendor directory (signing key, stores)")
    vi.add_argument("dir", help=VENDOR_DIR)
    vt = v.add_parser("trust", help="trust a device manufacturer's root certificate (DER)")
    vt.add_argument("dir", help=VENDOR_DIR)
    vt.add_argument("root_cert", help="the manufacturer's root certificate, DER")
    va = v.add_parser("approve", help="approve a TA measurement")
    va.add_argument("dir", help=VENDOR_DIR)
    grp = va.add_mutually_exclusive_group(required=True)
    grp.add_argument("--measurement", help="hex SHA-256 measurement")
    grp.add_argument("--bundle", help="a TA bundle directory to measure")
    vs = v.add_parser("seal", help="encrypt and sign a run's model into a package")
    vs.add_argument("dir", help=VENDOR_DIR)
    vs.add_argument("--run", required=True, help="a converted run")
    vs.add_argument("--out", required=True, help="the package to write (.omgpkg)")
    vs.add_argument("--model-id", default="kws", help="the model's name in licenses (default kws)")
    vs.add_argument(
        "--version", type=int, default=1, help="the model version (rollback counters; default 1)"
    )
    vs.add_argument("--quantization", default="int8", choices=["int8", "float32"],
                    help="which of the run's models (default int8)")  # fmt: skip
    vs.add_argument("--runtime", default="litert", choices=list(RUNTIMES),
                    help="the runtime the TA loads the model with")  # fmt: skip
    vv = v.add_parser("serve", help="serve nonces and licenses over HTTP")
    vv.add_argument("dir", help=VENDOR_DIR)
    vv.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    vv.add_argument("--port", type=int, default=8750, help="port (default: %(default)s)")
    vl = v.add_parser("ledger", help="print every license issued (JSON lines)")
    vl.add_argument("dir", help=VENDOR_DIR)
    for sp in (vi, vt, va, vs, vv, vl):
        sp.set_defaults(func=_cmd_vendor)
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
