"""Golden clips: the frontend's output must not change by accident."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

from omg_ta.frontend import Frontend, FrontendSettings
from omgkit.kws.audio import read_clip

GOLDEN = REPO / "data" / "golden"


@pytest.mark.parametrize(
    "name,settings", [("mfcc", FrontendSettings()), ("logmel", FrontendSettings.micro_speech())]
)
def test_frontend_reproduces_golden_features(name, settings):
    clips = np.stack([read_clip(GOLDEN / f"{w}.wav") for w in ("yes", "no", "silence")])
    expected = np.load(GOLDEN / f"features_{name}.npy")
    got = Frontend(settings)(clips)
    assert got.shape == expected.shape
    # If this fails after a deliberate frontend change, rerun tools/make_golden.py.
    assert np.max(np.abs(got - expected)) <= 1e-5


def test_golden_clips_are_speech_and_silence():
    yes, no, silence = (read_clip(GOLDEN / f"{w}.wav") for w in ("yes", "no", "silence"))
    assert np.abs(yes).max() > 20000 and np.abs(no).max() > 20000
    assert np.abs(silence).max() < 500
    assert not np.array_equal(yes, no)
