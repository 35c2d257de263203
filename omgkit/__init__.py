"""omgkit: the Offline Model Guard workbench.

The public API, importable from here. Names load lazily (PEP 562), so
``import omgkit`` stays light and TensorFlow loads only when training or
conversion is called. Functions named like their module (``train``,
``fetch``) are not here: use ``omgkit.kws.train.train``, ``omgkit.kws.fetch.fetch``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    # data
    "synthesize": "omgkit.kws.corpus", "PROFILES": "omgkit.kws.corpus", "available_engines": "omgkit.kws.corpus",
    "load_dataset": "omgkit.kws.dataset", "read_clip": "omgkit.kws.audio",
    "LABELS": "omgkit.kws.labels", "KEYWORDS": "omgkit.kws.labels",
    # ML
    "Frontend": "omg_ta.frontend", "FrontendSettings": "omg_ta.frontend",
    "build_model": "omgkit.kws.models", "MODELS": "omgkit.kws.models",
    "TrainSettings": "omgkit.kws.train", "AugmentSettings": "omgkit.kws.augment",
    "convert_run": "omgkit.kws.convert", "to_tflite": "omgkit.kws.convert",
    "evaluate_run": "omgkit.kws.evaluate", "load_runtime": "omg_ta.runtime",
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
