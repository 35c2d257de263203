"""The enclave walkthrough's widgets: a stepper over the three phases, for notebooks and classes.

:class:`WalkthroughUI` puts ipywidgets on a :class:`~omgkit.walkthrough.Walkthrough`
(the logic, unit-tested without a browser; local emulated TEE or a board
URL): a button per step under its phase, enabled only when the step can
run (its tooltip says why not), toggles for the attacks, the picture of the
two worlds (``omgkit.picture``) redrawn after every step, a panel, the
result with the clip's audio player, and a microphone
(``omgkit.mic_widget``) whose recording the TA classifies — with the
recording's waveform and spectrogram beside the TA's label.
"""

from __future__ import annotations

from omg_ta import commands as C

from .picture import two_worlds_svg
from .walkthrough import (
    ATTACK_TOGGLES,
    PHASE_TITLES,
    PHASES,
    STEP_TITLES,
    STEPS,
    StepOrderError,
    StepResult,
    Walkthrough,
)

__all__ = ["STEPS", "STEP_TITLES", "ATTACK_TOGGLES", "StepOrderError", "StepResult", "Walkthrough",
           "WalkthroughUI"]  # fmt: skip


class WalkthroughUI:
    """ipywidgets on a :class:`Walkthrough`: ``display(WalkthroughUI(w).widget)``.

    ``microphone=False`` leaves the recorder out (it needs anywidget's
    front end; the buttons and the picture need only ipywidgets)."""

    def __init__(self, walkthrough: Walkthrough, *, microphone: bool = True):
        import ipywidgets as W

        self.w = walkthrough
        self.buttons = {
            s: W.Button(description=STEP_TITLES[s], layout=W.Layout(width="140px")) for s in STEPS
        }
        for s, b in self.buttons.items():
            b.on_click(lambda _b, s=s: self.click(s))
        phases = [
            W.VBox([W.HTML(f"<b>{PHASE_TITLES[p]}</b>"), W.HBox([self.buttons[s] for s in steps])],
                   layout=W.Layout(margin="0 1.5em 0 0"))
            for p, steps in PHASES.items()
        ]  # fmt: skip
        self.toggles = {  # as wide as their labels (the default width cut them off)
            k: W.Checkbox(value=walkthrough.attacks[k], description=d, indent=False,
                          layout=W.Layout(width="auto"), style={"description_width": "initial"})
            for k, d in ATTACK_TOGGLES.items()
        }  # fmt: skip
        for k, t in self.toggles.items():
            t.observe(lambda ch, k=k: self._toggle(k, ch["new"]), names="value")
        self.clip = W.Dropdown(options=list(walkthrough.clips), description="clip")
        self.status = W.HTML()
        self.picture = W.HTML()
        self.panel = W.HTML()
        self.audio = W.Output()
        self.recording = W.Image(format="png", layout=W.Layout(max_width="640px"))
        self.mic = None
        mic_row = []
        if microphone:
            from .mic_widget import Microphone

            self.mic = Microphone(on_clip=self.recorded)
            mic_row = [
                W.HTML("<b>or speak</b> (one second, after <i>4 · initialize</i>)"),
                self.mic,
            ]
        self.widget = W.VBox([
            W.HTML(f"on <b>{_esc(walkthrough.where)}</b>"),
            W.HBox(phases),
            W.HBox([self.clip, *mic_row]),
            W.HTML("<b>attacks</b> (take effect when their step runs)"),
            W.VBox(list(self.toggles.values())),
            self.status, self.picture, self.panel, self.audio, self.recording,
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

    def recorded(self, audio) -> StepResult | None:
        """A recording from the microphone: classified in the TA, drawn with its label."""
        from . import show

        try:
            r = self.w.record(audio)
        except StepOrderError as e:
            self.status.value = f"<span style='color:#a60'>{_esc(str(e))}</span>"
            return None
        label = self.w.result["label"] if r.ok else None
        self.recording.value = show.png(show.plot_recording(self.w.clips["microphone"], label))
        if self.mic is not None:
            self.mic.status = f"the TA says: {label}" if r.ok else f"refused: {r.error}"
        return r

    def refresh(self) -> None:
        """Buttons, toggles, status, picture and panel from the walkthrough's state, however it changed."""
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
        if list(self.clip.options) != list(self.w.clips):
            self.clip.options = list(self.w.clips)
        self.picture.value = two_worlds_svg(self.w.facts())
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
