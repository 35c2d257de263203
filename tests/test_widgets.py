"""The enclave walkthrough (omgkit.widgets): its logic and its widgets, without a browser."""

from __future__ import annotations

import numpy as np
import pytest

from omg_ta.commands import CLIP_SAMPLES
from omgkit.widgets import STEPS, StepOrderError, Walkthrough, WalkthroughUI


@pytest.fixture
def walk(tiny_run, tmp_path):
    """A fresh walkthrough per test: no test depends on what another left behind."""
    from omgkit.guard.demo import GOLDEN
    from omgkit.kws.audio import read_clip

    clips = {w: read_clip(GOLDEN / f"{w}.wav") for w in ("yes", "no", "silence")}
    w = Walkthrough.from_run(tiny_run, workdir=tmp_path / "walk", clips=clips)
    yield w
    w.close()


def test_steps_out_of_order_say_why(walk):
    assert walk.runnable() == {"load_ta": True, "attest": False, "provision": False,
                               "initialize": False, "classify": False}  # fmt: skip
    with pytest.raises(StepOrderError, match="load the TA first"):
        walk.run("attest")
    walk.run("load_ta")
    with pytest.raises(StepOrderError, match="attest first"):
        walk.run("provision")
    with pytest.raises(StepOrderError, match="provision first"):
        walk.run("initialize")
    with pytest.raises(StepOrderError, match="initialize first: the model is still encrypted"):
        walk.run("classify")
    with pytest.raises(StepOrderError, match="unknown step"):
        walk.can_run("decrypt")


def test_the_three_phases_and_the_panel(walk):
    assert walk.run("load_ta").ok
    p = walk.panel()
    assert p["TA loaded"] and p["measurement approved by the vendor"] is True
    assert not p["model decrypted in the TA"] and p["token claims"] is None
    assert walk.run("attest").ok
    claims = walk.panel()["token claims"]
    assert claims["TA measurement"] == walk.backend.lg.measurement.hex()
    from omgkit.tee import Device

    assert claims["device id"] == Device(walk.backend.device).device_id.hex()
    r = walk.run("provision")
    assert r.ok and walk.panel()["license policy"]["scores leave the TA"] is False
    assert walk.run("initialize").ok and walk.panel()["model decrypted in the TA"]
    r = walk.run("classify", "yes")
    assert r.ok and walk.result["clip"] == "yes" and walk.result["label"] in r.summary
    # the same label as plain inference of that clip
    from omg_ta.frontend import Frontend
    from omg_ta.runtime import load_runtime

    rel = walk.release
    plain = load_runtime("litert", rel.model).classify(
        Frontend(rel.frontend)(walk.clips["yes"][None, :])[..., None]
    )
    assert walk.result["label"] == rel.labels[int(plain[0])]


def test_attack_toggles_fail_with_their_own_errors(walk):
    walk.attacks["modify_ta"] = False
    for s in ("load_ta", "attest", "provision", "initialize"):
        assert walk.run(s).ok, s  # the device has now run v2
    walk.attacks["replay_old_model"] = True
    r = walk.run("initialize")
    assert not r.ok and r.error == "RollbackError"
    walk.attacks["replay_old_model"] = False
    walk.attacks["swap_device"] = True
    r = walk.run("initialize")
    assert not r.ok and r.error == "DeviceMismatchError"
    walk.attacks["swap_device"] = False
    walk.attacks["modify_ta"] = True
    r = walk.run("load_ta")
    assert r.ok and "PATCHED" in r.summary
    assert walk.panel()["measurement approved by the vendor"] is False
    assert walk.run("initialize").error == "UnsealError"  # the real TA's sealed key
    assert walk.run("attest").ok
    assert walk.run("provision").error == "MeasurementNotApprovedError"
    walk.attacks["modify_ta"] = False
    assert walk.run("load_ta").ok and walk.run("initialize").ok  # back to normal


def test_replay_before_the_device_ran_v2_goes_through(tiny_run, tmp_path):
    """Honest about rollback protection: it needs the newer version to have run once."""
    w = Walkthrough.from_run(
        tiny_run, workdir=tmp_path / "w", clips={"z": np.zeros(CLIP_SAMPLES, np.int16)}
    )
    try:
        for s in ("load_ta", "attest", "provision"):
            w.run(s)
        w.attacks["replay_old_model"] = True
        r = w.run("initialize")
        assert r.ok and "initialize v2 once" in r.summary
    finally:
        w.close()


def test_ui_buttons_follow_the_logic(walk):
    ui = WalkthroughUI(walk)
    assert [ui.buttons[s].disabled for s in STEPS] == [False, True, True, True, True]
    assert "load the TA first" in ui.buttons["attest"].tooltip
    ui.click("load_ta")
    assert not ui.buttons["attest"].disabled and ui.buttons["classify"].disabled
    assert "✔" in ui.status.value and "measurement" in ui.panel.value
    # a click on a step that cannot run says why instead of failing
    assert ui.click("classify") is None and "initialize first" in ui.status.value
    ui.toggles["swap_device"].value = True
    assert walk.attacks["swap_device"] is True
    ui.toggles["swap_device"].value = False
    ui.click("attest")
    ui.click("provision")
    ui.click("initialize")
    ui.clip.value = "no"
    r = ui.click("classify")
    assert r is not None and r.ok and walk.result["clip"] == "no"
    assert len(ui.audio.outputs) == 1  # the clip's audio player


def test_ui_follows_steps_run_from_code_and_shows_a_refusal(tiny_run, tmp_path):
    """After Run All the widget was stale, a refused step left the last success on the panel,
    and the panel showed raw keys, unrounded times and cut-off labels (issue 14's newcomer)."""
    w = Walkthrough.from_run(
        tiny_run, workdir=tmp_path / "w", clips={"z": np.zeros(CLIP_SAMPLES, np.int16)}
    )
    try:
        ui = WalkthroughUI(w)
        assert all(t.layout.width == "auto" for t in ui.toggles.values())
        for s in ("load_ta", "attest", "provision", "initialize", "classify"):
            w.run(s)  # from code, not clicks
        assert "✔" in ui.status.value and "5 · classify" in ui.status.value
        assert not ui.buttons["classify"].disabled
        ms = w.result["ms"]
        assert ms == round(ms, 1)
        w.set_attack("replay_old_model", True)  # from code: the checkbox follows
        assert ui.toggles["replay_old_model"].value is True
        assert "replay the old model" in ui.panel.value and "replay_old_model" not in ui.panel.value
        r = w.run("initialize")
        assert not r.ok and r.error == "RollbackError"
        assert "✘ RollbackError" in ui.status.value  # the refusal, not the last success
        panel = w.panel()
        assert (
            panel["last step"].startswith("✘ RollbackError")
            and panel["model decrypted in the TA"] is False
        )
        ui.toggles["replay_old_model"].value = False  # and the other way round
        assert w.attacks["replay_old_model"] is False
        from omgkit.errors import UnknownNameError

        with pytest.raises(UnknownNameError):
            w.set_attack("no_such_attack", True)
    finally:
        w.close()


def test_the_picture_and_the_microphone_follow_the_steps(walk):
    """The SVG is redrawn after each step; a recording is classified in the TA and plotted."""
    import xml.etree.ElementTree as ET

    ui = WalkthroughUI(walk)

    def drawn() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for g in ET.fromstring(ui.picture.value).iter("{http://www.w3.org/2000/svg}g"):
            if g.get("class") == "item":
                out.setdefault(g.get("data-item"), set()).add(g.get("data-zone"))
        return out

    assert "ta" not in drawn() and "before the first step" in ui.picture.value
    for s in ("load_ta", "attest", "provision"):
        ui.click(s)
    assert drawn()["sealed-key"] == {"normal"} and "decrypted-model" not in drawn()
    # a recording before the model is decrypted: refused with the reason, nothing classified
    assert ui.recorded(np.zeros(8000, np.int16)) is None and "initialize first" in ui.status.value
    ui.click("initialize")
    assert drawn()["decrypted-model"] == {"secure"}
    # the browser's widget sends int16 bytes and bumps its counter; Python classifies them
    from omgkit.guard.demo import GOLDEN
    from omgkit.kws.audio import read_clip

    yes = read_clip(GOLDEN / "yes.wav")
    # as the kernel gets a front end's update: the clip a binary buffer (a memoryview), one message
    pcm = memoryview(yes[:12000].astype("<i2").tobytes())  # shorter than a clip: padded
    ui.mic.set_state({"clip": pcm, "count": ui.mic.count + 1})
    assert walk.result["clip"] == "microphone" and walk.clips["microphone"].shape == (CLIP_SAMPLES,)
    assert ui.mic.status == f"the TA says: {walk.result['label']}"
    assert bytes(ui.recording.value).startswith(b"\x89PNG") and "microphone" in ui.clip.options
    assert drawn()["audio"] == {"secure"} and f"label: {walk.result['label']}" in ui.picture.value
    ui.toggles["replay_old_model"].value = True
    ui.click("initialize")
    assert "✘ refused at initialize, in the secure world" in ui.picture.value
    assert "RollbackError" in ui.picture.value and "label" not in drawn()


def test_the_walkthrough_on_a_board(board_home, tiny_run, tmp_path):
    """The same steps and attacks on an emulated board over SSH: files staged as its root."""
    from omgkit.board import emulator
    from omgkit.board.connection import Board
    from omgkit.board.deployment import _agent
    from omgkit.guard.demo import GOLDEN
    from omgkit.kws.audio import read_clip

    emulator.create("walk")
    emulator.up("walk")
    clips = {"yes": read_clip(GOLDEN / "yes.wav")}
    w = Walkthrough.from_run(tiny_run, workdir=tmp_path / "w", clips=clips, board="emu://walk")
    try:
        assert w.panel()["where"] == "the board emu://walk (emulated TEE)"
        old, cur = w.backend.old, w.backend.current
        assert cur == old + 1
        for s in STEPS:
            r = w.run(s)
            assert r.ok, r
        claims = w.panel()["token claims"]
        with Board("emu://walk") as b:
            assert claims["device id"] == _agent(b, "device-info")["device_id"]
        assert w.panel()["measurement approved by the vendor"] is True
        assert w.initialized["model_version"] == cur and w.result["label"] in w.release.labels
        w.set_attack("replay_old_model", True)
        assert w.run("initialize").error == "RollbackError"
        w.set_attack("replay_old_model", False)
        w.set_attack("swap_device", True)
        r = w.run("initialize")
        assert r.error == "DeviceMismatchError" and w.backend.other == "emu://walk-other"
        assert not r.setup and w.facts()["refused"]["setup"] is False  # a refusal, drawn as one
        # a second board that is not there: the set-up failed, nothing refused anything
        w.backend.other, w.backend._other_ready = "emu://no-such-board", False
        r = w.run("initialize")
        assert not r.ok and r.setup and "no-such-board" in r.summary, r
        w.backend.other = "emu://walk-other"
        w.set_attack("swap_device", False)
        w.set_attack("modify_ta", True)
        assert "PATCHED" in w.run("load_ta").summary
        assert w.run("initialize").error == "UnsealError"
        assert w.run("attest").ok and w.panel()["measurement approved by the vendor"] is False
        assert w.run("provision").error == "MeasurementNotApprovedError"
        # the patched TA loaded, then the replay staged: the release must stay whole (the replay
        # re-links the board's release; a patched file left in it would make that commit fail)
        w.set_attack("replay_old_model", True)
        assert w.run("initialize").error in ("RollbackError", "UnsealError")
        w.set_attack("replay_old_model", False)
        with Board("emu://walk") as b:
            assert _agent(b, "state")["installed"]
        w.set_attack("modify_ta", False)
        # every attack undone: the board is installed as deployed and runs the new version
        for s in ("load_ta", "initialize", "classify"):
            assert w.run(s).ok, s
        n = len(w.log)
        with pytest.raises(StepOrderError, match="unknown clip"):  # asked wrong: not a refusal
            w.run("classify", "no-such-clip")
        assert len(w.log) == n and w.facts()["refused"] is None
        with Board("emu://walk") as b:
            st = _agent(b, "state")
            assert st["installed"], st
    finally:
        w.close()
