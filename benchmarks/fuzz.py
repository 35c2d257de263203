#!/usr/bin/env python3
"""Fuzzing every parser and service that reads another party's bytes: only OmgError may leave.

For each target this makes N inputs from valid ones (built with the
project's own functions, or the test vectors in ``data/vectors/``) — bit
flips, byte insertions and deletions, truncations, length-field edits,
CBOR-aware edits (decode, give one field another type or an edge value,
encode again), huge declared lengths, deep nesting, cbor2's semantic tags
(bignums, shared references, dates, regexes, ...), random CBOR — and runs
each through the real code, in a worker subprocess:

    package      omg_ta.package.parse_header + open_package (edited headers signed again)
    license      omg_ta.license.parse + unwrap (edited payloads signed again)
    token        omgkit.tee.token.verify_token + Claims.recipient (edited claims signed again)
    cose         omg_ta.cose.parse_sign1 + verify
    cbor         omg_ta.cbor_limits.check_cbor + omgkit.tee.wire.decode_body
    sealed       the TEE core's unseal of a sealed key blob, as a TA calls it
    tee_wire     a real TEE daemon over tee.sock (fresh connections, and a session that
                 attested and provisioned) and hw.sock: every frame one reply
    agent        the board agent's ``serve`` over stdin/stdout, on a board whose TEE runs
    vendor_http  a real VendorServer over TCP: every request one HTTP response
    wav          omgkit.kws.audio.read_pcm and read_clip

Counted per target: inputs, accepted, refused (an OmgError, or an error
reply), escapes by exception type (anything that is not an OmgError,
BaseExceptions too; for a service, an internal error it logged or replied),
crashes (the worker or the service died), hangs (no answer within
``--timeout``), bad replies (a frame or request answered not exactly once),
and the peak RSS (``ru_maxrss`` of the worker, ``VmHWM`` of the service).

    python benchmarks/fuzz.py --n 10000 --json out.json [--seed S] [--parsers a,b]

Exit status 1 on any escape, crash, hang or bad reply (or a fault of this
script, ``harness_errors``). Input I of a target comes from its own random
stream (seed, target, I): ``--parsers T --only I`` makes and runs it again
and prints it with what happened. (What the TEE draws itself — the license
a session is provisioned with, session ids — differs between runs; the
report holds every finding's bytes, and the commit and changed files fuzzed.)

Each worker, and every process it starts, runs under an address-space
limit (``--mem-mb``, 4 GiB: a runaway allocation is a MemoryError, an
escape, not a machine out of memory); services run with ``OMG_TEE_DEBUG=1``
so that an internal error they log comes with its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import pickle
import random
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO / "ta", REPO):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def _load_c_fuzzer():
    """The mutators of the C parsers' fuzzer (fuzz_c_parsers.py, next to this file)."""
    spec = importlib.util.spec_from_file_location(
        "fuzz_c_parsers", Path(__file__).with_name("fuzz_c_parsers.py")
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_c_parsers"] = mod
    spec.loader.exec_module(mod)
    return mod


fc = _load_c_fuzzer()
Raw, enc, head = fc.Raw, fc.enc, fc.head

PARSERS = ("package", "license", "token", "cose", "cbor", "sealed", "tee_wire", "agent",
           "vendor_http", "wav")  # fmt: skip
SERVICES = ("tee_wire", "agent", "vendor_http")
LIMIT = 5.0
"""Seconds an input may take before it counts as a hang."""
MEM_MB = 4096
"""Address-space limit of a worker and everything it starts (a runaway allocation is a MemoryError)."""
EXAMPLES = 3
"""Examples kept per escape type, and of crashes, hangs and bad replies."""
NOW = _dt.datetime(2030, 1, 1, tzinfo=_dt.UTC)
"""When tokens are verified (the vector's certificates hold from 2026 to 2046)."""
VENDOR_SEED = (b"vendor" * 32)[:32]
"""The vendor key of the test vectors (tools/make_vectors.py): licenses and packages signed
with it verify in the fuzzed TA."""


def _vector(name: str) -> dict:
    return json.loads((REPO / "data" / "vectors" / f"{name}.json").read_text())


def pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _exc_name(e: BaseException) -> str:
    t = type(e)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _tb(e: BaseException, limit: int = 3000) -> str:
    text = "".join(traceback.format_exception(e))
    return text if len(text) <= limit else "..." + text[-limit:]


# ---------------------------------------------------------------------------
# Values and mutations
# ---------------------------------------------------------------------------

_TAGV = object()
"""Path step into a CBORTag's value."""


def thaw(x):
    """A decoded message as dicts and lists (cbor2 gives frozendicts and tuples inside tags)."""
    from collections.abc import Mapping

    import cbor2

    if isinstance(x, Mapping):
        return {k: thaw(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [thaw(v) for v in x]
    if isinstance(x, cbor2.CBORTag):
        return cbor2.CBORTag(x.tag, thaw(x.value))
    return x


def _nodes(x, path=()):
    import cbor2

    yield path, x
    if isinstance(x, dict):
        for k, v in list(x.items()):
            yield from _nodes(v, (*path, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _nodes(v, (*path, i))
    elif isinstance(x, cbor2.CBORTag):
        yield from _nodes(x.value, (*path, _TAGV))


def _at(x, path):
    for k in path:
        x = x.value if k is _TAGV else x[k]
    return x


def _set(root, path, value):
    """``root`` with the node at ``path`` replaced (a CBORTag, immutable, is made again)."""
    import cbor2

    if not path:
        return value
    parent = _at(root, path[:-1])
    if path[-1] is _TAGV:
        return _set(root, path[:-1], cbor2.CBORTag(parent.tag, value))
    parent[path[-1]] = value
    return root


def dag(rng: random.Random, shape: tuple[int, int] | None = None) -> bytes:
    """Shared references (tags 28/29): a few hundred items that stand for fan**depth values."""
    depth, fan = shape or rng.choice([(8, 2), (24, 2), (40, 3), (60, 4)])
    out = head(4, depth + 1) + b"\xd8\x1c" + enc([1, "x" * 8])
    for k in range(1, depth + 1):
        out += b"\xd8\x1c" + head(4, fan) + (b"\xd8\x1d" + head(0, k - 1)) * fan
    return out


_SEMANTIC = [0, 1, 2, 3, 4, 5, 21, 24, 25, 28, 29, 30, 32, 35, 36, 37, 52, 54, 100, 256, 258, 260,
             261, 1004, 55799, 1000, 2**32, 2**64 - 1]  # fmt: skip


def semantic(rng: random.Random) -> bytes:
    """An item under one of the tags cbor2 decodes into an object (or refuses)."""
    tag = rng.choice(_SEMANTIC)
    nan, inf = float("nan"), float("inf")
    big = 2 ** rng.choice([64, 70, 200, 14000, 20000])
    v = {
        0: lambda: rng.choice(
            [
                "2026-12-02T13:07:53Z",
                "2026-13-45T99:99:99Z",
                "",
                "x" * 1000,
                "9999-12-31T23:59:59.9999999999+23:59",
                5,
            ]
        ),
        1: lambda: rng.choice([0, 1.5, 1e300, -1e300, nan, inf, 2**63, -(2**70), "x", big]),
        2: lambda: rng.randbytes(rng.choice([0, 1, 8, 9, 600, 1800, 1900, 4000])),
        3: lambda: rng.randbytes(rng.choice([0, 1, 9, 1800, 4000])) if rng.random() < 0.8 else "x",
        4: lambda: [
            rng.choice([0, -1, 2**31, 2**63 - 1, -(2**63), 10**6, 999999, big]),
            rng.choice([1, -1, 0, 2**64, big]),
        ],
        5: lambda: (
            [
                rng.choice([0, -1, 2**31, 2**63 - 1, -(2**63), 10**6, 999999, big]),
                rng.choice([1, -1, 0, 2**64]),
            ]
            if rng.random() < 0.9
            else [1]
        ),
        21: lambda: rng.randbytes(4),
        24: lambda: rng.choice([enc({"op": "ping"}), rng.randbytes(8), b"", fc.rand_heads(rng)]),
        25: lambda: rng.choice([0, 5, 2**32]),
        28: lambda: rng.choice([Raw(b"\x81\xd8\x1d\x00"), 1, Raw(b"\xd8\x1c\x01")]),
        29: lambda: rng.choice([0, 1, 100, -1]),
        30: lambda: rng.choice([[1, 0], [big, 3], [1], [1, 2, 3], ["a", 1], [3, -(2**70)]]),
        32: lambda: rng.choice(["http://x", "", "\x00" * 10, "%zz"]),
        35: lambda: rng.choice(
            [
                "(a+)+$",
                "[",
                "(?P<x>a)(?P<x>b)",
                "\\",
                "a{99999}{99999}",
                "x" * 5000,
                "(?<=a+)b",
                "()" * 3000,
                "(" * 200 + ")" * 200,
            ]
        ),
        36: lambda: rng.choice(
            [
                "Content-Type: text/plain\n\nhi",
                "",
                "\x00" * 100,
                "Content-Type: multipart/mixed; boundary=x\n\n--x\n\n--x--",
            ]
        ),
        37: lambda: rng.randbytes(rng.choice([0, 15, 16, 17])),
        52: lambda: rng.choice(
            [
                [24, rng.randbytes(3)],
                [33, rng.randbytes(4)],
                rng.randbytes(4),
                [rng.randbytes(4), 24],
                [-1, b""],
                rng.randbytes(5),
            ]
        ),
        54: lambda: rng.choice(
            [[64, rng.randbytes(8)], [129, rng.randbytes(16)], rng.randbytes(16), rng.randbytes(17)]
        ),
        100: lambda: rng.choice([0, -(2**40), 2**40, big, 1.5]),
        256: lambda: ["abc", "abcd", Raw(b"\xd8\x19\x00"), Raw(b"\xd8\x19\x05")],
        258: lambda: rng.choice([[1, 1], [[1], [2]], [{}], [Raw(dag(rng))]]),
        260: lambda: rng.randbytes(rng.choice([0, 4, 6, 16, 17])),
        261: lambda: {rng.randbytes(rng.choice([4, 16, 3])): rng.choice([0, 24, 33, -1, 129])},
        1004: lambda: rng.choice(["2026-02-30", "0000-00-00", "x", "99999-01-01"]),
    }.get(tag, lambda: fc.rand_obj(rng, 1))()
    if tag == 25:  # a string reference outside a namespace, or within one
        return (
            head(6, 256) + enc([Raw(head(6, 25) + enc(v))])
            if rng.random() < 0.5
            else head(6, 25) + enc(v)
        )
    return head(6, tag) + enc(v)


def indefinite(rng: random.Random) -> bytes:
    """Indefinite-length items, well-formed or not."""
    items = b"".join(enc(fc.rand_obj(rng, 1)) for _ in range(rng.randint(0, 4)))
    k = rng.randrange(8)
    if k == 0:
        return b"\x9f" + items + b"\xff"
    if k == 1:
        return b"\xbf" + enc("op") + enc("ping") + items + b"\xff"
    if k == 2:
        return b"\x5f" + enc(b"ab") + rng.choice([enc(b"c"), enc("c"), b"\x01", b""]) + b"\xff"
    if k == 3:
        return b"\x7f" + enc("ab") + rng.choice([enc("c"), enc(b"c"), b"\x7f\xff", b""]) + b"\xff"
    if k == 4:
        n = rng.choice([10, 17, 100])
        return b"\x9f" * n + b"\xff" * n
    if k == 5:
        return b"\x9f" + items  # no break
    if k == 6:
        return b"\xff"
    return b"\xbf" + enc("x") + b"\xff"  # a key without its value


def nasty(rng: random.Random) -> Raw:
    """One CBOR item chosen to hurt a decoder or the code that uses what it decodes."""
    k = pick(rng, {"bignum": 14, "int": 8, "semantic": 18, "dag": 7, "set of dag": 0.2, "dag key": 0.2,
                   "cyclic": 3, "deep": 7,
                   "huge length": 5, "indefinite": 7, "long": 6, "float": 5, "simple": 3,
                   "random": 9, "heads": 3, "many": 3, "text": 2})  # fmt: skip
    if k == "bignum":
        n = rng.choice([9, 17, 600, 1790, 1800, 4000, 20000])
        return Raw(
            head(6, rng.choice([2, 3]))
            + head(2, n)
            + bytes([rng.randrange(1, 256)])
            + rng.randbytes(n - 1)
        )
    if k == "int":
        return Raw(enc(rng.choice(fc._EDGE_INTS)))
    if k == "semantic":
        return Raw(semantic(rng))
    if k == "dag":
        return Raw(dag(rng))
    if k == "set of dag":  # cbor2 makes a set's items immutable: copies of every shared item
        return Raw(head(6, 258) + b"\x81" + dag(rng))
    if k == "dag key":  # and a map key's
        return Raw(b"\xa1" + dag(rng) + b"\x01")
    if k == "cyclic":
        return Raw(rng.choice([b"\xd8\x1c\x81\xd8\x1d\x00", b"\xd8\x1c\xa1\x61x\xd8\x1d\x00"]))
    if k == "deep":
        return Raw(fc.deep(rng, rng.choice([15, 16, 17, 30, 200, 1000])))
    if k == "huge length":
        return Raw(fc.huge(rng))
    if k == "indefinite":
        return Raw(indefinite(rng))
    if k == "long":
        n = rng.choice([300, 5000, 100_000, 1 << 20])
        return Raw(enc("é" * (n // 2) if rng.random() < 0.5 else rng.randbytes(n)))
    if k == "float":
        return Raw(rng.choice([enc(rng.choice(fc._EDGE_FLOATS)), b"\xf9" + rng.randbytes(2),
                               b"\xfa" + rng.randbytes(4), b"\xfb" + rng.randbytes(8)]))  # fmt: skip
    if k == "simple":
        return Raw(
            rng.choice([b"\xf7", b"\xf8\x20", b"\xf0", b"\xf8\xff", b"\xf8\x10", b"\xfc", b"\xfe"])
        )
    if k == "random":
        return Raw(enc(fc.rand_obj(rng, 3)))
    if k == "heads":
        return Raw(fc.rand_heads(rng))
    if k == "many":
        return Raw(enc([0] * rng.choice([63, 65, 1023, 1025, 4113, 131073])))
    return Raw(fc.rand_text_bytes(rng))


def edge_like(rng: random.Random, old):
    """An edge value of the same type."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return rng.choice(fc._EDGE_INTS + [old + 1, old - 1, -old, 2**4000, -(2**4000), 10**5000])
    if isinstance(old, bytes):
        return rng.randbytes(max(0, len(old) + rng.choice([-1, 1, -len(old), 1000, 70_000])))
    if isinstance(old, str):
        return rng.choice(["", old + "\x00", old * 100, old.upper(), "é" * 70, "x" * 70_000])
    if isinstance(old, float):
        return rng.choice(fc._EDGE_FLOATS)
    return fc.wrong_value(rng, old)


def mutate_value(rng: random.Random, obj, *, keys=None):
    """One CBOR-aware edit of a decoded message: a node of another type, an edge value,
    a nasty item, dropped, or a key added. Returns a new object."""
    obj = thaw(obj)
    nodes = [n for n in _nodes(obj) if n[0]]
    if not nodes:
        return nasty(rng) if rng.random() < 0.5 else fc.wrong_value(rng, obj)
    path, old = rng.choice(nodes)
    r = rng.random()
    if r < 0.3:
        obj = _set(obj, path, fc.wrong_value(rng, old))
    elif r < 0.55:
        obj = _set(obj, path, nasty(rng))
    elif r < 0.75:
        obj = _set(obj, path, edge_like(rng, old))
    elif r < 0.87:
        parent = _at(obj, path[:-1])
        if isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, list):
            del parent[path[-1]]
        else:
            obj = _set(obj, path, None)
    else:
        parent = _at(obj, path[:-1])
        if isinstance(parent, dict):
            key = rng.choice(
                [*(keys or []), fc.rand_text(rng, 8), rng.randint(-5, 300), 1.5, None, b"k"]
            )
            parent[key] = rng.choice([nasty(rng), fc.rand_obj(rng, 1)])
        elif isinstance(parent, list):
            parent.insert(rng.randint(0, len(parent)), fc.rand_obj(rng, 1))
        else:
            obj = _set(obj, path, [old, old])
    return obj


def encode(rng: random.Random, obj) -> bytes:
    """``obj`` encoded canonically (mostly) or in insertion order."""
    return enc(obj, canonical=rng.random() < 0.7)


def mutate_cbor(rng: random.Random, obj, *, keys=None) -> tuple[str, bytes]:
    """A valid CBOR message (given decoded) changed one way: (strategy, bytes)."""
    good = enc(obj)
    k = pick(rng, {"field": 34, "nasty field": 16, "bytes": 18, "length field": 8, "duplicate key": 5,
                   "non-canonical": 3, "indefinite": 3, "not a map": 4, "deep": 3, "many items": 3,
                   "trailing": 3})  # fmt: skip
    if k == "field":
        return k, encode(rng, mutate_value(rng, obj, keys=keys))
    if k == "nasty field" and isinstance(obj, dict):
        d = thaw(obj)
        d[rng.choice([*d, *(keys or []), fc.rand_text(rng, 6)])] = nasty(rng)
        return k, encode(rng, d)
    if k == "duplicate key" and isinstance(obj, dict) and obj:
        return k, fc.with_duplicate(rng, thaw(obj), canonical=rng.random() < 0.5)
    if k == "non-canonical" and isinstance(obj, dict):
        return k, fc.non_canonical(rng, thaw(obj))
    if k == "indefinite" and isinstance(obj, dict):
        return k, b"\xbf" + b"".join(enc(a) + enc(b) for a, b in obj.items()) + b"\xff"
    if k == "not a map":
        return k, rng.choice([enc(list(obj.values()) if isinstance(obj, dict) else [obj]),
                              enc(fc.rand_obj(rng, 2)), semantic(rng), bytes(nasty(rng))])  # fmt: skip
    if k == "deep":
        d = thaw(obj) if isinstance(obj, dict) else {}
        d[rng.choice([*d, "x"])] = Raw(fc.deep(rng, rng.choice([14, 15, 16, 17, 40])))
        return k, encode(rng, d)
    if k == "many items":
        d = thaw(obj) if isinstance(obj, dict) else {}
        d[rng.choice([*d, "x"])] = [0] * rng.choice(
            [60, 64, 1000, 1020, 1030, 4120, 131060, 131080]
        )
        return k, encode(rng, d)
    if k == "trailing":
        return k, good + rng.choice([b"\x00", rng.randbytes(rng.randint(1, 4)), good])
    if k == "length field":
        return k, fc.edit_head(rng, good)
    return "bytes", fc.mutate_bytes(rng, good, [good])


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


class Target:
    """One parser or service: its fixtures, its inputs, and one input run."""

    name = ""
    service = False

    def setup(self, workdir: Path, seed: int, limit: float, errpath: Path) -> None:
        self.workdir, self.seed, self.limit, self.errpath = workdir, seed, limit, errpath

    def make(self, rng: random.Random) -> dict:
        """One input: {"data": bytes, "kind": strategy, ...}."""
        raise NotImplementedError

    def run(self, inp: dict) -> dict:
        """{"outcome": accepted | refused | escape | crash | hang | bad_reply, "exc", "detail"}."""
        from omg_ta.errors import OmgError

        try:
            self.parse(inp)
        except OmgError:
            return {"outcome": "refused"}
        except BaseException as e:  # noqa: BLE001 - what this script counts
            return {"outcome": "escape", "exc": _exc_name(e), "detail": _tb(e)}
        return {"outcome": "accepted"}

    def parse(self, inp: dict) -> None:
        raise NotImplementedError

    def service_kb(self) -> int:
        return 0

    def close(self) -> None:
        pass


# --- package -------------------------------------------------------------------


class Packages:
    """Sealed packages with the vector's keys, and edits signed again with the vendor's key."""

    def __init__(self, seed: int):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        v = _vector("package")
        self.vendor = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["vendor_seed"]))
        self.pub = self.vendor.public_key()
        self.key = bytes.fromhex(v["model_key"])
        self.vec = bytes.fromhex(v["package"])
        rng = random.Random(f"{seed}:package:seeds")
        self.seeds = [self.vec] + [self.sealed(rng) for _ in range(10)]

    def sealed(self, rng: random.Random, **over) -> bytes:
        from omg_ta.package import seal_package

        h = fc.rand_header(rng)
        model = rng.randbytes(rng.choice([0, 1, 15, 16, 255, 256, 257, 1000, 3000]))
        kw = {"model_id": h["model_id"], "model_version": h["model_version"], "runtime": h["runtime"],
              "input_spec": h["input"], "labels": h["labels"],
              "seg_size": rng.choice([1, 7, 16, 256, 1000, 65536]), "nonce_prefix": rng.randbytes(7)}  # fmt: skip
        kw.update(over)
        return seal_package(model, self.key, self.vendor, **kw)

    @staticmethod
    def split(pkg: bytes) -> tuple[bytes, bytes]:
        hlen = int.from_bytes(pkg[8:12], "big")
        return pkg[12 : 12 + hlen], pkg[12 + hlen + 2 + 64 :]

    def sign(self, raw: bytes, body: bytes) -> bytes:
        from omg_ta.package import MAGIC, SIG_CONTEXT

        prefix = MAGIC + struct.pack(">I", len(raw)) + raw
        aad = hashlib.sha256(prefix).digest()
        sig = self.vendor.sign(SIG_CONTEXT + aad + hashlib.sha256(body).digest())
        return prefix + struct.pack(">H", len(sig)) + sig + body

    def make(self, rng: random.Random) -> tuple[str, bytes]:
        import cbor2

        s = rng.choice(self.seeds)
        raw, body = self.split(s)
        k = pick(rng, {"valid": 5, "bytes": 18, "length field": 6, "framing": 7, "signed header": 28,
                       "signed edge header": 10, "signed body": 9, "sealed odd": 7, "random": 6,
                       "c fuzzer": 4})  # fmt: skip
        if k == "valid":
            return k, self.sealed(rng)
        if k == "bytes":
            return k, fc.mutate_bytes(
                rng, s, self.seeds, *(() if rng.random() < 0.3 else (0, 14 + len(raw) + 2))
            )
        if k == "length field":
            return k, fc.edit_head(rng, s, 12, 12 + len(raw))
        if k == "framing":
            j = rng.randrange(4)
            if j == 0:
                n = rng.choice([len(raw) - 1, len(raw) + 1, 0, 65536, 65537, 2**32 - 1])
                return k, s[:8] + struct.pack(">I", max(n, 0)) + s[12:]
            if j == 1:
                i = 12 + len(raw)
                return k, s[:i] + struct.pack(">H", rng.choice([0, 63, 65, 0xFFFF])) + s[i + 2 :]
            if j == 2:
                return k, s[
                    : rng.choice(
                        [
                            0,
                            7,
                            8,
                            11,
                            12,
                            13,
                            14,
                            12 + len(raw),
                            14 + len(raw),
                            77 + len(raw),
                            78 + len(raw),
                        ]
                    )
                ]
            return k, self.sign(raw + rng.randbytes(rng.randint(1, 3)), body)
        if k == "signed header":
            kind, new = mutate_cbor(rng, cbor2.loads(raw), keys=list(fc.rand_header(rng)))
            return k + f" ({kind})", self.sign(new, body)
        if k == "signed edge header":
            d = thaw(cbor2.loads(raw))
            f = rng.choice(
                ["seg_size", "pt_len", "nonce_prefix", "pt_sha256", "v", "model_version", "labels"]
            )
            d[f] = {"seg_size": lambda: rng.choice([1, 2, 15, 16, 17, 2**64 - 1, 2**64, 2**4000, 0, -1, True]),
                    "pt_len": lambda: rng.choice([0, 1, len(body), len(body) - 16, 2**64, 2**4000, -1, True]),
                    "nonce_prefix": lambda: rng.randbytes(rng.choice([0, 6, 8])),
                    "pt_sha256": lambda: rng.randbytes(rng.choice([0, 31, 33])),
                    "v": lambda: rng.choice([0, 2, True, 1.0, 2**4000]),
                    "model_version": lambda: rng.choice([-1, 2**64, 2**4000, True]),
                    "labels": lambda: rng.choice([[], ["x"] * 5000, [b"x"], "ab", [None]])}[f]()  # fmt: skip
            return k, self.sign(encode(rng, d), body)
        if k == "signed body":
            seg = 256 + 16
            j = rng.randrange(6)
            new = [body[:-1], body + rng.randbytes(rng.choice([1, 16, 17])), body[seg:], body[:seg],
                   body[seg : 2 * seg] + body[:seg] + body[2 * seg :], b""][j]  # fmt: skip
            return k, self.sign(raw, new)
        if k == "sealed odd":
            over = rng.choice([{"labels": [fc.rand_obj(rng, 1) for _ in range(3)]},
                               {"input_spec": fc.rand_obj(rng, 2)}, {"model_id": fc.rand_obj(rng, 0)},
                               {"runtime": rng.choice(["", "x" * 300, 5])},
                               {"seg_size": rng.choice([1, 2, 3000, 2**40])},
                               {"model_version": rng.choice([0, -1, 2**64 - 1, 2**64])},
                               {"input_spec": {"frontend": fc.edge_frontend(rng)}}])  # fmt: skip
            try:
                return k, self.sealed(rng, **over)
            except Exception:  # noqa: BLE001 - seal_package refused the odd value itself
                return k, self.sealed(rng)
        if k == "random":
            j = rng.randrange(3)
            if j == 0:
                return k, rng.randbytes(rng.randint(0, 200))
            return k, self.sign(enc(fc.rand_obj(rng, 3)) if j == 1 else bytes(nasty(rng)), body)
        return k, fc.gen_package(rng, 1)[0][0]


class PackageTarget(Target):
    name = "package"

    def setup(self, *a) -> None:
        super().setup(*a)
        self.p = Packages(self.seed)

    def make(self, rng):
        kind, data = self.p.make(rng)
        return {"data": data, "kind": kind}

    def parse(self, inp):
        from omg_ta.package import open_package, parse_header

        parse_header(inp["data"])
        open_package(inp["data"], self.p.key, self.p.pub)


# --- license, token, cose ---------------------------------------------------------


def sign1(key, payload: bytes, *, prot: dict | None = None, unprot=None, prot_raw: bytes | None = None,
          tagged: bool = True) -> bytes:  # fmt: skip
    """A COSE_Sign1 with a real signature over whatever headers it is given."""
    import cbor2

    from omg_ta import cose

    if prot_raw is None:
        prot_raw = cbor2.dumps(prot if prot is not None else {1: -8})
    sig = key.sign(cose.sig_structure(prot_raw, payload))
    arr = [prot_raw, Raw(unprot) if isinstance(unprot, bytes) else (unprot or {}), payload, sig]
    return enc(cbor2.CBORTag(18, arr) if tagged else arr, canonical=False)


def cose_edit(
    rng: random.Random, key, payload: bytes, prot: dict, unprot: dict
) -> tuple[str, bytes]:
    """A COSE_Sign1 whose envelope is edited, signed with ``key`` where that still can be."""
    import cbor2

    k = pick(
        rng,
        {"protected": 30, "unprotected": 25, "shape": 15, "tag": 8, "signature": 10, "payload": 12},
    )
    if k == "protected":
        kind, raw = mutate_cbor(rng, prot, keys=[1, 4, 33, 3])
        return f"protected ({kind})", sign1(key, payload, prot_raw=raw, unprot=unprot)
    if k == "unprotected":
        kind, raw = mutate_cbor(rng, unprot or {4: b"k"}, keys=[1, 4, 33])
        return f"unprotected ({kind})", sign1(key, payload, prot=prot, unprot=raw)
    if k == "shape":
        arr = [cbor2.dumps(prot), unprot, payload, b"\0" * 64]
        arr = arr[: rng.randint(0, 3)] if rng.random() < 0.5 else arr + [fc.rand_obj(rng, 0)]
        return k, enc(cbor2.CBORTag(18, arr) if rng.random() < 0.8 else arr, canonical=False)
    if k == "tag":
        t = rng.choice([17, 98, 55799, 61, 2**64 - 1])
        return k, head(6, t) + sign1(
            key, payload, prot=prot, unprot=unprot, tagged=rng.random() < 0.5
        )
    if k == "signature":
        arr = [
            cbor2.dumps(prot),
            unprot,
            payload,
            rng.choice([b"", b"\0" * 63, b"\0" * 65, "x", 64, nasty(rng)]),
        ]
        return k, enc(cbor2.CBORTag(18, arr), canonical=False)
    pl = rng.choice([nasty(rng), "text", 5, None, [payload]])
    arr = [cbor2.dumps(prot), unprot, pl, b"\0" * 64]
    return k, enc(cbor2.CBORTag(18, arr), canonical=False)


class Licenses:
    """Licenses signed by the vector's vendor key: edited payloads are signed again."""

    def __init__(self, seed: int):
        import cbor2
        from cryptography.hazmat.primitives.asymmetric import x25519
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from omg_ta import license as lic

        v = _vector("license")
        self.vendor = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["vendor_seed"]))
        self.pub = self.vendor.public_key()
        self.kid = lic.kid_of(self.pub)
        self.ta_key = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(v["ta_x25519_seed"]))
        self.vec = bytes.fromhex(v["license"])
        self.payload = thaw(cbor2.loads(cbor2.loads(self.vec).value[2]))
        rng = random.Random(f"{seed}:license:seeds")
        self.seeds = [self.vec] + [self.signed(self.valid_payload(rng)) for _ in range(8)]

    def signed(self, payload: bytes, **kw) -> bytes:
        kw.setdefault("prot", {1: -8, 4: self.kid})
        return sign1(self.vendor, payload, **kw)

    def valid_payload(self, rng: random.Random) -> bytes:
        """The vector's payload (its wrapped key still opens) with another policy, or a random one."""
        if rng.random() < 0.6:
            d = dict(self.payload)
            d["policy"] = {"not_after": rng.choice([0, 2**63 - 1, 1_800_000_000]),
                           "min_version": rng.choice([0, 3, -5]), "scores": rng.random() < 0.5,
                           "budget": rng.choice([None, 0, 7, 2**64 - 1])}  # fmt: skip
            return enc(d)
        return enc(fc.rand_license(rng))

    def make(
        self, rng: random.Random, device_id: bytes | None = None, measurement: bytes | None = None
    ) -> tuple[str, bytes]:
        import cbor2

        base = dict(self.payload)
        if device_id is not None:
            base.update(device_id=device_id, measurement=measurement)
        k = pick(rng, {"valid": 8, "signed payload": 32, "envelope": 18, "kid": 5, "bytes": 16,
                       "length field": 6, "random": 7, "c fuzzer": 8})  # fmt: skip
        if k == "valid":
            return k, self.signed(enc(base) if device_id is not None else self.valid_payload(rng))
        if k == "signed payload":
            src = base if rng.random() < 0.7 else fc.rand_license(rng)
            kind, payload = mutate_cbor(rng, src, keys=list(src) + ["not_after", "budget"])
            return f"{k} ({kind})", self.signed(payload)
        if k == "envelope":
            kind, data = cose_edit(rng, self.vendor, enc(base), {1: -8, 4: self.kid}, {})
            return f"{k} {kind}", data
        if k == "kid":
            j = rng.randrange(4)
            prot, unprot = [({1: -8}, {4: self.kid}), ({1: -8}, {}), ({1: -8, 4: b"x" * 8}, {}),
                            ({1: -8, 4: self.kid}, {4: self.kid})][j]  # fmt: skip
            return k, self.signed(enc(base), prot=prot, unprot=unprot)
        if k == "bytes":
            return k, fc.mutate_bytes(rng, rng.choice(self.seeds), self.seeds)
        if k == "length field":
            return k, fc.edit_head(rng, rng.choice(self.seeds))
        if k == "random":
            return k, rng.choice([enc(fc.rand_obj(rng, 3)), bytes(nasty(rng)),
                                  enc(cbor2.CBORTag(18, [enc(fc.rand_obj(rng, 2)), {}, b"", b"\0" * 64]))])  # fmt: skip
        payload = fc.gen_license(rng, 1)[0][0]  # the C fuzzer's payloads, signed
        return k, self.signed(payload)


class LicenseTarget(Target):
    name = "license"

    def setup(self, *a) -> None:
        super().setup(*a)
        self.l = Licenses(self.seed)

    def make(self, rng):
        kind, data = self.l.make(rng)
        return {"data": data, "kind": kind}

    def parse(self, inp):
        from omg_ta import license as lic

        parsed = lic.parse(inp["data"], self.l.pub)
        lic.unwrap(parsed, self.l.ta_key).reveal()


class TokenTarget(Target):
    """verify_token with the vector's root; edited claims signed again with the vector's device key."""

    name = "token"

    def setup(self, *a) -> None:
        super().setup(*a)
        import cbor2
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        v = _vector("token")
        self.root = x509.load_der_x509_certificate(bytes.fromhex(v["root_cert"]))
        self.dev = Ed25519PrivateKey.from_private_bytes(
            (b"device" * 32)[:32]
        )  # tools/make_vectors.py
        self.vec = bytes.fromhex(v["token"])
        msg = cbor2.loads(self.vec).value
        self.chain = list(msg[1][33])
        self.claims = thaw(cbor2.loads(msg[2]))
        self.seeds = [self.vec]

    def signed(self, payload: bytes, chain=None) -> bytes:
        return sign1(self.dev, payload, unprot={33: self.chain if chain is None else chain})

    def make(self, rng):
        import cbor2

        from omgkit.tee import token as T

        k = pick(rng, {"valid": 6, "signed claims": 36, "ta keys": 8, "chain": 14, "envelope": 12,
                       "bytes": 14, "length field": 4, "random": 6})  # fmt: skip
        c = dict(self.claims)
        if k == "valid":
            c[T.NONCE] = rng.randbytes(rng.choice([16, 32, 64]))
            data = self.signed(enc(c))
        elif k == "signed claims":
            kind, payload = mutate_cbor(rng, c, keys=[T.NONCE, T.UEID, T.IAT, T.PROFILE, T.MEASUREMENT,
                                                      T.TA_KEYS, T.TEE_VERSION, T.TA_UUID])  # fmt: skip
            k, data = f"{k} ({kind})", self.signed(payload)
        elif k == "ta keys":
            c[T.TA_KEYS] = rng.choice([{}, {"X25519": rng.randbytes(rng.choice([0, 31, 32, 33]))},
                                       {"MLKEM768-X25519": [rng.randbytes(1184), rng.randbytes(32)]},
                                       {"MLKEM768-X25519": [rng.randbytes(1183)]},
                                       {"MLKEM768-X25519": rng.randbytes(1216)}, {"X25519": nasty(rng)},
                                       {"MLKEM768-X25519": [nasty(rng), b"x"]}, {"MLKEM768-X25519": {}}])  # fmt: skip
            data = self.signed(enc(c))
        elif k == "chain":
            leaf, root = self.chain
            j = rng.randrange(7)
            ch = [[], [leaf], [root, leaf], [leaf] * 5, leaf, [fc.mutate_bytes(rng, leaf, [root]), root],
                  [leaf, nasty(rng)]][j]  # fmt: skip
            data = self.signed(enc(c), ch)
        elif k == "envelope":
            kind, data = cose_edit(rng, self.dev, enc(c), {1: -8}, {33: self.chain})
            k = f"{k} {kind}"
        elif k == "bytes":
            data = fc.mutate_bytes(rng, self.vec, self.seeds)
        elif k == "length field":
            data = fc.edit_head(rng, self.vec)
        else:
            data = rng.choice([enc(fc.rand_obj(rng, 3)), bytes(nasty(rng)),
                               enc(cbor2.CBORTag(18, [b"\xa1\x01\x27", {33: [nasty(rng)]}, b"", b"\0" * 64]))])  # fmt: skip
        return {"data": data, "kind": k}

    def parse(self, inp):
        from omg_ta import license as lic
        from omg_ta.errors import OmgError
        from omgkit.tee.token import verify_token

        claims = verify_token(inp["data"], self.root, now=NOW)
        for kem in lic.KEMS:  # what the vendor does with a token it accepted
            try:
                claims.recipient(kem)
            except OmgError:
                pass


class CoseTarget(Target):
    name = "cose"

    def setup(self, *a) -> None:
        super().setup(*a)
        self.l = Licenses(self.seed)
        self.tok = bytes.fromhex(_vector("token")["token"])
        self.seeds = [self.l.vec, self.tok]

    def make(self, rng):
        err = rng.choice(["IntegrityError", "LicenseInvalidError", "TokenInvalidError"])
        k = pick(
            rng,
            {
                "valid": 6,
                "envelope": 40,
                "bytes": 20,
                "length field": 6,
                "random": 8,
                "c fuzzer": 20,
            },
        )
        if k == "valid":
            prot, unprot, payload, _, tagged = fc.rand_sign1_parts(rng)
            data = sign1(self.l.vendor, payload, prot=prot, unprot=unprot, tagged=tagged)
        elif k == "envelope":
            prot, unprot, payload, _, _ = fc.rand_sign1_parts(rng)
            kind, data = cose_edit(rng, self.l.vendor, payload, prot, unprot)
            k = f"{k} {kind}"
        elif k == "bytes":
            data = fc.mutate_bytes(rng, rng.choice(self.seeds), self.seeds)
        elif k == "length field":
            data = fc.edit_head(rng, rng.choice(self.seeds))
        elif k == "random":
            data = rng.choice(
                [enc(fc.rand_obj(rng, 3)), bytes(nasty(rng)), rng.randbytes(rng.randint(0, 64))]
            )
        else:
            data = fc.gen_sign1(rng, 1)[0][0]
        return {"data": data, "kind": k, "error": err}

    def parse(self, inp):
        from omg_ta import cose
        from omg_ta import errors as E

        err = getattr(E, inp["error"])
        msg = cose.parse_sign1(inp["data"], err)
        _ = msg.kid, msg.to_be_signed()
        cose.verify(msg, self.l.pub, err)


# --- cbor ---------------------------------------------------------------------------


def _requests(rng: random.Random) -> dict:
    """A request of one of the framed channels, valid in shape."""
    from omg_ta import commands as C

    sid = rng.choice([1, 2, 0, 99])
    return rng.choice([
        {"op": "open_session", "uuid": C.TA_UUID.bytes},
        {"op": "invoke", "session": sid, "cmd": C.CMD_GET_ATTESTATION, "types": C.SIGNATURES[0],
         "params": [["m", rng.randbytes(32)], ["o", 4096], None, None]},
        {"op": "invoke", "session": sid, "cmd": C.CMD_CLASSIFY, "types": C.SIGNATURES[3],
         "params": [["v", 1, 1], ["s", 1, 0, 32000], ["o", 100], None]},
        {"op": "close_session", "session": sid}, {"op": "release_shm", "shm": 1},
        {"op": "register_shm"}, {"op": "mic_feed", "clips": [b"\0" * 16]},
        {"op": "clock_offset", "seconds": 5}, {"op": "ping"}, {"op": "ta_status"},
        {"op": "attest", "nonce": rng.randbytes(32)}, {"op": "classify_mic", "n": 1},
    ])  # fmt: skip


class CborTarget(Target):
    name = "cbor"

    def setup(self, *a) -> None:
        super().setup(*a)
        from omgkit.guard import vendor
        from omgkit.tee import wire

        self.bounds = [wire.TEE_MAX_ITEMS, wire.HW_MAX_ITEMS, wire.MAX_ITEMS, vendor.MAX_ITEMS]

    def make(self, rng):
        k = pick(rng, {"c fuzzer": 25, "request": 25, "semantic": 15, "nasty": 12, "indefinite": 8,
                       "dag": 3, "many items": 6, "deep": 6})  # fmt: skip
        if k == "c fuzzer":
            data = fc.gen_cbor(rng, 1)[0][0]
        elif k == "request":
            kind, data = mutate_cbor(
                rng, _requests(rng), keys=["op", "session", "params", "clips", "seconds"]
            )
            k = f"{k} ({kind})"
        elif k == "semantic":
            data = semantic(rng) if rng.random() < 0.5 else enc({"op": Raw(semantic(rng))})
        elif k == "nasty":
            data = bytes(nasty(rng))
        elif k == "indefinite":
            data = indefinite(rng)
        elif k == "dag":
            data = enc({"op": Raw(dag(rng))})
        elif k == "many items":
            n = rng.choice(self.bounds) + rng.choice([-2, -1, 0, 1])
            data = rng.choice([enc({"x": [0] * (n - 2)}), enc([0] * (n - 1)), b"\x9f" + b"\0" * (n - 1) + b"\xff",
                               enc({i: 0 for i in range(n // 2)})])  # fmt: skip
        else:
            data = fc.deep(rng, rng.choice([15, 16, 17, 18, 100, 10_000]))
        return {"data": data, "kind": k, "max_items": rng.choice(self.bounds)}

    def parse(self, inp):
        from omg_ta.cbor_limits import check_cbor
        from omgkit.tee.wire import decode_body

        check_cbor(inp["data"], inp["max_items"])
        decode_body(inp["data"], inp["max_items"])


# --- sealed ---------------------------------------------------------------------------


@contextlib.contextmanager
def seeded_urandom(rng: random.Random):
    """os.urandom from ``rng`` (the TEE draws its sealing nonce from it): reproducible seeds."""
    real = os.urandom
    os.urandom = rng.randbytes
    try:
        yield
    finally:
        os.urandom = real


class SealedTarget(Target):
    """The TEE core's unseal (world._Services), called as a TA calls it: call("unseal", args)."""

    name = "sealed"

    def setup(self, *a) -> None:
        super().setup(*a)
        from types import SimpleNamespace

        import cbor2

        from omg_ta import commands as C
        from omgkit.tee import Device, Manufacturer
        from omgkit.tee.world import _Services

        rng = random.Random(f"{self.seed}:sealed:seeds")
        mfr = Manufacturer.create(self.workdir / "mfr")
        svcs = []
        for name in ("dev", "other"):
            d = Device.create(self.workdir / name, mfr, [])
            (d.secure / "huk.bin").write_bytes(rng.randbytes(32))  # fixed: blobs reproduce
            (d.secure / "device_id").write_text(rng.randbytes(16).hex() + "\n")
            svcs.append(SimpleNamespace(device=Device(d.path)))
        m = hashlib.sha256(b"omgkit fuzz TA").digest()
        self.svc = _Services(svcs[0], m, C.TA_UUID.bytes)
        self.others = [
            _Services(svcs[0], bytes(32), C.TA_UUID.bytes),
            _Services(svcs[1], m, C.TA_UUID.bytes),
        ]
        self.content = {
            "model_key": rng.randbytes(32),
            "license": rng.randbytes(32),
            "model_id": "kws",
        }
        with seeded_urandom(rng):
            self.seeds = [self.svc.seal(cbor2.dumps(self.content))] + [
                self.svc.seal(rng.randbytes(n)) for n in (0, 1, 100)
            ]

    def make(self, rng):
        import cbor2

        from omgkit.tee.world import SEAL_MAGIC

        s = rng.choice(self.seeds)
        k = pick(rng, {"valid": 8, "sealed odd content": 12, "bytes": 30, "truncated": 10, "other TA or device": 8,
                       "magic": 6, "random": 8, "args": 10, "long": 3, "length field": 5})  # fmt: skip
        args = None
        with seeded_urandom(rng):
            if k == "valid":
                data = self.svc.seal(enc(self.content))
            elif k == "sealed odd content":
                kind, content = mutate_cbor(
                    rng, self.content, keys=["model_key", "license", "model_id"]
                )
                data = self.svc.seal(content)
            elif k == "bytes":
                data = fc.mutate_bytes(rng, s, self.seeds)
            elif k == "truncated":
                data = s[: rng.choice([0, 7, 8, 19, 20, 35, 36, len(s) - 1])]
            elif k == "other TA or device":
                data = rng.choice(self.others).seal(enc(self.content))
            elif k == "magic":
                data = rng.choice([b"OMGSEAL2", b"omgseal1", b""]) + s[8:]
            elif k == "random":
                data = (
                    SEAL_MAGIC + rng.randbytes(rng.randint(0, 80))
                    if rng.random() < 0.5
                    else rng.randbytes(rng.randint(0, 80))
                )
            elif k == "long":
                data = s + rng.randbytes(rng.choice([1 << 16, 1 << 20]))
            elif k == "length field":
                data = SEAL_MAGIC + s[8:20] + fc.edit_head(rng, s[20:])
            else:
                data = s
                # what a TA's channel can decode into: CBOR values, any number of them
                args = enc(rng.choice([[], [s, s], [None], ["x"], [1], [2**70], [1.5], [True], [[s]],
                                       [{"blob": s}], [s, 1], [{1: s}], [cbor2.CBORTag(24, s)]]))  # fmt: skip
        return {"data": data, "kind": k, "args": args}

    def parse(self, inp):

        import cbor2

        self.svc.call(
            "unseal", [inp["data"]] if inp.get("args") is None else cbor2.loads(inp["args"])
        )


# --- wav ------------------------------------------------------------------------------

_PCM_GUID = bytes.fromhex("0100000000001000800000aa00389b71")
_FLOAT_GUID = bytes.fromhex("0300000000001000800000aa00389b71")


def riff(
    chunks: list[tuple[bytes, bytes]], riff_size: int | None = None, pad: bool = True
) -> bytes:
    body = b"WAVE" + b"".join(cid + struct.pack("<I", len(d)) + d + (b"\0" if pad and len(d) % 2 else b"")
                              for cid, d in chunks)  # fmt: skip
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def fmt_chunk(
    tag=1, ch=1, rate=16000, bits=16, align=None, byte_rate=None, ext=None, guid=_PCM_GUID
) -> bytes:
    width = (bits + 7) // 8
    align = ch * width if align is None else align
    byte_rate = rate * align if byte_rate is None else byte_rate
    d = struct.pack("<HHIIHH", tag & 0xFFFF, ch & 0xFFFF, rate & 0xFFFFFFFF, byte_rate & 0xFFFFFFFF,
                    align & 0xFFFF, bits & 0xFFFF)  # fmt: skip
    if ext:
        d += struct.pack("<HHI", 22, bits & 0xFFFF, 0) + guid
    return d


class WavTarget(Target):
    name = "wav"

    def setup(self, *a) -> None:
        super().setup(*a)
        import numpy as np

        from omgkit.kws.audio import write_wav

        shm = Path("/dev/shm")
        self.dir = Path(
            tempfile.mkdtemp(prefix="omg-fuzz-wav-", dir=shm if shm.is_dir() else self.workdir)
        )
        self.path = self.dir / "in.wav"
        rng = np.random.default_rng(self.seed)
        self.seeds = []
        for rate, n in ((16000, 16000), (8000, 4000), (44100, 4410), (4000, 100), (192000, 3000)):
            p = self.dir / "seed.wav"
            write_wav(
                p, rng.integers(-30000, 30000, n).astype("int16"), rate
            )  # the project's writer
            self.seeds.append(p.read_bytes())

    def _valid(self, rng: random.Random, **f) -> bytes:
        ch = f.pop("ch", rng.choice([1, 1, 2, 3, 8]))
        bits = f.pop("bits", rng.choice([8, 16, 16, 24, 32]))
        rate = f.pop(
            "rate", rng.choice([4000, 8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000, 7919])
        )
        frames = f.pop("frames", rng.choice([1, 2, 100, 1000, rate // 4, rate, rate + 1]))
        frames = min(frames, 300_000 // (ch * ((bits + 7) // 8)))
        data = rng.randbytes(frames * ch * ((bits + 7) // 8))
        ext = f.pop("ext", rng.random() < 0.2)
        chunks = [(b"fmt ", fmt_chunk(ch=ch, rate=rate, bits=bits, ext=ext, **f)), (b"data", data)]
        if rng.random() < 0.3:
            chunks.insert(
                rng.choice([0, 1]),
                (
                    rng.choice([b"LIST", b"fact", b"junk", b"data"]),
                    rng.randbytes(rng.choice([0, 1, 3, 4])),
                ),
            )
        return riff(chunks)

    def make(self, rng):
        k = pick(rng, {"valid": 10, "header field": 30, "sizes": 15, "chunks": 12, "long": 5, "bytes": 15,
                       "truncated": 7, "random": 6})  # fmt: skip
        if k == "valid":
            data = self._valid(rng) if rng.random() < 0.7 else rng.choice(self.seeds)
        elif k == "header field":
            f = rng.choice(["rate", "ch", "bits", "align", "byte_rate", "tag", "ext"])
            v = {"rate": lambda: rng.choice([0, 1, 3999, 4000, 7999, 191999, 192000, 192001, 2**31, 2**32 - 1, 12345]),
                 "ch": lambda: rng.choice([0, 1, 2, 8, 9, 255, 65535]),
                 "bits": lambda: rng.choice([0, 1, 7, 8, 9, 12, 17, 24, 31, 32, 33, 64, 65535]),
                 "align": lambda: rng.choice([0, 1, 3, 5, 65535]),
                 "byte_rate": lambda: rng.choice([0, 1, 2**32 - 1]),
                 "tag": lambda: rng.choice([0, 2, 3, 6, 0xFFFE, 0xFFFF]),
                 "ext": lambda: rng.choice([True, False])}[f]()  # fmt: skip
            kw = {f: v}
            if f == "tag" and v == 0xFFFE:
                kw["ext"] = rng.random() < 0.7
                kw["guid"] = rng.choice([_PCM_GUID, _FLOAT_GUID, b""])
            if f in ("rate", "ch", "bits"):
                kw["frames"] = rng.choice([1, 10, 1000])
            try:
                data = self._valid(rng, **kw)
            except (struct.error, ValueError, ArithmeticError):
                data = self._valid(rng)
        elif k == "sizes":
            fmt = fmt_chunk(ch=2, rate=8000, bits=16)
            body = rng.randbytes(rng.choice([0, 1, 3, 4, 400]))
            n = rng.choice([0, 1, 3, len(body) + 1, len(body) - 1, 2**31, 2**32 - 1])
            j = rng.randrange(4)
            if j == 0:
                data = riff([(b"fmt ", fmt)]) + b"data" + struct.pack("<I", max(n, 0)) + body
            elif j == 1:
                data = riff(
                    [(b"fmt ", fmt), (b"data", body)], riff_size=rng.choice([0, 4, 2**32 - 1, 7])
                )
            elif j == 2:
                data = (
                    riff([])
                    + b"fmt "
                    + struct.pack("<I", rng.choice([0, 14, 15, 17, 1024, 1025, 2**32 - 1]))
                    + fmt
                    + b"data"
                    + struct.pack("<I", len(body))
                    + body
                )
            else:
                data = (
                    riff([(b"fmt ", fmt)])
                    + b"LIST"
                    + struct.pack("<I", max(n, 0))
                    + b"data"
                    + struct.pack("<I", len(body))
                    + body
                )
        elif k == "chunks":
            fmt = (b"fmt ", fmt_chunk(rate=16000))
            dat = (b"data", rng.randbytes(rng.choice([0, 2, 3, 2000])))
            j = rng.randrange(6)
            chunks = [[(b"junk", b"x")] * rng.choice([62, 63, 64, 65]) + [fmt, dat], [dat, fmt], [fmt], [dat],
                      [fmt, (b"fmt ", fmt_chunk(ch=0)), dat], [fmt, (b"LIST", b"abc"), dat]][j]  # fmt: skip
            data = riff(chunks, pad=rng.random() < 0.7)
        elif k == "long":
            data = self._valid(rng, rate=rng.choice([4000, 8000, 16000, 44100]), frames=rng.choice([20_000, 40_000, 100_000]),
                               ch=rng.choice([1, 2]), bits=rng.choice([8, 16]))  # fmt: skip
        elif k == "bytes":
            s = (
                self._valid(rng, frames=rng.choice([1, 50, 500]))
                if rng.random() < 0.6
                else rng.choice(self.seeds)
            )
            data = fc.mutate_bytes(rng, s, self.seeds, *(() if rng.random() < 0.3 else (0, 80)))
        elif k == "truncated":
            s = self._valid(rng)
            data = s[: rng.choice([0, 4, 11, 12, 19, 20, 35, 36, 43, 44, 45, len(s) - 1])]
        else:
            data = rng.choice([b"RIFF", b""]) + rng.randbytes(rng.randint(0, 200))
        return {"data": data, "kind": k, "trim": rng.random() < 0.5}

    def run(self, inp):
        from omg_ta.errors import OmgError
        from omgkit.kws.audio import read_clip, read_pcm

        self.path.write_bytes(inp["data"])
        outcome = {"outcome": "accepted"}
        for fn in (read_pcm, lambda p: read_clip(p, trim=inp["trim"], quiet=True)):
            try:
                fn(self.path)
            except OmgError:
                outcome = {"outcome": "refused"}  # by either reader
            except BaseException as e:  # noqa: BLE001
                return {"outcome": "escape", "exc": _exc_name(e), "detail": _tb(e)}
        return outcome

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Services: what they print and what they answer
# ---------------------------------------------------------------------------

_INTERNAL = re.compile(r"^(tee|ta|agent|vendor): internal error (\S+)", re.M)
_TRACEBACK = "Traceback (most recent call last):"


class LogWatch:
    """New text of a log file, and the escapes it reports."""

    def __init__(self, path: Path):
        self.path, self.pos = path, path.stat().st_size if path.exists() else 0

    def new(self) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return ""
        self.pos += len(data)
        return data.decode(errors="replace")

    @staticmethod
    def escape(text: str) -> str | None:
        m = _INTERNAL.search(text)
        if m:
            return f"{m.group(1)}: {m.group(2)}"
        i = text.find(_TRACEBACK)
        if i < 0:
            return None
        for line in text[i:].splitlines()[1:]:  # the exception's line: the first not indented
            if (
                line
                and not line[0].isspace()
                and not line.startswith(("During handling", "The above"))
            ):
                return "traceback: " + re.match(r"[\w.]*", line).group(0)
        return "traceback"


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def expected_replies(stream: bytes, max_frame: int, eof_reply: bool) -> tuple[int, bool]:
    """(replies a server owes for this byte stream, whether it ends the connection).

    A whole frame gets one; a length over ``max_frame`` one and the end; input
    that ends inside a frame one (``eof_reply``: the board agent) or none (the
    TEE daemon, which only sees the connection close)."""
    pos, n = 0, 0
    while pos < len(stream):
        if len(stream) - pos < 4:
            return n + eof_reply, True
        ln = int.from_bytes(stream[pos : pos + 4], "big")
        if ln > max_frame:
            return n + 1, True
        if len(stream) - pos - 4 < ln:
            return n + eof_reply, True
        n, pos = n + 1, pos + 4 + ln
    return n, False


def frames_in(buf: bytes) -> tuple[list, bytes]:
    """The whole reply frames in ``buf`` (decoded; undecodable ones as None) and the rest."""
    import cbor2

    out = []
    while len(buf) >= 4:
        ln = int.from_bytes(buf[:4], "big")
        if len(buf) < 4 + ln:
            break
        body = buf[4 : 4 + ln]
        try:
            if body[:1] == b"\x02":  # the light path's reply to a binary invoke
                from omgkit.tee import wire

                out.append({"ok": True, "params": wire.unpack_reply(body)})
            else:
                out.append(cbor2.loads(body))
        except Exception:  # noqa: BLE001 - a reply that is not CBOR: counted as bad
            out.append(None)
        buf = buf[4 + ln :]
    return out, buf


def _binary_invoke(req: dict) -> bytes | None:
    """The request as the light path's binary invoke (``wire.pack_invoke``), where it fits."""
    from omgkit.tee import wire

    try:
        return wire.pack_invoke(req["session"], req["cmd"], req["types"], req["params"])
    except (TypeError, IndexError, KeyError, struct.error):
        return None


def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def framing(rng: random.Random, body: bytes, max_frame: int, other: bytes) -> tuple[str, bytes]:
    """A byte stream whose framing is wrong, or several frames in one."""
    k = pick(rng, {"declares more": 18, "declares less": 14, "over bound": 14, "cut header": 8, "zero length": 8,
                   "cut frame": 14, "two frames": 12, "three frames": 6, "nothing": 6})  # fmt: skip
    if k == "declares more":
        return k, struct.pack(">I", len(body) + rng.choice([1, 2, 100, 1 << 20])) + body
    if k == "declares less":
        return k, struct.pack(">I", max(0, len(body) - rng.choice([1, 2, len(body)]))) + body
    if k == "over bound":
        return k, struct.pack(">I", rng.choice([max_frame + 1, 2**32 - 1])) + body[
            : rng.randint(0, 16)
        ]
    if k == "cut header":
        return k, framed(body)[: rng.randint(1, 3)]
    if k == "zero length":
        return k, b"\0\0\0\0" + rng.choice([b"", framed(other)])
    if k == "cut frame":
        f = framed(body)
        return k, f[: rng.randint(4, max(4, len(f) - 1))]
    if k == "two frames":
        return k, framed(body) + framed(other)
    if k == "three frames":
        return k, framed(other) + framed(body) + framed(other)
    return k, b""


def judge(replies: list, expected: int, stderr_text: str, internal_message: str) -> dict:
    """The outcome of a service input from its replies and what the service printed."""
    esc = LogWatch.escape(stderr_text)
    if esc is None:
        for r in replies:
            if isinstance(r, dict) and r.get("message") == internal_message:
                esc = "internal error reply"
    if esc:
        return {
            "outcome": "escape",
            "exc": esc,
            "detail": stderr_text[-4000:] or repr(replies)[:500],
        }
    for r in replies:
        if isinstance(r, dict) and "the TA's process ended" in str(r.get("message", "")):
            return {"outcome": "crash", "detail": f"a TA process died: {r}"}
    if len(replies) != expected or any(not isinstance(r, dict) or "ok" not in r for r in replies):
        return {
            "outcome": "bad_reply",
            "detail": f"{len(replies)} replies to {expected} frames: {repr(replies)[:400]}",
        }
    ok = all(r.get("ok") is True for r in replies)
    return {"outcome": "accepted" if ok else "refused"}


class _Bundle:
    """A device with our TA installed, the TA's bundle trusting the vector's vendor key."""

    @staticmethod
    def make(root: Path):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from omgkit.guard.host import install_ta
        from omgkit.tee import Device, Manufacturer
        from omgkit.tee.bundle import build_bundle
        from omgkit.tee.pki import raw_public

        root.mkdir(parents=True, exist_ok=True)
        mfr = Manufacturer.create(root / "manufacturer")
        ta_key = Ed25519PrivateKey.generate()
        vendor = Ed25519PrivateKey.from_private_bytes(VENDOR_SEED)
        m = build_bundle(root / "bundle", raw_public(vendor.public_key()), ta_key)
        dev = root / "device"
        Device.create(dev, mfr, [ta_key.public_key()])
        install_ta(dev, root / "bundle")
        return Device(dev), m


def _license_for(token: bytes, device, m: bytes, *, budget=None) -> bytes:
    """A license the TA that made ``token`` can open (vendor: the vector's key)."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from omg_ta import license as lic
    from omg_ta.secret import Secret
    from omgkit.tee import token as T

    claims = cbor2.loads(cbor2.loads(token).value[2])
    now = int(time.time())
    return lic.issue(Ed25519PrivateKey.from_private_bytes(VENDOR_SEED), license_id=bytes(16),
                     model_id="kws-vector", model_version=3, device_id=device.device_id, measurement=m,
                     issued_at=now, policy=lic.Policy(not_after=now + 10 * 365 * 86400, budget=budget, scores=True),
                     kem="X25519", recipient=x25519.X25519PublicKey.from_public_bytes(claims[T.TA_KEYS]["X25519"]),
                     model_key=Secret(bytes.fromhex(_vector("package")["model_key"])))  # fmt: skip


class TeeWireTarget(Target):
    """A real TEE daemon: fresh connections to tee.sock and hw.sock (framing, file descriptors),
    and one connection holding a session that attested and provisioned (commands reach the TA)."""

    name = "tee_wire"
    service = True

    def setup(self, *a) -> None:
        super().setup(*a)
        from omg_ta.errors import INTERNAL_MESSAGE

        self.internal = INTERNAL_MESSAGE
        self.log = LogWatch(self.errpath)
        self.device, self.m = _Bundle.make(self.workdir / "tee")
        self.pk = Packages(self.seed)
        self.lic = Licenses(self.seed)
        self.daemon = None
        self.sess = None
        self.license = self.sealed = None
        self.peak = 0
        self._start()

    # -- the daemon and the session ----------------------------------------------------
    def _start(self, kill: bool = False) -> None:
        from omgkit.tee import TeeDaemon

        self._stop(kill)
        self.daemon = TeeDaemon(self.device.path).start(timeout=300)
        self.pid = self.daemon.proc.pid
        self._open_session()

    def _stop(self, kill: bool = False) -> None:
        self._close_session()
        if self.daemon is not None:
            self.peak = max(self.peak, _vm_hwm(self.daemon.proc.pid))
            if kill:  # a thread stuck in C holds the GIL: SIGTERM would wait for it
                self.daemon.proc.kill()
            self.daemon.stop()
            self.daemon = None

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def _call(self, s: socket.socket, req: dict, fds=None) -> dict:
        from omgkit.tee import wire

        if fds:
            wire.send_with_fds(s, req, fds)
        else:
            wire.send(s, req)
        return wire.recv(s)[0]

    def _open_session(self) -> None:
        from omg_ta import commands as C
        from omgkit.tee.client import SharedMemory

        self._close_session()
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(120)
        s.connect(str(self.device.path / "tee.sock"))
        sid = self._call(s, {"op": "open_session", "uuid": C.TA_UUID.bytes})["session"]
        mem = SharedMemory(4 * C.CLIP_BYTES)
        shm = self._call(s, {"op": "register_shm"}, [mem.fd])["shm"]
        r = self._call(s, {"op": "invoke", "session": sid, "cmd": C.CMD_GET_ATTESTATION, "types": C.SIGNATURES[0],
                           "params": [["m", os.urandom(32)], ["o", 1 << 16], None, None]})  # fmt: skip
        if self.license is None:
            self.license = _license_for(r["params"][1][1], self.device, self.m)
            r = self._call(s, {"op": "invoke", "session": sid, "cmd": C.CMD_PROVISION, "types": C.SIGNATURES[1],
                               "params": [["m", self.license], ["o", 4096], None, None]})  # fmt: skip
            self.sealed = r["params"][1][1]
        s.settimeout(self.limit)
        self.sess = {"sock": s, "sid": sid, "shm": shm, "mem": mem}

    def _close_session(self) -> None:
        if self.sess:
            self.sess["sock"].close()
            self.sess["mem"].release()
            self.sess = None

    def service_kb(self) -> int:
        if self.alive():
            self.peak = max(self.peak, _vm_hwm(self.daemon.proc.pid))
        return self.peak

    # -- inputs ------------------------------------------------------------------------------
    def _slot(self, rng: random.Random, what: str):
        """A parameter slot of the right kind for a command, its content varied."""
        from omg_ta import commands as C

        if what == "nonce":
            return ["m", rng.randbytes(rng.choice([0, 15, 16, 32, 64, 65, 1000]))]
        if what == "license":
            r = rng.random()
            if r < 0.25:
                return ["m", self.license]
            if r < 0.35:
                return ["m", fc.mutate_bytes(rng, self.license, [self.license])]
            return ["m", self.lic.make(rng, self.device.device_id, self.m)[1]]
        if what == "sealed":
            r = rng.random()
            if r < 0.5:
                return ["m", self.sealed]
            if r < 0.85:
                return ["m", fc.mutate_bytes(rng, self.sealed, [self.sealed])]
            return ["m", self.sealed[: rng.randint(0, len(self.sealed))]]
        if what == "package":
            return ["m", self.pk.vec if rng.random() < 0.4 else self.pk.make(rng)[1]]
        if what == "out":
            return ["o", rng.choice([0, 1, 100, 4096, 1 << 16, C.MAX_OUTPUT, C.MAX_OUTPUT + 1])]
        if what == "audio":
            r = rng.random()
            if r < 0.4:
                n = rng.choice([0, 1, C.CLIP_BYTES, 4 * C.CLIP_BYTES, 4 * C.CLIP_BYTES + 1])
                return [
                    "s",
                    self.sess["shm"] if self.sess else 1,
                    rng.choice([0, 0, 1, C.CLIP_BYTES, 2**32]),
                    n,
                ]
            if r < 0.7:
                return ["m", rng.randbytes(rng.choice([0, 1, 100, C.CLIP_BYTES]))]
            return None
        return None

    def _invoke(self, rng: random.Random) -> dict:
        from omg_ta import commands as C

        cmd = rng.choice([0, 1, 2, 2, 2, 3, 3, 4, 5, rng.choice([6, -1, 2**32, 2**64])])
        layout = {0: ["nonce", "out", None, None], 1: ["license", "out", None, None],
                  2: ["sealed", "license", "package", "out"], 3: [None, "audio", "out", None],
                  4: [None] * 4, 5: ["out", None, None, None]}.get(cmd, ["nonce", "out", None, None])  # fmt: skip
        params = [self._slot(rng, w) if w else None for w in layout]
        if cmd == 3:
            params[0] = [
                "v",
                rng.choice([0, 1, 1, 2, 2**32 - 1]),
                rng.choice([0, 1, 4, C.MAX_BATCH, C.MAX_BATCH + 1, 2**32 - 1]),
            ]
        types = C.SIGNATURES.get(cmd, 0)
        if cmd == 3 and params[0][1] == C.SOURCE_MIC:
            types = C.CLASSIFY_MIC_SIGNATURE
        if rng.random() < 0.1:
            types = rng.choice([0, types ^ (1 << rng.randrange(16)), 2**32 - 1, 2**32])
        return {
            "op": "invoke",
            "session": self.sess["sid"] if self.sess else 1,
            "cmd": cmd,
            "types": types,
            "params": params,
        }

    def _fresh_request(self, rng: random.Random, hw: bool) -> dict:
        from omg_ta import commands as C

        if hw:
            op = pick(
                rng, {"mic_feed": 40, "clock_offset": 30, "ping": 10, "ta_status": 10, "other": 10}
            )
            if op == "mic_feed":
                n = rng.choice([0, 1, 3])
                size = (
                    rng.choice([0, 1, C.CLIP_BYTES - 1, C.CLIP_BYTES + 1, C.CLIP_BYTES])
                    if rng.random() < 0.9
                    else C.CLIP_BYTES
                )
                return {
                    "op": op,
                    "clips": [bytes(size)] * (n if size != C.CLIP_BYTES else min(n, 1)),
                }
            if op == "clock_offset":
                return {
                    "op": op,
                    "seconds": rng.choice([0, 1, -1, 2**63, -(2**63), 10**30, 10**5000]),
                }
            return {"op": op if op != "other" else fc.rand_text(rng, 12)}
        op = pick(rng, {"open_session": 8, "invoke": 30, "close_session": 12, "register_shm": 20,
                        "release_shm": 10, "other": 10, "no op": 5})  # fmt: skip
        sid = rng.choice([0, 1, 2, 7, -1, 2**63])
        if op == "open_session":
            return {
                "op": op,
                "uuid": C.TA_UUID.bytes
                if rng.random() < 0.25
                else rng.randbytes(rng.choice([16, 15, 17, 0])),
            }
        if op == "invoke":
            return {"op": op, "session": sid, "cmd": rng.choice([0, 2, 3]), "types": C.SIGNATURES[0],
                    "params": [["m", b"x" * 32], ["o", 100], None, None]}  # fmt: skip
        if op in ("close_session", "release_shm"):
            return {"op": op, ("session" if op == "close_session" else "shm"): sid}
        if op == "register_shm":
            return {"op": op}
        if op == "other":
            return {"op": rng.choice(["probe", "", "x" * 1000, "OPEN_SESSION", "open_session\x00"])}
        return {"uuid": C.TA_UUID.bytes}

    def make(self, rng):
        from omgkit.tee import wire

        channel = pick(rng, {"tee": 45, "session": 40, "hw": 15})
        if channel == "session":
            req = self._invoke(rng) if rng.random() < 0.85 else self._fresh_request(rng, False)
            if req.get("op") == "open_session" or (
                req.get("op") == "close_session" and rng.random() < 0.8
            ):
                req = self._invoke(
                    rng
                )  # sessions are opened on fresh connections; rarely closed here
            packed = _binary_invoke(req)
            if packed is not None and rng.random() < 0.35:  # the light path's binary invoke
                if rng.random() < 0.3:
                    kind, body = "binary as is", packed
                else:
                    kind, body = "binary mutated", fc.mutate_bytes(rng, packed, [packed])
            elif rng.random() < 0.55:
                kind, body = "as is", enc(req, canonical=False)
            else:
                kind, body = mutate_cbor(rng, req, keys=["op", "session", "cmd", "types", "params"])
            n = 2 if rng.random() < 0.05 else 1
            return {
                "data": framed(body) * n,
                "kind": f"session: {kind}",
                "channel": channel,
                "fds": [],
                "request": f"cmd {req['cmd']}" if "cmd" in req else str(req.get("op"))[:40],
            }
        hw = channel == "hw"
        req = self._fresh_request(rng, hw)
        if rng.random() < 0.3:
            kind, body = "as is", enc(req, canonical=False)
        else:
            kind, body = mutate_cbor(
                rng, req, keys=["op", "session", "uuid", "shm", "clips", "seconds"]
            )
        data = framed(body)
        if rng.random() < 0.2:
            fk, data = framing(rng, body, wire.TEE_MAX_FRAME, enc(self._fresh_request(rng, hw)))
            kind = f"framing: {fk}"
        fds = []
        if not hw and (req.get("op") == "register_shm" or rng.random() < 0.03):
            fds = [pick(rng, {"sealed memfd": 40, "unsealed memfd": 12, "grow-sealed memfd": 6, "empty memfd": 6,
                              "huge memfd": 6, "file": 8, "pipe": 8, "dir": 5, "socket": 4, "devnull": 5})
                   for _ in range(rng.choice([1, 1, 1, 1, 2, 4, 5]))]  # fmt: skip
        return {
            "data": data,
            "kind": f"{channel}: {kind}",
            "channel": channel,
            "fds": fds,
            "request": str(req.get("op"))[:40],
        }

    # -- running one -------------------------------------------------------------------------
    def _fds(self, kinds: list[str], stack: contextlib.ExitStack) -> list[int]:
        import fcntl

        from omg_ta import commands as C

        out = []
        for k in kinds:
            if k.endswith("memfd"):
                fd = os.memfd_create("fuzz", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
                size = {"empty memfd": 0, "huge memfd": (256 << 20) + 1}.get(k, 2 * C.CLIP_BYTES)
                os.ftruncate(fd, size)
                seals = {"sealed memfd": fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
                         "empty memfd": fcntl.F_SEAL_SHRINK, "huge memfd": fcntl.F_SEAL_SHRINK,
                         "grow-sealed memfd": fcntl.F_SEAL_GROW}.get(k)  # fmt: skip
                if seals:
                    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            elif k == "file":
                fd = os.open(self.errpath, os.O_RDONLY | os.O_CLOEXEC)
            elif k == "pipe":
                fd, w = os.pipe()
                stack.callback(os.close, w)
            elif k == "dir":
                fd = os.open(self.workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            elif k == "socket":
                a, b = socket.socketpair()
                stack.callback(b.close)
                fd = a.detach()
            else:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            out.append(fd)
        return out

    def run(self, inp):
        if not self.alive():
            self._start()
        elif self.sess is None:
            self._open_session()
        self.log.new()
        try:
            if inp["channel"] == "session":
                res = self._run_session(inp)
            else:
                res = self._run_fresh(inp)
        finally:
            text = self.log.new()
        if not self.alive():
            res = {
                "outcome": "crash",
                "detail": f"the TEE daemon died (exit {self.daemon.proc.returncode}): {text[-3000:]}",
            }
        elif "replies" in res:
            res = judge(res.pop("replies"), res.pop("expected"), text, self.internal)
        else:
            res["detail"] = f"{res.get('detail')}: {text[-3000:]}"
        if res["outcome"] in (
            "hang",
            "crash",
        ):  # a dead daemon or TA, or stuck threads: start clean
            self._start(kill=res["outcome"] == "hang")
        elif inp["channel"] == "hw":  # the secure clock back where the session's license holds
            with contextlib.suppress(OSError, ValueError):
                self._hw({"op": "clock_offset", "seconds": 0})
        return res

    def _hw(self, req: dict) -> None:
        from omgkit.tee import wire

        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(self.limit)
            s.connect(str(self.device.path / "hw.sock"))
            wire.send(s, req)
            wire.recv(s)

    def _run_fresh(self, inp) -> dict:
        from omgkit.tee import wire

        stream = inp["data"]
        expected, _ = expected_replies(stream, wire.TEE_MAX_FRAME, eof_reply=False)
        if (
            len(inp["fds"]) > wire.MAX_FDS and stream
        ):  # over the descriptor bound: one refusal, the end
            expected = 1
        buf, deadline = b"", time.monotonic() + self.limit
        with contextlib.ExitStack() as stack:
            s = stack.enter_context(socket.socket(socket.AF_UNIX))
            s.settimeout(self.limit)
            s.connect(str(self.device.path / ("hw.sock" if inp["channel"] == "hw" else "tee.sock")))
            fds = self._fds(inp["fds"], stack)
            try:
                if fds:
                    sent = s.sendmsg(
                        [stream[:4096]],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))],
                    )
                    s.sendall(stream[sent:])
                else:
                    s.sendall(stream)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the daemon closed first (a frame over the bound): its reply is still there
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"outcome": "hang", "detail": f"no end of the connection within {self.limit:g} s "
                                                         f"({len(frames_in(buf)[0])} of {expected} replies)"}  # fmt: skip
                s.settimeout(left)
                try:
                    chunk = s.recv(1 << 16)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    break
                buf += chunk
        replies, rest = frames_in(buf)
        if rest:
            replies.append(None)
        return {"replies": replies, "expected": expected}

    def _run_session(self, inp) -> dict:
        from omg_ta import commands as C
        from omg_ta.errors import BadStateError
        from omgkit.tee import wire

        s = self.sess["sock"]
        tag = f"probe-{time.monotonic_ns()}"
        expected, _ = expected_replies(inp["data"], wire.TEE_MAX_FRAME, eof_reply=False)
        replies, buf, deadline = [], b"", time.monotonic() + self.limit
        try:
            s.sendall(inp["data"] + framed(enc({"op": tag})))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {
                        "outcome": "hang",
                        "detail": f"{len(replies)} of {expected} replies within {self.limit:g} s",
                    }
                s.settimeout(left)
                try:
                    chunk = s.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    self._close_session()
                    return {"replies": replies + [None], "expected": expected}
                got, buf = frames_in(buf + chunk)
                replies += got
                if (
                    replies
                    and isinstance(replies[-1], dict)
                    and tag in str(replies[-1].get("message", ""))
                ):
                    replies.pop()
                    break
            # is the session still there (an input may have closed it)?
            r = self._call(s, {"op": "invoke", "session": self.sess["sid"], "cmd": C.CMD_LAST_ERROR,
                               "types": C.SIGNATURES[C.CMD_LAST_ERROR], "params": [["o", 4096], None, None, None]})  # fmt: skip
            if not r.get("ok") and r.get("code") == BadStateError.result_code:
                self._close_session()
        except (OSError, wire.WireError):
            self._close_session()  # opened again before the next input
            return {"replies": replies + [None], "expected": expected}
        return {"replies": replies, "expected": expected}

    def close(self):
        self._stop()


# --- the board agent -------------------------------------------------------------------------


class AgentTarget(Target):
    """``python -m omgkit.board.agent serve`` on a board whose emulated TEE runs: frames in on
    stdin, replies counted on stdout, tracebacks and internal errors on stderr are escapes."""

    name = "agent"
    service = True

    def setup(self, *a) -> None:
        super().setup(*a)
        from omg_ta.errors import INTERNAL_MESSAGE
        from omgkit.tee import TeeDaemon

        self.internal = INTERNAL_MESSAGE
        self.root = self.workdir / "board"
        self.device, self.m = _Bundle.make(self.root)
        (self.root / "normal").mkdir()
        self.tee_log = LogWatch(self.errpath)
        self.agent_err = self.workdir / "agent.err"
        self.agent_err.touch()
        self.log = LogWatch(self.agent_err)
        self.daemon = TeeDaemon(self.device.path).start(timeout=300)
        self.lic = Licenses(self.seed)
        self.proc = None
        self.peak = 0
        self.starts = 0
        self._start()
        # preparation once, through the agent: its storage then holds a license and a sealed key
        # that open in any later session (initialize reaches the package)
        r = self._exchange(framed(enc({"op": "attest", "nonce": os.urandom(32)})), 1)
        self.license = _license_for(r[0]["token"], self.device, self.m)
        r = self._exchange(framed(enc({"op": "provision", "license": self.license})), 1)
        if not r or not r[0].get("ok"):
            raise RuntimeError(f"provisioning through the agent failed: {r}")
        (self.root / "normal" / "model.omgpkg").write_bytes(
            bytes.fromhex(_vector("package")["package"])
        )

    def _start(self) -> None:
        self._stop()
        env = dict(os.environ, OMG_BOARD_ROOT=str(self.root))
        self.err = open(self.agent_err, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "omgkit.board.agent", "serve"], cwd=self.root, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)  # fmt: skip
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.starts += 1

    def _stop(self) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        self.peak = max(self.peak, _vm_hwm(proc.pid))
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        proc.stdout.close()
        self.err.close()
        return rc

    def _exchange(self, data: bytes, n: int, *, tag: str | None = None, close: bool = False,
                  timeout: float = 120.0) -> list | None:  # fmt: skip
        """Write ``data`` (then close stdin if ``close``); read replies until ``n`` came, the one
        whose message has ``tag``, or the end. None if the deadline passed first."""
        win, rout = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        replies, buf, pos = [], b"", 0
        while True:
            if pos >= len(data) and close and win >= 0:
                self.proc.stdin.close()
                win = -1
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wl = [win] if win >= 0 and pos < len(data) else []
            r, w, _ = select.select([rout], wl, [], left)
            if w:
                try:
                    pos += os.write(win, data[pos : pos + (1 << 16)])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, OSError):
                    pos = len(data)
            if r:
                chunk = os.read(rout, 1 << 16)
                if not chunk:
                    return replies + ([None] if buf else [])
                got, buf = frames_in(buf + chunk)
                replies += got
                if (
                    tag
                    and replies
                    and isinstance(replies[-1], dict)
                    and tag in str(replies[-1].get("message", ""))
                ):
                    return replies
                if not tag and n and len(replies) >= n:
                    return replies

    def service_kb(self) -> int:
        if self.proc is not None:
            self.peak = max(self.peak, _vm_hwm(self.proc.pid))
        return max(self.peak, _vm_hwm(self.daemon.proc.pid))

    def _request(self, rng: random.Random) -> dict:
        from omg_ta import commands as C

        op = pick(rng, {"ping": 6, "info": 6, "attest": 14, "provision": 16, "initialize": 12, "mic_play": 8,
                        "classify_mic": 10, "classify_batch": 10, "other": 8, "bench": 2})  # fmt: skip
        if op == "attest":
            return {"op": op, "nonce": rng.randbytes(rng.choice([0, 15, 16, 32, 64, 65]))}
        if op == "provision":
            return {
                "op": op,
                "license": self.license
                if rng.random() < 0.2
                else self.lic.make(rng, self.device.device_id, self.m)[1],
            }
        if op in ("mic_play", "classify_batch"):
            n = rng.choice([0, 1, 2, C.CLIP_BYTES - 1, 100]) if rng.random() < 0.9 else C.CLIP_BYTES
            return {"op": op, "audio": bytes(n)}
        if op == "classify_mic":
            return {"op": op, "n": rng.choice([0, 1, 2, C.MAX_BATCH, C.MAX_BATCH + 1, -1, 2**32])}
        if op == "other":
            return {"op": rng.choice(["", "x" * 100, "PING", "ping\x00", "serve"]), "x": 1}
        return {"op": op}

    def make(self, rng):
        from omgkit.tee import wire

        req = self._request(rng)
        if rng.random() < 0.3:
            kind, body = "as is", enc(req, canonical=False)
        else:
            kind, body = mutate_cbor(rng, req, keys=["op", "nonce", "license", "audio", "n"])
        data, mode = framed(body), "serve"
        r = rng.random()
        if r < 0.025:
            fk, data = framing(rng, body, wire.MAX_FRAME, enc({"op": "ping"}))
            kind, mode = f"framing: {fk}", "end"
        elif r < 0.03:
            kind, data, mode = (
                "close",
                framed(enc({"op": "close"})) + rng.choice([b"", framed(enc({"op": "ping"}))]),
                "close",
            )
        elif r < 0.06:
            data = data + framed(enc(self._request(rng)))
            kind = f"two frames ({kind})"
        return {"data": data, "kind": kind, "mode": mode, "request": str(req.get("op"))[:40]}

    def run(self, inp):
        from omgkit.tee import wire

        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.log.new()
        self.tee_log.new()
        data, mode = inp["data"], inp["mode"]
        if mode == "serve":
            expected, _ = expected_replies(data, wire.MAX_FRAME, eof_reply=True)
            tag = f"probe-{time.monotonic_ns()}"
            replies = self._exchange(
                data + framed(enc({"op": tag})), 0, tag=tag, timeout=self.limit
            )
            if (
                replies is not None
                and replies
                and isinstance(replies[-1], dict)
                and tag in str(replies[-1].get("message", ""))
            ):
                replies.pop()
                res = {"replies": replies, "expected": expected}
            elif replies is None:
                res = {
                    "outcome": "hang",
                    "detail": f"no reply to the probe within {self.limit:g} s",
                }
            else:  # the agent ended
                rc = self._stop()
                res = {
                    "outcome": "crash",
                    "detail": f"the agent ended (exit {rc}) after {len(replies)} replies",
                }
        else:
            expected, ends = (
                (1, False)
                if mode == "close"
                else expected_replies(data, wire.MAX_FRAME, eof_reply=True)
            )
            replies = self._exchange(data, 0, close=True, timeout=self.limit)
            if replies is None:
                res = {
                    "outcome": "hang",
                    "detail": f"the agent did not end within {self.limit:g} s",
                }
            else:
                rc = self._stop()
                want = (
                    1 if ends else 0
                )  # input that ends inside a frame ends the session with status 1
                res = {"replies": replies, "expected": expected}
                if rc != want:
                    res = {"outcome": "crash" if rc is None or rc < 0 or rc > 2 else "bad_reply",
                           "detail": f"the agent ended with exit {rc}, not {want}, after {len(replies)} replies"}  # fmt: skip
        text = self.log.new() + self.tee_log.new()
        if "replies" in res:
            res = judge(res.pop("replies"), res.pop("expected"), text, self.internal)
        elif LogWatch.escape(text):
            res = {"outcome": "escape", "exc": LogWatch.escape(text), "detail": text[-4000:]}
        else:
            res["detail"] = f"{res.get('detail')}: {text[-3000:]}"
        if res["outcome"] in ("hang", "crash"):
            self._stop()
            if self.daemon.proc.poll() is not None:
                from omgkit.tee import TeeDaemon

                res["detail"] = "the TEE daemon died: " + res["detail"]
                self.daemon = TeeDaemon(self.device.path).start(timeout=300)
        return res

    def close(self):
        self._stop()
        self.daemon.stop()


# --- the vendor service ----------------------------------------------------------------------


_VENDOR_SERVER = """
import sys, threading
from omgkit.guard.vendor import Vendor, VendorServer
s = VendorServer(Vendor(sys.argv[1]), timeout=float(sys.argv[2])).start()
print(s._httpd.server_address[1], flush=True)
threading.Event().wait()
"""


class VendorTarget(Target):
    """A real VendorServer on loopback, in a process of its own (a request that stalls it is a
    hang, and it is started again); raw HTTP requests over TCP, each answered once. Its read
    deadline is 2 s (not 5), so a request that never ends is answered within the limit."""

    name = "vendor_http"
    service = True

    def setup(self, *a) -> None:
        super().setup(*a)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from omg_ta.errors import INTERNAL_MESSAGE
        from omgkit.guard.vendor import Vendor
        from omgkit.tee import Manufacturer
        from omgkit.util import write_secret

        self.internal = INTERNAL_MESSAGE
        self.log = LogWatch(self.errpath)
        rng = random.Random(f"{self.seed}:vendor:keys")
        self.vendor = Vendor.create(self.workdir / "vendor")
        mfr = Manufacturer.create(self.workdir / "manufacturer")
        self.vendor.trust_manufacturer(mfr.root_der)
        self.dev = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        self.device_id = rng.randbytes(16)
        self.chain = [mfr.certify(self.dev.public_key(), self.device_id), mfr.root_der]
        self.m = rng.randbytes(32)
        self.vendor.approve(self.m)
        write_secret(self.vendor._model_key_path("kws", 1), rng.randbytes(32))
        raw = lambda k: k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # noqa: E731
        self.ta_keys = {"X25519": raw(x25519.X25519PrivateKey.from_private_bytes(rng.randbytes(32)).public_key()),
                        "MLKEM768-X25519": [raw(mlkem.MLKEM768PrivateKey.generate().public_key()),
                                            raw(x25519.X25519PrivateKey.from_private_bytes(rng.randbytes(32)).public_key())]}  # fmt: skip
        self.stale = self._token(os.urandom(32))
        self.proc, self.peak, self.count = None, 0, 0
        self._start()

    def _start(self) -> None:
        self._stop()
        self.proc = subprocess.Popen([sys.executable, "-c", _VENDOR_SERVER, str(self.vendor.path), "2.0"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # fmt: skip
        r, _, _ = select.select([self.proc.stdout], [], [], 300)
        line = self.proc.stdout.readline() if r else b""
        if not line.strip().isdigit():
            raise RuntimeError(f"the vendor service did not start: {line!r}")
        self.addr = ("127.0.0.1", int(line))

    def _stop(self) -> None:
        if self.proc is not None:
            self.peak = max(self.peak, _vm_hwm(self.proc.pid))
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def _claims(self, nonce: bytes) -> dict:
        from omgkit.tee import token as T
        from omgkit.tee.device import TEE_VERSION

        return {T.NONCE: nonce, T.UEID: b"\x01" + self.device_id, T.IAT: int(time.time()),
                T.PROFILE: T.EAT_PROFILE, T.MEASUREMENT: self.m, T.TA_KEYS: self.ta_keys,
                T.TEE_VERSION: TEE_VERSION, T.TA_UUID: bytes(16)}  # fmt: skip

    def _token(self, nonce: bytes, payload: bytes | None = None) -> bytes:
        return sign1(self.dev, payload or enc(self._claims(nonce)), unprot={33: self.chain})

    def _license_body(self, rng: random.Random) -> tuple[str, bytes]:
        from omgkit.tee import token as T

        r = rng.random()
        if r < 0.004:
            # shared references a decoder must copy (a set's items, a map key): the cost doubles
            # with each level
            d = dag(rng, (40, 2))
            bomb = (
                Raw(head(6, 258) + b"\x81" + d)
                if rng.random() < 0.5
                else Raw(b"\xa1" + d + b"\x01")
            )
            tok = sign1(self.dev, enc(self._claims(b"n" * 32)), unprot={33: self.chain, 5: bomb})
            return "token with shared references", enc(
                {"token": tok, "model_id": "kws", "model_version": 1}
            )
        elif r < 0.45:
            tok, tk = self._token(self.vendor.new_nonce()), "fresh token"
        elif r < 0.65:
            kind, payload = mutate_cbor(rng, self._claims(self.vendor.new_nonce()),
                                        keys=[T.NONCE, T.MEASUREMENT, T.TA_KEYS, T.UEID])  # fmt: skip
            tok, tk = self._token(b"", payload), f"claims {kind}"
        elif r < 0.72:
            kind, tok = cose_edit(
                rng, self.dev, enc(self._claims(self.vendor.new_nonce())), {1: -8}, {33: self.chain}
            )
            tk = f"token envelope {kind}"
        elif r < 0.85:
            tok, tk = self.stale, "spent nonce"
        else:
            tok, tk = fc.mutate_bytes(rng, self.stale, [self.stale]), "token bytes"
        req = {"token": tok, "model_id": rng.choice(["kws", "kws", "other", ""]), "model_version": rng.choice([1, 1, 2, 0]),
               "kem": rng.choice(["X25519", "MLKEM768-X25519"])}  # fmt: skip
        if rng.random() < 0.5:
            return tk, enc(req, canonical=False)
        kind, body = mutate_cbor(rng, req, keys=["token", "model_id", "model_version", "kem"])
        return f"{tk}, {kind}", body

    def make(self, rng):
        path = pick(rng, {"/v1/license": 55, "/v1/nonce": 30, "other": 15})
        if path == "other":
            path = rng.choice(["/", "/v1/licenses", "/v1/nonce?x=1", "//v1/nonce", "/" + "a" * 70000, "*",
                               "http://x/v1/nonce", "/v1/nonce#", "/%00", "/v1/../v1/nonce", ""])  # fmt: skip
        if path == "/v1/license":
            kind, body = self._license_body(rng)
        else:
            j = rng.randrange(3)
            kind, body = [
                ("empty", b""),
                ("empty map", b"\xa0"),
                ("nonce body", mutate_cbor(rng, {"x": 1})[1]),
            ][j]
        method = pick(
            rng, {"POST": 90, "GET": 3, "PUT": 2, "HEAD": 1, "post": 1, "P\x00ST": 1, "": 2}
        )
        version = pick(rng, {"HTTP/1.0": 60, "HTTP/1.1": 30, "": 3, "HTTP/2.0": 2, "HTTP/1.0 x": 1, "HTTP/9": 1,
                             "http/1.0": 1, "HTTP/1.01": 1, "HTTP/1.0\x00": 1})  # fmt: skip
        line = " ".join(x for x in (method, path, version) if x)
        headers = [("Content-Type", "application/cbor"), ("Content-Length", str(len(body)))]
        hk = pick(rng, {"plain": 60, "length": 20, "transfer": 4, "many": 3, "long": 3, "odd": 10})
        if hk == "length":
            v = rng.choice([str(len(body) + 1), str(max(len(body) - 1, 0)), "0", "-1", "abc", "1e3", " 5", "+5", "",
                            str(10**20), "65537", "\uff10", "0x10", str(len(body)) * 2, "99999999999999999999999"])  # fmt: skip
            if rng.random() < 0.3:
                headers.append(("Content-Length", v))
            else:
                headers[1] = ("Content-Length", v)
        elif hk == "transfer":
            headers.append(("Transfer-Encoding", rng.choice(["chunked", "identity", ""])))
        elif hk == "many":
            headers += [(f"X-{i}", "y") for i in range(rng.choice([99, 101, 1000]))]
        elif hk == "long":
            headers.append(("X-Long", "y" * rng.choice([65536, 70000])))
        elif hk == "odd":
            headers.append(rng.choice([("", "x"), ("X-Fold", "a\r\n b"), ("X-Bin", "\xff\xfe"), ("Bad Header", "x"),
                                       ("Content-Length", str(len(body))), ("Connection", "keep-alive"),
                                       ("Expect", "100-continue"), ("Host", "\x00")]))  # fmt: skip
        eol = "\r\n" if rng.random() < 0.95 else "\n"
        req = (line + eol + "".join(f"{k}: {v}{eol}" for k, v in headers) + eol).encode(
            "latin-1", "replace"
        ) + body
        if rng.random() < 0.05:
            req, kind = fc.mutate_bytes(rng, req, [req]), f"{kind}, request bytes"
        where = {"/v1/license": "license", "/v1/nonce": "nonce"}.get(path, "other path")
        return {"data": req, "kind": f"{where}, headers {hk}", "body": kind}

    def _exchange(self, data: bytes) -> bytes | None:
        with socket.create_connection(self.addr, timeout=self.limit) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            out, deadline = b"", time.monotonic() + self.limit
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                s.settimeout(left)
                try:
                    chunk = s.recv(1 << 16)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    return out
                if not chunk:
                    return out
                out += chunk

    def run(self, inp):
        import cbor2

        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.log.new()
        resp = self._exchange(inp["data"])
        self.peak = max(self.peak, _vm_hwm(self.proc.pid))
        text = self.log.new()
        self.count += 1
        if self.proc.poll() is not None:
            res = {
                "outcome": "crash",
                "detail": f"the vendor service died (exit {self.proc.returncode}): {text[-3000:]}",
            }
            self._start()
            return res
        if resp is None:
            self._start()  # a stalled service is killed and started again
            return {
                "outcome": "hang",
                "detail": f"no whole response within {self.limit:g} s: {text[-3000:]}",
            }
        if not inp["data"] and not resp:  # no request line at all: nothing to answer
            return {"outcome": "refused"}
        esc = LogWatch.escape(text)
        head_, _, body = resp.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ", head_)
        obj = None
        with contextlib.suppress(Exception):
            obj = cbor2.loads(body)
        if esc is None and isinstance(obj, dict) and obj.get("message") == self.internal:
            esc = "internal error reply"
        if esc:
            return {
                "outcome": "escape",
                "exc": esc,
                "detail": (text or resp.decode("latin-1"))[-4000:],
            }
        if not m or not isinstance(obj, dict):
            return {
                "outcome": "bad_reply",
                "detail": f"not one HTTP response with a CBOR map: {resp[:300]!r}",
            }
        if self.count % 25 == 0 and not self._ping():
            self._start()
            return {
                "outcome": "hang",
                "detail": "the service stopped answering a valid nonce request",
            }
        return {"outcome": "accepted" if m.group(1) == b"200" else "refused"}

    def _ping(self) -> bool:
        r = self._exchange(b"POST /v1/nonce HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        return bool(r) and r.startswith(b"HTTP/1.0 200")

    def service_kb(self) -> int:
        return self.peak

    def close(self):
        self._stop()


TARGETS = {t.name: t for t in (PackageTarget, LicenseTarget, TokenTarget, CoseTarget, CborTarget, SealedTarget,
                               TeeWireTarget, AgentTarget, VendorTarget, WavTarget)}  # fmt: skip
assert set(TARGETS) == set(PARSERS)


# ---------------------------------------------------------------------------
# The worker, and the main process that drives it
# ---------------------------------------------------------------------------


def _send(fp, obj) -> None:
    b = pickle.dumps(obj)
    fp.write(struct.pack(">I", len(b)) + b)
    fp.flush()


def _input_rng(seed: int, parser: str, i: int) -> random.Random:
    return random.Random(f"{seed}:{parser}:{i}")


def worker_main(parser: str, seed: int, limit: float, workdir: str, errpath: str) -> None:
    """Reads input indices, answers ("input", input) then ("result", outcome) for each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles ^C
    warnings.simplefilter("ignore")
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")  # the frames' pipe; fd 1 (and every child's) goes to stderr
    os.dup2(2, 1)
    target = TARGETS[parser]()
    target.setup(Path(workdir), seed, limit, Path(errpath))
    _send(out, {"ready": True})
    try:
        while True:
            n = inp.read(4)
            if len(n) < 4:
                return
            i = pickle.loads(inp.read(struct.unpack(">I", n)[0]))
            try:
                x = target.make(_input_rng(seed, parser, i))
            except Exception as e:  # noqa: BLE001 - a fault of this script, reported as such
                _send(out, ("input", {"data": b"", "kind": "generator"}))
                _send(
                    out,
                    ("result", {"outcome": "harness_error", "exc": _exc_name(e), "detail": _tb(e)}),
                )
                continue
            try:
                _send(out, ("input", x))
            except Exception as e:  # noqa: BLE001 - an input this script cannot hand over
                _send(out, ("input", {"data": x.get("data", b""), "kind": x.get("kind", "?")}))
                _send(
                    out,
                    ("result", {"outcome": "harness_error", "exc": _exc_name(e), "detail": _tb(e)}),
                )
                continue
            t = time.perf_counter()
            try:
                res = target.run(x)
            except Exception as e:  # noqa: BLE001
                res = {"outcome": "harness_error", "exc": _exc_name(e), "detail": _tb(e)}
            res["seconds"] = time.perf_counter() - t
            res["worker_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            res["service_kb"] = target.service_kb() if target.service else 0
            _send(out, ("result", res))
    finally:
        target.close()


class Worker:
    """One target's worker subprocess: a crash or a hang is one input's, and it restarts."""

    def __init__(
        self, parser: str, seed: int, limit: float, workroot: Path, mem_mb: int, env: dict
    ):
        self.parser, self.seed, self.limit, self.mem_mb, self.env = parser, seed, limit, mem_mb, env
        self.workroot = workroot
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.service = parser in SERVICES

    def _limits(self) -> None:
        if self.mem_mb:
            n = self.mem_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (n, n))

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.parser}-", dir=self.workroot))
        self.errpath = self.workdir / "stderr.log"
        self.err = open(self.errpath, "ab")
        args = [sys.executable, str(Path(__file__).resolve()), "--worker", self.parser, "--seed", str(self.seed),
                "--timeout", str(self.limit), "--workdir", str(self.workdir), "--stderr", str(self.errpath)]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     env=self.env, preexec_fn=self._limits, start_new_session=True)  # fmt: skip
        status, msg = self._read(600.0)
        if status != "ok" or not isinstance(msg, dict) or not msg.get("ready"):
            raise RuntimeError(f"the {self.parser} worker did not start ({status}): {self._tail()}")

    def _tail(self, n: int = 3000) -> str:
        try:
            return self.errpath.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _read(self, timeout: float):
        return fc.read_worker_reply(self.proc.stdout.fileno(), timeout)

    def _stop(self, kill: bool) -> str:
        proc, self.proc = self.proc, None
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the worker and what it started
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.err.close()
        self.restarts += 1
        tail = self._tail()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return f"worker exit {rc}: {tail}"

    def call(self, i: int) -> tuple[dict | None, dict]:
        """(the input, its outcome) for input i."""
        if self.proc is None:
            self.start()
        try:
            _send(self.proc.stdin, i)
        except (BrokenPipeError, OSError):
            return None, {"outcome": "crash", "detail": self._stop(kill=True)}
        status, msg = self._read(120.0)
        if status != "ok":
            return None, {
                "outcome": status,
                "detail": "while making the input: " + self._stop(kill=True),
            }
        x = msg[1]
        status, msg = self._read(self.limit + (300.0 if self.service else 0.0))
        if status == "ok":
            return x, msg[1]
        what = "the worker died" if status == "crash" else f"no result within {self.limit:g} s"
        return x, {"outcome": status, "detail": f"{what}; {self._stop(kill=status == 'hang')}"}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            self._stop(kill=True)
            self.restarts -= 1


OUTCOMES = ("accepted", "refused", "escape", "crash", "hang", "bad_reply", "harness_error")
BAD = ("escapes", "crashes", "hangs", "bad_replies", "harness_errors")
_COUNTER = {"escape": "escapes", "crash": "crashes", "hang": "hangs", "bad_reply": "bad_replies",
            "harness_error": "harness_errors", "accepted": "accepted", "refused": "refused"}  # fmt: skip


def _hex(data: bytes, limit: int = 1 << 16) -> str:
    return (
        data.hex()
        if len(data) <= limit
        else data[:limit].hex() + f"...(+{len(data) - limit} bytes)"
    )


def run_parser(parser: str, n: int, seed: int, limit: float, workroot: Path, mem_mb: int, env: dict,
               indices=None, progress=None) -> dict:  # fmt: skip
    t0 = time.monotonic()
    rep = {"inputs": 0, "accepted": 0, "refused": 0, "escapes": 0, "crashes": 0, "hangs": 0, "bad_replies": 0,
           "harness_errors": 0, "escape_types": {}, "peak_rss_mb": {"worker": 0.0, "service": 0.0},
           "slowest_input_s": 0.0, "worker_restarts": 0, "strategies": {}, "examples": []}  # fmt: skip
    w = Worker(parser, seed, limit, workroot, mem_mb, env)
    seen: dict[str, int] = {}
    try:
        for i in indices if indices is not None else range(n):
            x, res = w.call(i)
            o = res["outcome"]
            rep["inputs"] += 1
            rep[_COUNTER[o]] += 1
            kind = (x or {}).get("kind", "?")
            top = kind.split(" (")[0]
            per = rep["strategies"].setdefault(top, {})
            per[o] = per.get(o, 0) + 1
            rep["slowest_input_s"] = round(max(rep["slowest_input_s"], res.get("seconds", 0.0)), 3)
            rep["peak_rss_mb"]["worker"] = max(
                rep["peak_rss_mb"]["worker"], round(res.get("worker_kb", 0) / 1024, 1)
            )
            rep["peak_rss_mb"]["service"] = max(
                rep["peak_rss_mb"]["service"], round(res.get("service_kb", 0) / 1024, 1)
            )
            if o == "escape":
                rep["escape_types"][res["exc"]] = rep["escape_types"].get(res["exc"], 0) + 1
            if o not in ("accepted", "refused") or indices is not None:
                key = f"{o}:{res.get('exc')}"
                seen[key] = seen.get(key, 0) + 1
                if seen[key] <= EXAMPLES:
                    ex = {"index": i, "outcome": o, "exception": res.get("exc"), "kind": kind,
                          "input_len": len((x or {}).get("data", b"")), "input": _hex((x or {}).get("data", b"")),
                          "detail": (res.get("detail") or "")[-4000:],
                          "reproduce": f"python benchmarks/fuzz.py --parsers {parser} --seed {seed} --only {i}"}  # fmt: skip
                    for k, v in (x or {}).items():
                        if k not in ("data", "kind"):
                            ex[k] = v.hex() if isinstance(v, bytes) else v
                    rep["examples"].append(ex)
            if progress and (i + 1) % 2000 == 0 and i + 1 < n:
                progress(parser, rep, time.monotonic() - t0, final=False)
    finally:
        w.close()
        rep["worker_restarts"] = w.restarts
    rep["seconds"] = round(time.monotonic() - t0, 1)
    return rep


def _code_state() -> dict:
    """The commit fuzzed and the files changed since (the findings are of that code)."""

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout

    try:
        return {"commit": git("rev-parse", "HEAD").strip(),
                "changed": [ln[3:] for ln in git("status", "--porcelain").splitlines() if ln[3:]]}  # fmt: skip
    except OSError:  # no git here
        return {}


def fuzz(n: int, seed: int = 0, *, parsers=PARSERS, limit: float = LIMIT, mem_mb: int = MEM_MB,
         only: int | None = None, progress=None) -> dict:  # fmt: skip
    """The whole run; the report as written to --json."""
    env = dict(os.environ, OMG_TEE_DEBUG="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "ta"), *filter(None, [os.environ.get("PYTHONPATH")])]))  # fmt: skip
    report = {"n": n, "seed": seed, "timeout_s": limit, "mem_limit_mb": mem_mb, "code": _code_state(),
              "parsers": {}}  # fmt: skip
    workroot = Path(tempfile.mkdtemp(prefix="omg-fuzz-"))
    try:
        for p in parsers:
            idx = [only] if only is not None else None
            rep = run_parser(p, n, seed, limit, workroot, mem_mb, env, idx, progress)
            report["parsers"][p] = rep
            if progress:
                progress(p, rep, rep["seconds"], final=True)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    report["ok"] = all(sum(r[k] for k in BAD) == 0 for r in report["parsers"].values())
    return report


def table(report: dict) -> str:
    cols = ["inputs", "accepted", "refused", "escapes", "crashes", "hangs", "bad_replies"]
    rows = [["parser", *cols, "peak MB (worker/service)", "s"]]
    for p, r in report["parsers"].items():
        mb = r["peak_rss_mb"]
        rows.append([p, *(str(r[c]) for c in cols),
                     f"{mb['worker']:.0f}/{mb['service']:.0f}" if mb["service"] else f"{mb['worker']:.0f}", f"{r['seconds']:.0f}"])  # fmt: skip
    w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(x.rjust(w[i]) if i else x.ljust(w[i]) for i, x in enumerate(row)) for row in rows
    ]
    for p, r in report["parsers"].items():
        if r["escape_types"]:
            lines.append(
                f"{p}: escapes: " + "; ".join(f"{k} ({v})" for k, v in r["escape_types"].items())
            )
        if r["harness_errors"]:
            lines.append(
                f"{p}: {r['harness_errors']} faults of this script (see the JSON's examples)"
            )
    return "\n".join(lines)


def _progress(p: str, r: dict, secs: float, final: bool) -> None:
    bad = ", ".join(f"{r[k]} {k}" for k in BAD if r[k]) or "nothing bad"
    state = "done" if final else "so far"
    print(f"fuzz: {p}: {r['inputs']} inputs in {secs:.0f} s ({state}): {r['accepted']} accepted, "
          f"{r['refused']} refused, {bad}", file=sys.stderr, flush=True)  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="inputs per parser")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument(
        "--parsers", default=",".join(PARSERS), help=f"comma-separated, of: {', '.join(PARSERS)}"
    )
    ap.add_argument(
        "--timeout", type=float, default=LIMIT, help="seconds per input before it counts as a hang"
    )
    ap.add_argument(
        "--mem-mb", type=int, default=MEM_MB, help="address-space limit of each worker (0: none)"
    )
    ap.add_argument(
        "--only", type=int, help="make and run only this input (of each parser given); print it"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--stderr", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker_main(a.worker, a.seed, a.timeout, a.workdir, a.stderr)
        return 0
    parsers = tuple(p for p in a.parsers.split(",") if p)
    unknown = [p for p in parsers if p not in PARSERS]
    if unknown:
        ap.error(f"unknown parser {unknown[0]!r}; known: {', '.join(PARSERS)}")
    rep = fuzz(a.n if a.only is None else 1, a.seed, parsers=parsers, limit=a.timeout, mem_mb=a.mem_mb,
               only=a.only, progress=_progress)  # fmt: skip
    if a.only is not None:
        for p, r in rep["parsers"].items():
            print(json.dumps({"parser": p, "index": a.only, **{k: r[k] for k in ("accepted", "refused", *BAD)},
                              "examples": r["examples"]}, indent=1))  # fmt: skip
    else:
        print(table(rep))
    if a.json:
        a.json.write_text(json.dumps(rep, indent=1) + "\n")
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
