"""One release: a run becomes what the vendor seals, and a bad model is refused on both sides."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat

import pytest

from omg_ta import commands as C
from omg_ta.errors import ModelFormatError
from omg_ta.frontend import FrontendSettings
from omg_ta.package import seal_package
from omgkit.errors import ArtifactError
from omgkit.kws.release import Release
from omgkit.kws.run import RunDir


def test_a_run_becomes_a_release(tiny_run, tiny_run_logmel):
    r = Release.from_run(tiny_run)
    man = RunDir(tiny_run).manifest()
    assert r.frontend == man.frontend and r.labels == man.labels and len(r.labels) == 12
    assert r.model == (tiny_run / "model_int8.tflite").read_bytes()
    assert r.source == str(tiny_run / "model_int8.tflite") and r.model_id == "kws"
    assert str(len(r.model)) not in repr(r) and "mfcc 49x10" in repr(r)  # no bytes dumped
    assert Release.from_run(tiny_run_logmel).frontend.shape == (49, 40)
    r.check()
    Release.from_run(tiny_run_logmel).check()


def test_check_says_what_is_wrong(tiny_run, tiny_run_logmel):
    logmel = Release.from_run(tiny_run_logmel)
    # the bug this replaced: a 49x40 log-mel model sealed with default (MFCC 49x10) settings
    wrong_fe = dataclasses.replace(logmel, frontend=FrontendSettings())
    with pytest.raises(
        ModelFormatError, match=r"takes features of shape \(49, 40, 1\).*make \(49, 10, 1\)"
    ):
        wrong_fe.check()
    mfcc = Release.from_run(tiny_run)
    with pytest.raises(ModelFormatError, match="12 outputs but 11 labels"):
        dataclasses.replace(mfcc, labels=mfcc.labels[:11]).check()
    with pytest.raises(ModelFormatError, match="distinct"):
        dataclasses.replace(mfcc, labels=("yes",) * 12).check()
    cut = dataclasses.replace(mfcc, model=mfcc.model[: len(mfcc.model) // 2])
    with pytest.raises(ModelFormatError, match=f"^{cut.source}: litert cannot load the model"):
        cut.check()
    with pytest.raises(ModelFormatError, match="no TFL3"):
        dataclasses.replace(mfcc, model=b"\0" * 64).check()


def test_the_vendor_refuses_a_bad_model_and_writes_nothing(tiny_run, tmp_path):
    from omgkit.guard import Vendor

    v = Vendor.create(tmp_path / "v")
    good = Release.from_run(tiny_run)
    bad = dataclasses.replace(good, model=good.model[:-500])
    with pytest.raises(ModelFormatError, match="cannot load"):
        v.seal_model(bad, model_version=1)
    assert list((v.path / "models").iterdir()) == []  # no key, no package, no version used
    assert v.version_for(good) == 1
    v.seal_model(good, model_version=1)
    key = v.path / "models" / "kws@1.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_the_ta_checks_the_model_before_any_counter_moves(guard_world_logmel):
    """A package the vendor's check never saw (sealed low-level): refused at initialize with its
    reason; the device's version counter and the good model are untouched."""
    w = guard_world_logmel
    g = w.prepared("dev-badmodel")
    assert g.initialize()["model_version"] == 1  # counter at 1
    good = {p.name: p.read_bytes() for p in g.storage.iterdir()}
    g.close()
    v = w.vendor
    v.seal_model(w.release, model_version=7)  # makes the v7 key; its package we replace
    key = v._model_key("kws", 7).reveal()
    cases = {
        "cannot load the model": (w.model[:-300], w.frontend),
        r"takes features of shape \(49, 40, 1\)": (w.model, FrontendSettings()),
    }
    for why, (model, fe) in cases.items():
        pkg = seal_package(model, key, v._key(), model_id="kws", model_version=7, runtime="litert",
                           input_spec={"frontend": fe.to_dict()}, labels=w.labels)  # fmt: skip
        g = w.host("dev-badmodel")
        token = g.attest(v.new_nonce())
        g.provision(v.issue_license(token, model_id="kws", model_version=7))
        g.install_package(pkg)
        with pytest.raises(ModelFormatError, match=why):  # the TA's own message, across the TEE
            g.initialize()
        g.close()
    for name, data in good.items():  # version 1 again: refused as a rollback if v7 had counted
        (g.storage / name).write_bytes(data)
    with w.host("dev-badmodel") as again:
        assert again.initialize()["model_version"] == 1


def test_manifest_accessors_and_done(tiny_run, tmp_path):
    man = RunDir(tiny_run).manifest()
    assert man.model == "ds_cnn_s" and man.seed == 0 and man.holdout_engine == "pico"
    assert man.data_path.is_dir() and man.done("train") and man.done("convert")
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    (run / "model_int8.tflite").unlink()
    assert not RunDir(run).manifest().done("convert")
    data = json.loads((run / "manifest.json").read_text())
    del data["labels"]
    (run / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="no 'labels' section"):
        _ = RunDir(run).manifest().labels
    (run / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        RunDir(run).manifest()


def test_reproduce_redoes_a_training_killed_midway(tiny_run, tmp_path):
    from omgkit.reproduce import _done

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run / "model.keras", run / "model.keras")  # what a killed training leaves
    assert not _done(run, "train")
    shutil.copy(tiny_run / "manifest.json", run / "manifest.json")
    assert not _done(run, "train")  # representative.npy is missing
    shutil.copy(tiny_run / "representative.npy", run / "representative.npy")
    assert _done(run, "train") and not _done(run, "convert")


def test_bench_fails_loudly_when_its_plain_process_fails(tmp_path):
    from omgkit.bench import BenchError, plain_peak_rss_mb

    (tmp_path / "m.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(BenchError, match="plain litert process .* failed .*no TFL3"):
        plain_peak_rss_mb(tmp_path / "m.tflite", "litert", FrontendSettings())


def test_clip_format_reaches_every_side():
    from omgkit.kws import audio

    assert audio.CLIP_SAMPLES == C.CLIP_SAMPLES and audio.SAMPLE_RATE == C.SAMPLE_RATE
