"""Featurising whole datasets with the TA's frontend (``omg_ta.frontend``)."""

from __future__ import annotations

import numpy as np

from omg_ta.frontend import WHEN_ABSENT, Frontend, FrontendSettings

__all__ = ["WHEN_ABSENT", "Frontend", "FrontendSettings", "featurize"]


def featurize(frontend: Frontend, audio: np.ndarray, batch: int = 512) -> np.ndarray:
    """Feature maps ``(N, frames, features, 1)`` of int16 or float audio ``(N, samples)``."""
    out = np.empty((audio.shape[0], *frontend.shape, 1), np.float32)
    for i in range(0, audio.shape[0], batch):
        out[i : i + batch, ..., 0] = frontend(audio[i : i + batch])
    return out
