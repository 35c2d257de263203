"""omgkit.show: what the notebooks display, checked without a notebook."""

from __future__ import annotations

import numpy as np

from omgkit import show


def test_entropy_tells_ciphertext_from_a_model(tiny_run):
    assert show.entropy_bits_per_byte(bytes(1000)) == 0.0
    rnd = np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    assert show.entropy_bits_per_byte(rnd) > 7.99
    model = (tiny_run / "model_int8.tflite").read_bytes()
    assert show.entropy_bits_per_byte(model) < 7.5
    fig = show.plot_bytes({"model": model, "random": rnd})
    assert len(fig.axes) == 2 and "bits/byte" in fig.axes[0].get_title()


def test_table_from_a_dict_and_from_rows():
    md = show.table({"a|b": 0.123456, "n": 3}, title="t").data
    assert md.startswith("**t**") and "| a\\|b | 0.1235 |" in md and "| n | 3 |" in md
    md = show.table([{"x": 1, "y": 2.5}, {"x": 3, "y": 40.25}]).data
    assert md.splitlines()[0] == "| x | y |" and "| 3 | 40.2 |" in md


def test_figures_stay_outside_pyplot(tiny_run):
    """Library figures must not go through pyplot (which would pick or switch a notebook's backend)."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = show.plot_history(tiny_run)
    assert len(fig.axes) == 2 and plt.get_fignums() == before


def test_table_cells_survive_markdown_and_show_no_python_reprs():
    """`_silence_` was set in italics, `__init__` in bold, dicts shown as their repr (issue 14)."""
    from omgkit.show import table

    md = table({"classes": ["_silence_", "_unknown_"], "module": "__init__", "policy": {"budget": None,
                "scores": False}, "pipe": "a|b", "hash": bytes(range(40)), "ms": 3.14159265})._repr_markdown_()  # fmt: skip
    assert "\\_silence\\_, \\_unknown\\_" in md and "\\_\\_init\\_\\_" in md
    assert (
        "budget: None; scores: False" in md and "{" not in md and "[" not in md.replace("\\[", "")
    )
    assert "a\\|b" in md and "3.1416" in md and "… (40 bytes)" in md
