"""The synthetic corpus: layout, format, engines, splits, determinism, resume."""

from __future__ import annotations

import hashlib
import re
import wave

import numpy as np
import pytest

from omgkit.errors import EngineError, UnknownNameError
from omgkit.kws.corpus import ENGINES, available_engines, synthesize
from omgkit.kws.corpus.synth import PROFILES, plan_speakers
from omgkit.kws.dataset import load_dataset, which_set
from omgkit.kws.labels import KEYWORDS

NAME = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")


def test_every_engine_is_installed():
    # `make test` installs them (tools/sysdeps.py); a machine without them
    # makes a less diverse corpus, and this test says so.
    missing = [e for e in ENGINES if e not in available_engines()]
    assert not missing, (
        f"TTS engines missing: {missing}; as root run `python3 tools/sysdeps.py tts tts-nonfree`"
    )


def test_every_festival_voice_is_installed():
    from omgkit.kws.corpus.tts import FestivalEngine

    e = FestivalEngine()
    assert e.voices == e.all_voices, f"missing festival voices: {set(e.all_voices) - set(e.voices)}"


def test_layout_and_format(tiny_corpus):
    for f in ("validation_list.txt", "testing_list.txt", "speakers.tsv", "corpus.json"):
        assert (tiny_corpus / f).is_file()
    assert len(list((tiny_corpus / "_background_noise_").glob("*.wav"))) >= 5
    wavs = [p for p in tiny_corpus.glob("*/*.wav") if p.parent.name != "_background_noise_"]
    assert len(wavs) > 250
    for p in wavs:
        assert NAME.match(p.name), p
        with wave.open(str(p)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
                1,
                2,
                16000,
                16000,
            )
    for kw in KEYWORDS:
        assert any((tiny_corpus / kw).iterdir())


def test_every_engine_contributes_speech(tiny_corpus):
    ds = load_dataset(tiny_corpus)
    assert set(ds.engines) == set(ENGINES)
    x, _ = ds.load([it for it in ds.items if it.engine == "pico"][:5])
    assert np.all(np.abs(x).max(axis=1) > 3000)  # clips are normalised, not empty


def test_splits_are_speaker_disjoint_and_match_the_hash(tiny_corpus):
    ds = load_dataset(tiny_corpus)
    by_speaker: dict[str, set[str]] = {}
    for it in ds.items:
        if it.engine != "noise":
            by_speaker.setdefault(it.speaker, set()).add(it.split)
            assert it.split == which_set(it.path)
    assert all(len(s) == 1 for s in by_speaker.values())
    assert {s for v in by_speaker.values() for s in v} == {"training", "validation", "testing"}


def test_deterministic_for_a_seed(tmp_path, tiny_corpus):
    other = tmp_path / "again"
    synthesize(other, "tiny", engines=["espeak", "flite"], seed=0, show_progress=False)
    for p in sorted(other.glob("yes/*.wav")):
        assert (
            hashlib.sha256(p.read_bytes()).digest()
            == hashlib.sha256((tiny_corpus / "yes" / p.name).read_bytes()).digest()
        )
    assert plan_speakers(PROFILES["tiny"], ["espeak"], 1) != plan_speakers(
        PROFILES["tiny"], ["espeak"], 0
    )


def test_resume_makes_only_what_is_missing(tmp_path):
    out = tmp_path / "c"
    first = synthesize(out, "tiny", engines=["espeak"], show_progress=False)
    victims = sorted(out.glob("left/*.wav"))[:3]
    for v in victims:
        v.unlink()
    second = synthesize(out, "tiny", engines=["espeak"], show_progress=False)
    assert second.made == 3 and second.skipped == first.made - 3
    assert all(v.exists() for v in victims)


def test_resume_removes_clips_of_speakers_no_longer_planned(tmp_path):
    out = tmp_path / "c"
    synthesize(out, "tiny", engines=["espeak", "flite"], show_progress=False)
    flite_clips = [p for p in out.glob("*/*.wav") if p.name.split("_")[0] in
                   {r.split("\t")[0] for r in (out / "speakers.tsv").read_text().splitlines() if "\tflite\t" in r}]  # fmt: skip
    mine = out / "yes" / "cafebabe_nohash_0.wav"  # a clip put there by hand
    mine.write_bytes(flite_clips[0].read_bytes())
    again = synthesize(out, "tiny", engines=["espeak"], show_progress=False)  # flite gone
    assert again.removed == len(flite_clips) and again.made == 0
    assert not any(p.exists() for p in flite_clips) and mine.exists()
    assert "no longer planned" in again.summary()


def test_unknown_or_absent_engine_and_profile(tmp_path):
    with pytest.raises(UnknownNameError, match="known: espeak, mbrola, flite, festival, pico"):
        synthesize(tmp_path, "tiny", engines=["sam"])
    with pytest.raises(UnknownNameError, match="unknown profile 'huge'; known: tiny, quick, paper"):
        synthesize(tmp_path, "huge")


def test_absent_engine_message(tmp_path, monkeypatch):
    monkeypatch.setattr(ENGINES["pico"], "available", lambda: False)
    with pytest.raises(EngineError, match="not available here: pico; available: espeak"):
        synthesize(tmp_path, "tiny", engines=["pico"])


def test_paper_profile_has_1000_clips_per_keyword():
    prof = PROFILES["paper"]
    total = sum(min(n, len(ENGINES[e].grid())) for e, n in prof.speakers.items())
    assert total >= 1000 * 1.05  # a few empty clips are dropped
