"""The `omg` CLI end to end on the tiny corpus, and its error messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_omg

SUBCOMMANDS = [["data", "synth"], ["data", "fetch"], ["train"], ["convert"], ["evaluate"],
               ["guard", "demo"], ["guard", "attacks"], ["bench"], ["reproduce"]]  # fmt: skip


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c))
def test_help(cmd):
    r = run_omg(*cmd, "--help")
    assert "usage: omg" in r.stdout and "--" in r.stdout


@pytest.mark.slow
def test_pipeline_train_convert_evaluate(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    r = run_omg(
        "train",
        "--data",
        str(tiny_corpus),
        "--out",
        str(run),
        "--model",
        "ds_cnn_s",
        "--epochs",
        "4",
        "--augment-copies",
        "1",
    )
    assert "validation accuracy" in r.stdout
    r = run_omg("convert", "--run", str(run))
    assert "int8:" in r.stdout
    out = tmp_path / "eval.json"
    r = run_omg("evaluate", "--run", str(run), "--json", str(out))
    res = json.loads(out.read_text())
    for key in (
        "test_accuracy_float32",
        "test_accuracy_int8",
        "heldout_engine",
        "heldout_engine_accuracy_int8",
        "engines",
        "labels_agree_litert_tflm",
    ):
        assert key in res, key
    assert res["heldout_engine"] == "pico"
    assert res["labels_agree_litert_tflm"] is True
    assert res["test_accuracy_int8"] > 0.3  # chance is 1/12; ~0.8 measured after 4 epochs
    assert (run / "confusion_int8.png").stat().st_size > 10_000
    assert (run / "learning_curves.png").is_file()
    from omgkit.kws.run import RunDir

    man = RunDir(run).manifest()
    assert set(man.data["files"]) >= {
        "model.keras",
        "model_int8.tflite",
        "model_float32.tflite",
        "evaluation.json",
    }
    assert all(man.done(step) for step in ("train", "convert", "evaluate"))
    assert man.holdout_engine == "pico" and len(man.data_fingerprint) == 64
    assert man.labels == tuple(res["labels"]) and man.frontend.kind == "mfcc"


def test_errors_are_one_line_with_advice(tmp_path):
    r = run_omg(
        "train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"), check=False
    )
    assert r.returncode == 2
    assert r.stderr.startswith("error: no dataset at") and "omg data synth" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_omg("convert", "--run", str(tmp_path), check=False)
    assert r.returncode == 2 and "not a run directory" in r.stderr and "omg train" in r.stderr


def test_unknown_model_on_cli(tiny_corpus, tmp_path):
    r = run_omg(
        "train",
        "--data",
        str(tiny_corpus),
        "--out",
        str(tmp_path / "r"),
        "--model",
        "big",
        check=False,
    )
    assert r.returncode == 2 and "known: ds_cnn_s, ds_cnn_m, ds_cnn_l, tiny_conv" in r.stderr


def test_fetch_offline_says_what_to_do(tmp_path, monkeypatch):
    from omgkit.errors import DownloadError
    from omgkit.kws import fetch as fetch_mod

    # A real HTTP request to a closed local port: the offline case, no mock.
    monkeypatch.setitem(
        fetch_mod.DATASETS["speech-commands"], "url", "http://127.0.0.1:9/speech.tar.gz"
    )
    with pytest.raises(DownloadError, match="Offline\\? Use `omg data synth`"):
        fetch_mod.fetch("speech-commands", tmp_path / "sc", show_progress=False)


def test_fetch_data_dir_accepts_a_real_layout_and_refuses_synthetic(tiny_corpus, tmp_path):
    from omgkit.errors import DatasetError
    from omgkit.kws.audio import write_wav
    from omgkit.kws.fetch import fetch

    with pytest.raises(DatasetError, match="synthetic corpus"):
        fetch("speech-commands", tmp_path, data_dir=tiny_corpus)
    import numpy as np

    from omg_ta.commands import CLIP_SAMPLES

    write_wav(tmp_path / "sc" / "yes" / "0a7c2a8d_nohash_0.wav", np.zeros(CLIP_SAMPLES, np.float32))
    assert fetch("speech-commands", tmp_path, data_dir=tmp_path / "sc") == tmp_path / "sc"


def test_guard_demo_runs_the_three_phases(any_tiny_run, tmp_path):
    tiny_run = any_tiny_run  # MFCC and log-mel alike
    r = run_omg("guard", "demo", "--run", str(tiny_run), "--workdir", str(tmp_path / "demo"))
    out = r.stdout
    for phase in ("preparation", "initialization", "operation"):
        assert f"[{phase:>14}]" in out
    assert "vendor service stopped" in out and "same as plain inference" in out
    m = re.search(r"guarded labels equal plain on (\d+)/(\d+) clips", out)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) > 20  # the whole test split
    assert "phase totals:" in out
    # a second run in the same place replaces the first; a foreign directory is refused
    assert (
        run_omg(
            "guard", "demo", "--run", str(tiny_run), "--workdir", str(tmp_path / "demo")
        ).returncode
        == 0
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    r = run_omg(
        "guard", "demo", "--run", str(tiny_run), "--workdir", str(tmp_path / "mine"), check=False
    )
    assert r.returncode == 2 and "not an earlier guard demo" in r.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_guard_demo_without_a_run_says_what_to_do(tmp_path):
    r = run_omg("guard", "demo", "--run", str(tmp_path / "nothing"), check=False)
    assert r.returncode == 2 and "omg train" in r.stderr


def test_guard_demo_refuses_a_truncated_model_in_one_line(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    model = run / "model_int8.tflite"
    model.write_bytes(model.read_bytes()[:-1000])
    r = run_omg("guard", "demo", "--run", str(run), "--workdir", str(tmp_path / "w"), check=False)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {model}: litert cannot load the model")
    assert not (tmp_path / "w").exists()  # stopped before any party was made


def test_vendor_commands(tiny_run, tmp_path):
    from omgkit.tee import Manufacturer

    vdir = tmp_path / "vendor"
    assert "public key" in run_omg("vendor", "init", str(vdir)).stdout
    man = Manufacturer.create(tmp_path / "man")
    (tmp_path / "root.der").write_bytes(man.root_der)
    run_omg("vendor", "trust", str(vdir), str(tmp_path / "root.der"))
    assert (
        "approved measurement " + "ab" * 32
        in run_omg("vendor", "approve", str(vdir), "--measurement", "ab" * 32).stdout
    )
    out = tmp_path / "kws.omgpkg"
    r = run_omg(
        "vendor", "seal", str(vdir), "--run", str(tiny_run), "--out", str(out), "--version", "2"
    )
    assert "sealed kws v2" in r.stdout and out.read_bytes()[:6] == b"OMGPKG"
    r = run_omg("vendor", "approve", str(vdir), check=False)
    assert r.returncode == 2 and "--measurement" in r.stderr


def test_bench_reports_plain_against_guarded(any_tiny_run, tmp_path):
    out = tmp_path / "bench.json"
    r = run_omg("bench", "--run", str(any_tiny_run), "-n", "3", "--repeats", "2", "--block", "2",
                "--batch-clips", "8", "--json", str(out))  # fmt: skip
    res = json.loads(out.read_text())
    from omgkit.kws.run import RunDir
    from omgkit.tee.trace import STAGES

    assert res["frontend"] == RunDir(any_tiny_run).manifest().frontend.kind
    assert all(rt["plain_peak_rss_mb"] > 10 for rt in res["runtimes"].values())
    for key in ("operation_ratio_tflm", "operation_ratio_litert_single", "operation_ratio_litert_batch",
                "initialization_overhead_ms", "ta_peak_rss_mb", "labels_equal"):  # fmt: skip
        assert res[key] is not None, key
    for key in ("operation_ratio_tflm", "operation_ratio_litert_single", "operation_ratio_litert_batch",
                "operation_ratio_litert_streaming", "cpu_ratio_tflm", "cpu_ratio_litert_batch"):  # fmt: skip
        lo, hi = res[f"{key}_ci95"]  # every ratio with its interval, around it
        assert 0 < lo <= res[key] <= hi, key
    assert res["labels_equal"] is True and res["ta_peak_rss_mb"] > 10
    for name, rt in res["runtimes"].items():
        assert rt["accuracy_guarded_int8"] == rt["accuracy_plain_int8"]
        s = rt["single"]
        assert s["pairs"] == 6 and len(s["repeats"]) == 2 and s["repeat_spread"] >= 0
        assert s["guarded"]["cpu_ms"] > 0 and s["plain"]["cpu_ms"] > 0, name
        # where the guarded time goes: every stage measured, adding up to the request
        b = rt["breakdown"]
        assert b["requests"] >= 30 and set(b["stages"]) == {st[1] for st in STAGES}
        assert all(v["median_us"] >= 0 for v in b["stages"].values())
        assert b["stages"]["model"]["median_us"] > 0 and b["stages"]["to_core"]["median_us"] > 0
    # a target is met only when its interval's upper end is within it
    for t in res["targets"]:
        assert t["met"] == (t["ci95"] is not None and t["ci95"][1] <= t["target"])
    assert "operation_ratio_litert_batch" in r.stdout and "upper bound" in r.stdout
    assert "where a guarded clip's time goes" in r.stdout
    r = run_omg("bench", check=False)
    assert r.returncode == 2 and "--run RUN" in r.stderr


def test_every_option_has_help_and_the_help_tells_the_truth(tiny_corpus):
    """Issue 14's newcomer: options without help, no board URL forms, a wrong clip count."""
    import argparse

    from omgkit.cli import _profile_clips, build_parser
    from omgkit.kws.corpus.synth import PROFILES

    bare = []

    def walk(parser, path):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, [*path, name])
            elif not isinstance(a, argparse._HelpAction) and not a.help:
                bare.append(f"{' '.join(path)} {a.option_strings or a.dest}")

    walk(build_parser(), ["omg"])
    assert bare == []
    for cmd in (["run"], ["deploy"], ["board", "trust"]):
        out = " ".join(run_omg(*cmd, "--help").stdout.split())  # as wrapped at any width
        assert "emu://NAME" in out and "ssh://user@host:port/ROOT" in out, cmd
    made = sum(json.loads((tiny_corpus / "corpus.json").read_text())["splits"].values())
    said = _profile_clips(PROFILES["tiny"])
    synth_help = " ".join(run_omg("data", "synth", "--help").stdout.split())
    assert f"tiny: ~{said:,} clips" in synth_help
    assert abs(said - made) <= 0.05 * made  # what the help says is what synthesis makes


def test_board_list_names_its_home_and_the_demos(tmp_path):
    """`make demo`'s boards live in artifacts/omg-home: a plain `omg board list` says so."""
    import os
    import subprocess
    import sys

    (tmp_path / "artifacts" / "omg-home").mkdir(parents=True)
    env = dict(os.environ, OMG_HOME=str(tmp_path / "home"))
    omg = str(Path(sys.executable).with_name("omg"))
    r = subprocess.run(
        [omg, "board", "list"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert f"no boards in {tmp_path / 'home'} (OMG_HOME)" in r.stdout
    assert f"OMG_HOME={tmp_path / 'artifacts' / 'omg-home'} omg board list" in r.stdout


def test_convert_prints_no_tensorflow_log_wall(tiny_run, tmp_path):
    """TensorFlow's native start-up lines (absl, oneDNN) and the quantizer's were a red wall
    on every `omg convert` (issue 14's newcomer)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    r = run_omg("convert", "--run", str(run))
    assert "int8:" in r.stdout
    for noise in ("I0000", "oneDNN", "absl", "fully_quantize"):
        assert noise not in r.stderr, r.stderr


def test_native_stderr_filter_keeps_what_is_not_noise():
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from omgkit.util import native_stderr_filtered\n"
        "with native_stderr_filtered():\n"
        "    os.write(2, b'I0000 00:00:1796231363.328334    6364 port.cc:153] oneDNN custom operations\\n')\n"
        "    os.write(2, b'E0000 00:00:1796231363.3 6364 x.cc:1] a real error\\n')\n"
        "    print('python says', file=sys.stderr)\n"
        "    os.write(2, b'fully_quantize: 0, inference_type: 6\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.splitlines() == [
        "E0000 00:00:1796231363.3 6364 x.cc:1] a real error",
        "python says",
        "after",
    ]
