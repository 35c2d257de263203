"""The exception hierarchy: every error omgkit raises is an :class:`OmgError`.

The root and the errors the TA itself can raise are defined in
``omg_ta.errors`` (the TA never imports the workbench); the rest are here.

Operational errors say what happened and what to do. Security failures
(added with the guard) will carry no detail that helps an attacker.
"""

from __future__ import annotations

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
    """Input was usable but had to be converted (rate, channels, length)."""


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


class ArtifactError(OmgError):
    """A run directory is missing a file a later step needs."""
