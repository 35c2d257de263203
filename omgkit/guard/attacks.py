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

from ..kws.release import Release
from ..tee import set_clock_offset
from ..tee.bundle import sign_bundle
from .host import LICENSE, PACKAGE, SEALED, GuardedModel, install_ta
from .local import LocalGuard


class Stage:
    """What every staged attack works with: the parties, the packages, a prepared device."""

    def __init__(self, lg: LocalGuard, release: Release):
        self.lg, self.vendor, self.release = lg, lg.vendor, release
        self.model_id = release.model_id
        self.packages = {ver: self.vendor.seal_model(release, model_version=ver) for ver in (1, 2)}

    def prepared(self, name: str, version: int = 1, policy: Policy | None = None) -> GuardedModel:
        """Device ``name`` after preparation: license and sealed key stored, package installed."""
        g = self.lg.host(name)
        token = g.attest(self.vendor.new_nonce())
        g.provision(self.vendor.issue_license(token, model_id=self.model_id, model_version=version,
                                              policy=policy))  # fmt: skip
        g.install_package(self.packages[version])
        return g


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack: what the attacker does, how it is staged, and the error that must stop it."""

    name: str
    what: str
    """What the attacker does."""
    expected: type[OmgError]
    why: str
    """Why it fails."""
    stage: Callable[[Stage], None]
    """Stages the attack on its own device; returns only if the attack went through."""


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


# -- the stagings, one per attack ------------------------------------------------


def _unsigned(st: Stage) -> None:
    g = st.prepared("atk-ta-unsigned")
    g.close()
    patch_ta(g.device_dir)
    with st.lg.host("atk-ta-unsigned") as g2:
        g2.initialize()


def _resigned(st: Stage) -> None:
    g = st.prepared("atk-ta-resigned")
    g.close()
    patch_ta(g.device_dir, st.lg.ta_key)
    with st.lg.host("atk-ta-resigned") as g2:
        g2.initialize()


def _license_for_patched(st: Stage) -> None:
    d = st.lg.device("atk-ta-license")
    patch_ta(d, st.lg.ta_key)
    with st.lg.host("atk-ta-license") as g:
        st.vendor.issue_license(
            g.attest(st.vendor.new_nonce()), model_id=st.model_id, model_version=1
        )


def _other_device(st: Stage) -> None:
    g = st.prepared("atk-dev-a")
    g.close()
    with st.lg.host("atk-dev-b") as other:
        shutil.copytree(g.storage, other.storage, dirs_exist_ok=True)
        other.initialize()


def _replay(st: Stage) -> None:
    g = st.prepared("atk-replay", 1)
    old = {n: (g.storage / n).read_bytes() for n in (SEALED, LICENSE, PACKAGE)}
    g.close()
    with st.prepared("atk-replay", 2) as g2:
        g2.initialize()  # the device has now run v2
    for n, data in old.items():
        (g.storage / n).write_bytes(data)
    with st.lg.host("atk-replay") as g3:
        g3.initialize()


def _tampered_package(st: Stage) -> None:
    with st.prepared("atk-package") as g:
        g.install_package(flip(st.packages[1], len(st.packages[1]) - 40))
        g.initialize()


def _tampered_license(st: Stage) -> None:
    with st.prepared("atk-license") as g:
        p = g.storage / LICENSE
        p.write_bytes(flip(p.read_bytes(), len(p.read_bytes()) - 100))
        g.initialize()


def _expired(st: Stage) -> None:
    g = st.prepared("atk-expired", policy=Policy(not_after=int(time.time()) + 600))
    g.close()
    set_clock_offset(g.device_dir, 3600)
    try:
        with st.lg.host("atk-expired") as g2:
            g2.initialize()
    finally:
        set_clock_offset(g.device_dir, 0)


def _replayed_token(st: Stage) -> None:
    with st.lg.host("atk-token") as g:
        token = g.attest(st.vendor.new_nonce())
        st.vendor.issue_license(token, model_id=st.model_id, model_version=1)
        st.vendor.issue_license(token, model_id=st.model_id, model_version=1)


def _budget(st: Stage) -> None:
    pol = Policy(not_after=int(time.time()) + 600, budget=3)
    with st.prepared("atk-budget", policy=pol) as g:
        g.initialize()
        clips = np.zeros((4, C.CLIP_SAMPLES), np.int16)
        g.classify_batch(clips[:2])
        g.classify_batch(clips[2:])  # 2 used, 1 left: 2 more is one too many


ATTACKS = [
    Attack("modified TA, unsigned", "patch one line of the installed TA",
           TALoadError, "the TEE loads only TA bundles signed by a key it trusts", _unsigned),
    Attack("modified TA, re-signed", "patch the TA and sign it with a trusted (say leaked) key",
           UnsealError, "the sealing key derives from the TA's measurement: another TA gets another key",
           _resigned),
    Attack("modified TA asks for a license", "attest with the patched TA and ask the vendor",
           MeasurementNotApprovedError, "the token carries the measurement; the vendor licenses approved ones only",
           _license_for_patched),
    Attack("files copied to another device", "copy the sealed key, license and package to another board",
           DeviceMismatchError, "the license names one device id; the sealing key is that device's too",
           _other_device),
    Attack("replayed old model", "after v2 ran, restore the v1 package, license and sealed key",
           RollbackError, "the TEE's monotonic counter remembers the highest version run", _replay),
    Attack("tampered package", "flip one byte of the encrypted model",
           PackageIntegrityError, "every segment is AES-GCM authenticated and the header is signed",
           _tampered_package),
    Attack("tampered license", "flip one byte of the license (say, its expiry)",
           LicenseInvalidError, "the license is signed by the vendor (COSE_Sign1, Ed25519)", _tampered_license),
    Attack("expired license", "run after the license's expiry",
           LicenseExpiredError, "the TA checks expiry against the TEE's clock, not the normal world's", _expired),
    Attack("replayed attestation", "send the vendor a token it already answered",
           NonceError, "each token carries a single-use vendor nonce", _replayed_token),
    Attack("past the usage budget", "classify more clips than the license allows",
           BudgetExhaustedError, "the TA counts inferences in secure storage", _budget),
]  # fmt: skip


def stage(lg: LocalGuard, release: Release, *, say: Callable[[Outcome], None] = lambda o: None,
          attacks: list[Attack] | None = None) -> list[Outcome]:  # fmt: skip
    """Stage every attack (of :data:`ATTACKS`, or ``attacks``), each on its own emulated device."""
    return run_each(attacks or ATTACKS, Stage(lg, release), Outcome, say)


def run_each(attacks: list, st, outcome: Callable, say: Callable) -> list:
    """Stage each attack on ``st``; ``outcome(attack, error name or None, message, seconds)`` each."""
    out = []
    for attack in attacks:
        t = time.perf_counter()
        try:
            attack.stage(st)
            err, msg = None, "the attack went through"
        except OmgError as e:
            err, msg = type(e).__name__, str(e)
        o = outcome(attack, err, msg, time.perf_counter() - t)
        out.append(o)
        say(o)
    return out


def stage_run(run_dir, *, say: Callable[[Outcome], None] = lambda o: None) -> list[Outcome]:
    """:func:`stage` against a converted run's release, every party in a temporary directory."""
    import tempfile

    release = Release.from_run(run_dir)
    with tempfile.TemporaryDirectory(prefix="omg-attacks-") as tmp, LocalGuard.create(tmp) as lg:
        return stage(lg, release, say=say)
