"""The model guard: packages, attestation tokens, licenses, the vendor, the host app.

Recipe layer (few decisions): :class:`Vendor` (seal a model, approve a TA,
issue licenses), :class:`GuardedModel` (the three phases on a device).
Low-level layer, clearly marked: ``omg_ta.package``, ``omg_ta.license``,
``omgkit.tee.token`` and ``omg_ta.cose``.

Names load on first use: the board agent imports ``omgkit.guard.host`` and
must not pull in the vendor's HTTP server with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "GuardedModel": ".host",
    "install_ta": ".host",
    "Policy": "omg_ta.license",
    "Vendor": ".vendor",
    "VendorClient": ".vendor",
    "VendorServer": ".vendor",
}

__all__ = ["GuardedModel", "Policy", "Vendor", "VendorClient", "VendorServer", "install_ta"]

if TYPE_CHECKING:
    from omg_ta.license import Policy

    from .host import GuardedModel, install_ta
    from .vendor import Vendor, VendorClient, VendorServer


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value
