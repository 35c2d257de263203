#!/usr/bin/env python3
"""Regenerate data/golden/: three clips and their frontend features.

The clips (yes, no, silence) come from espeak-ng through omgkit's engine, so
they need nothing installed beyond the workbench. The .npy files are the
frontend's output for them: a regression vector, so a change to the frontend
shows up as a failing test (tests/test_golden.py) and must be deliberate.
Run: .venv/bin/python tools/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omg_ta.frontend import Frontend, FrontendSettings
from omgkit.kws.audio import fit_clip, read_clip, write_wav
from omgkit.kws.corpus.tts import ENGINES, Speaker

OUT = Path(__file__).resolve().parents[1] / "data" / "golden"


def main() -> None:
    spk = Speaker("espeak", "en-us", "m3", 50, 150)
    for word in ("yes", "no"):
        audio = ENGINES["espeak"].render(spk, [word])[0]
        clip = fit_clip(audio)
        write_wav(OUT / f"{word}.wav", clip * (0.7 / np.max(np.abs(clip))))
    rng = np.random.default_rng(0)
    write_wav(OUT / "silence.wav", rng.standard_normal(16000).astype(np.float32) * 0.003)
    clips = np.stack([read_clip(OUT / f"{w}.wav") for w in ("yes", "no", "silence")])
    for name, s in (("mfcc", FrontendSettings()), ("logmel", FrontendSettings.micro_speech())):
        np.save(OUT / f"features_{name}.npy", Frontend(s)(clips))


if __name__ == "__main__":
    main()
