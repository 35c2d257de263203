"""The enclave walkthrough: a stepper over the three phases, for notebooks and classes.

Two layers. :class:`Walkthrough` is the logic, with no widgets: five steps
(load the TA, attest, provision, initialize, classify), what each needs
before it can run (:meth:`Walkthrough.can_run` says why not), the attack
toggles, and the panel's state (:meth:`Walkthrough.panel`). It runs on a
local emulated TEE (``omgkit.guard.local.LocalGuard``) and is unit-tested
without a browser. :class:`WalkthroughUI` puts ipywidgets on it: a button
per step, enabled only when the step can run, toggles for the attacks, a
panel, the result with the clip's audio player.

The story the steps tell: the device already ran version 1 of the model
(its TEE counter is at 1; the attacker kept those files). The vendor now
ships version 2; you provision and run it. Toggles stage the attacks when
their step runs:

- *modify the TA* — at "load TA": the installed TA is patched and re-signed
  with a trusted key (a leaked development key, say). It loads, but its
  measurement changed: the vendor will not license it, and a key sealed to
  the real TA does not unseal for it.
- *swap the device* — at "initialize": the normal world's files are copied
  to another device and initialized there.
- *replay an old model* — at "initialize": the version-1 files are put back.
  Refused once the device has run version 2 (its counter moved); before
  that, version 1 is still the newest it has seen and runs.
"""

from __future__ import annotations

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

from .guard import attacks
from .guard.host import LICENSE, PACKAGE, SEALED, GuardedModel
from .guard.local import LocalGuard
from .kws.release import Release
from .show import token_claims
from .tee import mic_feed
from .tee.bundle import measure, read_bundle

STEPS = ("load_ta", "attest", "provision", "initialize", "classify")
STEP_TITLES = {"load_ta": "1 · load TA", "attest": "2 · attest", "provision": "3 · provision",
               "initialize": "4 · initialize", "classify": "5 · classify"}  # fmt: skip
ATTACK_TOGGLES = {
    "modify_ta": "modify the TA (re-signed with a leaked key)",
    "swap_device": "swap the device (copy the files to another board)",
    "replay_old_model": "replay the old model (version 1)",
}
CURRENT, OLD = 2, 1


class StepOrderError(OmgError):
    """A step was asked for before what it needs was done."""


@dataclasses.dataclass(frozen=True)
class StepResult:
    step: str
    ok: bool
    summary: str
    error: str | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        mark = "✔" if self.ok else f"✘ {self.error}"
        return f"{mark} {STEP_TITLES[self.step]}: {self.summary} ({self.seconds * 1000:.1f} ms)"


class Walkthrough:
    """The stepper's logic on a local emulated TEE (see the module docstring)."""

    def __init__(self, release: Release, *, workdir: str | os.PathLike | None = None,
                 clips: dict[str, np.ndarray] | None = None):  # fmt: skip
        self.release = release
        self.root = Path(workdir or tempfile.mkdtemp(prefix="omg-walkthrough-"))
        self.clips = dict(clips or {})
        self.lg = LocalGuard.create(self.root)
        v = self.lg.vendor
        self.packages = {ver: v.seal_model(release, model_version=ver) for ver in (OLD, CURRENT)}
        self.device = self.lg.device("device")
        self.other_device = self.lg.device("other-device")
        self.storage = self.root / "device-normal"
        self.old_files = self._history()
        self.attacks = dict.fromkeys(ATTACK_TOGGLES, False)
        self.host: GuardedModel | None = None
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

    def _history(self) -> dict[str, bytes]:
        """The device ran version 1 before: provisioned, initialized (counter at 1), files kept."""
        v = self.lg.vendor
        with GuardedModel(self.device, self.root / "old-normal") as g:
            g.provision(
                v.issue_license(
                    g.attest(v.new_nonce()), model_id=self.release.model_id, model_version=OLD
                )
            )
            g.install_package(self.packages[OLD])
            g.initialize()
            return {n: (g.storage / n).read_bytes() for n in (SEALED, LICENSE, PACKAGE)}

    # -- what can run --------------------------------------------------------
    def can_run(self, step: str) -> tuple[bool, str]:
        """Whether ``step`` can run now, and if not, why."""
        if step not in STEPS:
            raise StepOrderError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
        if step == "load_ta":
            return True, "loads (again) the TA into a new session"
        if self.host is None:
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
            if not all((self.storage / n).is_file() for n in (SEALED, LICENSE, PACKAGE)):
                return False, "provision first: there is no sealed key, license and package yet"
            return True, "unseals the key, checks the license, decrypts the model inside the TA"
        if self.initialized is None:
            return False, "initialize first: the model is still encrypted"
        if not self.clips:
            return False, "no clips to classify"
        return True, "plays a clip into the secure microphone and classifies it in the TA"

    def runnable(self) -> dict[str, bool]:
        return {s: self.can_run(s)[0] for s in STEPS}

    # -- the steps -----------------------------------------------------------
    def run(self, step: str, clip: str | None = None) -> StepResult:
        ok, why = self.can_run(step)
        if not ok:
            raise StepOrderError(f"cannot {STEP_TITLES[step].split('· ')[1]} yet: {why}")
        t = time.perf_counter()
        fn = getattr(self, f"_{step}")
        try:
            ok, summary, err = True, fn(clip) if step == "classify" else fn(), None
        except OmgError as e:
            ok, summary, err = False, str(e) or type(e).__name__, type(e).__name__
        r = StepResult(step, ok, summary, err, time.perf_counter() - t)
        if not ok and step == "classify":
            self.result = None  # no label from a refused classification
        self.log.append(r)
        self._changed()
        return r

    def set_attack(self, key: str, on: bool) -> None:
        """Stage (or drop) one of ``ATTACK_TOGGLES``; it takes effect when its step runs."""
        if key not in ATTACK_TOGGLES:
            from .errors import UnknownNameError

            raise UnknownNameError("attack", key, list(ATTACK_TOGGLES))
        self.attacks[key] = bool(on)
        self._changed()

    def _changed(self) -> None:
        for fn in list(self.listeners):
            fn()

    def _load_ta(self) -> str:
        self.close_session()
        ta = attacks.ta_dir(self.device)
        attacks.restore_ta(self.lg, self.device)
        if self.attacks["modify_ta"]:
            attacks.patch_ta(self.device, self.lg.ta_key)
        self.host = GuardedModel(self.device, self.storage)
        self.host._session()  # the TEE verifies the bundle's signature, measures and loads it
        m = measure(read_bundle(ta))
        tag = "a PATCHED TA (re-signed)" if self.attacks["modify_ta"] else "the vendor-approved TA"
        return f"{tag} loaded and measured: {m.hex()[:16]}…"

    def _attest(self) -> str:
        self.token = self.last_token = self.host.attest(self.lg.vendor.new_nonce())
        return f"token of {len(self.token)} bytes, signed by the device key (chain to the manufacturer)"

    def _provision(self) -> str:
        token, self.token = self.token, None  # a token is good for one license (its nonce is spent)
        self.license = self.lg.vendor.issue_license(
            token, model_id=self.release.model_id, model_version=CURRENT
        )
        sealed = self.host.provision(self.license)
        self.host.install_package(self.packages[CURRENT])
        return f"license for v{CURRENT} issued; model key sealed to this TA on this device ({len(sealed)} bytes)"

    def _initialize(self) -> str:
        self.initialized = None
        if self.attacks["swap_device"] or self.attacks["replay_old_model"]:
            return self._initialize_attacked()
        self.initialized = self.host.initialize()
        return f"model v{self.initialized['model_version']} decrypted inside the TA; the normal world never saw it"

    def _initialize_attacked(self) -> str:
        if self.attacks["swap_device"]:
            device, where = self.other_device, self.root / "other-device-normal"
        else:
            device, where = self.device, self.root / "replayed-normal"
        where.mkdir(exist_ok=True)
        for n in (SEALED, LICENSE, PACKAGE):
            data = (
                self.old_files[n]
                if self.attacks["replay_old_model"]
                else (self.storage / n).read_bytes()
            )
            (where / n).write_bytes(data)
        with GuardedModel(device, where) as g:
            info = g.initialize()
        return (f"the attack went through: model v{info['model_version']} initialized"
                + (" — the device has not run a newer version yet; initialize v2 once, then replay again"
                   if self.attacks["replay_old_model"] else ""))  # fmt: skip

    def _classify(self, clip: str | None) -> str:
        name = clip or next(iter(self.clips))
        if name not in self.clips:
            raise StepOrderError(f"unknown clip {name!r}; clips: {', '.join(self.clips)}")
        mic_feed(self.device, self.clips[name][None, :])
        r = self.host.classify_mic(1)
        label = self.initialized["labels"][r.labels[0]]  # the names the TA's package carries
        self.result = {"clip": name, "label": label, "ms": round(r.seconds * 1000, 1)}
        return f"the secure microphone heard {name!r}: the TA says {label!r}"

    # -- the panel -------------------------------------------------------------
    def panel(self) -> dict[str, Any]:
        ta = attacks.ta_dir(self.device)
        m = measure(read_bundle(ta)) if self.host is not None else None
        policy = None
        if self.license is not None:
            p = lic.parse(self.license, self.lg.vendor.public_key()).policy
            policy = {"expires": time.strftime("%Y-%m-%d", time.gmtime(p.not_after)),
                      "min version": p.min_version, "budget": p.budget or "unlimited",
                      "scores leave the TA": p.scores}  # fmt: skip
        sealed = self.storage / SEALED
        last = self.log[-1] if self.log else None
        return {
            "last step": str(last) if last else None,
            "TA loaded": self.host is not None,
            "measurement": m.hex() if m else None,
            "measurement approved by the vendor": (m in self.lg.vendor.approved()) if m else None,
            "token claims": token_claims(self.last_token) if self.last_token else None,
            "license policy": policy,
            "sealed key (normal-world file)": f"{sealed.stat().st_size} bytes"
            if sealed.is_file()
            else None,
            "model decrypted in the TA": self.initialized is not None,
            "result": self.result,
            "attacks on": [
                ATTACK_TOGGLES[k].split(" (")[0] for k, on in self.attacks.items() if on
            ],
        }

    def close_session(self) -> None:
        if self.host is not None:
            self.host.close()
        self.host, self.token, self.last_token, self.initialized, self.result = (
            None,
            None,
            None,
            None,
            None,
        )

    def close(self) -> None:
        self.close_session()
        self.lg.close()

    def cleanup(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Walkthrough:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WalkthroughUI:
    """ipywidgets on a :class:`Walkthrough`: ``display(WalkthroughUI(w).widget)``."""

    def __init__(self, walkthrough: Walkthrough):
        import ipywidgets as W

        self.w = walkthrough
        self.buttons = {
            s: W.Button(description=STEP_TITLES[s], layout=W.Layout(width="140px")) for s in STEPS
        }
        for s, b in self.buttons.items():
            b.on_click(lambda _b, s=s: self.click(s))
        self.toggles = {  # as wide as their labels (the default width cut them off)
            k: W.Checkbox(value=walkthrough.attacks[k], description=d, indent=False,
                          layout=W.Layout(width="auto"), style={"description_width": "initial"})
            for k, d in ATTACK_TOGGLES.items()
        }  # fmt: skip
        for k, t in self.toggles.items():
            t.observe(lambda ch, k=k: self._toggle(k, ch["new"]), names="value")
        self.clip = W.Dropdown(options=list(walkthrough.clips), description="clip")
        self.status = W.HTML()
        self.panel = W.HTML()
        self.audio = W.Output()
        self.widget = W.VBox([
            W.HBox(list(self.buttons.values())),
            W.HBox([self.clip]),
            W.HTML("<b>attacks</b> (take effect when their step runs)"),
            W.VBox(list(self.toggles.values())),
            self.status, self.panel, self.audio,
        ])  # fmt: skip
        walkthrough.listeners.append(self.refresh)  # steps run from code show here too
        self.refresh()

    def _toggle(self, key: str, on: bool) -> None:
        if self.w.attacks.get(key) != bool(on):
            self.w.set_attack(key, on)

    def click(self, step: str) -> StepResult | None:
        try:
            r = self.w.run(step, self.clip.value if step == "classify" else None)
        except StepOrderError as e:
            self.status.value = f"<span style='color:#a60'>{_esc(str(e))}</span>"
            return None
        if step == "classify" and r.ok:
            from IPython.display import Audio

            self.audio.outputs = ()
            self.audio.append_display_data(
                Audio(self.w.clips[self.w.result["clip"]], rate=C.SAMPLE_RATE)
            )
        self.refresh()
        return r

    def refresh(self) -> None:
        """Buttons, toggles, status and panel from the walkthrough's state, however it changed."""
        if self.w.log:
            r = self.w.log[-1]
            self.status.value = (
                f"<span style='color:{'#070' if r.ok else '#b00'}'>{_esc(str(r))}</span>"
            )
        for k, t in self.toggles.items():
            if t.value != self.w.attacks[k]:
                t.value = self.w.attacks[k]
        for s, b in self.buttons.items():
            ok, why = self.w.can_run(s)
            b.disabled = not ok
            b.tooltip = why
        rows = []
        for k, v in self.w.panel().items():
            if isinstance(v, dict):
                v = "<br>".join(
                    f"{_esc(str(a))}: <code>{_esc(str(b))}</code>" for a, b in v.items()
                )
            elif isinstance(v, list):
                v = ", ".join(v) or "none"
            else:
                v = "—" if v is None else _esc(str(v))
            rows.append(f"<tr><td style='padding-right:1em'><b>{_esc(k)}</b></td><td>{v}</td></tr>")
        self.panel.value = "<table>" + "".join(rows) + "</table>"


def _esc(s: str) -> str:
    import html

    return html.escape(s)
