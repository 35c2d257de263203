"""omgkit: the Offline Model Guard workbench.

The public API, importable from here. Names load lazily (PEP 562), so
``import omgkit`` stays light and TensorFlow loads only when training or
conversion is called. Functions named like their module (``train``,
``fetch``) are not here: use ``omgkit.train.train``, ``omgkit.fetch.fetch``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    # data
    "synthesize": "omgkit.corpus", "PROFILES": "omgkit.corpus", "available_engines": "omgkit.corpus",
    "load_dataset": "omgkit.dataset", "read_clip": "omgkit.audio",
    "LABELS": "omgkit.labels", "KEYWORDS": "omgkit.labels",
    # ML
    "Frontend": "omg_ta.frontend", "FrontendSettings": "omg_ta.frontend",
    "build_model": "omgkit.models", "MODELS": "omgkit.models",
    "TrainSettings": "omgkit.train", "AugmentSettings": "omgkit.augment",
    "convert_run": "omgkit.convert", "to_tflite": "omgkit.convert",
    "evaluate_run": "omgkit.evaluate", "load_runtime": "omg_ta.runtime",
    # guard and TEE
    "Vendor": "omgkit.guard", "VendorServer": "omgkit.guard", "VendorClient": "omgkit.guard",
    "GuardedModel": "omgkit.guard", "Policy": "omgkit.guard", "install_ta": "omgkit.guard",
    "run_demo": "omgkit.guard.demo", "build_bundle": "omgkit.tee.bundle",
    "Device": "omgkit.tee", "Manufacturer": "omgkit.tee", "TeeDaemon": "omgkit.tee",
    "TeeContext": "omgkit.tee", "mic_feed": "omgkit.tee",
    # errors
    "OmgError": "omgkit.errors", "SecurityError": "omg_ta.errors",
}  # fmt: skip

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'omgkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
