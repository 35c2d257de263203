"""Errors of the trusted application.

The root of omgkit's whole exception hierarchy, :class:`OmgError`, lives here
because the TA is self-contained (it never imports the workbench) while the
workbench imports the TA's frontend and runtimes: defining the root here
gives both one hierarchy. ``omgkit.errors`` re-exports these classes.
"""

from __future__ import annotations


class OmgError(Exception):
    """Root of every error omgkit raises on purpose."""


class ConfigError(OmgError, ValueError):
    """A setting, name or argument is not one omgkit knows."""


class UnknownNameError(ConfigError):
    """A name (model, engine, profile, runtime) is not among the known ones."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, list(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")


class RuntimeUnavailableError(OmgError, ImportError):
    """An inference runtime is not installed here."""

    def __init__(self, runtime: str, package: str, detail: str = ""):
        self.runtime, self.package = runtime, package
        msg = f"runtime {runtime!r} is not available: install the {package!r} package"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class ModelFormatError(OmgError, ValueError):
    """Model bytes are not a usable TensorFlow Lite flatbuffer for this runtime."""
