"""The loader on a real-layout tree the test builds, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from omgkit.errors import DatasetError, DatasetNotFoundError
from omgkit.kws.audio import write_wav
from omgkit.kws.dataset import load_dataset, noise_region, which_set
from omgkit.kws.labels import LABELS


@pytest.fixture
def speech_commands_tree(tmp_path):
    """A miniature Speech Commands v0.02 (no speakers.tsv: human speakers)."""
    rng = np.random.default_rng(0)
    files = []
    for word in ("yes", "no", "left", "marvin", "bed"):
        for spk in ("0a7c2a8d", "0b09edd3", "0c40e715", "1a5b9ca4", "3bfd30e6", "c1d39ce8"):
            rel = f"{word}/{spk}_nohash_0.wav"
            write_wav(tmp_path / rel, (rng.standard_normal(16000) * 0.1).astype(np.float32))
            files.append(rel)
    write_wav(
        tmp_path / "_background_noise_/white_noise.wav", rng.standard_normal(16000 * 30) * 0.1
    )
    (tmp_path / "validation_list.txt").write_text(
        "yes/0a7c2a8d_nohash_0.wav\nno/0a7c2a8d_nohash_0.wav\n"
    )
    (tmp_path / "testing_list.txt").write_text("left/0b09edd3_nohash_0.wav\n")
    return tmp_path


def test_reads_real_layout_with_lists(speech_commands_tree):
    ds = load_dataset(speech_commands_tree)
    assert ds.engines == ["human"]
    by_path = {it.path: it for it in ds.items}
    assert by_path["yes/0a7c2a8d_nohash_0.wav"].split == "validation"
    assert by_path["left/0b09edd3_nohash_0.wav"].split == "testing"
    assert by_path["left/0a7c2a8d_nohash_0.wav"].split == "training"
    assert by_path["marvin/1a5b9ca4_nohash_0.wav"].label == LABELS.index("_unknown_")
    assert by_path["yes/1a5b9ca4_nohash_0.wav"].label == LABELS.index("yes")
    x, y = ds.load(ds.select("training"))
    assert x.shape == (len(y), 16000) and x.dtype == np.int16
    assert (y == 0).sum() >= 1  # silence from background noise


def test_without_lists_split_comes_from_hash(speech_commands_tree):
    (speech_commands_tree / "validation_list.txt").unlink()
    (speech_commands_tree / "testing_list.txt").unlink()
    ds = load_dataset(speech_commands_tree)
    for it in ds.items:
        if it.engine == "human":
            assert it.split == which_set(it.path)


def test_which_set_matches_speech_commands_reference():
    # the split depends on the speaker only, and is about 10/10/80
    assert which_set("yes/0a7c2a8d_nohash_0.wav") == which_set("no/0a7c2a8d_nohash_3.wav")
    pcts = [which_set(f"{i:08x}_nohash_0.wav") for i in range(4000)]
    assert 0.08 < pcts.count("validation") / 4000 < 0.12
    assert 0.08 < pcts.count("testing") / 4000 < 0.12


def test_silence_regions_do_not_overlap(speech_commands_tree):
    ds = load_dataset(
        speech_commands_tree, silence_per_split={"training": 20, "validation": 5, "testing": 5}
    )
    n = 16000 * 30
    for it in ds.items:
        if it.label == 0:
            lo, hi = noise_region(n, it.split)
            assert lo <= it.offset and it.offset + 16000 <= hi


def test_missing_path_says_how_to_get_one(tmp_path):
    with pytest.raises(
        DatasetNotFoundError, match="omg data synth.*omg data fetch speech-commands"
    ):
        load_dataset(tmp_path / "nope")


def test_not_a_dataset(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match="not in Speech Commands layout"):
        load_dataset(tmp_path)
