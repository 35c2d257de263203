"""Boards over SSH: the connection, the emulated board, deployment, remote enclave sessions.

Names load lazily: the board-side agent (``omgkit.board.agent``) lives in
this package and must import without paramiko, which boards do not have.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "Board": "connection",
    "trust": "connection",
    "deploy": "deployment",
    "RemoteEnclave": "remote",
}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'omgkit.board' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
