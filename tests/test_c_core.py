"""The TA's C core as a host library: the contract header, the frontend, the maths, the plan.

The engine and the parsers have files of their own (test_c_engine.py,
test_c_parsers.py); this one checks what the rest of the core shares.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import HOSTLIB, REPO, run_omg

from omg_ta import commands as C
from omg_ta.errors import ConfigError
from omg_ta.frontend import WHEN_ABSENT, Frontend, FrontendSettings


def _header_defines() -> dict[str, int]:
    text = (REPO / "ta/optee/include/omg_ta.h").read_text()
    out = {}
    for m in re.finditer(r"^#define\s+(OMG_\w+)\s+(0x[0-9A-Fa-f]+|\d+)\b", text, re.M):
        out[m.group(1)] = int(m.group(2), 0)
    return out


def test_the_c_header_mirrors_the_contract_field_by_field():
    h = _header_defines()
    py = {k: v for k, v in vars(C).items() if k.isupper() and type(v) is int}
    expected = {f"OMG_{k}": v for k, v in py.items()}
    expected |= {f"OMG_SIG_CMD_{k.upper()}": C.SIGNATURES[v] for k, v in C.COMMANDS.items()}
    assert h == expected  # every value, and nothing more or less
    text = (REPO / "ta/optee/include/omg_ta.h").read_text()
    assert f'"{C.TA_UUID}"' in text
    f = C.TA_UUID.fields
    clock = [f[3], f[4], *f[5].to_bytes(6, "big")]
    uuid_c = re.search(r"#define OMG_TA_UUID \\\s*\{(.*?)\}\s*\}", text, re.S).group(1)
    nums = [int(x, 0) for x in re.findall(r"0x[0-9a-fA-F]+", uuid_c)]
    assert nums == [f[0], f[1], f[2], *clock]
    for name in ("BUNDLE_SIG_FILE", "VENDOR_KEY_FILE"):
        assert f'#define OMG_{name}\t"{getattr(C, name)}"' in text


def test_the_core_imports_nothing_a_ta_lacks(core_lib):
    r = subprocess.run(["make", "-s", "-C", str(HOSTLIB), "check"], capture_output=True, text=True)
    assert r.returncode == 0 and "core imports:" in r.stdout
    imported = set(r.stdout.split(":", 1)[1].split())
    assert imported <= {"memcpy", "memset", "memmove", "memcmp"}


def _fn(lib, name, res, *args):
    f = getattr(lib, name)
    f.restype, f.argtypes = res, list(args)
    return f


def test_fmath_is_within_a_few_ulp_of_libm(core_lib):
    d = ctypes.c_double
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(1e-300, 1e300, 200), rng.uniform(1e-6, 1e6, 2000),
                         np.geomspace(5e-324, 1.7e308, 500), [1.0, 2.0, 0.5, 1e-310]])  # fmt: skip
    log = _fn(core_lib, "omg_log", d, d)
    got = np.array([log(x) for x in xs])
    assert np.max(np.abs(got - np.log(xs)) / np.spacing(np.abs(np.log(xs)) + 1e-300)) <= 4
    log1p = _fn(core_lib, "omg_log1p", d, d)
    small = np.concatenate([rng.uniform(0, 20, 2000), np.geomspace(1e-18, 1e3, 300)])
    got = np.array([log1p(x) for x in small])
    assert np.max(np.abs(got - np.log1p(small)) / np.spacing(np.log1p(small))) <= 4
    ang = np.concatenate([rng.uniform(-40, 40, 4000), np.arange(-64, 65) * np.pi / 4])
    for name, ref in (("omg_sin", np.sin), ("omg_cos", np.cos)):
        f = _fn(core_lib, name, d, d)
        got = np.array([f(x) for x in ang])
        assert np.max(np.abs(got - ref(ang))) <= 4 * np.spacing(1.0), name
    rint = _fn(core_lib, "omg_rint", d, d)
    halves = np.arange(-10, 10) + 0.5
    assert [rint(x) for x in halves] == list(np.round(halves))  # half to even, as numpy


def test_quantize_is_the_workbenchs(core_lib):
    from omg_ta import ccore
    from omg_ta.runtime import _Quant

    rng = np.random.default_rng(1)
    scale, zp = 0.0378, -11
    x = np.concatenate([rng.normal(0, 3, 5000), (np.arange(-300, 300) + 0.5) * scale,
                        [1e9, -1e9, 0.0, -0.0]]).astype(np.float32)  # fmt: skip
    ref = _Quant({"dtype": np.int8, "quantization": (scale, zp)}).to_model(x)
    assert np.array_equal(ccore.quantize(x, scale, zp), ref)


@pytest.fixture(scope="module")
def clips(tiny_corpus):
    from omgkit.kws.dataset import load_dataset

    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.select("testing"))
    rng = np.random.default_rng(2)
    loud = np.clip(rng.standard_normal((4, C.CLIP_SAMPLES)) * 20000, -32768, 32767).astype(np.int16)
    edge = np.array([np.zeros(C.CLIP_SAMPLES), np.full(C.CLIP_SAMPLES, 32767),
                     np.full(C.CLIP_SAMPLES, -32768)]).astype(np.int16)  # fmt: skip
    return np.concatenate([x, loud, edge])


#: The C frontend computes in double like numpy; both round to float32 at the end.
FEATURE_TOLERANCE = 1e-5


#: the frontend of runs made before log_floor existed: an additive offset, no clamp
OFFSET_ONLY = dataclasses.replace(FrontendSettings(), **WHEN_ABSENT)


@pytest.mark.parametrize("settings", [FrontendSettings(), FrontendSettings.micro_speech(), OFFSET_ONLY],
                         ids=["mfcc", "logmel", "mfcc-offset-only"])  # fmt: skip
def test_c_frontend_matches_numpy(core_lib, clips, settings):
    from omg_ta import ccore

    cfe = ccore.CFrontend(settings)
    assert cfe.shape == settings.shape
    ref, got = Frontend(settings)(clips), cfe(clips)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.max(np.abs(got.astype(np.float64) - ref)) <= FEATURE_TOLERANCE


def test_a_log_floor_hides_one_lsb_in_silence_in_both_frontends(core_lib):
    """log(max(E, 1e-2)) gives digital silence and ±1 LSB of noise the same features, in
    numpy and in C; the additive offset does not, and the default clamp (5e-3) lets them
    differ by less than the offset does (issue 15)."""
    from omg_ta import ccore

    silence = np.zeros((3, C.CLIP_SAMPLES), np.int16)
    lsb = np.random.default_rng(0).integers(-1, 2, silence.shape).astype(np.int16)
    floor = FrontendSettings(log_offset=0.0, log_floor=1e-2)
    for fe in (Frontend(floor), ccore.CFrontend(floor)):
        assert np.array_equal(fe(silence), fe(lsb))
    for impl in (Frontend, ccore.CFrontend):
        moved = {name: float(np.max(np.abs(impl(s)(silence) - impl(s)(lsb))))
                 for name, s in (("offset", OFFSET_ONLY), ("default", FrontendSettings()))}  # fmt: skip
        assert 0 < moved["default"] < moved["offset"] / 2, (impl, moved)


def test_c_frontend_refuses_what_python_refuses(core_lib):
    from omg_ta import ccore

    bad = [dict(kind="mfcc", lower_hz=5000.0, upper_hz=4000.0), dict(kind="mfcc", num_coefficients=41),
           dict(kind="mfcc", window_ms=2000.0), dict(kind="logmel", hop_ms=0.0),
           dict(kind="mfcc", log_offset=0.0, log_floor=0.0)]  # fmt: skip
    for kw in bad:
        with pytest.raises(ConfigError):
            FrontendSettings(**kw)
        s = object.__new__(FrontendSettings)  # the same values, past Python's own check
        for k, v in {**FrontendSettings().to_dict(), **kw}.items():
            object.__setattr__(s, k, v)
        with pytest.raises(ConfigError, match="need|must|out of range"):
            ccore.CFrontend(s)
    with pytest.raises(ConfigError, match="int16 clips of 16000"):
        ccore.CFrontend(FrontendSettings())(np.zeros((1, 100), np.int16))


def test_the_stack_is_bounded_and_measured(core_lib):
    from omg_ta import ccore

    n = ccore.stack_bytes()
    assert 256 < n < 16 * 1024  # the core's deepest chain, from GCC's call graph


def test_the_frontend_under_asan_and_ubsan(asan_env, clips, tmp_path):
    """The same calls through the sanitized build, in a process of its own."""
    np.save(tmp_path / "clips.npy", clips[:6])
    code = f"""
import numpy as np
from omg_ta import ccore
from omg_ta.frontend import FrontendSettings
x = np.load({str(tmp_path / "clips.npy")!r})
for s in (FrontendSettings(), FrontendSettings.micro_speech(),
          FrontendSettings(log_offset=1e-2, log_floor=0.0)):  # OFFSET_ONLY
    ccore.CFrontend(s)(x)
print("ok")
"""
    r = subprocess.run(
        [sys.executable, "-c", code], env=asan_env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_omg_plan_says_whether_a_run_fits(core_lib, tiny_run, tmp_path):
    out = tmp_path / "plan.json"
    r = run_omg("plan", "--run", str(tiny_run), "--json", str(out))
    d = json.loads(out.read_text())
    assert d["fits"] is True and "fits" in r.stdout
    assert d["ta_heap_bytes"] <= 256 * 1024  # the target for DS-CNN-S
    assert 0 < d["arena_bytes"] < d["ta_heap_bytes"] and d["ta_stack_bytes"] > 0
    small = run_omg("plan", "--run", str(tiny_run), "--target", "optee-example", check=False)
    assert small.returncode == 1 and "does NOT fit" in small.stdout


def test_the_plan_targets_the_tas_own_limits():
    """`omg plan --target optee-qemu` compares with the TA's TA_DATA_SIZE and TA_STACK_SIZE."""
    import re

    from omgkit.tee.plan import TARGETS

    text = (REPO / "ta/optee/ta/include/user_ta_header_defines.h").read_text()
    heap = int(re.search(r"TA_DATA_SIZE\s+\((\d+) \* 1024\)", text).group(1)) * 1024
    stack = int(re.search(r"TA_STACK_SIZE\s+\((\d+) \* 1024\)", text).group(1)) * 1024
    t = TARGETS["optee-qemu"]
    assert (t.ta_heap_bytes, t.ta_stack_bytes) == (heap, stack)


def test_the_ta_build_lists_every_core_source():
    """The OP-TEE TA compiles core/ through core/sub.mk: a file added to the core is listed there."""
    import re

    listed = set(re.findall(r"(\w+\.c)", (REPO / "ta/optee/core/sub.mk").read_text()))
    assert listed == {p.name for p in (REPO / "ta/optee/core").glob("*.c")}
