"""Errors of the trusted application.

The root of omgkit's whole exception hierarchy, :class:`OmgError`, lives here
because the TA is self-contained (it never imports the workbench) while the
workbench imports the TA's frontend and runtimes: defining the root here
gives both one hierarchy. ``omgkit.errors`` re-exports these classes.
"""

from __future__ import annotations

from . import commands as C


class OmgError(Exception):
    """Root of every error omgkit raises on purpose.

    ``result_code`` is how the error crosses a boundary (TEE, board agent,
    vendor service): see :func:`to_result` and :func:`from_result`. An
    error class without a code of its own crosses as ``RESULT_GENERIC``
    with its message.
    """

    result_code = C.RESULT_GENERIC


class ConfigError(OmgError, ValueError):
    """A setting, name or argument is not one omgkit knows."""

    result_code = C.RESULT_CONFIG


class UnknownNameError(ConfigError):
    """A name (model, engine, profile, runtime) is not among the known ones."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, list(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")


class RuntimeUnavailableError(OmgError, ImportError):
    """An inference runtime is not installed here."""

    result_code = C.RESULT_RUNTIME_UNAVAILABLE

    def __init__(self, runtime: str, package: str, detail: str = ""):
        self.runtime, self.package = runtime, package
        msg = f"runtime {runtime!r} is not available: install the {package!r} package"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class ModelFormatError(OmgError, ValueError):
    """Model bytes do not load, or do not fit the frontend settings or the labels."""

    result_code = C.RESULT_MODEL_FORMAT


class SecurityError(OmgError):
    """A security check refused something. Catch this to catch every refusal.

    Subclasses name *which* check refused (a policy decision the caller may
    know), never *why* a cryptographic verification failed: a failed MAC or
    signature carries no detail that would help an attacker.
    """

    result_code = C.RESULT_SECURITY
    default_message = "refused by a security check"

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)


class IntegrityError(SecurityError):
    """A signature or authentication tag did not verify."""

    result_code = C.RESULT_MAC_INVALID
    default_message = "integrity check failed"


class PackageIntegrityError(IntegrityError):
    """The sealed model package (header or ciphertext) is not authentic."""

    result_code = C.RESULT_PACKAGE_INTEGRITY
    default_message = "model package failed its integrity check"


class LicenseInvalidError(IntegrityError):
    """The license is malformed or not signed by the trusted vendor."""

    result_code = C.RESULT_LICENSE_INVALID
    default_message = "license failed its integrity check"


class TokenInvalidError(IntegrityError):
    """An attestation token is malformed, or its signature or chain does not verify."""

    result_code = C.RESULT_TOKEN_INVALID
    default_message = "attestation token failed verification"


class UnsealError(SecurityError):
    """Sealed data did not unseal: another TA measurement, or another device."""

    result_code = C.RESULT_UNSEAL
    default_message = "sealed key cannot be unsealed by this TA on this device"


class DeviceMismatchError(SecurityError):
    """A license or sealed blob was issued for another device."""

    result_code = C.RESULT_DEVICE_MISMATCH
    default_message = "license is bound to another device"


class LicenseExpiredError(SecurityError):
    """The license's expiry lies before the TEE's clock."""

    result_code = C.RESULT_LICENSE_EXPIRED
    default_message = "license has expired"


class RollbackError(SecurityError):
    """A model older than one this device already ran (monotonic counter)."""

    result_code = C.RESULT_ROLLBACK
    default_message = "model version is older than the device's counter (rollback refused)"


class BudgetExhaustedError(SecurityError):
    """The license's inference budget is used up."""

    result_code = C.RESULT_BUDGET_EXHAUSTED
    default_message = "inference budget of the license is exhausted"


class TALoadError(SecurityError):
    """The TEE refused to load a TA: its signature does not verify."""

    result_code = C.RESULT_TA_LOAD
    default_message = "TA signature does not verify; not loaded"


class MeasurementNotApprovedError(SecurityError):
    """The vendor has not approved the attested TA measurement."""

    result_code = C.RESULT_MEASUREMENT_NOT_APPROVED
    default_message = "TA measurement is not approved by the vendor"


class NonceError(SecurityError):
    """An attestation nonce is unknown, used before, or expired (replay)."""

    result_code = C.RESULT_NONCE
    default_message = "attestation nonce is unknown, already used or expired"


class TANotFoundError(OmgError):
    """No TA with the UUID asked for is installed on the device."""

    result_code = C.RESULT_ITEM_NOT_FOUND


class OutOfMemoryError(OmgError):
    """The TA cannot hold what it was given (its heap or arena is too small)."""

    result_code = C.RESULT_OUT_OF_MEMORY


class BadParametersError(OmgError):
    """A TA command got parameters of the wrong type or size."""

    result_code = C.RESULT_BAD_PARAMETERS


class BadStateError(OmgError):
    """A TA command was called before the step it needs (e.g. classify before initialize)."""

    result_code = C.RESULT_BAD_STATE


class ShortBufferError(OmgError):
    """An output of the TA does not fit the output memref the caller gave."""

    result_code = C.RESULT_SHORT_BUFFER


class TeeError(OmgError):
    """A result code that has no error class here (a newer TA, or a TEE's own failure)."""

    def __init__(self, code: int, message: str = ""):
        self.code = self.result_code = code
        self.wire_message = message  # what crosses on, without the code appended again
        super().__init__(f"{message or 'the TEE failed'} (result {code:#010x})")


# -- the one error path ----------------------------------------------------------
# Every boundary (TEE daemon and client, board agent and RemoteEnclave, vendor
# service and client) sends an error as (result code, message) made by
# to_result and raises what from_result makes of it on the other side.

INTERNAL_MESSAGE = "the TA failed with an internal error"


def _classes(root: type = OmgError) -> list[type[OmgError]]:
    out, todo = [], [root]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def by_result_code() -> dict[int, type[OmgError]]:
    """Result code -> the error class that declares it (workbench classes too, once imported)."""
    return {c.result_code: c for c in _classes() if "result_code" in vars(c) and c is not OmgError}


def is_security_code(code: int) -> bool:
    cls = by_result_code().get(code)
    return cls is not None and issubclass(cls, SecurityError)


def to_result(e: BaseException) -> tuple[int, str]:
    """How ``e`` crosses a boundary: (result code, message).

    Security errors say only their class's fixed text (nothing that helps an
    attacker); operational errors keep their message. Matching is by result
    code, never by class: a TA's errors are classes of its own copy of this
    module (it is imported from its verified bundle). Anything that is not an
    error of ours is an internal failure with no detail.
    """
    code = getattr(e, "result_code", None)
    if not isinstance(code, int) or isinstance(code, bool):
        return C.RESULT_GENERIC, INTERNAL_MESSAGE
    cls = by_result_code().get(code)
    if cls is not None and issubclass(cls, SecurityError):
        return code, cls.default_message
    return code, getattr(e, "wire_message", None) or str(e)


def from_result(code: int, message: str = "") -> OmgError:
    """The error a (result code, message) from the other side of a boundary stands for."""
    cls = by_result_code().get(code)
    if cls is None:
        return TeeError(code, message)
    if issubclass(cls, SecurityError):
        return cls()
    e = cls.__new__(cls)  # classes with structured constructors get the message as it was said
    OmgError.__init__(e, message or cls.__doc__.split("\n")[0])
    return e
