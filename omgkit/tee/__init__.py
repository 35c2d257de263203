"""The emulated secure world (TEE OS) and the normal world's client API."""

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
from .pki import Manufacturer

__all__ = ["Device", "Manufacturer", "SharedMemory", "TeeContext", "TeeDaemon", "TeeError",
           "TeeUnavailableError", "mic_feed", "set_clock_offset"]  # fmt: skip
