"""What the notebooks show: tables, plots, audio players.

The notebooks stay thin (no functions of their own): every picture and
table they show is made here, so it is tested and the same in every
notebook; ``omg train``/``evaluate``/``reproduce`` save the same figures as
PNG. Functions return matplotlib figures (outside pyplot), IPython display
objects or plain dicts; nothing here changes state (but for telling IPython,
once, to show figures as PNG).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from omg_ta.commands import SAMPLE_RATE


def _figure(width: float, height: float):
    """A figure outside pyplot: no backend is chosen or changed (notebooks keep theirs),
    it shows in Jupyter as the cell's value, and ``savefig`` writes it anywhere."""
    from matplotlib.figure import Figure

    _png_in_ipython()
    return Figure(figsize=(width, height), dpi=100)


def _png_in_ipython() -> None:
    """Inside IPython, show figures as PNG (pyplot would do it on import; we never import it)."""
    import sys

    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and not getattr(shell, "_omgkit_png", False):
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(shell, {"png"}, bbox_inches="tight")
        shell._omgkit_png = True


# -- tables -------------------------------------------------------------------


def table(rows: Mapping[str, Any] | Iterable[Mapping[str, Any]], title: str | None = None):
    """A Markdown table from a dict (two columns) or from a list of dicts (one row each)."""
    from IPython.display import Markdown

    return Markdown((f"**{title}**\n\n" if title else "") + "\n".join(_table_lines(rows)))


def _cell(v: Any) -> str:
    """A table cell: numbers rounded, a dict as ``key: value`` pairs and a list joined (not
    their Python repr), and Markdown's specials escaped (``_silence_`` and ``__init__`` were
    set in italics and bold)."""
    if isinstance(v, bool) or v is None:
        text = str(v)
    elif isinstance(v, float):
        text = f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    elif isinstance(v, Mapping):
        text = "; ".join(f"{k}: {_plain(x)}" for k, x in v.items())
    elif isinstance(v, (list, tuple, set)):
        text = ", ".join(_plain(x) for x in v)
    elif isinstance(v, bytes):
        text = v.hex() if len(v) <= 32 else f"{v[:16].hex()}… ({len(v):,} bytes)"
    else:
        text = str(v)
    text = text.replace("\n", " ")
    for ch in "\\`*_[]<>|":
        text = text.replace(ch, "\\" + ch)
    return text


def _plain(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bytes):
        return v.hex() if len(v) <= 32 else f"{v[:16].hex()}… ({len(v):,} bytes)"
    return str(v)


def _table_lines(rows: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[str]:
    cell = _cell

    if isinstance(rows, Mapping):
        return ["| | |", "| --- | --- |"] + [f"| {cell(k)} | {cell(v)} |" for k, v in rows.items()]
    rows = list(rows)
    cols = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + " --- |" * len(cols)]
    return lines + ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]


def corpus_counts(ds) -> list[dict[str, Any]]:
    """Clips per engine and split (the silence class is cut from noise: engine 'noise')."""
    out: dict[str, dict[str, Any]] = {}
    for it in ds.items:
        row = out.setdefault(
            it.engine, {"engine": it.engine, "training": 0, "validation": 0, "testing": 0}
        )
        row[it.split] += 1
    return [out[e] for e in sorted(out)]


# -- audio and features --------------------------------------------------------


def example_clips(ds, words: Iterable[str] = ("yes", "no", "up", "stop"), split: str = "testing",
                  per_word: int = 1) -> dict[str, np.ndarray]:  # fmt: skip
    """A few int16 clips of ``split``, named ``word (engine)``.

    A word is a label (``yes``, ``_silence_``, ...) or an unknown word's directory (``dog``).
    """
    out: dict[str, np.ndarray] = {}
    pool = ds.select(split)
    for w in words:
        if w in ds.labels:
            items = [it for it in pool if it.label == ds.labels.index(w)]
        else:
            items = [it for it in pool if Path(it.path).parts[0] == w]
        items = items[:per_word]
        if items:
            audio, _ = ds.load(items)
            for k, (it, a) in enumerate(zip(items, audio, strict=True)):
                out[f"{w} ({it.engine})" + (f" #{k + 1}" if per_word > 1 else "")] = a
    return out


def listen(clips: Mapping[str, np.ndarray]):
    """Audio players, one per clip, with their names."""
    from IPython.display import HTML, Audio

    rows = "".join(
        f"<tr><td style='padding-right:1em'>{name}</td><td>{Audio(a, rate=SAMPLE_RATE)._repr_html_()}</td></tr>"
        for name, a in clips.items()
    )
    return HTML(f"<table>{rows}</table>")


def plot_clips(clips: Mapping[str, np.ndarray], frontend=None):
    """Waveform over features (MFCC or filterbank) for each clip."""
    from omg_ta.frontend import Frontend

    fe = Frontend(frontend)
    n = len(clips)
    fig = _figure(3.2 * n, 4.2)
    axes = fig.subplots(2, n, squeeze=False)
    for i, (name, a) in enumerate(clips.items()):
        t = np.arange(a.size) / SAMPLE_RATE
        axes[0, i].plot(t, a.astype(np.float32) / 32768, lw=0.5)
        axes[0, i].set_title(name, fontsize=9)
        axes[0, i].set_ylim(-1, 1)
        axes[0, i].set_xlabel("s")
        f = fe(a[None, :])[0]
        axes[1, i].imshow(f.T, aspect="auto", origin="lower", cmap="magma")
        axes[1, i].set_xlabel("frame (20 ms)")
        axes[1, i].set_ylabel(fe.settings.kind)
    fig.tight_layout()
    return fig


def plot_recording(audio: np.ndarray, label: str | None = None):
    """A recording's waveform over its spectrogram (25 ms Hann windows, 10 ms hop, dB)."""
    a = np.asarray(audio, dtype=np.float32).reshape(-1) / 32768
    win, hop = 400, 160
    frames = max(1, 1 + (a.size - win) // hop)
    x = np.stack([a[i * hop : i * hop + win] for i in range(frames)]) if a.size >= win else \
        np.zeros((1, win), np.float32)  # fmt: skip
    spec = 20 * np.log10(np.abs(np.fft.rfft(x * np.hanning(win), axis=1)) + 1e-6)
    fig = _figure(6.4, 3.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(np.arange(a.size) / SAMPLE_RATE, a, lw=0.5)
    top.set_ylim(-1, 1)
    top.set_ylabel("amplitude")
    top.set_title(f"the TA says: {label!r}" if label is not None else "recording", fontsize=10)
    bottom.imshow(spec.T, aspect="auto", origin="lower", cmap="magma", vmin=spec.max() - 80,
                  extent=(0, a.size / SAMPLE_RATE, 0, SAMPLE_RATE / 2000))  # fmt: skip
    bottom.set_ylabel("kHz")
    bottom.set_xlabel("s")
    fig.tight_layout()
    return fig


def two_worlds(walkthrough):
    """The walkthrough's picture of the two worlds now (``omgkit.picture``), for a notebook."""
    from IPython.display import SVG

    from .picture import two_worlds_svg

    return SVG(two_worlds_svg(walkthrough.facts()))


def png(fig) -> bytes:
    """A figure as PNG bytes (for an image widget)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


# -- training and evaluation ----------------------------------------------------


def plot_history(run_or_history: str | os.PathLike | Mapping[str, list[float]]):
    """Learning curves (loss and accuracy, training and validation) of a run or a history dict."""
    h = run_or_history
    if not isinstance(h, Mapping):
        h = json.loads((Path(h) / "history.json").read_text())
    fig = _figure(9, 3.2)
    a, b = fig.subplots(1, 2)
    for ax, key in ((a, "loss"), (b, "accuracy")):
        ax.plot(h[key], label="training")
        ax.plot(h[f"val_{key}"], label="validation")
        ax.set_title(key)
        ax.set_xlabel("epoch")
    b.set_ylim(0, 1.01)
    b.legend()
    fig.tight_layout()
    return fig


def quantization_table(run_dir: str | os.PathLike, ev: Mapping[str, Any]) -> list[dict[str, Any]]:
    """float32 against int8: size and accuracy per split."""
    from .kws.run import RunDir

    sizes = RunDir(run_dir).manifest().section("convert").get("sizes", {})
    rows = []
    for q in ("float32", "int8"):
        acc = ev["accuracy"][q]
        rows.append({"model": q, "bytes": sizes.get(q, ""), "test": acc.get("testing"),
                     "validation": acc.get("validation"),
                     f"held out ({ev.get('heldout_engine')})": acc.get("heldout", "—")})  # fmt: skip
    return rows


def draw_confusion(ax, m: np.ndarray, title: str, labels: Iterable[str]) -> None:
    """A row-normalised confusion matrix with clip counts, on ``ax``; ``labels`` name the classes."""
    m = np.asarray(m)
    labels = list(labels)
    rows = m / np.maximum(1, m.sum(axis=1, keepdims=True))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i, j in zip(*np.nonzero(m), strict=True):
        ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                color="white" if rows[i, j] > 0.5 else "black")  # fmt: skip


def plot_confusion(m: np.ndarray, title: str, *, labels: Iterable[str]):
    fig = _figure(6.4, 5.6)
    draw_confusion(fig.subplots(), m, title, labels)
    fig.tight_layout()
    return fig


def plot_confusions(ev: Mapping[str, Any]):
    """float32 and int8 on the test split, side by side."""
    mats = {q: np.asarray(ev[f"confusion_{q}_testing"]) for q in ("float32", "int8")
            if f"confusion_{q}_testing" in ev}  # fmt: skip
    fig = _figure(6 * len(mats), 5.4)
    axes = fig.subplots(1, len(mats), squeeze=False)
    for ax, (q, m) in zip(axes[0], mats.items(), strict=True):
        draw_confusion(ax, m, f"{q}: accuracy {np.trace(m) / max(1, m.sum()):.4f}", ev["labels"])
    fig.tight_layout()
    return fig


# -- the guard's artefacts -------------------------------------------------------


def entropy_bits_per_byte(blob: bytes) -> float:
    """Shannon entropy of the byte histogram (8.0 for uniformly random bytes)."""
    counts = np.bincount(np.frombuffer(blob, np.uint8), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def plot_bytes(blobs: Mapping[str, bytes]):
    """Byte histograms with their entropy: a model has structure, its ciphertext looks random."""
    fig = _figure(4.6 * len(blobs), 3)
    axes = fig.subplots(1, len(blobs), squeeze=False, sharey=True)
    for ax, (name, blob) in zip(axes[0], blobs.items(), strict=True):
        counts = np.bincount(np.frombuffer(blob, np.uint8), minlength=256)
        ax.bar(range(256), counts / max(1, len(blob)), width=1.0)
        ax.axhline(1 / 256, color="k", lw=0.6, ls="--")
        ax.set_yscale("log")
        ax.set_title(
            f"{name}\n{len(blob)} bytes, {entropy_bits_per_byte(blob):.3f} bits/byte", fontsize=9
        )
        ax.set_xlabel("byte value")
    axes[0, 0].set_ylabel("share (dashed: uniform)")
    fig.tight_layout()
    return fig


def package_info(package: bytes) -> dict[str, Any]:
    """The sealed package's public header (what anyone holding the file can read)."""
    from omg_ta.package import parse_header

    h, _, body = parse_header(package)
    return {"model id": h.model_id, "model version": h.model_version, "runtime": h.runtime,
            "labels": ", ".join(h.labels), "plaintext bytes": h.pt_len,
            "plaintext SHA-256": h.pt_sha256.hex()[:16] + "…", "segments (AES-256-GCM)": h.num_segments,
            "signed header bytes": body, "encrypted body bytes": len(package) - body}  # fmt: skip


def token_claims(token: bytes) -> dict[str, Any]:
    """An attestation token's claims, decoded WITHOUT verification: for eyes only (the vendor verifies)."""
    import time

    from omg_ta import cose

    from .tee import token as tok

    msg = cose.parse_sign1(token)
    d = cose.loads(msg.payload)
    return {
        "nonce (the vendor's, single use)": d[tok.NONCE].hex()[:16] + "…",
        "device id": d[tok.UEID][1:].hex(),
        "issued at (TEE clock)": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d[tok.IAT])),
        "TA measurement": d[tok.MEASUREMENT].hex(),
        "TA key-transport keys": ", ".join(sorted(d.get(tok.TA_KEYS, {}))),
        "TEE version": d[tok.TEE_VERSION],
        "certificate chain": f"{len(msg.unprotected.get(cose.H_X5CHAIN, []))} (device, manufacturer)",
    }


def license_info(blob: bytes, vendor_public_key) -> dict[str, Any]:
    """A license's fields and policy, after checking the vendor's signature."""
    import time

    from omg_ta import license as lic

    x = lic.parse(blob, vendor_public_key)
    p = x.policy
    return {"license id": x.license_id.hex(), "model": f"{x.model_id} v{x.model_version}",
            "device id": x.device_id.hex(), "TA measurement": x.measurement.hex()[:16] + "…",
            "issued": time.strftime("%Y-%m-%d %H:%M", time.gmtime(x.issued_at)),
            "expires": time.strftime("%Y-%m-%d %H:%M", time.gmtime(p.not_after)),
            "min version": p.min_version, "budget": p.budget or "unlimited",
            "scores leave the TA": p.scores, "key transport": x.kem,
            "wrapped model key": f"{len(x.wrapped_key)} bytes (HPKE; only the TA can open it)"}  # fmt: skip


def attack_table(outcomes) -> list[dict[str, Any]]:
    return [{"attack": o.attack.name, "what the attacker does": o.attack.what,
             "outcome": "blocked" if o.blocked else "NOT BLOCKED", "error": o.error or "—",
             "why": o.attack.why} for o in outcomes]  # fmt: skip


# -- benchmark --------------------------------------------------------------------


def bench_figures(bench: Mapping[str, Any]):
    """(each ratio with its 95 % interval against its target, where a guarded clip's time goes)."""
    from .bench import TARGETS

    rts = list(bench["runtimes"])
    parts = (("single", "one clip"), ("streaming_mic", "streaming"), ("batch", "batch"))
    f1 = _figure(7.5, 0.45 * len(rts) * len(parts) + 1.2)
    ax = f1.subplots()
    rows = [
        (rt, part, label) for rt in rts for part, label in parts if part in bench["runtimes"][rt]
    ]
    for y, (rt, part, _label) in enumerate(rows):
        m = bench["runtimes"][rt][part]
        lo, hi = m.get("ratio_ci95") or (m["ratio"], m["ratio"])
        key = {"single": f"operation_ratio_{rt}" if rt != "litert" else "operation_ratio_litert_single",
               "batch": f"operation_ratio_{rt}_batch" if rt != "litert" else "operation_ratio_litert_batch",
               }.get(part)  # fmt: skip
        target = TARGETS.get(key) if key else None
        color = "0.45" if target is None else ("tab:green" if hi <= target else "tab:red")
        ax.errorbar(
            m["ratio"],
            y,
            xerr=[[m["ratio"] - lo], [hi - m["ratio"]]],
            fmt="o",
            color=color,
            capsize=3,
        )
        if target is not None:
            ax.plot([target, target], [y - 0.35, y + 0.35], color=color, lw=2)
        c = m.get("cpu_ratio")
        if c is not None:
            ax.plot(c, y, marker="x", color="tab:blue", ls="none")
    ax.axvline(1.0, color="0.7", lw=1)
    ax.set_yticks(range(len(rows)), [f"{rt}: {label}" for rt, _, label in rows])
    ax.invert_yaxis()
    ax.set_xlabel("guarded / plain (● wall time, 95 % interval; × CPU time; | target: green = met)")
    f1.tight_layout()
    from .tee.trace import STAGES

    with_b = [rt for rt in rts if (bench["runtimes"][rt].get("breakdown") or {}).get("requests")]
    f2 = _figure(7.5, 0.6 * max(1, len(with_b)) + 1.6)
    ax = f2.subplots()
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    for y, rt in enumerate(with_b):
        st = bench["runtimes"][rt]["breakdown"]["stages"]
        left = 0.0
        for i, (_, stage, _) in enumerate(STAGES):
            v = st[stage]["median_us"] / 1000
            ax.barh(y, v, left=left, color=cmap(i), label=stage if y == 0 else None)
            left += v
    ax.set_yticks(range(len(with_b)), with_b)
    ax.invert_yaxis()
    ax.set_xlabel("one guarded clip, ms (median of each stage, measured by tracing)")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    f2.tight_layout()
    return f1, f2


def plot_conditions(ev: Mapping[str, Any], title: str = ""):
    """int8 accuracy per condition (``omg evaluate --conditions``), test split and held-out
    engine, float32 as a tick, issue 15's targets as red marks. ``ev``: an evaluation (or its
    ``conditions``)."""
    from .kws.conditions import TARGETS

    conditions = ev.get("conditions", ev)
    names = list(conditions)
    fig = _figure(7.5, 0.32 * len(names) + 1.8)
    ax = fig.add_subplot()
    yy = np.arange(len(names))[::-1]
    test = [conditions[n].get("int8", np.nan) for n in names]
    ax.barh(yy + 0.18, test, 0.36, label="int8, test split", color="#3b6ea8")
    held = [conditions[n].get("heldout", {}).get("int8", np.nan) for n in names]
    if not all(np.isnan(held)):
        ax.barh(yy - 0.18, held, 0.36, label="int8, held-out engine", color="#e0a040")
    f32 = [conditions[n].get("float32", np.nan) for n in names]
    ax.plot(f32, yy + 0.18, "k|", ms=9, label="float32, test split")
    tg = [(TARGETS[n], y) for n, y in zip(names, yy, strict=True) if n in TARGETS]
    if tg:
        ax.plot([t for t, _ in tg], [y for _, y in tg], "rv", ms=6, label="target")
    ax.set_yticks(yy, names)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("accuracy")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
