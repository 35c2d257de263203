"""The paired design of `omg bench` (omgkit.stats) and its stage breakdown (omgkit.tee.trace)."""

from __future__ import annotations

import numpy as np
import pytest

from omgkit.stats import block_report, paired_ratio, run_pairs, spread
from omgkit.tee import trace


def test_paired_ratio_finds_a_known_ratio_and_its_interval_covers_it():
    rng = np.random.default_rng(1)
    plain = 3e-3 * (1 + 0.02 * rng.standard_normal(60))
    guarded = plain * 1.02 * (1 + 0.005 * rng.standard_normal(60))
    r = paired_ratio(guarded, plain)
    lo, hi = r["ci95"]
    assert lo < 1.02 < hi and lo < r["ratio"] < hi
    assert abs(r["ratio"] - 1.02) < 0.003 and r["pairs"] == 60
    # four times the pairs: about half the width
    plain4 = 3e-3 * (1 + 0.02 * rng.standard_normal(240))
    guarded4 = plain4 * 1.02 * (1 + 0.005 * rng.standard_normal(240))
    assert paired_ratio(guarded4, plain4)["half_width"] < 0.7 * r["half_width"]


def test_pairing_cancels_drift_that_a_side_by_side_median_does_not():
    """A machine that slows down by 30 % during the run: plain measured first, guarded after,
    would show an overhead of ~15 %; alternating pairs see the true 2 %."""
    t = np.linspace(0, 1, 80)
    speed = 1 + 0.3 * t
    plain, guarded = 3e-3 * speed, 3e-3 * 1.02 * speed
    unpaired = np.median(guarded[40:]) / np.median(plain[:40])
    assert unpaired > 1.15
    r = paired_ratio(guarded, plain)
    assert (
        r["ci95"][0] <= 1.02 + 1e-9
        and r["ci95"][1] >= 1.02 - 1e-9
        and abs(r["ratio"] - 1.02) < 1e-9
    )


def test_paired_ratio_refuses_what_it_cannot_pair():
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0])
    with pytest.raises(ValueError):
        paired_ratio([1.0, 0.0], [1.0, 1.0])


def test_run_pairs_draws_the_order_and_block_report_gives_each_repeat():
    calls = []

    def side(name, wall):
        def fn():
            calls.append(name)
            return wall, wall / 2

        return fn

    b = run_pairs(40, side("g", 1.1e-3), side("p", 1e-3), seed=3)
    firsts = b["guarded_first"]
    assert 5 < sum(firsts) < 35  # both orders occur
    for i, first in enumerate(firsts):  # and the calls followed the drawn order
        assert calls[2 * i : 2 * i + 2] == (["g", "p"] if first else ["p", "g"])
    rep = block_report(b, [i // 20 for i in range(40)])
    assert rep["wall"]["repeats"] == pytest.approx([1.1, 1.1]) and rep["cpu"][
        "ratio"
    ] == pytest.approx(1.1)
    assert rep["wall"]["repeat_spread"] == pytest.approx(0.0, abs=1e-12)
    assert spread([1.0, 1.02, 1.01]) == pytest.approx(0.02 / 1.01)


def test_trace_breakdown_measures_each_stage_and_skips_incomplete_requests():
    names = [trace.FIRST] + [s[0] for s in trace.STAGES]
    marks, t = [], 1_000_000
    for _ in range(3):
        for i, name in enumerate(names):
            t += 1000 * (i + 1)  # stage i lasts i+1 µs... after the first mark
            marks.append((name, t))
        t += 50_000
    marks.append((trace.FIRST, t + 1))  # a request whose other marks never came
    marks.append(("c.copied", t + 2))
    b = trace.breakdown(list(reversed(marks)))  # processes' marks come in any order
    assert b["requests"] == 3
    for i, (_, stage, _) in enumerate(trace.STAGES):
        assert b["stages"][stage]["median_us"] == pytest.approx(i + 2)
    assert b["total_median_us"] == pytest.approx(sum(i + 2 for i in range(len(trace.STAGES))))


def test_trace_is_off_by_default_and_bounded():
    assert trace.on is False
    trace.mark("c.begin")
    assert trace.take() == []
    trace.enable(True)
    try:
        for _ in range(trace.MAX_MARKS + 10):
            trace.mark("x")
        assert len(trace.take()) == trace.MAX_MARKS
    finally:
        trace.enable(False)
