"""The enclave walkthrough's logic: five steps over the three phases, on a local TEE or a board.

:class:`Walkthrough` has no widgets (``omgkit.widgets`` puts them on it):
five steps (load the TA, attest, provision, initialize, classify) grouped
by the design's three phases (``PHASES``), what each needs before it can
run (:meth:`Walkthrough.can_run` says why not), the attack toggles, the
panel's state (:meth:`Walkthrough.panel`) and the facts the two-worlds
picture is drawn from (:meth:`Walkthrough.facts`, ``omgkit.picture``).

Where the steps run is a *backend*:

- :class:`LocalBackend` (``Walkthrough(release)``): a local emulated TEE
  (``omgkit.guard.local.LocalGuard``) with its own vendor, in a work
  directory; nothing to set up.
- :class:`BoardBackend` (``Walkthrough(release, board=URL)``): a board —
  ``emu://NAME`` (emulated, or OP-TEE in QEMU) or ``ssh://user@host`` —
  driven over SSH exactly as ``omg deploy``/``omg run`` drive it: the steps
  go to the board's agent over one exec channel
  (``omgkit.board.remote.RemoteEnclave``), the package goes up as a
  release, and the attacks are staged as the board's normal-world root
  would stage them (files replaced over SFTP). The vendor is the
  workbench's (``omgkit.board.workflow.default_vendor``).

The story the steps tell: the device already ran an older version of the
model (its TEE counter is at that version; the attacker kept those files).
The vendor now ships the next version; you provision and run it. Toggles
stage the attacks when their step runs:

- *modify the TA* — at "load TA": the installed TA is patched and re-signed
  with a trusted key (a leaked development key, say). It loads, but its
  measurement changed: the vendor will not license it, and a key sealed to
  the real TA does not unseal for it. On a board the attacker's files are
  put back once the TEE has loaded them, so the release stays as deployed
  whatever is staged next.
- *swap the device* — at "initialize": the normal world's files are copied
  to another device and initialized there.
- *replay an old model* — at "initialize": the old version's files are put
  back. Refused once the device has run the new version (its counter
  moved); before that, the old version is still the newest it has seen and
  runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from omg_ta import commands as C
from omg_ta import license as lic
from omg_ta.errors import OmgError

from .errors import ArtifactError, BoardError, ConfigError, UnknownNameError
from .guard import attacks
from .guard.host import LICENSE, PACKAGE, SEALED, GuardedModel
from .kws.release import Release
from .show import token_claims
from .tee.bundle import measure, read_bundle

STEPS = ("load_ta", "attest", "provision", "initialize", "classify")
STEP_TITLES = {"load_ta": "1 · load TA", "attest": "2 · attest", "provision": "3 · provision",
               "initialize": "4 · initialize", "classify": "5 · classify"}  # fmt: skip
PHASES = {
    "preparation": ("load_ta", "attest", "provision"),
    "initialization": ("initialize",),
    "operation": ("classify",),
}
"""The design's three phases and their steps (../shared/ARCHITECTURE.md §3)."""
PHASE_TITLES = {"preparation": "Preparation (online, once)",
                "initialization": "Initialization (every start, offline)",
                "operation": "Operation (label out, nothing else)"}  # fmt: skip
ATTACK_TOGGLES = {
    "modify_ta": "modify the TA (re-signed with a leaked key)",
    "swap_device": "swap the device (copy the files to another board)",
    "replay_old_model": "replay the old model (the version it ran before)",
}
MIC_CLIP = "microphone"
"""The clip name a recording gets (``Walkthrough.record``)."""


def phase_of(step: str) -> str:
    return next(p for p, steps in PHASES.items() if step in steps)


class StepOrderError(OmgError):
    """A step was asked for before what it needs was done."""


@dataclasses.dataclass(frozen=True)
class StepResult:
    step: str
    ok: bool
    summary: str
    error: str | None = None
    seconds: float = 0.0
    attacks: tuple[str, ...] = ()
    """The attacks staged when it ran."""
    setup: bool = False
    """It failed for the workbench's set-up (a missing second board, an unreachable one), not
    because a check of the protocol refused it."""

    def __str__(self) -> str:
        mark = "✔" if self.ok else f"✘ {self.error}"
        return f"{mark} {STEP_TITLES[self.step]}: {self.summary} ({self.seconds * 1000:.1f} ms)"


# -- where the steps run ------------------------------------------------------------------


class LocalBackend:
    """A local emulated TEE with its own vendor, in ``root`` (the default backend)."""

    def __init__(self, release: Release, root: Path):
        from .guard.local import LocalGuard
        from .tee import mic_feed

        self._mic_feed = mic_feed
        self.where = "a local emulated TEE (on this machine)"
        self.root = root
        self.lg = LocalGuard.create(root)
        try:
            self._setup(release)
        except BaseException:
            self.lg.close()  # its TEE daemons
            raise

    def _setup(self, release: Release) -> None:
        root = self.root
        self.vendor = self.lg.vendor
        self.release = release
        self.old, self.current = 1, 2
        self.packages = {v: self.vendor.seal_model(release, model_version=v) for v in (1, 2)}
        self.device = self.lg.device("device")
        self.other_device = self.lg.device("other-device")
        self.storage = root / "device-normal"
        self.mic = True  # the emulated TEE's secure microphone channel
        self.host: GuardedModel | None = None
        self.old_files = self._history()

    def _history(self) -> dict[str, bytes]:
        """The device ran the old version before: provisioned, initialized (counter moved), files kept."""
        v = self.vendor
        with GuardedModel(self.device, self.root / "old-normal") as g:
            g.provision(v.issue_license(g.attest(v.new_nonce()), model_id=self.release.model_id,
                                        model_version=self.old))  # fmt: skip
            g.install_package(self.packages[self.old])
            g.initialize()
            return {n: (g.storage / n).read_bytes() for n in (SEALED, LICENSE, PACKAGE)}

    def load_ta(self, modified: bool) -> None:
        self.close_session()
        attacks.restore_ta(self.lg, self.device)
        if modified:
            attacks.patch_ta(self.device, self.lg.ta_key)
        self.host = GuardedModel(self.device, self.storage)
        self.host._session()  # the TEE verifies the bundle's signature, measures and loads it

    def measurement(self) -> bytes | None:
        return measure(read_bundle(attacks.ta_dir(self.device))) if self.host else None

    def attest(self, nonce: bytes) -> bytes:
        return self.host.attest(nonce)

    def provision(self, license_blob: bytes) -> None:
        self.host.provision(license_blob)
        self.host.install_package(self.packages[self.current])

    def provisioned(self) -> bool:
        return all((self.storage / n).is_file() for n in (SEALED, LICENSE, PACKAGE))

    def sealed_size(self) -> int | None:
        p = self.storage / SEALED
        return p.stat().st_size if p.is_file() else None

    def initialize(self) -> dict:
        return self.host.initialize()

    def initialize_attacked(self, *, swap: bool, replay: bool) -> dict:
        device = self.other_device if swap else self.device
        where = self.root / ("other-device-normal" if swap else "replayed-normal")
        where.mkdir(exist_ok=True)
        for n in (SEALED, LICENSE, PACKAGE):
            data = self.old_files[n] if replay else (self.storage / n).read_bytes()
            (where / n).write_bytes(data)
        with GuardedModel(device, where) as g:
            return g.initialize()

    def classify(self, clip: np.ndarray) -> tuple[int, float]:
        self._mic_feed(self.device, clip[None, :])
        r = self.host.classify_mic(1)
        return r.labels[0], r.seconds

    def close_session(self) -> None:
        if self.host is not None:
            self.host.close()
            self.host = None

    def close(self) -> None:
        self.close_session()
        self.lg.close()


class BoardBackend:
    """A board over SSH: ``emu://NAME`` or ``ssh://user@host[:port]/root`` (see the module docstring).

    Setting up deploys ``release`` as the board's *old* version and runs it
    once (the next version number the vendor has not used for this model,
    so a board's counter is never ahead of it), keeping those files for the
    replay; the walkthrough's own version is the one after. The walkthrough
    leaves the board deployed with it, as ``omg deploy`` would.

    ``other``: a second board for *swap the device*; for an emulated board
    ``emu://NAME`` it defaults to ``emu://NAME-other``, made and started on
    first use.
    """

    def __init__(self, release: Release, url: str, *, other: str | None = None, workdir: Path):
        from .board.connection import Board
        from .board.workflow import board_release, default_vendor, deploy_run, ta_bundle

        self.url, self.other, self.workdir = url, other, workdir
        self.vendor = default_vendor()
        if url.startswith("emu://"):  # a board of this machine: started if it is down
            from .board import lifecycle

            if not lifecycle.status(url[6:])["up"]:
                lifecycle.up(url[6:])
        self.board = Board(url).open()
        try:
            self.release, self.optee = board_release(self.board, release)  # the board's runtime
            self.where = f"the board {url} ({'OP-TEE in QEMU' if self.optee else 'emulated TEE'})"
            self.old = self.vendor.next_version(release.model_id)
            self.current = self.old + 1
            # the device's history: the old version deployed and run once (its counter moves)
            deploy_run(url, release, model_version=self.old, vendor=self.vendor)
            self.bundle = ta_bundle(self.vendor, optee=self.optee)
            self.packages = {
                self.current: self.vendor.seal_model(self.release, model_version=self.current)
            }
            self.old_files = {n: self._read(f"normal/{n}") for n in (SEALED, LICENSE, PACKAGE)}
        except BaseException:
            self.board.close()
            raise
        self.enclave = None
        self.mic: bool | None = None
        """Whether the board's TEE has a secure microphone (known once the TA is loaded)."""
        self._provisioned = False
        self._other_ready = False

    # files on the board, as its root writes them
    def _read(self, rel: str, board=None) -> bytes:
        from .board.attacks import read_file

        b = board or self.board
        with _sftp_errors(b, rel):
            return read_file(b, rel)

    def _replace(self, rel: str, data: bytes, board=None) -> None:
        """As the board's root writes a file (``board.attacks.replace_file``)."""
        from .board.attacks import replace_file

        b = board or self.board
        with _sftp_errors(b, rel):
            replace_file(b, rel, data)

    def _saved(self, rels: list[str], board=None) -> dict[str, bytes | None]:
        """What ``_restore`` puts back: each file's bytes, or None for one of the release's links."""
        import stat as st

        b = board or self.board
        out: dict[str, bytes | None] = {}
        for rel in rels:
            with _sftp_errors(b, rel):
                link = st.S_ISLNK(b.sftp.lstat(b.sftp_path(rel)).st_mode)
            out[rel] = None if link else self._read(rel, b)
        return out

    def _restore(self, saved: dict[str, bytes | None], board=None) -> None:
        from .board.deployment import _agent

        b = board or self.board
        for rel, data in saved.items():
            if data is not None:
                self._replace(rel, data, b)
        if None in saved.values():  # the board's agent links the current release again
            current = _agent(b, "state")["current"]
            r = _agent(b, f"commit {current}")
            if not r.get("ok", True):
                raise BoardError(f"{b.url}: the release could not be linked again after the attack: "
                                 f"{r.get('message', r)}; `omg deploy` repairs it")  # fmt: skip

    # -- the TA ------------------------------------------------------------------------
    def _ta_files(self, modified: bool) -> dict[str, bytes]:
        """The TA's release files (``deploy/current/ta/…``): the vendor's, or the attacker's."""
        from .tee.bundle import BUNDLE_SIG_FILE, sign_bundle

        if self.optee:
            name = f"{C.TA_UUID}.ta"
            if not modified:
                return {name: (self.bundle / name).read_bytes()}
            from .board.attacks import patched_optee_ta

            return {name: patched_optee_ta(self.vendor, self.workdir)}
        if not modified:
            files = read_bundle(self.bundle)
            files[BUNDLE_SIG_FILE] = (self.bundle / BUNDLE_SIG_FILE).read_bytes()
            return files
        from .board import home

        patched = self.workdir / "patched-ta"
        shutil.rmtree(patched, ignore_errors=True)
        shutil.copytree(self.bundle, patched)
        entry = patched / "entry.py"
        entry.write_bytes(entry.read_bytes() + b"\nCHUNK = 1  # patched by the attacker\n")
        sign_bundle(patched, home.ta_signing_key())  # the trusted key, leaked
        return {"entry.py": entry.read_bytes(),
                BUNDLE_SIG_FILE: (patched / BUNDLE_SIG_FILE).read_bytes()}  # fmt: skip

    def load_ta(self, modified: bool) -> None:
        from .board.remote import RemoteEnclave

        self.close_session()
        for name, data in self._ta_files(modified).items():
            rel = f"deploy/current/ta/{name}"
            if self._read(rel) != data:
                self._replace(rel, data)
        try:
            self.enclave = RemoteEnclave(self.board).open()
            if self.mic is None:
                self.mic = bool(self.enclave.call("info").get("mic"))
            # the board's TEE checks the TA's signature, measures it and loads it
            self.enclave.call("load_ta")
        finally:
            if modified:  # loaded (or refused): the vendor's files go back, the release stays whole
                for name, data in self._ta_files(False).items():
                    self._replace(f"deploy/current/ta/{name}", data)

    def measurement(self) -> bytes | None:
        return None  # the normal world learns it from the token (the TEE measured what it loaded)

    def attest(self, nonce: bytes) -> bytes:
        return self.enclave.attest(nonce)

    def provision(self, license_blob: bytes) -> None:
        from .board.deployment import deploy

        self.enclave.provision(license_blob)
        deploy(self.board, self.bundle, self.packages[self.current])
        self._provisioned = True

    def provisioned(self) -> bool:
        return self._provisioned

    def sealed_size(self) -> int | None:
        try:
            return self.board.sftp.stat(self.board.sftp_path(f"normal/{SEALED}")).st_size
        except OSError:
            return None

    def initialize(self) -> dict:
        return self.enclave.initialize()

    def _other_url(self) -> str:
        if self.other:
            return self.other
        from .board import emulator, lifecycle

        if not self.url.startswith("emu://") or lifecycle.kind_of(self.url[6:]) != "emulated":
            raise ConfigError(f"swapping the device needs a second board: "
                              f"Walkthrough(..., board={self.url!r}, other_board=URL)")  # fmt: skip
        name = f"{self.url[6:]}-other"
        if name not in {b["name"] for b in emulator.list_boards()}:
            emulator.create(name)
        emulator.up(name)
        self.other = f"emu://{name}"
        return self.other

    def initialize_attacked(self, *, swap: bool, replay: bool) -> dict:
        from .board.connection import Board
        from .board.remote import RemoteEnclave
        from .board.workflow import deploy_run

        names = (SEALED, LICENSE) if swap else (SEALED, LICENSE, PACKAGE)
        files = self.old_files if replay else {n: self._read(f"normal/{n}") for n in names}
        if swap:
            other = self._other_url()
            if not self._other_ready:  # the other board runs the same TA and model, its own license
                deploy_run(other, self.release, model_version=self.current, vendor=self.vendor)
                self._other_ready = True
            with Board(other) as ob:
                saved = self._saved([f"normal/{n}" for n in names], ob)
                try:
                    for n in names:
                        self._replace(f"normal/{n}", files[n], ob)
                    with RemoteEnclave(ob) as r:
                        return r.initialize()
                finally:
                    self._restore(saved, ob)
        saved = self._saved([f"normal/{n}" for n in names])
        try:
            for n in names:
                self._replace(f"normal/{n}", files[n])
            return self.enclave.initialize()
        finally:
            self._restore(saved)

    def classify(self, clip: np.ndarray) -> tuple[int, float]:
        a = np.asarray(clip, dtype="<i2").reshape(1, C.CLIP_SAMPLES)
        if self.mic:  # the board's secure microphone hears it
            self.enclave.call("mic_play", audio=a.tobytes())
            r = self.enclave.call("classify_mic", n=1)
        else:  # QEMU has no secure microphone: evaluation mode, through shared memory
            r = self.enclave.call("classify_batch", audio=a.tobytes())
        return r["labels"][0], r["seconds"]

    def close_session(self) -> None:
        if self.enclave is not None:
            self.enclave.close()
            self.enclave = None

    def close(self) -> None:
        self.close_session()
        self.board.close()


@contextlib.contextmanager
def _sftp_errors(board, rel: str):
    """SFTP and SSH failures on a board as BoardError (a set-up failure, not a refusal)."""
    import paramiko

    try:
        yield
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise BoardError(f"{board.url}: {rel}: {e or type(e).__name__}") from e


# -- the walkthrough ----------------------------------------------------------------------


class Walkthrough:
    """The stepper's logic (see the module docstring); ``board=URL`` runs it on a board."""

    def __init__(self, release: Release, *, workdir: str | os.PathLike | None = None,
                 clips: dict[str, np.ndarray] | None = None, board: str | None = None,
                 other_board: str | None = None):  # fmt: skip
        self.release = release
        self.root = Path(workdir or tempfile.mkdtemp(prefix="omg-walkthrough-"))
        self.clips = dict(clips or {})
        try:
            self.backend = (
                BoardBackend(release, board, other=other_board, workdir=self.root)
                if board
                else LocalBackend(release, self.root)
            )
        except BaseException:
            if workdir is None:  # ours: nothing left behind
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.vendor = self.backend.vendor
        self.attacks = dict.fromkeys(ATTACK_TOGGLES, False)
        self.loaded = False
        self.loaded_modified = False
        self.token: bytes | None = None  # this session's token, until a license is asked for it
        self.last_token: bytes | None = None  # for the panel
        self.license: bytes | None = None
        self.initialized: dict | None = None
        self.result: dict | None = None
        self.log: list[StepResult] = []
        self.listeners: list = []
        """Called after every step and attack toggle: a UI stays current when code drives it."""

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, **kw) -> Walkthrough:
        return cls(Release.from_run(run_dir), **kw)

    @property
    def where(self) -> str:
        return self.backend.where

    # -- what can run --------------------------------------------------------
    def can_run(self, step: str) -> tuple[bool, str]:
        """Whether ``step`` can run now, and if not, why."""
        if step not in STEPS:
            raise StepOrderError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
        if step == "load_ta":
            return True, "loads (again) the TA into a new session"
        if not self.loaded:
            return False, "load the TA first: every step talks to a TA session"
        if step == "attest":
            return True, "asks the TEE to sign a token for this TA"
        if step == "provision":
            if self.token is None:
                return False, ("attest first: the vendor wraps the model key to the key-transport key "
                               "this TA session put in its token")  # fmt: skip
            return (
                True,
                "gets a license from the vendor and seals its key to this TA on this device",
            )
        if step == "initialize":
            if not self.backend.provisioned():
                return False, "provision first: there is no sealed key, license and package yet"
            return True, "unseals the key, checks the license, decrypts the model inside the TA"
        if self.initialized is None:
            return False, "initialize first: the model is still encrypted"
        if not self.clips:
            return False, "no clips to classify (record one, or pass clips=)"
        if self.backend.mic is False:
            return True, ("hands a clip to the TA through shared memory (evaluation mode: this "
                          "board's TEE has no secure microphone) and classifies it there")  # fmt: skip
        return True, "plays a clip into the secure microphone and classifies it in the TA"

    def runnable(self) -> dict[str, bool]:
        return {s: self.can_run(s)[0] for s in STEPS}

    # -- the steps -----------------------------------------------------------
    def run(self, step: str, clip: str | None = None) -> StepResult:
        ok, why = self.can_run(step)
        if not ok:
            raise StepOrderError(f"cannot {STEP_TITLES[step].split('· ')[1]} yet: {why}")
        if step == "classify" and clip is not None and clip not in self.clips:
            raise StepOrderError(f"unknown clip {clip!r}; clips: {', '.join(self.clips)}")
        t = time.perf_counter()
        fn = getattr(self, f"_{step}")
        setup = False
        try:
            ok, summary, err = True, fn(clip) if step == "classify" else fn(), None
        except OmgError as e:
            ok, summary, err = False, str(e) or type(e).__name__, type(e).__name__
            setup = isinstance(e, (ConfigError, BoardError, ArtifactError))
        staged = tuple(k for k, on in self.attacks.items() if on)
        r = StepResult(step, ok, summary, err, time.perf_counter() - t, staged, not ok and setup)
        if not ok and step == "classify":
            self.result = None  # no label from a refused classification
        self.log.append(r)
        self._changed()
        return r

    def record(self, audio: np.ndarray) -> StepResult:
        """Classify a recording (int16, one clip of 16 kHz mono; shorter is padded, longer cut)."""
        a = np.zeros(C.CLIP_SAMPLES, dtype=np.int16)
        x = np.asarray(audio, dtype=np.int16).reshape(-1)[: C.CLIP_SAMPLES]
        a[: len(x)] = x
        self.clips[MIC_CLIP] = a
        return self.run("classify", MIC_CLIP)

    def set_attack(self, key: str, on: bool) -> None:
        """Stage (or drop) one of ``ATTACK_TOGGLES``; it takes effect when its step runs."""
        if key not in ATTACK_TOGGLES:
            raise UnknownNameError("attack", key, list(ATTACK_TOGGLES))
        self.attacks[key] = bool(on)
        self._changed()

    def _changed(self) -> None:
        for fn in list(self.listeners):
            fn()

    def _load_ta(self) -> str:
        self.close_session()
        modified = self.attacks["modify_ta"]
        self.backend.load_ta(modified)
        self.loaded, self.loaded_modified = True, modified
        tag = "a PATCHED TA (re-signed)" if modified else "the vendor-approved TA"
        m = self.backend.measurement()
        return f"{tag} loaded" + (f" and measured: {m.hex()[:16]}…" if m else
                                  "; the TEE measured it (the token will say what it measured)")  # fmt: skip

    def _attest(self) -> str:
        self.token = self.last_token = self.backend.attest(self.vendor.new_nonce())
        return f"token of {len(self.token)} bytes, signed by the device key (chain to the manufacturer)"

    def _provision(self) -> str:
        token, self.token = self.token, None  # a token is good for one license (its nonce is spent)
        self.license = self.vendor.issue_license(
            token, model_id=self.release.model_id, model_version=self.backend.current
        )
        self.backend.provision(self.license)
        return (f"license for v{self.backend.current} issued; model key sealed to this TA on this "
                f"device ({self.backend.sealed_size()} bytes)")  # fmt: skip

    def _initialize(self) -> str:
        self.initialized = self.result = None
        swap, replay = self.attacks["swap_device"], self.attacks["replay_old_model"]
        if swap or replay:
            info = self.backend.initialize_attacked(swap=swap, replay=replay)
            return (f"the attack went through: model v{info['model_version']} initialized"
                    + (f" — the device has not run a newer version yet; initialize "
                       f"v{self.backend.current} once, then replay again" if replay else ""))  # fmt: skip
        self.initialized = self.backend.initialize()
        return f"model v{self.initialized['model_version']} decrypted inside the TA; the normal world never saw it"

    def _classify(self, clip: str | None) -> str:
        name = clip or next(iter(self.clips))
        index, seconds = self.backend.classify(self.clips[name])
        label = self.initialized["labels"][index]  # the names the TA's package carries
        self.result = {"clip": name, "label": label, "ms": round(seconds * 1000, 1)}
        if self.backend.mic:
            return f"the secure microphone heard {name!r}: the TA says {label!r}"
        return (f"{name!r} went to the TA through shared memory (evaluation mode: no secure "
                f"microphone on this board): the TA says {label!r}")  # fmt: skip

    # -- the panel and the picture -------------------------------------------------
    def measurement(self) -> bytes | None:
        """The loaded TA's measurement: computed here on a local TEE, else the token's claim."""
        m = self.backend.measurement()
        if m is None and self.last_token is not None:
            m = bytes.fromhex(token_claims(self.last_token)["TA measurement"])
        return m if self.loaded else None

    def panel(self) -> dict[str, Any]:
        m = self.measurement()
        policy = None
        if self.license is not None:
            p = lic.parse(self.license, self.vendor.public_key()).policy
            policy = {"expires": time.strftime("%Y-%m-%d", time.gmtime(p.not_after)),
                      "min version": p.min_version, "budget": p.budget or "unlimited",
                      "scores leave the TA": p.scores}  # fmt: skip
        sealed = self.backend.sealed_size() if self.backend.provisioned() else None
        last = self.log[-1] if self.log else None
        return {
            "where": self.where,
            "phase": PHASE_TITLES[phase_of(last.step)] if last else None,
            "last step": str(last) if last else None,
            "TA loaded": self.loaded,
            "measurement": m.hex() if m else None,
            "measurement approved by the vendor": (m in self.vendor.approved()) if m else None,
            "token claims": token_claims(self.last_token) if self.last_token else None,
            "license policy": policy,
            "sealed key (normal-world file)": f"{sealed} bytes" if sealed else None,
            "model decrypted in the TA": self.initialized is not None,
            "result": self.result,
            "attacks on": [
                ATTACK_TOGGLES[k].split(" (")[0] for k, on in self.attacks.items() if on
            ],
        }

    def facts(self) -> dict[str, Any]:
        """What the two-worlds picture shows (``omgkit.picture.placements``)."""
        last = self.log[-1] if self.log else None
        return {
            "where": self.where,
            "ta_loaded": self.loaded,
            "ta_modified": self.loaded and self.loaded_modified,
            "attested": self.last_token is not None,
            "licensed": self.license is not None,
            "provisioned": self.backend.provisioned(),
            "initialized": self.initialized is not None,
            "label": (self.result or {}).get("label"),
            "mic": self.backend.mic,
            "attacks": dict(self.attacks),
            "last_step": last.step if last else None,
            "refused": None if last is None or last.ok else
            {"step": last.step, "error": last.error, "why": last.summary, "attacks": last.attacks,
             "setup": last.setup},
        }  # fmt: skip

    def close_session(self) -> None:
        self.backend.close_session()
        self.loaded = self.loaded_modified = False
        self.token = self.last_token = self.initialized = self.result = None

    def close(self) -> None:
        self.close_session()
        self.backend.close()

    def cleanup(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Walkthrough:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
