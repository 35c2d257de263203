"""The two-worlds picture (omgkit.picture): its placement rule and its SVG."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from omgkit.picture import ITEMS, SECRET_ITEMS, ZONES, placements, two_worlds_svg

FLAGS = ("ta_loaded", "ta_modified", "attested", "licensed", "provisioned", "initialized")
SVG = "{http://www.w3.org/2000/svg}"


def _facts(flags, label=None, refused=None, attacks=()):
    f = dict(zip(FLAGS, flags, strict=True))
    f.update(where="test", label=label, refused=refused, last_step="initialize",
             attacks={a: True for a in attacks})  # fmt: skip
    return f


def _drawn(svg: str) -> dict[str, set[str]]:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg" and root.get("id") == "omg-two-worlds"
    out: dict[str, set[str]] = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") == "item":
            out.setdefault(g.get("data-item"), set()).add(g.get("data-zone"))
    return out


def test_plaintext_is_never_placed_outside_a_secure_world():
    refusals = [None, {"step": "initialize", "error": "DeviceMismatchError", "why": "x",
                       "attacks": ("swap_device",)}]  # fmt: skip
    for flags in itertools.product((False, True), repeat=len(FLAGS)):
        for label, refused in itertools.product((None, "yes"), refusals):
            f = _facts(flags, label, refused, ("swap_device",) if refused else ())
            p = placements(f)
            assert set(p) <= set(ITEMS) and all(set(z) <= set(ZONES) for z in p.values())
            for item in SECRET_ITEMS:
                assert set(p.get(item, [])) <= {"secure"}, (item, f)
            assert "model-key" not in p or set(p["model-key"]) <= {"vendor", "secure"}
            assert _drawn(two_worlds_svg(f)) == {k: set(v) for k, v in p.items()}


def test_each_step_moves_what_it_should():
    before = placements(_facts([False] * 6))
    assert "ta" not in before and before["encrypted-model"] == ["vendor"]
    after_provision = placements(_facts([True, False, True, True, True, False]))
    assert after_provision["sealed-key"] == ["normal"]
    assert (
        "normal" in after_provision["encrypted-model"] and "decrypted-model" not in after_provision
    )
    running = placements(_facts([True, False, True, True, True, True], label="yes"))
    assert running["decrypted-model"] == ["secure"] and running["model-key"] == ["vendor", "secure"]
    assert running["audio"] == ["secure"] and "normal" in running["label"]
    # the clip this workbench feeds in comes from the normal world, and the picture says so
    assert running["audio-fed"] == ["normal"]
    svg = two_worlds_svg(_facts([True, False, True, True, True, True], label="yes"))
    assert "fed in by the demo (emulation)" in svg
    f = _facts([True, False, True, True, True, True], label="yes")
    f["mic"] = False  # a board without a secure microphone (OP-TEE in QEMU)
    assert "via shared memory" in two_worlds_svg(f) and "secure microphone" not in two_worlds_svg(f)


def test_a_refusal_is_drawn_where_it_happened():
    vendor = _facts([True, True, True, False, False, False],
                    refused={"step": "provision", "error": "MeasurementNotApprovedError",
                             "why": "TA measurement is not approved by the vendor", "attacks": ("modify_ta",)})  # fmt: skip
    svg = two_worlds_svg(vendor)
    root = ET.fromstring(svg)
    g = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "refused")
    assert g.get("data-zone") == "vendor" and g.get("data-error") == "MeasurementNotApprovedError"
    assert "TA, PATCHED (re-signed)" in svg and "refused at provision, in the model vendor" in svg
    swapped = _facts([True, False, True, True, True, False],
                     refused={"step": "initialize", "error": "DeviceMismatchError",
                              "why": "license is bound to another device", "attacks": ("swap_device",)})  # fmt: skip
    root = ET.fromstring(two_worlds_svg(swapped))
    zones = {g.get("id") for g in root.iter(f"{SVG}g")}
    assert "zone-other" in zones
    g = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "refused")
    assert g.get("data-zone") == "other"
    assert _drawn(two_worlds_svg(swapped))["sealed-key"] == {"normal", "other"}
    # markup in a reason is text, not markup
    evil = _facts([True] * 6, refused={"step": "initialize", "error": "UnsealError",
                                       "why": "<script>alert(1)</script>", "attacks": ()})  # fmt: skip
    svg = two_worlds_svg(evil)
    assert "<script>" not in svg and ET.fromstring(svg) is not None


def test_a_step_the_set_up_could_not_run_is_no_refusal():
    """A swap with no second board (an OP-TEE board, say) fails for the set-up: no zone marked."""
    failed = _facts([True, False, True, True, True, False],
                    refused={"step": "initialize", "error": "ConfigError", "setup": True,
                             "why": "swapping the device needs a second board", "attacks": ("swap_device",)})  # fmt: skip
    svg = two_worlds_svg(failed)
    ids = {g.get("id"): g for g in ET.fromstring(svg).iter(f"{SVG}g")}
    assert "refused" not in ids and ids["failed"].get("data-error") == "ConfigError"
    assert "could not run initialize (the set-up, not a refusal)" in svg and "✘" not in svg
    assert _drawn(svg)["sealed-key"] == {"normal"}  # nothing was copied anywhere
