"""Key material that does not leak by accident.

:class:`Secret` holds a key's bytes for the TA and the workbench alike (the
model key, the hardware unique key): its repr names only its length, it
cannot be pickled or copied into another process by accident, equality is
constant-time, and the bytes come out only through :meth:`Secret.reveal`,
a call a reader of the code can find.
"""

from __future__ import annotations

import hmac


class Secret:
    __slots__ = ("_data",)

    def __init__(self, data: bytes | bytearray | memoryview):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"a secret is bytes, not {type(data).__name__}")
        self._data = bytes(data)

    def reveal(self) -> bytes:
        """The key's bytes: call only where a primitive needs them."""
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<Secret: {len(self._data)} bytes>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._data, other._data)

    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol: object):
        raise TypeError("key material cannot be pickled or copied")
