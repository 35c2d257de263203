#!/usr/bin/env python3
"""Differential fuzzing of the C core's parsers against the Python ones.

For each parser of ``ta/optee/core`` (the package header, COSE_Sign1, the
license payload and the bounded CBOR decoder on its own) this makes N inputs
from the test vectors and from valid messages built with cbor2 (bit flips,
truncations, splices, length-field edits, random CBOR, deep nesting, huge
declared lengths, duplicate keys, wrong types, extra keys, non-canonical
encodings, tags) and runs each through the C parser and its Python reference:

    package  omg_package_parse_header   package.parse_header + FrontendSettings.from_dict
    sign1    omg_cose_parse_sign1       cose.parse_sign1
    license  omg_license_parse_payload  license.parse_payload
    cbor     omg_cbor_check (+ walk)    cose.loads (cbor2)

C must refuse everything Python refuses (``python_only_refuses`` must be 0);
it may refuse more (``c_only_refuses``), but each such refusal must be one of
the C core's documented rules, which this script finds again (else it counts
in ``c_only_unexplained``, which must be 0: C refusing valid input); where
both accept, every field must be equal (``field_mismatches`` must be 0). The C side runs in a worker subprocess, so a
crash or a hang is recorded against the input that caused it; with
``--asan`` the worker loads the ASan+UBSan build (``make -C ta/optee/hostlib
asan``) under ``LD_PRELOAD`` of libasan.

    python benchmarks/fuzz_c_parsers.py --n 10000 --json out.json [--seed S] [--asan]

Exit status 1 if any parser has a Python-only refusal, an unexplained C-only
refusal, a field mismatch, a wrong result code, a crash or a hang. The worker imports nothing but the standard library.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pickle
import random
import re
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE_H = REPO / "ta" / "optee" / "core" / "omg_core.h"
CBOR_H = REPO / "ta" / "optee" / "core" / "cbor.h"
TA_H = REPO / "ta" / "optee" / "include" / "omg_ta.h"
BUILD = REPO / "ta" / "optee" / "build" / "host"
PARSERS = ("package", "sign1", "license", "cbor")


def _defines(*paths: Path) -> dict[str, int]:
    """The integer #defines of the C headers (limits and result codes)."""
    out: dict[str, int] = {}
    for path in paths:
        for m in re.finditer(
            r"^#define\s+(OMG_\w+)\s+([^/\n]+?)\s*(?:/\*.*)?$", path.read_text(), re.M
        ):
            expr = m.group(2).rstrip("uU")
            if re.fullmatch(r"[0-9a-fA-FxX()<>* +-]+", expr):
                out[m.group(1)] = int(eval(expr, {"__builtins__": {}}))  # digits and operators only
    return out


D = _defines(CORE_H, CBOR_H, TA_H)
MAX_LABELS, MAX_LABEL_LEN, MAX_ID_LEN = (
    D["OMG_MAX_LABELS"],
    D["OMG_MAX_LABEL_LEN"],
    D["OMG_MAX_ID_LEN"],
)
MAX_DEPTH, MAX_ITEMS = D["OMG_MAX_CBOR_DEPTH"], D["OMG_MAX_CBOR_ITEMS"]
MAX_HEADER, MAX_MESSAGE = D["OMG_MAX_HEADER"], D["OMG_MAX_MESSAGE"]
PACKAGE_INTEGRITY = D["OMG_RESULT_PACKAGE_INTEGRITY"]
LICENSE_INVALID, TOKEN_INVALID = D["OMG_RESULT_LICENSE_INVALID"], D["OMG_RESULT_TOKEN_INVALID"]
CBOR_CANONICAL, CBOR_TAG18, MAX_PAIRS = (
    D["OMG_CBOR_CANONICAL"],
    D["OMG_CBOR_TAG18"],
    D["OMG_CBOR_MAX_PAIRS"],
)
FE_MAX_INT = 1 << 22  # package.c: integers given for float settings

# ---------------------------------------------------------------------------
# ctypes mirrors of the C structs (omg_core.h, cbor.h)
# ---------------------------------------------------------------------------

c_u8, c_u32, c_u64, c_i32, c_i64 = (
    ctypes.c_uint8,
    ctypes.c_uint32,
    ctypes.c_uint64,
    ctypes.c_int32,
    ctypes.c_int64,
)


class Bytes(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class FeSettings(ctypes.Structure):
    _fields_ = [("kind", c_i32), ("sample_rate", c_i32), ("clip_ms", c_i32), ("window_ms", ctypes.c_double),
                ("hop_ms", ctypes.c_double), ("num_mel_bins", c_i32), ("num_coefficients", c_i32),
                ("lower_hz", ctypes.c_double), ("upper_hz", ctypes.c_double),
                ("log_offset", ctypes.c_double), ("log_floor", ctypes.c_double)]  # fmt: skip


class PkgHeader(ctypes.Structure):
    _fields_ = [("model_id", Bytes), ("model_version", c_u64), ("runtime", Bytes), ("frontend", FeSettings),
                ("num_labels", c_u32), ("labels", Bytes * MAX_LABELS), ("pt_sha256", c_u8 * 32),
                ("pt_len", c_u64), ("seg_size", c_u64), ("nonce_prefix", c_u8 * 7), ("header_raw", Bytes),
                ("signed_prefix", Bytes), ("signature", Bytes), ("body_offset", ctypes.c_size_t)]  # fmt: skip


class Sign1(ctypes.Structure):
    _fields_ = [("protected_raw", Bytes), ("kid", Bytes), ("payload", Bytes), ("signature", Bytes)]


class License(ctypes.Structure):
    _fields_ = [("license_id", c_u8 * 16), ("model_id", Bytes), ("model_version", c_u64), ("device_id", Bytes),
                ("measurement", c_u8 * 32), ("issued_at", c_i64), ("not_after", c_i64), ("min_version", c_i64),
                ("has_budget", ctypes.c_bool), ("budget", c_u64), ("scores", ctypes.c_bool), ("kem", Bytes),
                ("wrapped_key", Bytes)]  # fmt: skip


class CborItem(ctypes.Structure):
    _fields_ = [("type", c_u32), ("arg", c_u64), ("f", ctypes.c_double), ("str", Bytes),
                ("start", ctypes.c_size_t), ("head_len", ctypes.c_size_t), ("shortest", ctypes.c_bool)]  # fmt: skip


class CborReader(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("len", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


(T_UINT, T_NINT, T_BSTR, T_TSTR, T_ARRAY, T_MAP, T_TAG, T_SIMPLE, T_FALSE, T_TRUE, T_NULL, T_UNDEFINED,
 T_FLOAT) = range(13)  # fmt: skip


def library_path(asan: bool = False) -> Path:
    env = os.environ.get("OMG_CORE_LIB")
    if env:
        return Path(env)
    return BUILD / ("libomgcore-asan.so" if asan else "libomgcore.so")


def load_library(path: Path | str) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    P, S, u32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32
    sigs = {
        "omg_package_parse_header": ([P, S, ctypes.POINTER(PkgHeader)], u32),
        "omg_cose_parse_sign1": ([P, S, u32, ctypes.POINTER(Sign1)], u32),
        "omg_license_parse_payload": ([P, S, ctypes.POINTER(License)], u32),
        "omg_cbor_check": ([P, S, u32], ctypes.c_bool),
        "omg_cbor_head": ([ctypes.POINTER(CborReader), ctypes.POINTER(CborItem)], ctypes.c_bool),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


# ---------------------------------------------------------------------------
# The C side: each input copied into its own malloc'd block (exactly its
# size, so ASan sees a read one byte too far), parsed, fields read back.
# ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None)
_libc.malloc.restype, _libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
_libc.free.restype, _libc.free.argtypes = None, [ctypes.c_void_p]


class OutOfInput(Exception):
    """A pointer the C parser returned does not point into its input."""


class _Input:
    def __init__(self, data: bytes):
        self.data, self.n = data, len(data)
        self.p = _libc.malloc(self.n) or _libc.malloc(1)
        if not self.p:
            raise MemoryError
        ctypes.memmove(self.p, data, self.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _libc.free(self.p)

    def take(self, b: Bytes, *, none_if_null: bool = False) -> bytes | None:
        if not b.ptr:
            if none_if_null:
                return None
            if b.len:
                raise OutOfInput("NULL with a length")
            return b""
        off = b.ptr - self.p
        if off < 0 or off + b.len > self.n:
            raise OutOfInput(f"bytes at {off}+{b.len} of a {self.n}-byte input")
        return self.data[off : off + b.len]


def _fe_fields(s: FeSettings) -> dict:
    return {"kind": s.kind, "sample_rate": s.sample_rate, "clip_ms": s.clip_ms, "window_ms": s.window_ms.hex(),
            "hop_ms": s.hop_ms.hex(), "num_mel_bins": s.num_mel_bins, "num_coefficients": s.num_coefficients,
            "lower_hz": s.lower_hz.hex(), "upper_hz": s.upper_hz.hex(), "log_offset": s.log_offset.hex(),
            "log_floor": s.log_floor.hex()}  # fmt: skip


def c_package(lib, data: bytes, extra: int = 0) -> tuple[int, dict | None]:
    with _Input(data) as b:
        h = PkgHeader()
        st = lib.omg_package_parse_header(b.p, b.n, ctypes.byref(h))
        if st:
            return st, None
        if h.num_labels > MAX_LABELS:
            raise OutOfInput(f"num_labels {h.num_labels}")
        return st, {
            "model_id": b.take(h.model_id), "model_version": h.model_version, "runtime": b.take(h.runtime),
            "frontend": _fe_fields(h.frontend), "labels": [b.take(h.labels[i]) for i in range(h.num_labels)],
            "pt_sha256": bytes(h.pt_sha256), "pt_len": h.pt_len, "seg_size": h.seg_size,
            "nonce_prefix": bytes(h.nonce_prefix), "header_raw": b.take(h.header_raw),
            "signed_prefix": b.take(h.signed_prefix), "signature": b.take(h.signature),
            "body_offset": h.body_offset,
        }  # fmt: skip


def c_sign1(lib, data: bytes, extra: int = LICENSE_INVALID) -> tuple[int, dict | None]:
    with _Input(data) as b:
        s = Sign1()
        st = lib.omg_cose_parse_sign1(b.p, b.n, extra, ctypes.byref(s))
        if st:
            return st, None
        return st, {"protected_raw": b.take(s.protected_raw), "kid": b.take(s.kid, none_if_null=True),
                    "payload": b.take(s.payload), "signature": b.take(s.signature)}  # fmt: skip


def c_license(lib, data: bytes, extra: int = 0) -> tuple[int, dict | None]:
    with _Input(data) as b:
        lc = License()
        st = lib.omg_license_parse_payload(b.p, b.n, ctypes.byref(lc))
        if st:
            return st, None
        return st, {
            "license_id": bytes(lc.license_id), "model_id": b.take(lc.model_id), "model_version": lc.model_version,
            "device_id": b.take(lc.device_id), "measurement": bytes(lc.measurement), "issued_at": lc.issued_at,
            "not_after": lc.not_after, "min_version": lc.min_version,
            "budget": lc.budget if lc.has_budget else None, "scores": bool(lc.scores),
            "kem": b.take(lc.kem), "wrapped_key": b.take(lc.wrapped_key),
        }  # fmt: skip


def _c_value(lib, b: _Input, r: CborReader):
    it = CborItem()
    if not lib.omg_cbor_head(ctypes.byref(r), ctypes.byref(it)):
        raise OutOfInput("omg_cbor_head refused a checked buffer")
    t, arg = it.type, it.arg
    if t == T_UINT:
        return ("int", arg)
    if t == T_NINT:
        return ("int", -1 - arg)
    if t == T_BSTR:
        return ("bytes", b.take(it.str))
    if t == T_TSTR:
        raw = b.take(it.str)
        try:
            return ("str", raw.decode("utf-8"))
        except UnicodeDecodeError:
            return ("invalid-utf8", raw)
    if t == T_ARRAY:
        return ("array", tuple(_c_value(lib, b, r) for _ in range(arg)))
    if t == T_MAP:
        return ("map", tuple((_c_value(lib, b, r), _c_value(lib, b, r)) for _ in range(arg)))
    if t == T_TAG:
        return ("tag", arg, _c_value(lib, b, r))
    if t in (T_FALSE, T_TRUE):
        return ("bool", t == T_TRUE)
    if t == T_NULL:
        return ("null",)
    if t == T_UNDEFINED:
        return ("undefined",)
    if t == T_SIMPLE:
        return ("simple", arg)
    if t == T_FLOAT:
        return ("float", it.f.hex())
    raise OutOfInput(f"item type {t}")


def c_cbor(lib, data: bytes, extra: int = 0) -> tuple[int, object]:
    """omg_cbor_check; if it accepts, the value as the C reader sees it."""
    with _Input(data) as b:
        if not lib.omg_cbor_check(b.p, b.n, extra):
            return 1, None
        r = CborReader(b.p, b.n, 0)
        value = _c_value(lib, b, r)
        if r.pos != b.n:
            raise OutOfInput(f"the walk ended at {r.pos} of {b.n}")
        return 0, value


C_PARSERS = {"package": c_package, "sign1": c_sign1, "license": c_license, "cbor": c_cbor}


def c_overread(lib, data: bytes, extra: int = 0) -> tuple[int, object]:
    """The self-test of --asan: omg_cbor_check told one byte more than the block holds."""
    with _Input(data) as b:
        return int(lib.omg_cbor_check(b.p, b.n + 1, 0)), None


def c_run(lib, parser: str, data: bytes, extra: int) -> tuple[int, object]:
    if parser == "overread":
        return c_overread(lib, data)
    try:
        return C_PARSERS[parser](lib, data, extra)
    except OutOfInput as e:
        return 0, {"<bad output>": str(e)}  # accepted, but its fields are wrong: a mismatch


# ---------------------------------------------------------------------------
# The Python side (imported lazily: the worker never loads it)
# ---------------------------------------------------------------------------


def _py_value(x):
    from collections.abc import Mapping

    import cbor2

    if x is None:
        return ("null",)
    if isinstance(x, bool):
        return ("bool", x)
    if isinstance(x, int):
        return ("int", x)
    if isinstance(x, float):
        return ("float", x.hex())
    if isinstance(x, bytes):
        return ("bytes", x)
    if isinstance(x, str):
        return ("str", x)
    if isinstance(x, (list, tuple)):
        return ("array", tuple(_py_value(v) for v in x))
    if isinstance(x, Mapping):
        return ("map", tuple((_py_value(k), _py_value(v)) for k, v in x.items()))
    if isinstance(x, cbor2.CBORTag):
        return ("tag", x.tag, _py_value(x.value))
    if x is cbor2.undefined:
        return ("undefined",)
    if isinstance(x, cbor2.CBORSimpleValue):
        return ("simple", x.value)
    return ("other", type(x).__name__)


def _fe_py(fe) -> dict:
    return {"kind": 0 if fe.kind == "mfcc" else 1, "sample_rate": fe.sample_rate, "clip_ms": fe.clip_ms,
            "window_ms": float(fe.window_ms).hex(), "hop_ms": float(fe.hop_ms).hex(),
            "num_mel_bins": fe.num_mel_bins, "num_coefficients": fe.num_coefficients,
            "lower_hz": float(fe.lower_hz).hex(), "upper_hz": float(fe.upper_hz).hex(),
            "log_offset": float(fe.log_offset).hex(), "log_floor": float(fe.log_floor).hex()}  # fmt: skip


def py_package(data: bytes, extra: int = 0) -> dict:
    from omg_ta.frontend import FrontendSettings
    from omg_ta.package import parse_header

    h, sig, off = parse_header(data)
    fe = FrontendSettings.from_dict(dict(h.input.get("frontend", {})))
    hlen = len(h.raw)
    return {
        "model_id": h.model_id.encode(), "model_version": h.model_version, "runtime": h.runtime.encode(),
        "frontend": _fe_py(fe), "labels": [x.encode() for x in h.labels], "pt_sha256": h.pt_sha256,
        "pt_len": h.pt_len, "seg_size": h.seg_size, "nonce_prefix": h.nonce_prefix, "header_raw": h.raw,
        "signed_prefix": bytes(data[: 12 + hlen]), "signature": sig, "body_offset": off,
    }  # fmt: skip


def py_sign1(data: bytes, extra: int = LICENSE_INVALID) -> dict:
    from omg_ta import cose
    from omg_ta.errors import LicenseInvalidError, TokenInvalidError

    m = cose.parse_sign1(data, TokenInvalidError if extra == TOKEN_INVALID else LicenseInvalidError)
    return {
        "protected_raw": m.protected_raw,
        "kid": m.kid,
        "payload": m.payload,
        "signature": m.signature,
    }


def py_license(data: bytes, extra: int = 0) -> dict:
    from omg_ta.license import parse_payload

    lc = parse_payload(data)
    p = lc.policy
    return {
        "license_id": lc.license_id, "model_id": lc.model_id.encode(), "model_version": lc.model_version,
        "device_id": lc.device_id, "measurement": lc.measurement, "issued_at": lc.issued_at,
        "not_after": p.not_after, "min_version": p.min_version, "budget": p.budget, "scores": p.scores,
        "kem": lc.kem.encode(), "wrapped_key": lc.wrapped_key,
    }  # fmt: skip


def py_cbor(data: bytes, extra: int = 0):
    from omg_ta import cose

    return _py_value(cose.loads(data))


PY_PARSERS = {"package": py_package, "sign1": py_sign1, "license": py_license, "cbor": py_cbor}
C_CODES = {"package": PACKAGE_INTEGRITY, "license": LICENSE_INVALID}


def py_run(parser: str, data: bytes, extra: int) -> tuple[bool, object, str | None]:
    """(accepted, fields, name of an exception that is not an OmgError)."""
    from omg_ta.errors import OmgError

    try:
        return True, PY_PARSERS[parser](data, extra), None
    except OmgError:
        return False, None, None
    except Exception as e:  # noqa: BLE001 - a refusal all the same; counted apart
        return False, None, type(e).__name__


# ---------------------------------------------------------------------------
# Why C refused what Python accepted: the rule of the C core, found again
# ---------------------------------------------------------------------------


def _heads(buf: bytes, pos: int = 0):
    """(offset, major, ai, arg, head_len) of each head, in order, up to the first bad one."""
    while pos < len(buf):
        ib = buf[pos]
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            arg, n = ai, 0
        elif ai <= 27:
            n = 1 << (ai - 24)
            if pos + 1 + n > len(buf):
                return
            arg = int.from_bytes(buf[pos + 1 : pos + 1 + n], "big")
        else:
            yield pos, major, ai, None, 1
            return
        yield pos, major, ai, arg, 1 + n
        pos += 1 + n
        if major in (2, 3) and ai < 28:
            pos += arg


def cbor_rule(buf: bytes, flags: int) -> str | None:
    """The first rule of cbor.h that buf breaks, or None."""
    if not buf:
        return "empty"
    if len(buf) > MAX_MESSAGE:
        return "longer than OMG_MAX_MESSAGE"
    pos, items, stack = 0, 0, []  # stack: [left, is_map, keys]
    while True:
        if pos >= len(buf):
            return "truncated"
        ib = buf[pos]
        major, ai = ib >> 5, ib & 0x1F
        if ai == 31:
            return "indefinite length"
        if ai > 27:
            return "reserved additional information"
        n = 0 if ai < 24 else 1 << (ai - 24)
        if pos + 1 + n > len(buf):
            return "truncated"
        arg = ai if ai < 24 else int.from_bytes(buf[pos + 1 : pos + 1 + n], "big")
        shortest = ai < 24 or arg >= (24, 256, 65536, 1 << 32)[ai - 24]
        start, pos = pos, pos + 1 + n
        items += 1
        if items > MAX_ITEMS:
            return "more than OMG_MAX_CBOR_ITEMS items"
        if major in (2, 3):
            if arg > len(buf) - pos:
                return "declared length beyond the buffer"
            content = buf[pos : pos + arg]
            pos += arg
            if major == 3:
                try:
                    content.decode("utf-8")
                except UnicodeDecodeError:
                    return "invalid UTF-8"
        if major == 7 and ai == 24 and arg < 32:
            return "two-byte simple value below 32"
        if flags & CBOR_CANONICAL and major != 7 and not shortest:
            return "non-shortest head (not canonical)"
        if major == 6 and not (flags & CBOR_TAG18 and items == 1 and arg == 18):
            return (
                f"tag {arg}"
                if arg in (0, 1, 2, 3, 18, 24, 28, 29, 256, 55799)
                else "tag (other number)"
            )
        if stack and stack[-1][1] and stack[-1][0] % 2 == 0:
            if major not in (0, 1, 3):
                return "map key neither integer nor text"
            key = (major, arg, buf[start:pos] if major == 3 else b"")
            if key in stack[-1][2]:
                return "duplicate map key"
            enc = buf[start:pos]
            prev = stack[-1][3]
            if flags & CBOR_CANONICAL and prev is not None and (len(enc), enc) <= (len(prev), prev):
                return "map keys not in canonical order"
            stack[-1][2].add(key)
            stack[-1][3] = enc
        if stack:
            stack[-1][0] -= 1
        if major in (4, 5, 6):
            if len(stack) >= MAX_DEPTH:
                return "nesting deeper than OMG_MAX_CBOR_DEPTH"
            if major == 5 and arg > MAX_PAIRS:
                return "more than OMG_CBOR_MAX_PAIRS pairs in a map"
            count = arg if major == 4 else 2 * arg if major == 5 else 1
            if count > len(buf) - pos:
                return "declared count beyond the buffer"
            if count > MAX_ITEMS - items:
                return "more than OMG_MAX_CBOR_ITEMS items"
            if count:
                stack.append([count, major == 5, set(), None])
        while stack and stack[-1][0] == 0:
            stack.pop()
        if not stack:
            break
    if pos != len(buf):
        return "bytes after the top item"
    return None


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _semantic_package(data: bytes) -> str:
    import cbor2

    hlen = int.from_bytes(data[8:12], "big")
    d = cbor2.loads(data[12 : 12 + hlen])
    for k in ("v", "model_version", "pt_len", "seg_size"):
        if isinstance(d[k], bool):
            return f"boolean as integer ({k})"
    if d["model_version"] < 0 or d["model_version"] >= 1 << 64 or d["pt_len"] >= 1 << 64:
        return "integer outside uint64"
    if d["seg_size"] >= 1 << 64:
        return "integer outside uint64"
    if len(d["labels"]) > MAX_LABELS:
        return "more than OMG_MAX_LABELS labels"
    if any(len(x.encode()) > MAX_LABEL_LEN for x in d["labels"]):
        return "label longer than OMG_MAX_LABEL_LEN"
    if len(d["model_id"].encode()) > MAX_ID_LEN or len(d["runtime"].encode()) > MAX_ID_LEN:
        return "model_id or runtime longer than OMG_MAX_ID_LEN"
    fe = d["input"].get("frontend", {})
    if not isinstance(fe, dict):
        return f"input.frontend is a {type(fe).__name__}, not a map"
    for k, v in fe.items():
        if k in ("sample_rate", "clip_ms", "num_mel_bins", "num_coefficients"):
            if not _is_int(v):
                return f"{k} is a {type(v).__name__}, not an integer"
            if not -(1 << 31) <= v < 1 << 31:
                return f"{k} outside int32"
        elif k in ("window_ms", "hop_ms", "lower_hz", "upper_hz", "log_offset", "log_floor"):
            if isinstance(v, float) and v - v != 0:
                return f"{k} is not finite"
            if not isinstance(v, float) and not (_is_int(v) and abs(v) <= FE_MAX_INT):
                return f"{k} is a {type(v).__name__} {v!r:.20}, not a float or a small integer"
        elif k == "kind" and not isinstance(v, str):
            return f"kind is a {type(v).__name__}"
    return UNEXPLAINED


def _semantic_sign1(data: bytes) -> str:
    import cbor2

    obj = cbor2.loads(data)
    obj = obj.value if isinstance(obj, cbor2.CBORTag) else obj
    prot = cbor2.loads(obj[0])
    unprot = obj[1]
    if 4 in prot and 4 in unprot:
        return "kid in both buckets"
    for bucket in (prot, unprot):
        if 4 in bucket and not isinstance(bucket[4], bytes):
            return f"kid is a {type(bucket[4]).__name__}"
    if 1 in unprot:
        return "alg in the unprotected bucket"
    if (
        not any(_is_int(k) and k == 1 for k in prot)
        or prot.get(1) != -8
        or not _is_int(prot.get(1))
    ):
        return "alg -8 not given as the integer key 1 and integer value -8"
    if 33 in unprot:
        x5 = unprot[33]
        if not (isinstance(x5, bytes) or (isinstance(x5, (list, tuple)) and x5
                                          and all(isinstance(c, bytes) for c in x5))):  # fmt: skip
            return "x5chain neither a certificate nor an array of them"
    return UNEXPLAINED


def _semantic_license(data: bytes) -> str:
    import cbor2

    d = cbor2.loads(data)
    p = d["policy"]
    for k, v in [*((k, d[k]) for k in ("v", "model_version", "issued_at")),
                 *((k, p.get(k)) for k in ("not_after", "min_version", "budget"))]:  # fmt: skip
        if isinstance(v, bool):
            return f"boolean as integer ({k})"
    if not 0 <= d["model_version"] < 1 << 64:
        return "model_version outside uint64"
    for k, v in (
        ("issued_at", d["issued_at"]),
        ("not_after", p["not_after"]),
        ("min_version", p["min_version"]),
    ):
        if not -(1 << 63) <= v < 1 << 63:
            return f"{k} outside int64"
    if p.get("budget") is not None and p["budget"] >= 1 << 64:
        return "budget outside uint64"
    if len(d["model_id"].encode()) > MAX_ID_LEN or len(d["device_id"]) > MAX_ID_LEN:
        return "model_id or device_id longer than OMG_MAX_ID_LEN"
    return UNEXPLAINED


UNEXPLAINED = "unexplained"


def explain(parser: str, data: bytes, extra: int) -> str:
    """Why the C core refused an input Python accepted: one of its documented
    rules, found again here, or UNEXPLAINED (C refuses something valid: a bug)."""
    try:
        if parser == "cbor":
            return cbor_rule(data, extra) or UNEXPLAINED
        if parser == "package":
            hlen = int.from_bytes(data[8:12], "big")
            rule = cbor_rule(data[12 : 12 + hlen], CBOR_CANONICAL)
            return rule or _semantic_package(data)
        if parser == "license":
            return cbor_rule(data, CBOR_CANONICAL) or _semantic_license(data)
        rule = cbor_rule(data, CBOR_TAG18)
        if rule:
            return rule
        import cbor2

        obj = cbor2.loads(data)
        prot = (obj.value if isinstance(obj, cbor2.CBORTag) else obj)[0]
        rule = cbor_rule(prot, 0)
        return f"protected header: {rule}" if rule else _semantic_sign1(data)
    except Exception as e:  # noqa: BLE001
        return f"{UNEXPLAINED} ({type(e).__name__})"


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


class Raw(bytes):
    """Already encoded CBOR, put in as is."""


class Pairs(list):
    """A map given as its (key, value) pairs, in this order (duplicates allowed)."""


def head(major: int, arg: int, width: int | None = None) -> bytes:
    """A CBOR head; width 0 (in the initial byte), 1, 2, 4 or 8, or None for the shortest."""
    if width is None:
        width = (
            0 if arg < 24 else 1 if arg < 256 else 2 if arg < 65536 else 4 if arg < 1 << 32 else 8
        )
    if width == 0:
        return bytes([major << 5 | arg])
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | ai]) + (arg & ((1 << (8 * width)) - 1)).to_bytes(width, "big")


def enc(x, canonical: bool = True) -> bytes:
    """cbor2's encoding, with Raw chunks, Pairs maps and (canonical) sorted keys."""
    import cbor2

    if isinstance(x, Raw):
        return bytes(x)
    if isinstance(x, Pairs):
        return head(5, len(x)) + b"".join(enc(k, canonical) + enc(v, canonical) for k, v in x)
    if isinstance(x, dict):
        items = [(enc(k, canonical), enc(v, canonical)) for k, v in x.items()]
        if canonical:
            items.sort(key=lambda kv: (len(kv[0]), kv[0]))
        return head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(x, (list, tuple)):
        return head(4, len(x)) + b"".join(enc(v, canonical) for v in x)
    if isinstance(x, cbor2.CBORTag):
        return head(6, x.tag) + enc(x.value, canonical)
    return cbor2.dumps(x, canonical=True)


_TEXT = "abcdefghijklmnopqrstuvwxyz0123456789-_ .éß語🎉\x00"


def rand_text(rng: random.Random, max_bytes: int) -> str:
    out, n = [], 0
    for _ in range(rng.randint(0, max_bytes)):
        c = rng.choice(_TEXT)
        if n + len(c.encode()) > max_bytes:
            break
        out.append(c)
        n += len(c.encode())
    return "".join(out)


def rand_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


_EDGE_INTS = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**53 + 1,
              2**63 - 1, 2**63, 2**64 - 1, 2**64, -1, -24, -25, -256, -257, -(2**31), -(2**31) - 1,
              -(2**63), -(2**63) - 1, -(2**64), -(2**64) - 1, FE_MAX_INT, FE_MAX_INT + 1, -FE_MAX_INT - 1]  # fmt: skip
_EDGE_FLOATS = [0.0, -0.0, 1.0, 1.5, 40.0, 20.0, 1e-6, 4000.0, 65504.0, 65520.0, 2.0**-24, 2.0**-149,
                5e-324, 1e300, -1e300, float("inf"), float("-inf"), float("nan"), 8000.0, 8000.5]  # fmt: skip


def rand_int(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.4:
        return rng.choice(_EDGE_INTS)
    if r < 0.7:
        return rng.randint(-30, 300)
    return rng.randint(-(2**64), 2**64)


def rand_float(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.5:
        return rng.choice(_EDGE_FLOATS)
    if r < 0.8:
        return rng.uniform(-1e5, 1e5)
    return struct.unpack(">d", rng.randbytes(8))[0]


def rand_obj(rng: random.Random, depth: int = 3):
    """Random CBOR-able objects, hypothesis-like: scalars, containers, tags."""
    import cbor2

    r = rng.random()
    if depth <= 0 or r < 0.55:
        k = rng.randrange(11)
        return [lambda: rand_int(rng), lambda: rand_float(rng), lambda: rand_bytes(rng, rng.choice([0, 1, 7, 16, 32, 64, 300])),
                lambda: rand_text(rng, rng.choice([0, 3, 24, 70, 130])), lambda: rng.choice([True, False]),
                lambda: None, lambda: cbor2.undefined, lambda: cbor2.CBORSimpleValue(rng.choice([0, 19, 32, 255])),
                lambda: rng.choice(["mfcc", "logmel", "X25519", "MLKEM768-X25519", "v", "frontend"]),
                lambda: rng.choice([-8, -7, 1, 4, 18, 33]),
                lambda: cbor2.CBORTag(rng.choice([0, 1, 2, 3, 18, 24, 55799, 1000]), rand_obj(rng, 0))][k]()  # fmt: skip
    if r < 0.75:
        return [rand_obj(rng, depth - 1) for _ in range(rng.randint(0, 5))]
    if r < 0.97:
        d = {}
        for _ in range(rng.randint(0, 5)):
            key = rng.choice([rand_text(rng, 8), rng.randint(-30, 40), rand_int(rng)])
            d[key] = rand_obj(rng, depth - 1)
        return d
    return cbor2.CBORTag(rng.choice([18, 2, 55799, 42]), rand_obj(rng, depth - 1))


def rand_heads(rng: random.Random) -> bytes:
    """A random run of heads with random arguments: mostly ill-formed."""
    out = bytearray()
    for _ in range(rng.randint(1, 12)):
        major = rng.randrange(8)
        ai = rng.choice([0, 1, 5, 23, 24, 25, 26, 27, 28, 31])
        out.append(major << 5 | ai)
        if 24 <= ai <= 27:
            out += (
                rng.randbytes(1 << (ai - 24))
                if rng.random() < 0.5
                else bytes((1 << (ai - 24)) - 1) + b"\x02"
            )
        if major in (2, 3) and rng.random() < 0.7:
            out += rng.randbytes(rng.randint(0, 6))
    return bytes(out)


_BAD_UTF8 = [b"\xff", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
             b"\xf5\x80\x80\x80", b"\x80", b"\xc2", b"\xe2\x82", b"\xf0\x9f\x8e", b"\xf8\x88\x80\x80\x80"]  # fmt: skip
_GOOD_UTF8 = [b"a", b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbf",
              b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\x00", b"\x7f"]  # fmt: skip


def rand_text_bytes(rng: random.Random) -> bytes:
    """A text string whose UTF-8 is valid or broken in one of the classic ways."""
    parts = [
        rng.choice(_GOOD_UTF8 + _BAD_UTF8 if rng.random() < 0.5 else _GOOD_UTF8)
        for _ in range(rng.randint(1, 4))
    ]
    body = b"".join(parts)
    return head(3, len(body)) + body


def deep(rng: random.Random, depth: int) -> bytes:
    """depth nested containers (arrays, maps, tags) around a scalar."""
    out, tail = b"", b"\x01"
    for _ in range(depth):
        k = rng.randrange(3)
        if k == 0:
            out += b"\x81"
        elif k == 1:
            out += b"\xa1\x01"
        else:
            out += head(6, rng.choice([18, 24, 1000])) if rng.random() < 0.3 else b"\x81"
    return out + tail


def huge(rng: random.Random) -> bytes:
    """A head declaring far more than the buffer holds."""
    major = rng.choice([2, 3, 4, 5])
    arg = rng.choice(
        [2**16, 2**31, 2**32 - 1, 2**63, 2**64 - 1, MAX_ITEMS, MAX_ITEMS + 1, MAX_MESSAGE]
    )
    return head(major, arg, rng.choice([None, 4, 8])) + rng.randbytes(rng.randint(0, 16))


def edit_head(rng: random.Random, buf: bytes, lo: int = 0, hi: int | None = None) -> bytes:
    """Change one head's argument or width (a length field, a count, an integer)."""
    # not major type 7 (floats, simple values)
    hs = [h for h in _heads(buf[lo:hi]) if h[3] is not None and h[1] != 7]
    if not hs:
        return buf
    off, major, ai, arg, n = rng.choice(hs)
    off += lo
    k = rng.randrange(7)
    if k == 6 and major in (2, 3, 4, 5):
        new = bytes([major << 5 | 31])  # indefinite length
    elif k == 5:  # the same argument in a wider head (not canonical)
        new = head(major, arg, rng.choice([w for w in (1, 2, 4, 8) if arg < 1 << (8 * w)]))
    else:
        new_arg = [arg + 1, max(arg - 1, 0), 0, rng.choice([2**32 - 1, 2**64 - 1, 2**31]),
                   arg + rng.randint(2, 64), arg + 1, arg * 2 + 1][k]  # fmt: skip
        new = head(major, min(new_arg, 2**64 - 1))
    return buf[:off] + new + buf[off + n :]


def mutate_bytes(
    rng: random.Random, data: bytes, others: list[bytes], lo: int = 0, hi: int | None = None
) -> bytes:
    """Byte-level mutations, mostly within [lo, hi)."""
    b = bytearray(data)
    hi = len(b) if hi is None else min(hi, len(b))
    if not b:
        return bytes(rng.randbytes(rng.randint(1, 8)))
    pick = lambda: rng.randrange(lo, hi) if hi > lo else rng.randrange(len(b))  # noqa: E731
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not b:
            break
        k = rng.randrange(9)
        if k == 0:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = pick() % len(b)
                b[i] ^= 1 << rng.randrange(8)
        elif k == 1:  # interesting bytes
            b[pick() % len(b)] = rng.choice([0, 0xFF, 0x17, 0x18, 0x1B, 0x1F, 0x3F, 0x5F, 0x7F, 0x9F, 0xBF, 0xDF,
                                             0xF4, 0xF5, 0xF7, 0xF8, 0xF9, 0xFB, 0xD2, 0xC2, 0x80, 0xA0, 0x40, 0x60])  # fmt: skip
        elif k == 2:  # truncation
            del b[pick() % len(b) :]
        elif k == 3:  # splice another input in
            o = rng.choice(others)
            i, j = pick() % len(b), rng.randrange(len(o) + 1)
            b = (
                b[:i] + bytearray(o[j:])
                if rng.random() < 0.5
                else b[:i] + bytearray(o[j : j + rng.randint(1, 40)]) + b[i:]
            )
        elif k == 4:  # insert random bytes
            i = pick() % len(b)
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif k == 5:  # delete a range
            i = pick() % len(b)
            del b[i : i + rng.randint(1, 16)]
        elif k == 6:  # repeat a range
            i = pick() % len(b)
            b[i:i] = b[i : i + rng.randint(1, 32)]
        elif k == 7:  # trailing bytes
            b += rng.randbytes(rng.randint(1, 4))
        else:  # a length field, a count, an integer
            b = bytearray(edit_head(rng, bytes(b), lo, hi))
    return bytes(b)


def wrong_value(rng: random.Random, old):
    """A value of another type, an edge value of the same type, or something odd."""
    import cbor2

    r = rng.random()
    if r < 0.25 and _is_int(old):
        return rng.choice(_EDGE_INTS + [True, False, float(old) if abs(old) < 2**60 else 1.0])
    if r < 0.35 and isinstance(old, float):
        return rng.choice(_EDGE_FLOATS + [int(old) if old == old and abs(old) < 1e18 else 0])
    if r < 0.45 and isinstance(old, bytes):
        return rand_bytes(rng, max(0, len(old) + rng.choice([-1, 1, -len(old), 100])))
    if r < 0.55 and isinstance(old, str):
        return rng.choice(
            [old.encode(), rand_text(rng, rng.choice([0, 65, 129, 200])), old + "x", old.upper()]
        )
    if r < 0.6:
        return cbor2.CBORTag(
            rng.choice([2, 3, 55799, 24]), old if not isinstance(old, (dict, list)) else 1
        )
    return rand_obj(rng, 2)


def _copy(x):
    """A copy of the dicts and lists (cbor2's simple values do not deep-copy)."""
    if isinstance(x, dict) and not isinstance(x, Pairs):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list) and not isinstance(x, Pairs):
        return [_copy(v) for v in x]
    return x


def _paths(d, prefix=()):
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from _paths(v, (*prefix, k))


def mutate_obj(rng: random.Random, d: dict) -> dict:
    """One structural change: a key dropped or added, a value of a wrong type or an edge value."""
    d = _copy(d)
    paths = list(_paths(d))
    if not paths:
        d[rand_text(rng, 4)] = 1
        return d
    path = rng.choice(paths)
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    k = rng.randrange(6)
    if k == 0:
        del parent[path[-1]]
    elif k == 1:
        key = rng.choice([rand_text(rng, 10), rng.randint(-5, 50), 1.0, True, None, b"v", path[-1].upper()
                          if isinstance(path[-1], str) else 0])  # fmt: skip
        parent[key] = rand_obj(rng, 1)
    elif k == 2 and isinstance(parent[path[-1]], list):
        lst = parent[path[-1]]
        if rng.random() < 0.5 and lst:
            lst[rng.randrange(len(lst))] = rand_obj(rng, 1)
        else:
            lst.extend(rand_text(rng, 8) for _ in range(rng.choice([1, MAX_LABELS])))
    else:
        parent[path[-1]] = wrong_value(rng, parent[path[-1]])
    return d


def with_duplicate(rng: random.Random, d: dict, canonical: bool = True) -> bytes:
    """d encoded with one key twice (in d or in one of its maps)."""
    maps = [()] + [p for p in _paths(d) if isinstance(_get(d, p), dict) and _get(d, p)]
    path = rng.choice(maps)
    target = _get(d, path)
    k = rng.choice(list(target))
    pairs = [(Raw(enc(kk)), Raw(enc(vv))) for kk, vv in target.items()]
    pairs.append((Raw(enc(k)), Raw(enc(rng.choice([target[k], rand_obj(rng, 0)])))))
    if canonical:
        pairs.sort(key=lambda kv: (len(kv[0]), bytes(kv[0])))
    else:
        rng.shuffle(pairs)
    if not path:
        return enc(Pairs(pairs))
    d2 = _copy(d)
    _get(d2, path[:-1])[path[-1]] = Raw(enc(Pairs(pairs)))
    return enc(d2, canonical)


def _get(d, path):
    for k in path:
        d = d[k]
    return d


def non_canonical(rng: random.Random, d: dict) -> bytes:
    """d as cbor2 writes it without canonical=True (insertion order), or with wide heads."""
    import cbor2

    if rng.random() < 0.5:
        items = list(d.items())
        rng.shuffle(items)
        return cbor2.dumps(dict(items))
    b = enc(d)
    return edit_head_width(rng, b)


def edit_head_width(rng: random.Random, b: bytes) -> bytes:
    hs = [h for h in _heads(b) if h[3] is not None and h[1] != 7]
    if not hs:
        return b
    off, major, ai, arg, n = rng.choice(hs)
    width = rng.choice([w for w in (1, 2, 4, 8) if arg < 1 << (8 * w)])
    return b[:off] + head(major, arg, width) + b[off + n :]


# --- valid messages ---------------------------------------------------------

MAGIC = b"OMGPKG\x00\x01"


def rand_frontend(rng: random.Random) -> dict:
    sr = rng.choice([8000, 16000, 16000, 22050, 44100, 48000])
    mel = rng.randint(1, 128)
    lower = rng.choice([20.0, 60.0, 125.0, 300.0, 1.0, 0.5])
    upper = min(rng.choice([3800.0, 4000.0, 7500.0, sr / 2]), sr / 2)
    d = {"kind": rng.choice(["mfcc", "logmel"]), "sample_rate": sr, "clip_ms": rng.choice([250, 500, 1000, 1000, 2000]),
         "window_ms": rng.choice([20.0, 25.0, 30.0, 32.5, 40.0, 64.0, 30.03125]),
         "hop_ms": rng.choice([10.0, 12.5, 20.0, 32.0, 0.03125, 0.0625]), "num_mel_bins": mel,
         "num_coefficients": rng.randint(1, mel), "lower_hz": lower, "upper_hz": upper,
         "log_offset": rng.choice([1e-6, 1e-3, 0.01, 1.0, 0.0, -1.0]),
         "log_floor": rng.choice([0.0, 0.0, 1e-2, 1.0, -1.0])}  # fmt: skip
    if rng.random() < 0.3:
        for k in ("window_ms", "hop_ms", "lower_hz", "upper_hz", "log_offset", "log_floor"):
            if rng.random() < 0.5 and d[k] == int(d[k]):
                d[k] = int(d[k])  # an integer where a float is expected: Python takes it
    if rng.random() < 0.3:
        for k in rng.sample(list(d), rng.randint(1, len(d))):
            del d[k]
    return d


def edge_frontend(rng: random.Random) -> dict:
    """Valid settings with one or two values at an edge of FrontendSettings.__post_init__:
    rounding ties, upper_hz at sample_rate/2, a window as long as the clip, hops
    that round to 0, odd or negative numbers, integers near the C core's bound."""
    import math

    sr = rng.choice([16000, 16000, 8000, 22050, 2001, 3, 2**31 - 1, 0, -16000])
    clip_ms = rng.choice([1000, 1000, 1, 3, 0, -1, -999, 2**31 - 1])
    clip = sr * clip_ms // 1000
    d = {"kind": rng.choice(["mfcc", "logmel"]), "sample_rate": sr, "clip_ms": clip_ms, "window_ms": 40.0,
         "hop_ms": 20.0, "num_mel_bins": 40, "num_coefficients": 10, "lower_hz": 20.0,
         "upper_hz": min(4000.0, sr / 2) if sr > 0 else 4000.0, "log_offset": 1e-6}  # fmt: skip
    if not 0 < clip and rng.random() < 0.8:
        d["sample_rate"], d["clip_ms"], sr, clip = 16000, 1000, 16000, 16000
    ms = lambda n: n * 1000 / sr if sr else 40.0  # noqa: E731 - the ms that give n samples
    edges = {
        "window_ms": lambda: rng.choice([ms(clip), ms(clip + 1), ms(clip + 0.5), ms(clip - 0.5), ms(480.5), ms(2.5),
                                         ms(0.5), 40, 1e308, -1.0, 0.0, FE_MAX_INT, FE_MAX_INT + 1]),
        "hop_ms": lambda: rng.choice([ms(0.5), ms(0.5000001), ms(1.5), ms(0.4999999), ms(1), 20, -20.0, 1e-300]),
        "upper_hz": lambda: rng.choice([sr / 2, math.nextafter(sr / 2, math.inf), math.nextafter(sr / 2, 0),
                                        sr // 2, 21, 20.0]),
        "lower_hz": lambda: rng.choice([5e-324, 0.0, -0.0, 1, math.nextafter(d["upper_hz"], 0), d["upper_hz"]]),
        "num_mel_bins": lambda: rng.choice([1, 0, -1, 10, 9, 2**31 - 1]),
        "num_coefficients": lambda: rng.choice([40, 41, 1, 0, -1]),
        "log_offset": lambda: rng.choice([FE_MAX_INT, FE_MAX_INT + 1, -FE_MAX_INT, -FE_MAX_INT - 1, 5e-324, 0, -0.0]),
        "log_floor": lambda: rng.choice([FE_MAX_INT, FE_MAX_INT + 1, -FE_MAX_INT - 1, 5e-324, 0, -0.0, 1e30]),
        "kind": lambda: rng.choice(["logmel", "MFCC", "mfcc\x00", ""]),
    }  # fmt: skip
    for k in rng.sample(list(edges), rng.choice([1, 1, 2])):
        d[k] = edges[k]()
    for k in rng.sample(list(d), rng.choice([0, 0, 1])):
        del d[k]
    return d


def rand_header(rng: random.Random) -> dict:
    labels = [
        rand_text(rng, rng.choice([1, 8, MAX_LABEL_LEN]))
        for _ in range(rng.choice([0, 1, 2, 12, MAX_LABELS]))
    ]
    inp = {"frontend": rand_frontend(rng)} if rng.random() < 0.85 else {}
    if rng.random() < 0.2:
        inp["shape"] = [1, 49, 10, 1]
    return {"v": 1, "model_id": rand_text(rng, rng.choice([0, 10, 40, MAX_ID_LEN])),
            "model_version": rng.choice([0, 1, 3, 2**32, 2**64 - 1, rng.randrange(10000)]),
            "runtime": rng.choice(["litert", "tflm", "tflite-runtime", ""]), "input": inp, "labels": labels,
            "pt_sha256": rand_bytes(rng, 32), "pt_len": rng.choice([0, 1, 4096, 2**40, 2**64 - 1]),
            "seg_size": rng.choice([1, 256, 65536, 2**64 - 1]), "nonce_prefix": rand_bytes(rng, 7)}  # fmt: skip


def frame_package(raw: bytes, rng: random.Random | None = None, slen: int = 64) -> bytes:
    body = rng.randbytes(rng.randint(0, 48)) if rng else b""
    sig = rng.randbytes(64) if rng else bytes(64)
    return MAGIC + struct.pack(">I", len(raw)) + raw + struct.pack(">H", slen) + sig + body


def rand_license(rng: random.Random) -> dict:
    policy = {"not_after": rng.choice([1_800_000_000, 0, -1, 2**63 - 1, -(2**63)]),
              "min_version": rng.choice([0, 2, -5, 2**63 - 1]), "scores": rng.choice([True, False])}  # fmt: skip
    if rng.random() < 0.8:
        policy["budget"] = rng.choice([None, 0, 1, 1000, 2**64 - 1])
    d = {"v": 1, "license_id": rand_bytes(rng, 16), "model_id": rand_text(rng, rng.choice([0, 10, MAX_ID_LEN])),
         "model_version": rng.choice([0, 3, 2**64 - 1]), "device_id": rand_bytes(rng, rng.choice([16, 16, 0, MAX_ID_LEN])),
         "measurement": rand_bytes(rng, 32), "issued_at": rng.choice([1_790_000_000, 0, -(2**63), 2**63 - 1]),
         "policy": policy, "kem": rng.choice(["X25519", "MLKEM768-X25519"]),
         "wrapped_key": rand_bytes(rng, rng.choice([80, 1168, 0]))}  # fmt: skip
    if rng.random() < 0.1:
        d[rand_text(rng, 6)] = rand_obj(rng, 1)
    return d


def rand_sign1_parts(rng: random.Random) -> tuple[dict, dict, bytes, bytes, bool]:
    import cbor2

    kid = rand_bytes(rng, rng.choice([8, 8, 0, 32]))
    where = rng.choice(["protected", "protected", "unprotected", "none"])
    prot: dict = {1: -8}
    unprot: dict = {}
    if where == "protected":
        prot[4] = kid
    elif where == "unprotected":
        unprot[4] = kid
    if rng.random() < 0.2:
        prot[rng.choice([3, "app", -70000])] = rng.choice(["application/cbor", 0, b"x"])
    if rng.random() < 0.3:
        unprot[33] = [rand_bytes(rng, rng.randint(1, 300)) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            unprot[33] = unprot[33][0]
    if rng.random() < 0.2:
        unprot[rng.choice([5, "note", -65537])] = rand_obj(rng, 1)
    payload = rng.choice(
        [cbor2.dumps(rand_license(rng), canonical=True), rand_bytes(rng, rng.randint(0, 64)), b""]
    )
    return prot, unprot, payload, rand_bytes(rng, 64), rng.random() < 0.85


def build_sign1(
    prot, unprot, payload, sig, tagged, *, prot_raw: bytes | None = None, canonical=False
) -> bytes:
    import cbor2

    raw = prot_raw if prot_raw is not None else (enc(prot) if canonical else cbor2.dumps(prot))
    arr = [raw, unprot, payload, sig]
    return enc(cbor2.CBORTag(18, arr) if tagged else arr, canonical)


# --- per parser -----------------------------------------------------------------


def _vectors() -> dict[str, bytes]:
    out = {}
    for name in ("package", "license", "token"):
        v = json.loads((REPO / "data" / "vectors" / f"{name}.json").read_text())
        out[name] = bytes.fromhex(v[name])
    return out


def _payload_of(msg: bytes) -> bytes:
    import cbor2

    return cbor2.loads(msg).value[2]


def gen_package(rng: random.Random, n: int) -> list[tuple[bytes, int, str]]:
    vec = _vectors()["package"]
    seeds = [vec] + [frame_package(enc(rand_header(rng)), rng) for _ in range(30)]
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.10:
            kind, data = "valid", frame_package(enc(rand_header(rng)), rng)
        elif r < 0.30:
            kind, data = "wrong field", frame_package(enc(mutate_obj(rng, rand_header(rng))), rng)
        elif r < 0.36:
            kind, data = "duplicate key", frame_package(with_duplicate(rng, rand_header(rng)), rng)
        elif r < 0.40:
            kind, data = "non-canonical", frame_package(non_canonical(rng, rand_header(rng)), rng)
        elif r < 0.62:
            s = rng.choice(seeds)
            hlen = int.from_bytes(s[8:12], "big")
            kind, data = "bytes", mutate_bytes(rng, s, seeds, 0, 14 + hlen + 2)
        elif r < 0.70:
            s = rng.choice(seeds)
            hlen = int.from_bytes(s[8:12], "big")
            kind, data = "length field", edit_head(rng, s, 12, 12 + hlen)
        elif r < 0.76:
            s = rng.choice(seeds)
            hlen = int.from_bytes(s[8:12], "big")
            k = rng.randrange(5)
            if k == 0:
                data = (
                    s[:8]
                    + struct.pack(
                        ">I",
                        rng.choice([hlen - 1, hlen + 1, 0, MAX_HEADER, MAX_HEADER + 1, 2**32 - 1]),
                    )
                    + s[12:]
                )
            elif k == 1:
                data = (
                    s[: 12 + hlen]
                    + struct.pack(">H", rng.choice([0, 63, 65, 0xFFFF]))
                    + s[14 + hlen :]
                )
            elif k == 2:
                data = s[
                    : rng.choice(
                        [
                            0,
                            7,
                            8,
                            11,
                            12,
                            13,
                            14,
                            12 + hlen,
                            13 + hlen,
                            14 + hlen,
                            77 + hlen,
                            78 + hlen,
                        ]
                    )
                ]
            elif k == 3:
                i = rng.randrange(8)
                data = s[:i] + bytes([s[i] ^ (1 << rng.randrange(8))]) + s[i + 1 :]
            else:
                raw = enc(rand_header(rng))
                data = frame_package(raw + rng.randbytes(rng.randint(1, 3)), rng)  # trailing bytes
            kind = "framing"
        elif r < 0.80:
            d = rand_header(rng)
            d["input"]["x"] = Raw(
                deep(rng, rng.choice([MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH - 1, 30]))
            )
            kind, data = "deep", frame_package(enc(d), rng)
        elif r < 0.83:
            d = rand_header(rng)
            d["labels"] = Raw(huge(rng))
            kind, data = "huge length", frame_package(enc(d), rng)
        elif r < 0.87:
            kind, data = (
                "random cbor",
                frame_package(
                    enc(rand_obj(rng, 3)) if rng.random() < 0.7 else rand_heads(rng), rng
                ),
            )
        elif r < 0.97:
            d = rand_header(rng)
            d["input"] = {"frontend": edge_frontend(rng)}
            kind, data = "frontend edge", frame_package(enc(d), rng)
        else:
            big = rand_header(rng)
            big["labels"] = ["x"] * rng.choice([MAX_LABELS, MAX_LABELS + 1, MAX_ITEMS])
            kind, data = "many items", frame_package(enc(big), rng)
        out.append((data, 0, kind))
    return out


def gen_license(rng: random.Random, n: int) -> list[tuple[bytes, int, str]]:
    vec = _payload_of(_vectors()["license"])
    seeds = [vec] + [enc(rand_license(rng)) for _ in range(30)]
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.12:
            kind, data = "valid", enc(rand_license(rng))
        elif r < 0.36:
            kind, data = "wrong field", enc(mutate_obj(rng, rand_license(rng)))
        elif r < 0.42:
            kind, data = "duplicate key", with_duplicate(rng, rand_license(rng))
        elif r < 0.46:
            kind, data = "non-canonical", non_canonical(rng, rand_license(rng))
        elif r < 0.74:
            kind, data = "bytes", mutate_bytes(rng, rng.choice(seeds), seeds)
        elif r < 0.84:
            kind, data = "length field", edit_head(rng, rng.choice(seeds))
        elif r < 0.88:
            d = rand_license(rng)
            d["policy"]["x"] = Raw(
                deep(rng, rng.choice([MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH - 1, 30]))
            )
            kind, data = "deep", enc(d)
        elif r < 0.92:
            d = rand_license(rng)
            d[rng.choice(["wrapped_key", "model_id", "device_id"])] = Raw(huge(rng))
            kind, data = "huge length", enc(d)
        elif r < 0.98:
            kind, data = (
                "random cbor",
                enc(rand_obj(rng, 3)) if rng.random() < 0.7 else rand_heads(rng),
            )
        else:
            d = rand_license(rng)
            d["extra"] = [0] * rng.choice([MAX_ITEMS - 40, MAX_ITEMS])
            kind, data = "many items", enc(d)
        out.append((data, 0, kind))
    return out


def gen_sign1(rng: random.Random, n: int) -> list[tuple[bytes, int, str]]:
    import cbor2

    vec = _vectors()
    seeds = [vec["license"], vec["token"]] + [
        build_sign1(*rand_sign1_parts(rng)) for _ in range(30)
    ]
    out = []
    while len(out) < n:
        r = rng.random()
        code = rng.choice([LICENSE_INVALID, TOKEN_INVALID])
        if r < 0.14:
            kind, data = "valid", build_sign1(*rand_sign1_parts(rng))
        elif r < 0.36:
            prot, unprot, payload, sig, tagged = rand_sign1_parts(rng)
            k = rng.randrange(9)
            prot_raw = None
            if k == 0:
                prot = mutate_obj(rng, prot)
            elif k == 1:
                unprot = (
                    mutate_obj(rng, unprot)
                    if unprot
                    else {rng.choice([1, 4, 33, "x"]): rand_obj(rng, 1)}
                )
            elif k == 2:
                payload = wrong_value(rng, payload)
            elif k == 3:
                sig = (
                    rand_bytes(rng, rng.choice([0, 63, 65, 128]))
                    if rng.random() < 0.8
                    else wrong_value(rng, sig)
                )
            elif k == 4:
                prot_raw = rng.choice([b"", enc(prot) + rng.randbytes(rng.randint(1, 3)), enc(rand_obj(rng, 2)),
                                       with_duplicate(rng, prot, canonical=False)])  # fmt: skip
            elif k == 5:
                unprot[4], prot[4] = rand_bytes(rng, 8), rand_bytes(rng, 8)
            elif k == 6:
                obj = [cbor2.dumps(prot), unprot, payload, sig]
                obj = obj[: rng.randint(0, 3)] if rng.random() < 0.5 else obj + [rand_obj(rng, 0)]
                data = enc(cbor2.CBORTag(18, obj) if tagged else obj)
                out.append((data, code, "wrong shape"))
                continue
            elif k == 7:
                data = enc(
                    cbor2.CBORTag(
                        rng.choice([17, 98, 55799, 61]), [cbor2.dumps(prot), unprot, payload, sig]
                    )
                )
                out.append((data, code, "wrong tag"))
                continue
            else:
                prot[1] = rng.choice([-7, -8.0, "-8", None, -(2**64), True])
            kind, data = (
                "wrong field",
                build_sign1(prot, unprot, payload, sig, tagged, prot_raw=prot_raw),
            )
        elif r < 0.42:
            prot, unprot, payload, sig, tagged = rand_sign1_parts(rng)
            unprot = unprot or {5: 1}
            kind = "duplicate key"
            data = build_sign1(
                prot, Raw(with_duplicate(rng, unprot, canonical=False)), payload, sig, tagged
            )
        elif r < 0.70:
            kind, data = "bytes", mutate_bytes(rng, rng.choice(seeds), seeds)
        elif r < 0.80:
            kind, data = "length field", edit_head(rng, rng.choice(seeds))
        elif r < 0.85:
            prot, unprot, payload, sig, tagged = rand_sign1_parts(rng)
            unprot[rng.choice([5, "x"])] = Raw(
                deep(rng, rng.choice([MAX_DEPTH - 4, MAX_DEPTH - 3, MAX_DEPTH - 2, 30]))
            )
            kind, data = "deep", build_sign1(prot, unprot, payload, sig, tagged)
        elif r < 0.89:
            prot, unprot, payload, sig, tagged = rand_sign1_parts(rng)
            kind, data = "huge length", build_sign1(prot, unprot, Raw(huge(rng)), sig, tagged)
        elif r < 0.96:
            obj = rand_obj(rng, 3)
            if rng.random() < 0.5:
                obj = cbor2.CBORTag(
                    18, [enc(rand_obj(rng, 2)), rand_obj(rng, 1), rand_bytes(rng, 4), bytes(64)]
                )
            kind, data = "random cbor", enc(obj) if rng.random() < 0.8 else rand_heads(rng)
        else:
            prot, unprot, payload, sig, tagged = rand_sign1_parts(rng)
            if rng.random() < 0.5:
                unprot[99] = [0] * rng.choice([MAX_ITEMS - 30, MAX_ITEMS])
            else:
                unprot.update(
                    {100 + i: i for i in range(MAX_PAIRS - len(unprot) + rng.choice([0, 1]))}
                )
            kind, data = "many items", build_sign1(prot, unprot, payload, sig, tagged)
        out.append((data, code, kind))
    return out


def gen_cbor(rng: random.Random, n: int) -> list[tuple[bytes, int, str]]:
    import cbor2

    vec = _vectors()
    seeds = [vec["license"], vec["token"], _payload_of(vec["license"]), _payload_of(vec["token"])]
    hlen = int.from_bytes(vec["package"][8:12], "big")
    seeds.append(vec["package"][12 : 12 + hlen])
    out = []
    while len(out) < n:
        r = rng.random()
        flags = rng.choice([0, 0, 0, CBOR_TAG18, CBOR_CANONICAL, CBOR_CANONICAL | CBOR_TAG18])
        if r < 0.30:
            obj = rand_obj(rng, rng.randint(0, 4))
            kind, data = "random cbor", enc(obj) if rng.random() < 0.5 else cbor2.dumps(obj)
        elif r < 0.40:
            kind, data = "random heads", rand_heads(rng)
        elif r < 0.47:
            kind, data = (
                "deep",
                deep(
                    rng,
                    rng.choice([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2, 400, 500]),
                ),
            )
        elif r < 0.52:
            kind, data = "huge length", huge(rng)
        elif r < 0.60:
            kind, data = "text", enc([Raw(rand_text_bytes(rng)) for _ in range(rng.randint(1, 3))])
        elif r < 0.64:
            width = rng.choice([2, 4, 8])
            kind, data = "float", bytes([0xF8 + {2: 1, 4: 2, 8: 3}[width]]) + rng.randbytes(width)
        elif r < 0.70:
            d = rand_obj(rng, 2)
            d = d if isinstance(d, dict) and d else {1: 2, "a": 3}
            kind, data = "duplicate key", with_duplicate(rng, d, canonical=rng.random() < 0.5)
        elif r < 0.85:
            kind, data = "bytes", mutate_bytes(rng, rng.choice(seeds), seeds)
        elif r < 0.93:
            kind, data = "length field", edit_head(rng, rng.choice(seeds))
        elif r < 0.97:
            kind = "many items"
            if rng.random() < 0.5:
                data = enc([0] * rng.choice([MAX_ITEMS - 1, MAX_ITEMS, MAX_ITEMS + 1]))
            else:
                data = enc(
                    {i: i for i in range(rng.choice([MAX_PAIRS - 1, MAX_PAIRS, MAX_PAIRS + 1]))}
                )
        else:
            kind, data = "trailing", enc(rand_obj(rng, 1)) + rng.randbytes(rng.randint(1, 3))
        out.append((data, flags, kind))
    return out


GENERATORS = {"package": gen_package, "sign1": gen_sign1, "license": gen_license, "cbor": gen_cbor}


def make_inputs(parser: str, n: int, seed: int) -> list[tuple[bytes, int, str]]:
    """n inputs for one parser, the same for the same seed."""
    rng = random.Random(f"{seed}:{parser}")
    return GENERATORS[parser](rng, n)[:n]


# ---------------------------------------------------------------------------
# Running the C side: in this process, or in a worker subprocess
# ---------------------------------------------------------------------------


class InProcess:
    """The C side in this process (tests; a crash takes the process down)."""

    def __init__(self, lib_path: Path | str):
        self.lib = load_library(lib_path)

    def call(self, job):
        return "ok", c_run(self.lib, *job)

    def close(self):
        pass


def _send(fp, obj) -> None:
    b = pickle.dumps(obj)
    fp.write(struct.pack(">I", len(b)) + b)
    fp.flush()


def worker_main(lib_path: str) -> None:
    """The worker: reads (parser, data, extra) frames, answers (status, fields)."""
    lib = load_library(lib_path)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    _send(out, {"ready": True, "asan": hasattr(_libc, "__asan_init")})
    while True:
        n = inp.read(4)
        if len(n) < 4:
            return
        job = pickle.loads(inp.read(struct.unpack(">I", n)[0]))
        _send(out, c_run(lib, *job))


def asan_env(lib_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    if "libasan" not in env.get("LD_PRELOAD", ""):
        asan = subprocess.run(
            ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True
        ).stdout.strip()
        env["LD_PRELOAD"] = asan
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env["PYTHONMALLOC"] = "malloc"  # Python's buffers through ASan's malloc as well
    env["OMG_CORE_LIB"] = str(lib_path)
    return env


def read_worker_reply(fd: int, timeout: float):
    """One length-prefixed pickle from a worker's stdout: ("ok", obj), or ("hang", None) if
    none comes within ``timeout`` seconds, or ("crash", None) if the worker's output ends."""
    deadline = time.monotonic() + timeout
    buf, need, size = b"", 4, None
    while len(buf) < need:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "hang", None
        chunk = os.read(fd, need - len(buf))
        if not chunk:
            return "crash", None
        buf += chunk
        if size is None and len(buf) == 4:
            size = struct.unpack(">I", buf)[0]
            need, buf = size, b""
    return "ok", pickle.loads(buf)


class Worker:
    """The C side in a subprocess: a crash or a hang is one input's, and the worker restarts."""

    def __init__(self, lib_path: Path | str, env: dict | None = None, timeout: float = 10.0):
        self.args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--lib",
            str(lib_path),
        ]
        self.env, self.timeout = env, timeout
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.asan = False

    def _start(self) -> None:
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     env=self.env)  # fmt: skip
        status, msg = self._read(60.0)
        if status != "ok" or not isinstance(msg, dict) or not msg.get("ready"):
            raise RuntimeError(f"the C worker did not start: {status} {msg}")
        self.asan = msg["asan"]

    def _read(self, timeout: float):
        return read_worker_reply(self.proc.stdout.fileno(), timeout)

    def _stop(self, kill: bool) -> str:
        proc, self.proc = self.proc, None
        if kill:
            proc.kill()
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        self.err.seek(0)
        text = self.err.read().decode(errors="replace")
        self.err.close()
        self.restarts += 1
        lines = [
            ln
            for ln in text.splitlines()
            if "SUMMARY" in ln or "ERROR" in ln or "runtime error" in ln
        ]
        return f"exit {rc}: " + (" | ".join(lines[:3]) or text[-300:])

    def call(self, job):
        if self.proc is None:
            self._start()
        try:
            _send(self.proc.stdin, job)
            status, res = self._read(self.timeout)
        except (BrokenPipeError, OSError):
            status, res = "crash", None
        if status == "ok":
            return "ok", res
        return status, self._stop(kill=status == "hang")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.err.close()
            self.proc = None


# ---------------------------------------------------------------------------
# The differential run
# ---------------------------------------------------------------------------

EXAMPLES = 5  # examples kept per kind of finding (full inputs for bugs)


def _short(data: bytes, n: int = 96) -> str:
    h = data.hex()
    return h if len(h) <= 2 * n else h[: 2 * n] + f"...(+{len(data) - n} bytes)"


def compare(parser: str, c, py) -> str | None:
    """None if the C fields equal Python's, else which field differs."""
    if parser == "cbor":
        return None if c == py else "value"
    if not isinstance(c, dict) or not isinstance(py, dict):
        return "fields"
    for k in sorted(set(c) | set(py)):
        if c.get(k, "<missing>") != py.get(k, "<missing>"):
            return k
    return None


def run_parser(parser: str, inputs, cside, *, progress=None) -> dict:
    t0 = time.monotonic()
    rep = {"inputs": 0, "both_accept": 0, "both_refuse": 0, "c_only_refuses": 0, "python_only_refuses": 0,
           "field_mismatches": 0, "wrong_result_code": 0, "crashes": 0, "hangs": 0, "c_only_unexplained": 0,
           "c_only_reasons": {}, "c_only_examples": [], "unexplained_examples": [], "python_only_examples": [],
           "mismatch_examples": [],
           "crash_examples": [], "hang_examples": [], "python_exceptions": {}, "strategies": {}}  # fmt: skip
    reason_seen: dict[str, int] = {}
    for i, (data, extra, kind) in enumerate(inputs):
        rep["inputs"] += 1
        per = rep["strategies"].setdefault(kind, {})
        outcome = _run_one(rep, parser, data, extra, kind, cside, reason_seen)
        per[outcome] = per.get(outcome, 0) + 1
        if progress and (i + 1) % 1000 == 0:
            progress(parser, i + 1)
    rep["c_only_reasons"] = dict(sorted(rep["c_only_reasons"].items(), key=lambda kv: -kv[1]))
    rep["seconds"] = round(time.monotonic() - t0, 2)
    return rep


def _example(rep: dict, key: str, **fields) -> None:
    if len(rep[key]) < EXAMPLES:
        rep[key].append(fields)


def _run_one(
    rep: dict, parser: str, data: bytes, extra: int, kind: str, cside, reason_seen: dict
) -> str:
    """One input through both sides; its outcome counted in rep and returned."""
    status, res = cside.call((parser, data, extra))
    if status != "ok":  # "crash" or "hang": the worker has been restarted
        outcome = "crashes" if status == "crash" else "hangs"
        rep[outcome] += 1
        _example(rep, status + "_examples", input=data.hex(), extra=extra, kind=kind, detail=res)
        return outcome
    c_st, c_fields = res
    c_ok = c_st == 0
    py_ok, py_fields, py_exc = py_run(parser, data, extra)
    if py_exc:
        rep["python_exceptions"][py_exc] = rep["python_exceptions"].get(py_exc, 0) + 1
    if not c_ok and parser != "cbor":
        want = extra if parser == "sign1" else C_CODES[parser]
        if c_st != want:
            rep["wrong_result_code"] += 1
            _example(rep, "mismatch_examples", input=data.hex(), extra=extra, kind=kind,
                     field=f"result code {c_st:#x}, not {want:#x}")  # fmt: skip
    if c_ok and py_ok:
        diff = compare(parser, c_fields, py_fields)
        if diff is None:
            outcome = "both_accept"
        else:
            outcome = "field_mismatches"
            _example(rep, "mismatch_examples", input=data.hex(), extra=extra, kind=kind, field=diff,
                     c=repr(c_fields)[:400], python=repr(py_fields)[:400])  # fmt: skip
    elif not c_ok and not py_ok:
        outcome = "both_refuse"
    elif py_ok:
        outcome = "c_only_refuses"
        reason = explain(parser, data, extra)
        rep["c_only_reasons"][reason] = rep["c_only_reasons"].get(reason, 0) + 1
        if reason.startswith(UNEXPLAINED):
            rep["c_only_unexplained"] += 1
            _example(rep, "unexplained_examples", input=data.hex(), extra=extra, kind=kind)
        if reason_seen.get(reason, 0) < 2 and len(rep["c_only_examples"]) < 24:
            reason_seen[reason] = reason_seen.get(reason, 0) + 1
            rep["c_only_examples"].append(
                {"input": _short(data), "extra": extra, "kind": kind, "reason": reason}
            )
    else:
        outcome = "python_only_refuses"
        _example(
            rep,
            "python_only_examples",
            input=data.hex(),
            extra=extra,
            kind=kind,
            python=py_exc or "OmgError",
        )
    rep[outcome] += 1
    return outcome


def asan_selftest(worker: Worker) -> dict:
    """ASan is loaded in the worker and reports a one-byte overread as a crash."""
    status, detail = worker.call(("overread", b"\x61", 0))  # text of 1 byte: its UTF-8 is read
    return {"asan_loaded": worker.asan or status == "crash", "caught": status == "crash"
            and "heap-buffer-overflow" in str(detail), "detail": str(detail)[:300]}  # fmt: skip


def bad(rep: dict) -> int:
    return (rep["python_only_refuses"] + rep["field_mismatches"] + rep["wrong_result_code"] + rep["crashes"]
            + rep["hangs"] + rep["c_only_unexplained"])  # fmt: skip


def fuzz(n: int, seed: int = 0, *, parsers=PARSERS, lib_path: Path | str | None = None, asan: bool = False,
         isolate: bool = True, timeout: float = 10.0, progress=None) -> dict:  # fmt: skip
    """The whole differential run; the report as written to --json."""
    lib_path = Path(lib_path) if lib_path else library_path(asan)
    if not lib_path.is_file():
        raise SystemExit(
            f"{lib_path} is not built: make -C ta/optee/hostlib{' asan' if asan else ''}"
        )
    if isolate:
        cside = Worker(lib_path, asan_env(lib_path) if asan else None, timeout)
    else:
        cside = InProcess(lib_path)
    report = {"n": n, "seed": seed, "asan": asan, "library": str(lib_path), "isolated": isolate,
              "limits": {k: v for k, v in D.items() if k.startswith("OMG_MAX_")}, "parsers": {}}  # fmt: skip
    try:
        if asan and isolate:
            report["asan_selftest"] = asan_selftest(cside)
        for p in parsers:
            t0 = time.monotonic()
            inputs = make_inputs(p, n, seed)
            made = round(time.monotonic() - t0, 2)
            report["parsers"][p] = run_parser(p, inputs, cside, progress=progress)
            report["parsers"][p]["generate_seconds"] = made  # "seconds": both sides, compared
    finally:
        cside.close()
    if asan and isolate and not report["asan_selftest"]["caught"]:
        raise SystemExit(f"ASan is not working in the worker: {report['asan_selftest']}")
    report["ok"] = all(bad(r) == 0 for r in report["parsers"].values())
    return report


def table(report: dict) -> str:
    cols = ["inputs", "both_accept", "both_refuse", "c_only_refuses", "c_only_unexplained", "python_only_refuses",
            "field_mismatches", "crashes", "hangs", "seconds"]  # fmt: skip
    names = ["inputs", "both ok", "both refuse", "C-only refuse", "(unexplained)", "Py-only refuse", "mismatch",
             "crash", "hang", "s"]  # fmt: skip
    rows = [["parser", *names]]
    for p, r in report["parsers"].items():
        rows.append(
            [
                p,
                *(
                    str(r[c] + (r["wrong_result_code"] if c == "field_mismatches" else 0))
                    for c in cols
                ),
            ]
        )
    w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(x.rjust(w[i]) if i else x.ljust(w[i]) for i, x in enumerate(row)) for row in rows
    ]
    for p, r in report["parsers"].items():
        top = list(r["c_only_reasons"].items())[:4]
        if top:
            lines.append(f"{p}: C-only refusals: " + "; ".join(f"{k} ({v})" for k, v in top))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="inputs per parser")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--asan", action="store_true", help="the ASan+UBSan build in the worker")
    ap.add_argument("--lib", help="the library (default: $OMG_CORE_LIB or ta/optee/build/host/)")
    ap.add_argument("--parsers", default=",".join(PARSERS))
    ap.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per input before it counts as a hang"
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker_main(a.lib)
        return 0
    sys.path.insert(0, str(REPO / "ta"))
    parsers = tuple(p for p in a.parsers.split(",") if p)
    rep = fuzz(a.n, a.seed, parsers=parsers, lib_path=a.lib, asan=a.asan, timeout=a.timeout,
               progress=lambda p, i: print(f"  {p}: {i}", file=sys.stderr, flush=True))  # fmt: skip
    print(table(rep))
    if a.json:
        a.json.write_text(json.dumps(rep, indent=1) + "\n")
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
