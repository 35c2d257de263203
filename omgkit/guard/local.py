"""Every party of OMG on one machine: the recipe the demo, the benchmark and the tests share.

``LocalGuard.create(root)`` makes an emulated manufacturer, a TA signing
key, a vendor that trusts the manufacturer, and the TA bundle (signed,
its measurement approved by the vendor). ``device(name)`` makes an emulated
device with the TA installed and starts its TEE daemon; ``host(name)``
is the normal-world app on it. ``close()`` stops the daemons.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..tee import Device, Manufacturer, TeeDaemon
from ..tee.bundle import build_bundle
from .host import GuardedModel, install_ta
from .vendor import Vendor


class LocalGuard:
    def __init__(self, root: Path, manufacturer: Manufacturer, ta_key: Ed25519PrivateKey, vendor: Vendor,
                 measurement: bytes):  # fmt: skip
        self.root, self.manufacturer, self.ta_key = root, manufacturer, ta_key
        self.vendor, self.measurement = vendor, measurement
        self.daemons: dict[str, TeeDaemon] = {}

    @classmethod
    def create(cls, root: str | os.PathLike) -> LocalGuard:
        r = Path(root)
        mfr = Manufacturer.create(r / "manufacturer")
        ta_key = Ed25519PrivateKey.generate()
        vendor = Vendor.create(r / "vendor")
        vendor.trust_manufacturer(mfr.root_der)
        m = build_bundle(r / "bundle", vendor.public_raw, ta_key)
        vendor.approve(m)
        return cls(r, mfr, ta_key, vendor, m)

    def device(self, name: str = "device", *, runtimes: tuple[str, ...] | None = None) -> Path:
        """An emulated device with the TA installed and its TEE daemon running.

        ``runtimes``: the inference runtimes of its TEE image, loaded at start
        (default: every one installed)."""
        path = self.root / name
        if name not in self.daemons:
            Device.create(path, self.manufacturer, [self.ta_key.public_key()])
            install_ta(path, self.root / "bundle")
            self.daemons[name] = TeeDaemon(path, preload=runtimes).start()
        return path

    def host(self, name: str = "device", storage: str | None = None, **kw) -> GuardedModel:
        """The normal-world app on device ``name`` (storage ``<name>-normal`` unless given)."""
        return GuardedModel(self.device(name), self.root / (storage or f"{name}-normal"), **kw)

    def close(self) -> None:
        for d in self.daemons.values():
            d.stop()

    def __enter__(self) -> LocalGuard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
