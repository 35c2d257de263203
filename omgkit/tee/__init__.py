"""The TEE: the emulated secure world (TEE OS), OP-TEE's client, and the normal world's API.

Names load on first use (PEP 562): a board's agent imports the client
side only, and an OP-TEE board has neither the emulated TEE nor the
packages it needs (``cryptography``).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

_API = {
    "SharedMemory": ".client",
    "TeeContext": ".client",
    "TeeError": ".client",
    "TeeUnavailableError": ".client",
    "mic_feed": ".client",
    "set_clock_offset": ".client",
    "TeeDaemon": ".daemon",
    "Device": ".device",
    "Manufacturer": ".pki",
    "OpteeContext": ".optee",
}

__all__ = ["Device", "Manufacturer", "OpteeContext", "SharedMemory", "TeeContext", "TeeDaemon",
           "TeeError", "TeeUnavailableError", "mic_feed", "open_context", "set_clock_offset"]  # fmt: skip

if TYPE_CHECKING:
    from .client import (
        SharedMemory,
        TeeContext,
        TeeError,
        TeeUnavailableError,
        mic_feed,
        set_clock_offset,
    )
    from .daemon import TeeDaemon
    from .device import Device
    from .optee import OpteeContext
    from .pki import Manufacturer


def __getattr__(name: str) -> Any:
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


def open_context(device_dir: str | os.PathLike, **kw: Any):
    """The TEE Client API for a device: the emulated TEE's socket if it has one, else OP-TEE.

    An emulated device is a directory with its TEE daemon's state; on a board
    with OP-TEE, the device is the machine's own ``/dev/tee0``.
    """
    from pathlib import Path

    from .client import TeeContext
    from .wire import TEE_SOCKET

    d = Path(device_dir)
    if (d / TEE_SOCKET).exists() or (d / "secure").is_dir():
        return TeeContext(d, **kw)
    from . import optee

    if optee.available():
        return optee.OpteeContext()
    return TeeContext(d, **kw)  # says clearly that no TEE answers
