"""The attacks of the threat model, staged against a local emulated TEE.

Each attack is what an attacker who owns the normal world (root on the
board, the files, the network) can do; each must fail, and with its own
error, so that a user, a log or a class can tell them apart. The same
primitives back ``omg guard attacks``, notebook 06 and the walkthrough's
attack toggles (``omgkit.widgets``); the tests assert the outcomes.

Staged here, on an emulated TEE: what the TEE emulation enforces (the
checks run in the TA and the TEE daemon, exactly as written). What only
hardware enforces — that the normal world cannot read the TA's memory or
the device's secret key — is not staged: the emulated TEE is a process of
the same user (docs/threat-model.md).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from omg_ta import commands as C
from omg_ta.errors import (
    BudgetExhaustedError,
    DeviceMismatchError,
    LicenseExpiredError,
    LicenseInvalidError,
    MeasurementNotApprovedError,
    NonceError,
    OmgError,
    PackageIntegrityError,
    RollbackError,
    TALoadError,
    UnsealError,
)
from omg_ta.license import Policy

from ..labels import LABELS
from ..tee import set_clock_offset
from ..tee.bundle import sign_bundle
from .host import LICENSE, PACKAGE, SEALED, GuardedModel, install_ta
from .local import LocalGuard

MODEL_ID = "kws"


@dataclasses.dataclass(frozen=True)
class Attack:
    name: str
    what: str
    """What the attacker does."""
    expected: type[OmgError]
    why: str
    """Why it fails."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    attack: Attack
    error: str | None
    """Name of the error raised, or None if the attack went through."""
    message: str
    seconds: float

    @property
    def blocked(self) -> bool:
        return self.error == self.attack.expected.__name__


ATTACKS = [
    Attack("modified TA, unsigned", "patch one line of the installed TA",
           TALoadError, "the TEE loads only TA bundles signed by a key it trusts"),
    Attack("modified TA, re-signed", "patch the TA and sign it with a trusted (say leaked) key",
           UnsealError, "the sealing key derives from the TA's measurement: another TA gets another key"),
    Attack("modified TA asks for a license", "attest with the patched TA and ask the vendor",
           MeasurementNotApprovedError, "the token carries the measurement; the vendor licenses approved ones only"),
    Attack("files copied to another device", "copy the sealed key, license and package to another board",
           DeviceMismatchError, "the license names one device id; the sealing key is that device's too"),
    Attack("replayed old model", "after v2 ran, restore the v1 package, license and sealed key",
           RollbackError, "the TEE's monotonic counter remembers the highest version run"),
    Attack("tampered package", "flip one byte of the encrypted model",
           PackageIntegrityError, "every segment is AES-GCM authenticated and the header is signed"),
    Attack("tampered license", "flip one byte of the license (say, its expiry)",
           LicenseInvalidError, "the license is signed by the vendor (COSE_Sign1, Ed25519)"),
    Attack("expired license", "run after the license's expiry",
           LicenseExpiredError, "the TA checks expiry against the TEE's clock, not the normal world's"),
    Attack("replayed attestation", "send the vendor a token it already answered",
           NonceError, "each token carries a single-use vendor nonce"),
    Attack("past the usage budget", "classify more clips than the license allows",
           BudgetExhaustedError, "the TA counts inferences in secure storage"),
]  # fmt: skip


def flip(blob: bytes, index: int) -> bytes:
    b = bytearray(blob)
    b[index] ^= 0x01
    return bytes(b)


def ta_dir(device_dir: Path) -> Path:
    return Path(device_dir) / "ta" / str(C.TA_UUID)


def patch_ta(device_dir: Path, resign_with=None) -> None:
    """Modify the installed TA; re-sign it with ``resign_with`` if given."""
    entry = ta_dir(device_dir) / "entry.py"
    entry.write_bytes(entry.read_bytes() + b"\nCHUNK = 1  # patched by the attacker\n")
    if resign_with is not None:
        sign_bundle(ta_dir(device_dir), resign_with)


def restore_ta(lg: LocalGuard, device_dir: Path) -> None:
    install_ta(device_dir, lg.root / "bundle")


def stage(lg: LocalGuard, model: bytes, frontend: dict, *,
          say: Callable[[Outcome], None] = lambda o: None) -> list[Outcome]:  # fmt: skip
    """Stage every attack of :data:`ATTACKS`, each on its own emulated device."""
    v = lg.vendor
    labels = list(LABELS)
    pkgs = {
        ver: v.seal_model(model, model_id=MODEL_ID, model_version=ver, labels=labels, frontend=frontend)
        for ver in (1, 2)
    }  # fmt: skip

    def prepared(name: str, version: int = 1, policy: Policy | None = None) -> GuardedModel:
        g = lg.host(name)
        token = g.attest(v.new_nonce())
        g.provision(v.issue_license(token, model_id=MODEL_ID, model_version=version, policy=policy))
        g.install_package(pkgs[version])
        return g

    def unsigned():
        g = prepared("atk-ta-unsigned")
        g.close()
        patch_ta(g.device_dir)
        with lg.host("atk-ta-unsigned") as g2:
            g2.initialize()

    def resigned():
        g = prepared("atk-ta-resigned")
        g.close()
        patch_ta(g.device_dir, lg.ta_key)
        with lg.host("atk-ta-resigned") as g2:
            g2.initialize()

    def license_for_patched():
        d = lg.device("atk-ta-license")
        patch_ta(d, lg.ta_key)
        with lg.host("atk-ta-license") as g:
            v.issue_license(g.attest(v.new_nonce()), model_id=MODEL_ID, model_version=1)

    def other_device():
        g = prepared("atk-dev-a")
        g.close()
        with lg.host("atk-dev-b") as other:
            shutil.copytree(g.storage, other.storage, dirs_exist_ok=True)
            other.initialize()

    def replay():
        g = prepared("atk-replay", 1)
        old = {n: (g.storage / n).read_bytes() for n in (SEALED, LICENSE, PACKAGE)}
        g.close()
        with prepared("atk-replay", 2) as g2:
            g2.initialize()  # the device has now run v2
        for n, data in old.items():
            (g.storage / n).write_bytes(data)
        with lg.host("atk-replay") as g3:
            g3.initialize()

    def tampered_package():
        with prepared("atk-package") as g:
            g.install_package(flip(pkgs[1], len(pkgs[1]) - 40))
            g.initialize()

    def tampered_license():
        with prepared("atk-license") as g:
            p = g.storage / LICENSE
            p.write_bytes(flip(p.read_bytes(), len(p.read_bytes()) - 100))
            g.initialize()

    def expired():
        g = prepared("atk-expired", policy=Policy(not_after=int(time.time()) + 600))
        g.close()
        set_clock_offset(g.device_dir, 3600)
        try:
            with lg.host("atk-expired") as g2:
                g2.initialize()
        finally:
            set_clock_offset(g.device_dir, 0)

    def replayed_token():
        with lg.host("atk-token") as g:
            token = g.attest(v.new_nonce())
            v.issue_license(token, model_id=MODEL_ID, model_version=1)
            v.issue_license(token, model_id=MODEL_ID, model_version=1)

    def budget():
        pol = Policy(not_after=int(time.time()) + 600, budget=3)
        with prepared("atk-budget", policy=pol) as g:
            g.initialize()
            clips = np.zeros((4, 16000), np.int16)
            g.classify_batch(clips[:2])
            g.classify_batch(clips[2:])  # 2 used, 1 left: 2 more is one too many

    staged = [unsigned, resigned, license_for_patched, other_device, replay, tampered_package,
              tampered_license, expired, replayed_token, budget]  # fmt: skip
    out = []
    for attack, fn in zip(ATTACKS, staged, strict=True):
        t = time.perf_counter()
        try:
            fn()
            err, msg = None, "the attack went through"
        except OmgError as e:
            err, msg = type(e).__name__, str(e)
        o = Outcome(attack, err, msg, time.perf_counter() - t)
        out.append(o)
        say(o)
    return out


def stage_run(run_dir, *, say: Callable[[Outcome], None] = lambda o: None) -> list[Outcome]:
    """:func:`stage` against a converted run's model, every party in a temporary directory."""
    import tempfile

    from ..convert import deployable

    model, frontend = deployable(run_dir)
    with tempfile.TemporaryDirectory(prefix="omg-attacks-") as tmp, LocalGuard.create(tmp) as lg:
        return stage(lg, model, frontend.to_dict(), say=say)
