"""The two worlds, drawn: where the keys, the model, the audio and the label are at a step.

:func:`placements` is the rule — from a walkthrough's facts
(``Walkthrough.facts``) to the zones each item is in: the model vendor, the
manufacturer, the device's normal world, its secure world (the TA), and
another device when the swap attack is staged. :func:`two_worlds_svg`
draws it (plain SVG, no script: a notebook, a browser or a file shows it
the same). The rule is tested on its own: whatever the steps and attacks,
the decrypted model and the audio are never placed outside a secure world.

A refused step is drawn where it was refused: in the vendor's box when the
vendor refused a license, in the secure world when the TA or the TEE did,
with the error's name and its reason. A step the walkthrough could not run
(its set-up: a second board missing, a board unreachable) is no refusal:
it gets a note, and no zone is marked.
"""

from __future__ import annotations

import html
import textwrap
from typing import Any

ZONES = ("vendor", "manufacturer", "normal", "secure", "other")
ZONE_TITLES = {"vendor": "model vendor", "manufacturer": "manufacturer",
               "normal": "normal world (the attacker is root here)",
               "secure": "secure world (TEE · the TA)",
               "other": "another device (the swap attack)"}  # fmt: skip
ITEMS = {  # id: (text, kind)
    "root-cert": ("root certificate", "doc"),
    "vendor-key": ("vendor signing key", "key"),
    "model-key": ("model key", "key"),
    "encrypted-model": ("encrypted model (package)", "locked"),
    "ta-file": ("TA file (signed)", "code"),
    "ta": ("TA, measured", "code"),
    "device-key": ("device key (certified)", "key"),
    "token": ("attestation token", "doc"),
    "license": ("license (model key wrapped to the TA)", "locked"),
    "sealed-key": ("sealed model key", "locked"),
    "decrypted-model": ("decrypted model", "plain"),
    "audio": ("audio (secure microphone)", "audio"),
    "audio-fed": ("audio, fed in by the demo (emulation)", "audio"),
    "label": ("label", "label"),
}
SECRET_ITEMS = ("decrypted-model", "audio")
"""Plaintext that must never be placed outside a secure world. ``audio`` is what the TA hears;
``audio-fed`` is the same clip where this workbench gets it from — the notebook, the browser,
the normal world — drawn apart and named for what it is: on hardware with a secure microphone
there is no such copy."""
COLORS = {"key": "#f2c744", "locked": "#b0bec5", "plain": "#66bb6a", "audio": "#64b5f6",
          "label": "#ce93d8", "doc": "#eeeeee", "code": "#ffcc80"}  # fmt: skip
VENDOR_REFUSALS = ("MeasurementNotApprovedError", "NonceError", "TokenInvalidError")
"""Errors the vendor raises (it refuses a license); every other refusal is the device's."""
STEP_NAMES = {"load_ta": "load TA", "attest": "attest", "provision": "provision",
              "initialize": "initialize", "classify": "classify"}  # fmt: skip


def placements(f: dict[str, Any]) -> dict[str, list[str]]:
    """Item id -> the zones it is in, from ``Walkthrough.facts()``."""
    p: dict[str, list[str]] = {
        "root-cert": ["manufacturer", "vendor"],
        "vendor-key": ["vendor"],
        "model-key": ["vendor"],
        "encrypted-model": ["vendor"],
        "ta-file": ["normal"],
        "device-key": ["secure"],
    }
    if f.get("ta_loaded"):
        p["ta"] = ["secure"]
    if f.get("attested"):
        p["token"] = ["normal", "vendor"]
    if f.get("licensed"):
        p["license"] = ["normal"]
    if f.get("provisioned"):
        p["sealed-key"] = ["normal"]
        p["encrypted-model"] = ["vendor", "normal"]
    if f.get("initialized"):
        p["model-key"] = ["vendor", "secure"]
        p["decrypted-model"] = ["secure"]
    if f.get("label") is not None:
        p["audio"] = ["secure"]
        p["audio-fed"] = ["normal"]  # every clip here starts in the normal world (emulation)
        p["label"] = ["secure", "normal"]
    refused = f.get("refused")
    if (refused and not refused.get("setup") and refused["step"] == "initialize"
            and "swap_device" in refused.get("attacks", ())):  # fmt: skip
        p["sealed-key"] = ["normal", "other"]
        p["license"] = ["normal", "other"]
    return p


def refused_zone(f: dict[str, Any]) -> str | None:
    """Where the last step was refused; None if it was not (a set-up failure is no refusal)."""
    r = f.get("refused")
    if not r or r.get("setup"):
        return None
    if r["error"] in VENDOR_REFUSALS:
        return "vendor"
    if r["step"] == "initialize" and "swap_device" in r.get("attacks", ()):
        return "other"
    return "secure" if r["error"] else "normal"


_BOXES = {  # zone: x, y, width, height
    "vendor": (10, 34, 210, 196),
    "manufacturer": (10, 240, 210, 60),
    "normal": (240, 34, 250, 266),
    "secure": (500, 34, 250, 266),
    "other": (240, 316, 510, 56),
}
_LEGEND = (("key", "key"), ("locked", "encrypted"), ("plain", "plaintext model"), ("audio", "audio"),
           ("label", "label"), ("code", "code"), ("doc", "signed data"))  # fmt: skip


def two_worlds_svg(f: dict[str, Any]) -> str:
    """The picture as an SVG document (``<svg id="omg-two-worlds">``)."""
    where = placements(f)
    bad = refused_zone(f)
    other = bool(f.get("attacks", {}).get("swap_device")) or bad == "other"
    y = 382 if other else 316
    lines = []
    failed = f.get("refused") if bad is None and (f.get("refused") or {}).get("setup") else None
    if bad is not None or failed:
        r = f["refused"]
        lines = textwrap.wrap(f"{r['error']}: {r['why']}", 110)[:3]
    banner_y, legend_y = y, y + (26 + 15 * len(lines) if lines else 0)
    height = legend_y + 24
    out = [f'<svg id="omg-two-worlds" xmlns="http://www.w3.org/2000/svg" width="760" '
           f'height="{height}" viewBox="0 0 760 {height}" font-family="sans-serif" font-size="12">',
           f'<rect x="0" y="0" width="760" height="{height}" fill="#ffffff"/>',
           f'<text x="240" y="20" font-weight="bold">device: {_e(f.get("where", ""))}</text>',
           '<rect x="234" y="28" width="522" height="278" rx="8" fill="none" stroke="#555"/>']  # fmt: skip
    for zone, (x, y, w, h) in _BOXES.items():
        if zone == "other" and not other:
            continue
        dark = zone == "secure"
        fill = "#263238" if dark else "#fafafa"
        stroke = ' stroke="#c62828" stroke-width="3"' if zone == bad else ' stroke="#555"'
        dash = ' stroke-dasharray="6 4"' if zone == "other" else ""
        mark = "✘ " if zone == bad else ""
        out.append(f'<g id="zone-{zone}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" '
                   f'fill="{fill}"{stroke}{dash}/>'
                   f'<text x="{x + 8}" y="{y + 16}" font-weight="bold" '
                   f'fill="{"#fff" if dark else "#222"}">{mark}{_e(ZONE_TITLES[zone])}</text></g>')  # fmt: skip
    rows = dict.fromkeys(_BOXES, 0)
    for item, (text, kind) in ITEMS.items():
        for zone in where.get(item, []):
            if zone == "other" and not other:
                continue
            x, y, w, _ = _BOXES[zone]
            if zone == "other":  # one row, side by side
                ix, iy, iw = x + 8 + rows[zone] * 250, y + 26, 234
            else:
                ix, iy, iw = x + 8, y + 26 + rows[zone] * 24, w - 16
            rows[zone] += 1
            label = text
            if item == "ta" and f.get("ta_modified"):
                label = "TA, PATCHED (re-signed)"
            if item == "label" and f.get("label") is not None:
                label = f"label: {f['label']}"
            if item.startswith("audio") and f.get("mic") is False:  # no secure microphone
                label = (
                    "audio, in the TA" if item == "audio" else "audio, via shared memory (eval.)"
                )
            stroke = "#c62828" if item == "ta" and f.get("ta_modified") else "#37474f"
            out.append(f'<g id="item-{item}-{zone}" class="item" data-item="{item}" data-zone="{zone}">'
                       f'<rect x="{ix}" y="{iy}" width="{iw}" height="20" rx="10" '
                       f'fill="{COLORS[kind]}" stroke="{stroke}"/>'
                       f'<text x="{ix + 10}" y="{iy + 14}" fill="#111">{_e(label)}</text></g>')  # fmt: skip
    if failed:  # the walkthrough could not run the step: nothing refused it, nothing moved
        out.append(f'<g id="failed" data-error="{_e(failed["error"] or "")}">'
                   f'<rect x="10" y="{banner_y}" width="740" height="{18 + 15 * len(lines)}" rx="4" '
                   f'fill="#fff8e1" stroke="#a66" stroke-width="1"/>'
                   f'<text x="18" y="{banner_y + 14}" fill="#a60" font-weight="bold">'
                   f'could not run {_e(STEP_NAMES[failed["step"]])} (the set-up, not a refusal)</text>'
                   + "".join(f'<text x="18" y="{banner_y + 29 + 15 * i}" fill="#a60">{_e(s)}</text>'
                             for i, s in enumerate(lines)) + "</g>")  # fmt: skip
    if bad is not None:
        r = f["refused"]
        out.append(f'<g id="refused" data-zone="{bad}" data-error="{_e(r["error"] or "")}">'
                   f'<rect x="10" y="{banner_y}" width="740" height="{18 + 15 * len(lines)}" rx="4" '
                   f'fill="#ffebee" stroke="#c62828" stroke-width="2"/>'
                   f'<text x="18" y="{banner_y + 14}" fill="#c62828" font-weight="bold">'
                   f'✘ refused at {_e(STEP_NAMES[r["step"]])}, in the {_e(ZONE_TITLES[bad].split(" (")[0])}'
                   f'</text>'
                   + "".join(f'<text x="18" y="{banner_y + 29 + 15 * i}" fill="#b71c1c">{_e(s)}</text>'
                             for i, s in enumerate(lines)) + "</g>")  # fmt: skip
    lx = 10
    for kind, name in _LEGEND:
        out.append(f'<rect x="{lx}" y="{legend_y + 4}" width="14" height="14" rx="7" '
                   f'fill="{COLORS[kind]}" stroke="#37474f"/>'
                   f'<text x="{lx + 18}" y="{legend_y + 15}" fill="#333">{_e(name)}</text>')  # fmt: skip
        lx += 30 + int(6.3 * len(name))
    step = f.get("last_step")
    caption = (f"after {STEP_NAMES[step]}" if step else "before the first step") + (
        " — refused" if bad else " — could not run" if failed else ""
    )
    out.append(f'<text id="caption" x="10" y="20" font-weight="bold">{_e(caption)}</text>')
    out.append("</svg>")
    return "".join(out)


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)
