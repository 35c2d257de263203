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


class SecurityError(OmgError):
    """A security check refused something. Catch this to catch every refusal.

    Subclasses name *which* check refused (a policy decision the caller may
    know), never *why* a cryptographic verification failed: a failed MAC or
    signature carries no detail that would help an attacker.
    """

    result_code = 0xFFFF000F  # TEE_ERROR_SECURITY
    default_message = "refused by a security check"

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)


class IntegrityError(SecurityError):
    """A signature or authentication tag did not verify."""

    result_code = 0xFFFF3071  # TEE_ERROR_MAC_INVALID
    default_message = "integrity check failed"


class PackageIntegrityError(IntegrityError):
    """The sealed model package (header or ciphertext) is not authentic."""

    result_code = 0x80000101
    default_message = "model package failed its integrity check"


class LicenseInvalidError(IntegrityError):
    """The license is malformed or not signed by the trusted vendor."""

    result_code = 0x80000102
    default_message = "license failed its integrity check"


class TokenInvalidError(IntegrityError):
    """An attestation token is malformed, or its signature or chain does not verify."""

    result_code = 0x80000103
    default_message = "attestation token failed verification"


class UnsealError(SecurityError):
    """Sealed data did not unseal: another TA measurement, or another device."""

    result_code = 0x80000104
    default_message = "sealed key cannot be unsealed by this TA on this device"


class DeviceMismatchError(SecurityError):
    """A license or sealed blob was issued for another device."""

    result_code = 0x80000105
    default_message = "license is bound to another device"


class LicenseExpiredError(SecurityError):
    """The license's expiry lies before the TEE's clock."""

    result_code = 0x80000106
    default_message = "license has expired"


class RollbackError(SecurityError):
    """A model older than one this device already ran (monotonic counter)."""

    result_code = 0x80000107
    default_message = "model version is older than the device's counter (rollback refused)"


class BudgetExhaustedError(SecurityError):
    """The license's inference budget is used up."""

    result_code = 0x80000108
    default_message = "inference budget of the license is exhausted"


class TALoadError(SecurityError):
    """The TEE refused to load a TA: its signature does not verify."""

    result_code = 0x80000109
    default_message = "TA signature does not verify; not loaded"


class MeasurementNotApprovedError(SecurityError):
    """The vendor has not approved the attested TA measurement."""

    result_code = 0x8000010A
    default_message = "TA measurement is not approved by the vendor"


class NonceError(SecurityError):
    """An attestation nonce is unknown, used before, or expired (replay)."""

    result_code = 0x8000010B
    default_message = "attestation nonce is unknown, already used or expired"


class BadParametersError(OmgError):
    """A TA command got parameters of the wrong type or size."""

    result_code = 0xFFFF0006  # TEE_ERROR_BAD_PARAMETERS


class BadStateError(OmgError):
    """A TA command was called before the step it needs (e.g. classify before initialize)."""

    result_code = 0xFFFF0007  # TEE_ERROR_BAD_STATE


SECURITY_ERRORS: tuple[type[OmgError], ...] = (
    SecurityError, IntegrityError, PackageIntegrityError, LicenseInvalidError, TokenInvalidError,
    UnsealError, DeviceMismatchError, LicenseExpiredError, RollbackError, BudgetExhaustedError,
    TALoadError, MeasurementNotApprovedError, NonceError, BadParametersError, BadStateError,
)  # fmt: skip

#: result code -> error class, for the host side of the TEE Client API
BY_RESULT_CODE: dict[int, type[OmgError]] = {c.result_code: c for c in SECURITY_ERRORS}
