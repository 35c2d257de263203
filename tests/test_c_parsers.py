"""The C core's parsers (ta/optee/core: cbor.c, cose.c, package.c, license.c)
against the Python ones: the vectors, specific refusals, a short differential
fuzz run and one run of the fuzz script under ASan+UBSan.

The C side may refuse more than Python (it is stricter: duplicate keys,
trailing bytes, tags, non-canonical encodings, booleans for integers, ...),
never less; where both accept, every field is equal.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys

import cbor2
import pytest
from conftest import CORE_BUILD, REPO

LIB = CORE_BUILD / "libomgcore.so"
ASAN_LIB = LIB.with_name("libomgcore-asan.so")
FUZZ = REPO / "benchmarks" / "fuzz_c_parsers.py"


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_c_parsers", FUZZ)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_c_parsers"] = mod
    spec.loader.exec_module(mod)
    return mod


fz = _load_fuzz()
MAX_DEPTH, MAX_ITEMS, MAX_PAIRS = fz.MAX_DEPTH, fz.MAX_ITEMS, fz.MAX_PAIRS
PKG, LIC, TOK = fz.PACKAGE_INTEGRITY, fz.LICENSE_INVALID, fz.TOKEN_INVALID


@pytest.fixture(scope="session")
def lib(core_lib):
    return fz.load_library(LIB)


def _vectors() -> dict[str, bytes]:
    v = fz._vectors()
    v["payload"] = fz._payload_of(v["license"])
    return v


VEC = _vectors()
HLEN = int.from_bytes(VEC["package"][8:12], "big")


def both(lib, parser: str, data: bytes, extra: int = 0):
    """(C status, C fields), (Python accepted, Python fields)."""
    if parser == "sign1" and not extra:
        extra = LIC
    c = fz.c_run(lib, parser, data, extra)
    py = fz.py_run(parser, data, extra)
    return c, py


def assert_same(lib, parser: str, data: bytes, extra: int = 0) -> dict:
    (c_st, c_fields), (py_ok, py_fields, _) = both(lib, parser, data, extra)
    assert py_ok, "Python refuses it"
    assert c_st == 0, f"C refuses it ({c_st:#x})"
    assert fz.compare(parser, c_fields, py_fields) is None, (c_fields, py_fields)
    return c_fields


def assert_c_refuses(
    lib, parser: str, data: bytes, extra: int = 0, *, python: bool | None = None
) -> None:
    """C refuses with the parser's code; python=True/False also says what Python does."""
    (c_st, _), (py_ok, _, _) = both(lib, parser, data, extra)
    want = {"package": PKG, "license": LIC, "sign1": extra or LIC, "cbor": 1}[parser]
    assert c_st == want, f"C answers {c_st:#x}, not {want:#x}"
    if python is not None:
        assert py_ok == python


def _license_payload(**changes) -> dict:
    d = cbor2.loads(VEC["payload"])
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for k, v in changes.items():
        if "." in k:
            a, b = k.split(".")
            if v is _DEL:
                del d[a][b]
            else:
                d[a][b] = v
        elif v is _DEL:
            del d[k]
        else:
            d[k] = v
    return d


def _header(**changes) -> dict:
    hlen = int.from_bytes(VEC["package"][8:12], "big")
    d = dict(cbor2.loads(VEC["package"][12 : 12 + hlen]))
    d["input"] = {"frontend": dict(d["input"]["frontend"])}
    for k, v in changes.items():
        if k.startswith("fe."):
            d["input"]["frontend"][k[3:]] = v
        elif v is _DEL:
            del d[k]
        else:
            d[k] = v
    return d


_DEL = object()


def _pkg(header: dict | bytes) -> bytes:
    raw = header if isinstance(header, bytes) else fz.enc(header)
    return fz.frame_package(raw)


def _sign1(
    prot=None, unprot=None, payload=b"p", sig=bytes(64), tagged=True, prot_raw=None
) -> bytes:
    prot = {1: -8} if prot is None else prot
    return fz.build_sign1(prot, unprot or {}, payload, sig, tagged, prot_raw=prot_raw)


# --- the vectors ---------------------------------------------------------------


def test_struct_mirrors_match_the_c_layout(tmp_path):
    """The ctypes mirrors of the fuzz script have the C structs' offsets and sizes."""
    structs = {"omg_pkg_header": fz.PkgHeader, "omg_sign1": fz.Sign1, "omg_license": fz.License,
               "omg_fe_settings": fz.FeSettings, "omg_cbor_item": fz.CborItem, "omg_cbor_reader": fz.CborReader}  # fmt: skip
    lines = []
    for cname, cls in structs.items():
        lines.append(f'printf("{cname} sizeof %zu\\n", sizeof({cname}));')
        for f, *_ in cls._fields_:
            lines.append(f'printf("{cname} {f} %zu\\n", offsetof({cname}, {f}));')
    src = tmp_path / "layout.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "cbor.h"\nint main(void) {\n'
                   + "\n".join(lines) + "\nreturn 0;\n}\n")  # fmt: skip
    exe = tmp_path / "layout"
    subprocess.run(
        ["cc", "-std=c11", "-I", str(REPO / "ta/optee/core"), "-o", str(exe), str(src)], check=True
    )
    got = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    for line in got:
        cname, field, value = line.split()
        cls = structs[cname]
        want = ctypes_sizeof(cls) if field == "sizeof" else getattr(cls, field).offset
        assert int(value) == want, line


def ctypes_sizeof(cls) -> int:
    import ctypes

    return ctypes.sizeof(cls)


def test_vectors_are_accepted_with_python_fields(lib):
    h = assert_same(lib, "package", VEC["package"])
    assert h["body_offset"] == 78 + HLEN and h["labels"] == [b"a", b"b"] and h["model_version"] == 3
    assert h["frontend"]["kind"] == 0 and h["frontend"]["window_ms"] == (40.0).hex()  # the defaults
    for name, code in (("license", LIC), ("token", TOK)):
        s = assert_same(lib, "sign1", VEC[name], code)
        assert len(s["signature"]) == 64
    lic = assert_same(lib, "license", VEC["payload"])
    v = json.loads((REPO / "data/vectors/license.json").read_text())
    assert lic["device_id"].hex() == v["device_id"] and lic["measurement"].hex() == v["measurement"]
    assert lic["budget"] is None and lic["min_version"] == 2 and lic["kem"] == b"X25519"
    for data in (VEC["license"], VEC["token"], VEC["payload"], VEC["package"][12 : 12 + HLEN]):
        assert fz.c_run(lib, "cbor", data, fz.CBOR_TAG18)[0] == 0
    assert fz.c_run(lib, "cbor", VEC["payload"], fz.CBOR_CANONICAL)[0] == 0


def test_kid_is_taken_from_either_bucket(lib):
    assert assert_same(lib, "sign1", _sign1({1: -8, 4: b"k1"}))["kid"] == b"k1"
    assert assert_same(lib, "sign1", _sign1(unprot={4: b"k2"}))["kid"] == b"k2"
    assert assert_same(lib, "sign1", _sign1())["kid"] is None  # absent: NULL
    assert assert_same(lib, "sign1", _sign1({1: -8, 4: b""}))["kid"] == b""  # present, empty
    assert assert_same(lib, "sign1", _sign1(tagged=False))["payload"] == b"p"
    chain = [b"cert-1", b"cert-2"]
    assert (
        assert_same(lib, "sign1", _sign1(unprot={33: chain, "note": [1, {2: 3}]}))["payload"]
        == b"p"
    )


def test_absent_frontend_keys_mean_the_same_in_both_parsers(lib):
    from omg_ta.frontend import FrontendSettings

    h = assert_same(lib, "package", _pkg(_header(input={})))
    # an absent key means what it meant before the key existed, in both parsers
    assert h["frontend"] == fz._fe_py(FrontendSettings.from_dict({}))
    assert h["frontend"]["log_floor"] == (0.0).hex() != (FrontendSettings().log_floor).hex()
    micro = FrontendSettings.micro_speech().to_dict()
    h = assert_same(lib, "package", _pkg(_header(input={"frontend": micro, "shape": [1, 49, 40]})))
    assert h["frontend"]["kind"] == 1 and h["frontend"]["lower_hz"] == (125.0).hex()
    # cbor2 writes 40.0 as a half float, 1e-6 as a double; integers are taken for floats
    h = assert_same(
        lib, "package", _pkg(_header(**{"fe.window_ms": 30, "fe.log_offset": 0, "fe.log_floor": 1}))
    )
    assert h["frontend"]["window_ms"] == (30.0).hex()
    # Python's round(): 30.03125 ms at 16 kHz is 480.5 samples, rounded to 480 (even)
    assert_same(lib, "package", _pkg(_header(**{"fe.window_ms": 30.03125})))


# --- refusals -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["package", "license", "token", "payload"])
def test_truncation_at_every_byte_is_refused(lib, name):
    data = VEC[name]
    parser = {"package": "package", "payload": "license"}.get(name, "sign1")
    extra = TOK if name == "token" else 0
    end = 78 + HLEN if name == "package" else len(data)  # the segments are not the header's
    for n in range(end):
        assert_c_refuses(lib, parser, data[:n], extra, python=False)
        if parser != "package":
            assert fz.c_run(lib, "cbor", data[:n], fz.CBOR_TAG18)[0] == 1
    assert_same(lib, parser, data[:end], extra)


def test_declared_length_beyond_the_buffer_is_refused(lib):
    for data in (b"\x5a\xff\xff\xff\xff" + b"abc", b"\x7b" + b"\xff" * 8 + b"a", b"\x9b" + b"\xff" * 8 + b"\x01",
                 b"\xbb" + b"\xff" * 8 + b"\x01\x01", b"\x42a"):  # fmt: skip
        assert_c_refuses(lib, "cbor", data, python=False)
    # the license's wrapped key declared 64 KiB long, in a payload of a few hundred bytes
    payload = VEC["payload"]
    i = payload.index(b"wrapped_key") + len(b"wrapped_key")
    assert payload[i] == 0x58
    bad = payload[:i] + b"\x5a\x00\x01\x00\x00" + payload[i + 2 :]
    assert_c_refuses(lib, "license", bad, python=False)
    assert_c_refuses(
        lib, "sign1", _sign1(payload=fz.Raw(b"\x5a\x00\x10\x00\x00" + bytes(10))), python=False
    )
    pkg = VEC["package"]
    for hlen in (HLEN + 1, len(pkg), 2**32 - 1, fz.MAX_HEADER + 1):
        assert_c_refuses(lib, "package", pkg[:8] + struct.pack(">I", hlen) + pkg[12:], python=False)


def test_nesting_deeper_than_the_limit_is_refused(lib):
    ok, deep = b"\x81" * MAX_DEPTH + b"\x01", b"\x81" * (MAX_DEPTH + 1) + b"\x01"
    assert fz.c_run(lib, "cbor", ok, 0)[0] == 0
    assert_c_refuses(lib, "cbor", deep, python=True)  # cbor2 goes to 400
    assert_c_refuses(lib, "cbor", b"\xa1\x01" * (MAX_DEPTH + 1) + b"\x01", python=True)
    # in a license: the payload map is the first level
    assert_same(
        lib, "license", fz.enc(_license_payload(x=fz.Raw(b"\x81" * (MAX_DEPTH - 1) + b"\x01")))
    )
    assert_c_refuses(
        lib,
        "license",
        fz.enc(_license_payload(x=fz.Raw(b"\x81" * MAX_DEPTH + b"\x01"))),
        python=True,
    )
    # in a COSE_Sign1: tag, array, unprotected map, then the value
    assert_same(lib, "sign1", _sign1(unprot={5: fz.Raw(b"\x81" * (MAX_DEPTH - 3) + b"\x01")}))
    assert_c_refuses(
        lib, "sign1", _sign1(unprot={5: fz.Raw(b"\x81" * (MAX_DEPTH - 2) + b"\x01")}), python=True
    )
    assert_c_refuses(lib, "cbor", b"\x81" * 500 + b"\x01", python=False)  # both refuse


def test_too_many_items_are_refused(lib):
    # the array's head is an item too
    assert fz.c_run(lib, "cbor", fz.enc([0] * (MAX_ITEMS - 1)), 0)[0] == 0
    assert_c_refuses(lib, "cbor", fz.enc([0] * MAX_ITEMS), python=True)
    assert_c_refuses(lib, "cbor", fz.head(4, MAX_ITEMS + 5) + bytes(MAX_ITEMS + 5), python=True)
    assert fz.c_run(lib, "cbor", fz.enc({i: 0 for i in range(MAX_PAIRS)}), 0)[0] == 0
    assert_c_refuses(lib, "cbor", fz.enc({i: 0 for i in range(MAX_PAIRS + 1)}), python=True)
    assert_c_refuses(lib, "license", fz.enc(_license_payload(x=[0] * MAX_ITEMS)), python=True)
    labels = [f"l{i}" for i in range(fz.MAX_LABELS)]
    assert assert_same(lib, "package", _pkg(_header(labels=labels)))["labels"][-1] == b"l63"
    assert_c_refuses(lib, "package", _pkg(_header(labels=[*labels, "x"])), python=True)
    assert_c_refuses(
        lib, "package", _pkg(_header(labels=["x" * (fz.MAX_LABEL_LEN + 1)])), python=True
    )


def test_duplicate_keys_are_refused(lib):
    """cbor2 keeps the last of two equal keys; the C core refuses the map."""
    pairs = [(k, v) for k, v in cbor2.loads(VEC["payload"]).items()]
    dup = fz.Pairs([*pairs, ("model_version", 4)])  # not canonical either
    assert_c_refuses(lib, "license", fz.enc(dup), python=True)
    dup_sorted = sorted([(fz.Raw(fz.enc(k)), fz.Raw(fz.enc(v))) for k, v in [*pairs, ("v", 1)]],
                        key=lambda kv: (len(kv[0]), bytes(kv[0])))  # fmt: skip
    assert_c_refuses(lib, "license", fz.enc(fz.Pairs(dup_sorted)), python=True)
    hpairs = sorted([(fz.Raw(fz.enc(k)), fz.Raw(fz.enc(v))) for k, v in [*_header().items(), ("v", 1)]],
                    key=lambda kv: (len(kv[0]), bytes(kv[0])))  # fmt: skip
    assert_c_refuses(lib, "package", _pkg(fz.enc(fz.Pairs(hpairs))), python=True)
    # COSE is not canonical: keys compare by value, 1 and 0x18 0x01 are one key
    assert_c_refuses(lib, "sign1", _sign1(prot_raw=b"\xa2\x01\x27\x18\x01\x27"), python=True)
    assert_c_refuses(lib, "sign1", _sign1(unprot=fz.Raw(b"\xa2\x04\x41k\x04\x41k")), python=True)
    assert_c_refuses(lib, "cbor", b"\xa2\x61a\x01\x61a\x02", python=True)


@pytest.mark.parametrize("change,python", [
    ({"v": 2}, False), ({"v": "1"}, False), ({"v": True}, True), ({"license_id": bytes(15)}, False),
    ({"measurement": "x" * 32}, False), ({"model_version": -1}, True), ({"model_id": "m" * 129}, True),
    ({"issued_at": 2**63}, True), ({"issued_at": 1.5}, False), ({"policy.scores": 1}, False),
    ({"policy.budget": -1}, False), ({"policy.budget": True}, True), ({"policy.not_after": _DEL}, False),
    ({"kem": "X448"}, False), ({"kem": b"X25519"}, False), ({"wrapped_key": _DEL}, False),
    ({"policy": [1, 2]}, False), ({"device_id": "dev"}, False),
])  # fmt: skip
def test_license_with_wrong_types_is_refused(lib, change, python):
    assert_c_refuses(lib, "license", fz.enc(_license_payload(**change)), python=python)


def test_license_fields_python_also_takes(lib):
    lic = assert_same(
        lib, "license", fz.enc(_license_payload(**{"policy.budget": _DEL, "extra": {"a": [1]}}))
    )
    assert lic["budget"] is None
    lic = assert_same(
        lib,
        "license",
        fz.enc(_license_payload(**{"policy.budget": 2**64 - 1, "issued_at": -(2**63)})),
    )
    assert lic["budget"] == 2**64 - 1 and lic["issued_at"] == -(2**63)


@pytest.mark.parametrize("change,python", [
    ({"v": 2}, False), ({"labels": ["a", 1]}, False), ({"pt_sha256": bytes(31)}, False),
    ({"nonce_prefix": bytes(8)}, False), ({"seg_size": 0}, False), ({"pt_len": -1}, False),
    ({"input": [1]}, False), ({"runtime": _DEL}, False), ({"model_version": True}, True),
    ({"model_version": -3}, True), ({"fe.sample_rate": 16000.0}, True), ({"fe.num_coefficients": True}, True),
    ({"fe.stride": 1}, False), ({"fe.kind": "stft"}, False), ({"fe.lower_hz": 5000.0}, False),
    ({"fe.hop_ms": 0.01}, False), ({"fe.window_ms": 2000.0}, False), ({"fe.num_coefficients": 41}, False),
    ({"fe.log_offset": float("nan"), "fe.log_floor": 5e-3}, True), ({"fe.upper_hz": float("inf")}, False),
    ({"fe.log_offset": 0}, False), ({"fe.log_offset": 0.0, "fe.log_floor": 0.0}, False),
    ({"fe.window_ms": 1e308}, False), ({"fe.log_offset": 2**22 + 1}, True), ({"fe.clip_ms": 1000.0}, True),
])  # fmt: skip
def test_package_with_wrong_types_is_refused(lib, change, python):
    assert_c_refuses(lib, "package", _pkg(_header(**change)), python=python)


def test_package_framing(lib):
    pkg = VEC["package"]
    assert_c_refuses(lib, "package", b"OMGPKG\x00\x02" + pkg[8:], python=False)
    for slen in (63, 65, 0):
        assert_c_refuses(
            lib,
            "package",
            pkg[: 12 + HLEN] + struct.pack(">H", slen) + pkg[14 + HLEN :],
            python=False,
        )
    # a header of exactly OMG_MAX_HEADER bytes is taken, one more is not
    for extra, ok in ((0, True), (1, False)):
        want = fz.MAX_HEADER + extra
        pad = want - len(fz.enc(_header(pad=b"")))
        for _ in range(3):  # the pad's head grows with it
            raw = fz.enc(_header(pad=bytes(pad)))
            pad += want - len(raw)
        assert len(raw) == want
        if ok:
            assert assert_same(lib, "package", _pkg(raw))["body_offset"] == 78 + fz.MAX_HEADER
        else:
            assert_c_refuses(lib, "package", _pkg(raw), python=False)


def test_signature_must_be_64_bytes(lib):
    assert_same(lib, "sign1", _sign1(sig=bytes(64)))
    for n in (63, 65, 0):
        assert_c_refuses(lib, "sign1", _sign1(sig=bytes(n)), python=False)
    assert_c_refuses(lib, "sign1", _sign1(sig="x" * 64), python=False)


@pytest.mark.parametrize("prot,unprot,python", [
    ({1: -7}, {}, False), ({}, {}, False), ({4: b"k"}, {}, False), ({1: -8.0}, {}, True),
    ({1: -8, 4: b"a"}, {4: b"b"}, True), ({1: -8, 4: "kid"}, {}, True), ({1: -8}, {1: -8}, True),
    ({1: -8}, {33: [1]}, True), ({1: -8}, {33: []}, True), ({1: -8}, {1.5: 0}, True),
])  # fmt: skip
def test_cose_headers(lib, prot, unprot, python):
    assert_c_refuses(lib, "sign1", _sign1(prot, unprot), TOK, python=python)


def test_cose_shape(lib):
    for obj in (
        [b"\xa1\x01\x27", {}, b"p"],
        [b"\xa1\x01\x27", {}, b"p", bytes(64), 0],
        {1: 2},
        b"x",
    ):
        assert_c_refuses(lib, "sign1", fz.enc(cbor2.CBORTag(18, obj)), python=False)
    assert_c_refuses(
        lib,
        "sign1",
        fz.enc(cbor2.CBORTag(98, [b"\xa1\x01\x27", {}, b"p", bytes(64)])),
        python=False,
    )
    assert_c_refuses(
        lib, "sign1", fz.enc(cbor2.CBORTag(55799, cbor2.loads(VEC["license"]))), python=False
    )  # only COSE's tag passes either side
    assert_c_refuses(lib, "sign1", _sign1(payload=None), python=False)  # detached: not ours
    assert_c_refuses(lib, "sign1", _sign1(prot_raw=b""), python=False)
    trailing = _sign1(prot_raw=b"\xa1\x01\x27\x00")
    assert_c_refuses(lib, "sign1", trailing, python=False)


def test_trailing_bytes_are_refused(lib):
    """cbor2.loads ignores what follows the first item; the C core does not, nor does Python's
    bound check before cbor2 (``omg_ta.cbor_limits``)."""
    for name in ("license", "token"):
        assert_c_refuses(lib, "sign1", VEC[name] + b"\x00", python=False)
    assert_c_refuses(lib, "license", VEC["payload"] + b"\x01", python=False)
    assert_c_refuses(lib, "cbor", b"\x01\x02", python=False)
    raw = VEC["package"][12 : 12 + HLEN] + b"\x00"
    assert_c_refuses(lib, "package", _pkg(raw), python=False)


def test_other_strictness(lib):
    # not canonical: a wider head, keys out of order (the license is signed canonical)
    assert_c_refuses(lib, "license", fz.edit_head_width(_RngFirst(), VEC["payload"]), python=True)
    items = list(cbor2.loads(VEC["payload"]).items())
    assert_c_refuses(lib, "license", cbor2.dumps(dict(reversed(items))), python=True)
    # indefinite lengths, tags other than COSE's, broken UTF-8, two-byte simple values < 32
    assert_c_refuses(lib, "cbor", b"\x5f\x41a\xff", python=True)
    assert_c_refuses(lib, "cbor", b"\xc2\x41\x01", python=False)
    for bad in (
        b"\x62\xc0\x80",
        b"\x63\xed\xa0\x80",
        b"\x64\xf4\x90\x80\x80",
        b"\x61\x80",
        b"\xf8\x10",
    ):
        assert_c_refuses(lib, "cbor", bad, python=False)
    assert fz.c_run(lib, "cbor", b"\x64\xf0\x9f\x8e\x89", 0)[1] == ("str", "🎉")
    half_subnormal = fz.c_run(lib, "cbor", b"\xf9\x00\x01", 0)[1]
    assert half_subnormal == ("float", (2.0**-24).hex())


class _RngFirst:
    def choice(self, seq):
        return seq[0]


def test_messages_up_to_the_size_limit(lib):
    head = b"\xd2\x84" + fz.enc(b"\xa1\x01\x27") + b"\xa0"  # 18([protected, {}, ...
    sig = fz.enc(bytes(64))
    n = fz.MAX_MESSAGE - len(head) - len(sig) - 5  # a bstr of n bytes has a 5-byte head
    msg = head + fz.head(2, n, 4) + bytes(n) + sig
    assert len(msg) == fz.MAX_MESSAGE
    assert_same(lib, "sign1", msg)
    msg = head + fz.head(2, n + 1, 4) + bytes(n + 1) + sig
    assert_c_refuses(lib, "sign1", msg, python=False)


def test_failure_leaves_the_output_zeroed(lib):
    import ctypes

    h = fz.PkgHeader()
    pkg = VEC["package"]
    b = ctypes.create_string_buffer(pkg, len(pkg))
    assert lib.omg_package_parse_header(b, len(pkg), ctypes.byref(h)) == 0 and h.num_labels == 2
    bad = pkg[: -1 - len(pkg) + 78 + HLEN]
    b = ctypes.create_string_buffer(bad, len(bad))
    assert lib.omg_package_parse_header(b, len(bad), ctypes.byref(h)) == PKG
    assert bytes(h) == bytes(ctypes.sizeof(h))
    s = fz.Sign1()
    assert lib.omg_cose_parse_sign1(None, 0, TOK, ctypes.byref(s)) == TOK
    assert lib.omg_cose_parse_sign1(b"\x01", 1, 0, ctypes.byref(s)) != 0  # OMG_OK is no error code
    assert lib.omg_license_parse_payload(None, 5, None) == LIC


# --- differential fuzzing -----------------------------------------------------------


def test_short_differential_run(lib):
    rep = fz.fuzz(300, seed=20260, lib_path=LIB, isolate=True, timeout=30)
    for name, r in rep["parsers"].items():
        assert r["inputs"] == 300, name
        assert r["python_only_refuses"] == 0, (name, r["python_only_examples"])
        assert r["field_mismatches"] == 0 and r["wrong_result_code"] == 0, (
            name,
            r["mismatch_examples"],
        )
        assert r["crashes"] == 0 and r["hangs"] == 0, (
            name,
            r["crash_examples"],
            r["hang_examples"],
        )
        # the inputs reach both sides
        assert r["both_accept"] > 30 and r["both_refuse"] > 30, (name, r)
        # a C-only refusal none of the C core's rules explains: C refusing valid input
        assert r["c_only_unexplained"] == 0, (name, r["unexplained_examples"])


def test_fuzz_script_under_asan(lib, asan_env, tmp_path):
    out = tmp_path / "asan.json"
    env = asan_env
    r = subprocess.run([sys.executable, str(FUZZ), "--n", "200", "--seed", "11", "--asan", "--json", str(out)],
                       env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.exists(), r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert rep["asan"] and rep["library"] == str(ASAN_LIB)
    assert rep["asan_selftest"]["caught"], rep["asan_selftest"]  # an overread would be seen
    for name, p in rep["parsers"].items():
        assert p["inputs"] == 200, name
        assert p["crashes"] == 0 and p["hangs"] == 0, (
            name,
            p["crash_examples"],
            p["hang_examples"],
        )
        assert p["python_only_refuses"] == 0 and p["field_mismatches"] == 0, name
        assert p["c_only_unexplained"] == 0, (name, p["unexplained_examples"])
    assert r.returncode == 0, r.stdout + r.stderr
