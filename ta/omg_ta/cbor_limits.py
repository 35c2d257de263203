"""Bounds on CBOR from the other side, checked before anything is decoded.

A CBOR decoder builds one Python object per item: a frame of 32 MB of
one-byte items (``0x00``, ``0xa0``) becomes tens of millions of objects
and gigabytes of memory. :func:`check_cbor` walks the item heads only
(no object is made), and refuses a message with more items than the
channel allows, nested deeper than it allows, with a length that points
past the end, or with bytes after its one item. What passes decodes into
at most about ``len(data) + 100 * max_items`` bytes of objects.

The same walk is what the C TA's parser does (``ta/optee/core/cbor.h``):
every length checked against what remains before it is used.
"""

from __future__ import annotations

from .errors import BadParametersError

MAX_DEPTH = 16
"""Default nesting bound: no message of the contract nests deeper than 6."""
TAGS = frozenset({18})
"""Tags a message may carry: COSE_Sign1 (18) only. cbor2 gives other tags
meaning — shared references (28, 29) build a graph whose walk doubles at
each level (a few hundred bytes hung a parser: issue 13's fuzzing), and
dates, regular expressions, sets and bignums run code of their own."""


class CborLimitError(BadParametersError):
    """A CBOR message exceeds a bound or is malformed in its structure."""


_INDEF = -1


def check_cbor(data: bytes | bytearray | memoryview, max_items: int,
               max_depth: int = MAX_DEPTH, tags: frozenset[int] = TAGS) -> int:  # fmt: skip
    """Check one CBOR item's structure and bounds; returns its number of items.

    Raises :class:`CborLimitError` (a ``BadParametersError``) with what was
    exceeded. Does not check what the decoder checks anyway (UTF-8): only
    what decides time and memory, and which tags (``tags``) may appear.
    """
    mv = memoryview(data).cast("B")
    n, pos, items = len(mv), 0, 0
    stack = [1]  # items still to read at each open level; _INDEF until a break
    while stack:
        if stack[-1] == 0:
            stack.pop()
            continue
        if pos >= n:
            raise CborLimitError("CBOR ends inside an item (a length points beyond the end)")
        ib = mv[pos]
        pos += 1
        if ib == 0xFF:
            if stack[-1] != _INDEF:
                raise CborLimitError("CBOR break outside an indefinite-length item")
            stack.pop()
            continue
        if stack[-1] != _INDEF:
            stack[-1] -= 1
        items += 1
        if items > max_items:
            raise CborLimitError(f"CBOR of more than {max_items} items")
        major, info = ib >> 5, ib & 0x1F
        if info < 24:
            arg = info
        elif info <= 27:
            size = 1 << (info - 24)
            if pos + size > n:
                raise CborLimitError("CBOR ends inside an item (a length points beyond the end)")
            arg = int.from_bytes(mv[pos : pos + size], "big")
            pos += size
        elif info == 31 and major in (2, 3, 4, 5):
            arg = _INDEF
        else:
            raise CborLimitError(f"CBOR with a reserved head byte {ib:#04x}")
        if major in (2, 3):
            if arg == _INDEF:
                stack.append(_INDEF)  # chunks follow, then a break
            elif arg > n - pos:
                raise CborLimitError("CBOR string whose length points beyond the end")
            else:
                pos += arg
        elif major in (4, 5):
            count = arg if arg == _INDEF or major == 4 else 2 * arg
            if count != _INDEF and count > n - pos:  # every item takes at least a byte
                raise CborLimitError("CBOR container whose length points beyond the end")
            stack.append(count)
        elif major == 6:
            if arg not in tags:
                raise CborLimitError(f"CBOR tag {arg} (the tags allowed here: {sorted(tags)})")
            stack.append(1)  # the tagged item
        if len(stack) > max_depth + 1:
            raise CborLimitError(f"CBOR nested deeper than {max_depth}")
    if pos != n:
        raise CborLimitError(f"{n - pos} bytes after the CBOR item")
    return items
