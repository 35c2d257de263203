"""Where a guarded request's time goes: timestamps of its stages, off by default.

``omg bench`` turns tracing on for a few requests after its paired
measurement (never during it) and reads where the time went, measured, not
subtracted: the normal world marks its steps here, the emulated TEE core
and the TA's process theirs (an invoke the core traces carries a flag to
the TA's process, which keeps its marks until the core takes them), and
the core hands all over on the hardware socket's ``trace`` op, as a
development board's trace port would: the normal world of a product has
no such port. Every mark is ``(stage, time.perf_counter_ns())``: ``CLOCK_MONOTONIC``,
one clock for every process on the machine, so marks of different
processes compare. Off, a mark costs one test of a flag.

Stages of a classify request with audio in shared memory (``STAGES``),
each the time from the previous mark to its own.
"""

from __future__ import annotations

import time

on = False
_marks: list[tuple[str, int]] = []
MAX_MARKS = 1 << 16
"""Marks kept at most (tracing left on must not grow without bound)."""

STAGES = (
    # (mark ending the stage, stage, what it is)
    (
        "c.copied",
        "copy_to_shared_memory",
        "the normal world copies the clip into the shared window",
    ),
    ("c.framed", "request_framing", "the client builds and encodes the invoke request"),
    ("k.received", "to_core", "socket to the TEE core, which reads and bounds-checks the frame"),
    ("k.to_ta", "core_checks", "the core checks the parameters and the session"),
    (
        "t.entry",
        "to_ta",
        "the core's channel to the TA's process, which decodes and maps the window",
    ),
    ("t.checked", "ta_checks", "the TA checks types, sizes, state and budget"),
    ("t.frontend", "frontend", "the TA's audio frontend"),
    ("t.model", "model", "the TA's inference runtime"),
    ("t.reply", "reply_encoding", "the TA encodes the labels"),
    ("k.from_ta", "ta_to_core", "the TA's reply to the core"),
    ("c.received", "core_to_client", "the core's reply to the client, decoded"),
    ("c.end", "result_decoding", "the client decodes the labels"),
)
FIRST = "c.begin"


def enable(flag: bool = True) -> None:
    """Turn tracing on (the marks so far are dropped) or off (they stay, for :func:`take`)."""
    global on, _marks
    if flag:
        _marks = []
    on = flag


def mark(stage: str) -> None:
    if on:
        m = _marks
        if len(m) < MAX_MARKS:
            m.append((stage, time.perf_counter_ns()))


def take() -> list[tuple[str, int]]:
    """The marks so far (and forget them), in one swap: a mark made meanwhile is not lost."""
    global _marks
    out, _marks = _marks, []
    return out


def breakdown(marks: list[tuple[str, int]]) -> dict:
    """Per-stage durations of the requests in ``marks`` (any processes', merged).

    Marks are sorted by time and cut into requests at each ``c.begin``; a
    request counts only if it has every stage's mark, in order. Returns
    ``{"requests": n, "stages": {stage: {"median_us", "mean_us"}}, "total_median_us"}``.
    """
    import statistics

    ms = sorted(marks, key=lambda m: m[1])
    reqs: list[list[tuple[str, int]]] = []
    for name, t in ms:
        if name == FIRST:
            reqs.append([(name, t)])
        elif reqs:
            reqs[-1].append((name, t))
    order = [FIRST] + [s[0] for s in STAGES]
    per: dict[str, list[float]] = {s[1]: [] for s in STAGES}
    totals = []
    n = 0
    for r in reqs:
        seen = {}
        for name, t in r:
            seen.setdefault(name, t)
        if [
            name for name, _ in sorted(seen.items(), key=lambda kv: kv[1]) if name in order
        ] != order:
            continue
        n += 1
        prev = seen[FIRST]
        for end, stage, _ in STAGES:
            per[stage].append((seen[end] - prev) / 1000)
            prev = seen[end]
        totals.append((prev - seen[FIRST]) / 1000)
    if not n:
        return {"requests": 0, "stages": {}, "total_median_us": None}
    return {"requests": n,
            "stages": {s: {"median_us": statistics.median(v), "mean_us": statistics.fmean(v)}
                       for s, v in per.items()},
            "total_median_us": statistics.median(totals)}  # fmt: skip
