"""The exception hierarchy: every error omgkit raises is an :class:`OmgError`.

The root and the errors the TA itself can raise are defined in
``omg_ta.errors`` (the TA never imports the workbench); the rest are here.

Operational errors say what happened and what to do. Security failures
(added with the guard) will carry no detail that helps an attacker.
"""

from __future__ import annotations

import warnings

from omg_ta import commands as C
from omg_ta.errors import (
    ConfigError,
    ModelFormatError,
    OmgError,
    RuntimeUnavailableError,
    UnknownNameError,
)

__all__ = [
    "OmgError",
    "OmgWarning",
    "ConfigError",
    "UnknownNameError",
    "AudioFormatError",
    "DatasetError",
    "DatasetNotFoundError",
    "DownloadError",
    "EngineError",
    "ConversionError",
    "RuntimeUnavailableError",
    "ModelFormatError",
    "ArtifactError",
]


class OmgWarning(UserWarning):
    """Input was usable but had to be converted (rate, channels, length).

    Shown as one plain line, ``omgkit: <message>`` (:func:`_format_warning`), not
    as Python's ``file:line: OmgWarning: ...`` with a line of our source."""


_python_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if isinstance(category, type) and issubclass(category, OmgWarning):
        return f"omgkit: {message}\n"
    return _python_format(message, category, filename, lineno, line)


warnings.formatwarning = _format_warning


class AudioFormatError(OmgError, ValueError):
    """A WAV file cannot be read or converted to 16 kHz mono 16-bit."""

    def __init__(self, path: object, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class DatasetError(OmgError):
    """A dataset is missing, incomplete or not in Speech Commands layout."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset path does not exist; the message says how to get one."""

    def __init__(self, path: object):
        self.path = path
        super().__init__(
            f"no dataset at {path}. Make the offline synthetic corpus with "
            f"`omg data synth --profile quick --out {path}`, download Speech Commands "
            f"with `omg data fetch speech-commands --out {path}` (needs internet), or "
            f"point --data at an extracted copy of speech_commands_v0.02."
        )


class DownloadError(OmgError):
    """A download failed or its checksum did not match."""


class EngineError(OmgError):
    """A text-to-speech engine is missing or failed."""


class ConversionError(OmgError):
    """A model cannot be converted to TensorFlow Lite builtins."""


class BenchError(OmgError):
    """A part of the benchmark failed; its figures would be wrong, so none are reported."""


class ArtifactError(OmgError):
    """A run directory (or a device's storage) is missing a file a later step needs."""

    result_code = C.RESULT_ARTIFACT


class BoardError(OmgError):
    """A board cannot be reached, authenticated, or used."""


class BoardUnreachableError(BoardError, ConnectionError):
    def __init__(self, host: str, port: int, reason: str, board: str = ""):
        self.host, self.port, self.reason, self.board = host, port, reason, board
        hint = (
            f"Start it with `omg board up {board}`."
            if board
            else "Is it up, and does it run an SSH server on that port?"
        )
        super().__init__(f"board {board or f'{host}:{port}'} is unreachable ({reason}). {hint}")


class BoardAuthError(BoardError):
    def __init__(self, host: str, port: int, user: str, key: str):
        self.host, self.port, self.user, self.key = host, port, user, key
        super().__init__(
            f"board {host}:{port} refused user {user!r} with key {key}: add the key's .pub to the board's "
            "~/.ssh/authorized_keys (emulated boards: `omg board create` does this)"
        )


class HostKeyChangedError(BoardError):
    def __init__(self, host: str, port: int, expected: str, got: str):
        self.host, self.port, self.expected, self.got = host, port, expected, got
        super().__init__(
            f"HOST KEY CHANGED for {host}:{port}: expected {expected}, got {got}. Someone may be "
            "impersonating the board. If the board was reinstalled, remove its line from the known_hosts "
            "file and trust it again with `omg board trust URL`."
        )


class UnknownHostKeyError(BoardError):
    def __init__(self, host: str, port: int, got: str):
        self.host, self.port, self.got = host, port, got
        super().__init__(
            f"board {host}:{port} is not known (its key is {got}). Check the fingerprint on the board "
            "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and pin it with `omg board trust URL`."
        )


class DiskFullError(BoardError):
    def __init__(self, host: str, path: str):
        self.host, self.path = host, path
        super().__init__(
            f"board {host}: no space left writing {path}; free space on the board and deploy again"
        )


class DeploymentError(BoardError):
    """A deployment did not complete: the board kept failing its checks, or its directory holds a link
    where a directory of ours belongs. The message says what to do."""


class BoardImageError(BoardError):
    """An OP-TEE board's image cannot be built, or the board cannot be started from it."""


class RemoteCommandError(BoardError):
    def __init__(self, command: str, status: int, stderr: str):
        self.command, self.status, self.stderr = command, status, stderr
        hint = ""
        if status == 127 or "No module named" in stderr:
            hint = " — the board's runtime is missing: prepare it with board_setup/ (or set ?python= in the URL)"
        super().__init__(
            f"`{command}` failed on the board with status {status}{hint}: {stderr.strip()[-400:]}"
        )
