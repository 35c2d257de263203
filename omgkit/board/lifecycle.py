"""One lifecycle for every kind of local board: ``create``, ``up``, ``down``, ``status``, ``list``.

A board's ``board.json`` names its kind (none: an emulated board, as
before kinds existed):

- ``emulated`` (the default): ``omgkit.board.emulator``, a Python TEE;
- ``optee-qemu``: ``omgkit.board.optee_qemu``, OP-TEE in QEMU.

Both are ``emu://NAME`` and are reached with the same ``Board`` code.
"""

from __future__ import annotations

import json
from types import ModuleType

from ..errors import ConfigError
from . import home as _home

KINDS = ("emulated", "optee-qemu")
DEFAULT_KIND = "emulated"


def _module(kind: str) -> ModuleType:
    if kind == "emulated":
        from . import emulator

        return emulator
    if kind == "optee-qemu":
        from . import optee_qemu

        return optee_qemu
    raise ConfigError(f"unknown board kind {kind!r}; use one of {', '.join(KINDS)}")


def kind_of(name: str) -> str:
    from .emulator import board_dir

    meta = board_dir(name) / "board.json"
    if not meta.is_file():
        raise ConfigError(f"no board {name!r}; `omg board create {name}` makes one")
    return json.loads(meta.read_text()).get("kind", DEFAULT_KIND)


def create(
    name: str, *, kind: str = DEFAULT_KIND, port: int | None = None, runtime: str | None = None
):
    """Make a board; ``runtime`` (emulated boards) picks its environment's inference runtime."""
    if runtime is None:
        return _module(kind).create(name, port=port)
    if kind != "emulated":
        raise ConfigError(
            f"--runtime is for emulated boards: an {kind} board's TA runs the C engine"
        )
    return _module(kind).create(name, port=port, runtime=runtime)


def up(name: str) -> dict:
    return _module(kind_of(name)).up(name)


def down(name: str) -> bool:
    return _module(kind_of(name)).down(name)


def status(name: str) -> dict:
    st = _module(kind_of(name)).status(name)
    st.setdefault("kind", DEFAULT_KIND)
    return st


def list_boards() -> list[dict]:
    return [
        status(p.name) for p in sorted(_home.boards_dir().iterdir()) if (p / "board.json").is_file()
    ]
