"""A short run of benchmarks/fuzz.py: every parser and service, a few hundred hostile inputs each.

Only OmgError may leave a parser; a service answers every frame or request
exactly once and stays up. The full run (10,000 inputs each) is
``python benchmarks/fuzz.py --n 10000 --json out.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

FUZZ = REPO / "benchmarks" / "fuzz.py"
N = 300


def test_fuzz_finds_no_escape_crash_or_hang(tmp_path):
    out = tmp_path / "fuzz.json"
    r = subprocess.run([sys.executable, str(FUZZ), "--n", str(N), "--seed", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.exists(), r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert set(rep["parsers"]) == {"package", "license", "token", "cose", "cbor", "sealed", "tee_wire",
                                   "agent", "vendor_http", "wav"}  # fmt: skip
    bad = {}
    for name, p in rep["parsers"].items():
        assert p["inputs"] == N, name
        assert p["accepted"] and p["refused"], (
            name,
            "the inputs should reach past the first check",
        )
        found = {
            k: p[k]
            for k in ("escapes", "crashes", "hangs", "bad_replies", "harness_errors")
            if p[k]
        }
        if found:
            bad[name] = {**found, "escape_types": p["escape_types"],
                         "reproduce": sorted({e["reproduce"] for e in p["examples"]})[:4]}  # fmt: skip
    assert not bad, json.dumps(bad, indent=1)
    assert rep["ok"] and r.returncode == 0, r.stdout[-2000:]
