"""The keyword TA: one entry point, one small handler per command.

The TEE calls :func:`create` once per session with its internal API
(``tee``: measurement, device id, sealing, counters, clock, microphone,
attestation) and then :meth:`KeywordTA.invoke` per command. Each handler
first checks its parameter types (``commands.SIGNATURES``) and fails with a
specific error; every error is an ``OmgError`` whose ``result_code`` the
TEE returns to the host. What leaves the TA: the token, the sealed blob,
model info, labels (and scores if the license allows). Never the model key,
the model or the audio.
"""

from __future__ import annotations

from typing import Any, Protocol

import cbor2
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.hpke import MLKEM768X25519PrivateKey

from . import commands as C
from . import license as lic
from .errors import (
    BadParametersError,
    BadStateError,
    BudgetExhaustedError,
    DeviceMismatchError,
    LicenseExpiredError,
    LicenseInvalidError,
    ModelFormatError,
    OmgError,
    RollbackError,
    SecurityError,
    ShortBufferError,
    UnsealError,
)
from .frontend import Frontend, FrontendSettings
from .package import open_package, parse_header
from .runtime import load_checked
from .secret import Secret

CHUNK = 256  # clips classified at once inside the TA (the frontend works in smaller chunks)


class TeeApi(Protocol):
    """What the TEE offers a TA (the GP TEE Internal API, in spirit)."""

    device_id: bytes
    measurement: bytes

    def bundle_file(self, name: str) -> bytes: ...
    def attest(self, nonce: bytes, ta_keys: dict) -> bytes: ...
    def seal(self, data: bytes) -> bytes: ...
    def unseal(self, blob: bytes) -> bytes: ...
    def counter(self, name: str) -> int: ...
    def counter_advance(self, name: str, value: int) -> bool:
        """Raise a counter to ``value`` atomically; False if it is already past it."""

    def now(self) -> int: ...
    def storage_get(self, key: str) -> bytes | None: ...
    def storage_put(self, key: str, value: bytes) -> None: ...
    def storage_compare_and_set(self, key: str, expected: bytes | None, value: bytes) -> bool:
        """Write ``value`` only if ``key`` still holds ``expected``, atomically across sessions."""

    def mic_read(self, max_clips: int, timeout: float) -> list[bytes]: ...


def _no_mark(stage: str) -> None:
    pass


def _raw(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class KeywordTA:
    def __init__(self, tee: TeeApi):
        self.tee = tee
        self.vendor = Ed25519PublicKey.from_public_bytes(tee.bundle_file(C.VENDOR_KEY_FILE))
        self._kt: dict[str, Any] | None = None  # key-transport private keys, this session only
        self._model: dict[str, Any] | None = None  # decrypted model and its settings
        self._handlers = {
            C.CMD_GET_ATTESTATION: self._get_attestation,
            C.CMD_PROVISION: self._provision,
            C.CMD_INITIALIZE: self._initialize,
            C.CMD_CLASSIFY: self._classify,
            C.CMD_CLOSE: self._close,
            C.CMD_LAST_ERROR: self._last_error_cmd,
        }
        self._last_error = ""
        self._mark = getattr(tee, "mark", None) or _no_mark
        """Stage timestamps, where the TEE traces requests (the emulated one, for omg bench)."""

    # -- dispatch ----------------------------------------------------------
    def invoke(self, cmd: int, types: int, params: list) -> list:
        handler = self._handlers.get(cmd)
        if handler is None:
            raise BadParametersError(f"unknown command {cmd}")
        expected = C.SIGNATURES[cmd]
        if types != expected and not (cmd == C.CMD_CLASSIFY and types == C.CLASSIFY_MIC_SIGNATURE):
            raise BadParametersError(
                f"command {cmd}: parameter types {types:#06x}, expected {expected:#06x}"
            )
        if len(params) != 4:
            raise BadParametersError("four parameters expected")
        if cmd != C.CMD_CLASSIFY:
            # shared memory can change under us: copy what will be checked, once
            params = [bytes(p) if isinstance(p, memoryview) else p for p in params]
        if cmd == C.CMD_LAST_ERROR:
            return handler(params)
        self._last_error = ""
        try:
            return handler(params)
        except OmgError as e:
            # what CMD_LAST_ERROR gives: an operational failure's message, never a refusal's detail
            self._last_error = "" if isinstance(e, SecurityError) else str(e)[:255]
            raise

    # -- handlers ----------------------------------------------------------
    def _get_attestation(self, p: list) -> list:
        nonce = p[0]
        if not isinstance(nonce, bytes) or not C.NONCE_MIN <= len(nonce) <= C.NONCE_MAX:
            raise BadParametersError(f"nonce must be {C.NONCE_MIN} to {C.NONCE_MAX} bytes")
        if self._kt is None:
            x = x25519.X25519PrivateKey.generate()
            m = mlkem.MLKEM768PrivateKey.generate()
            xw = x25519.X25519PrivateKey.generate()
            self._kt = {"X25519": x, "MLKEM768-X25519": MLKEM768X25519PrivateKey(m, xw)}
            self._kt_pub = {"X25519": _raw(x.public_key()),
                            "MLKEM768-X25519": [_raw(m.public_key()), _raw(xw.public_key())]}  # fmt: skip
        return [None, self.tee.attest(nonce, self._kt_pub), None, None]

    def _provision(self, p: list) -> list:
        if self._kt is None:
            raise BadStateError("provision needs get_attestation first in this session")
        license = lic.parse(p[0], self.vendor)
        if license.device_id != self.tee.device_id:
            raise DeviceMismatchError()
        if license.measurement != self.tee.measurement:
            raise LicenseInvalidError("license is for another TA measurement")
        key = lic.unwrap(license, self._kt[license.kem])
        sealed = self.tee.seal(cbor2.dumps({"model_key": key.reveal(), "license": license.digest,
                                            "model_id": license.model_id}))  # fmt: skip
        return [None, sealed, None, None]

    def _initialize(self, p: list) -> list:
        sealed_blob, license_blob, package = p[0], p[1], p[2]
        license = lic.parse(license_blob, self.vendor)
        if license.device_id != self.tee.device_id:
            raise DeviceMismatchError()
        try:
            sealed = cbor2.loads(self.tee.unseal(sealed_blob))
            key = Secret(sealed["model_key"])
        except UnsealError:
            raise
        except Exception:
            raise UnsealError() from None
        if sealed.get("license") != license.digest:
            raise LicenseInvalidError("sealed key belongs to another license")
        if self.tee.now() > license.policy.not_after:
            raise LicenseExpiredError()
        header, _, _ = parse_header(package)
        if header.model_id != license.model_id or header.model_version != license.model_version:
            raise LicenseInvalidError("license is for another model or version")
        if header.model_version < license.policy.min_version:
            raise RollbackError()
        counter = f"model-version:{license.model_id}"
        if header.model_version < self.tee.counter(counter):
            raise RollbackError()
        header, model = open_package(package, key.reveal(), self.vendor)
        # the model must load and fit its frontend and labels BEFORE anything
        # persistent changes: a bad model leaves counter and budget as they were
        try:
            settings = FrontendSettings.from_dict(dict(header.input.get("frontend", {})))
        except (OmgError, TypeError, ValueError, ArithmeticError) as e:
            raise ModelFormatError(f"the package's frontend settings are not usable: {e}") from None
        runtime = load_checked(header.runtime, model, settings, header.labels)
        del model  # the runtime keeps its own reference; nothing else holds the plaintext
        if not self.tee.counter_advance(counter, header.model_version):
            raise RollbackError()  # another session advanced it since the check above
        budget_key = f"budget:{license.license_id.hex()}"
        if license.policy.budget is not None:  # started once (a concurrent start keeps the first)
            self.tee.storage_compare_and_set(budget_key, None, str(license.policy.budget).encode())
        self._model = {"runtime": runtime, "frontend": Frontend(settings), "license": license,
                       "labels": header.labels, "budget_key": budget_key}  # fmt: skip
        info = {"model_id": header.model_id, "model_version": header.model_version, "labels": header.labels,
                "runtime": header.runtime, "scores_allowed": license.policy.scores,
                "budget_left": self._budget_left()}  # fmt: skip
        return [None, None, None, cbor2.dumps(info)]

    def _budget_left(self) -> int | None:
        m = self._model
        if m is None or m["license"].policy.budget is None:
            return None
        return int(self.tee.storage_get(m["budget_key"]) or b"0")

    def _classify(self, p: list) -> list:
        if self._model is None:
            raise BadStateError("classify needs initialize first")
        value = p[0]
        if not (isinstance(value, tuple) and len(value) == 2):
            raise BadParametersError("p0 must be a value (source, max clips)")
        source, max_clips = value
        if not 1 <= max_clips <= C.MAX_BATCH:
            raise BadParametersError(f"max clips must be 1..{C.MAX_BATCH}")
        if source not in (C.SOURCE_MIC, C.SOURCE_BUFFER):
            raise BadParametersError("unknown audio source")
        capacity = p[2]  # an output memref's size, as GP gives it to a TA
        need = C.classify_reply_max(max_clips, len(self._model["labels"]),
                                    bool(self._model["license"].policy.scores))  # fmt: skip
        if (
            isinstance(capacity, int) and capacity < need
        ):  # before any audio is read or budget spent
            raise ShortBufferError(f"the results of {max_clips} clips need {need} bytes of output")
        if source == C.SOURCE_MIC:
            clips = self.tee.mic_read(max_clips, timeout=5.0)
            audio = (
                np.frombuffer(b"".join(clips), "<i2").reshape(-1, C.CLIP_SAMPLES) if clips else None
            )
        else:  # SOURCE_BUFFER
            buf = p[1]
            if not isinstance(buf, (bytes, memoryview)) or len(buf) % C.CLIP_BYTES:
                raise BadParametersError(
                    f"audio buffer must hold whole clips of {C.CLIP_BYTES} bytes"
                )
            # read in place, a chunk at a time (the frontend copies each chunk)
            audio = np.frombuffer(buf, "<i2").reshape(-1, C.CLIP_SAMPLES)[:max_clips]
        if audio is None or len(audio) == 0:
            return [None, None, cbor2.dumps({"labels": []}), None]
        left = self._budget_left()
        if left is not None and left < len(audio):
            raise BudgetExhaustedError()
        # chunk by chunk: the TA's memory stays bounded whatever the batch size
        frontend, runtime = self._model["frontend"], self._model["runtime"]
        mark = self._mark
        mark("t.checked")
        parts = []
        for i in range(0, len(audio), CHUNK):
            features = frontend(audio[i : i + CHUNK])[..., None]
            mark("t.frontend")
            parts.append(runtime.predict(features))
            mark("t.model")
        scores = np.concatenate(parts)
        if left is not None:  # spent once the clips are classified; no results unless spent
            self._spend(left, len(audio))
        out: dict[str, Any] = {"labels": [int(i) for i in np.argmax(scores, axis=1)]}
        if self._model["license"].policy.scores:
            out["scores"] = [[float(v) for v in row] for row in scores]
        return [None, None, cbor2.dumps(out), None]

    def _spend(self, left: int, n: int) -> None:
        """Take ``n`` clips off the budget, atomically: other sessions may have spent since
        ``left`` was read, so the write holds only if the budget is still ``left``."""
        key = self._model["budget_key"]
        while not self.tee.storage_compare_and_set(key, str(left).encode(),
                                                   str(left - n).encode()):  # fmt: skip
            left = self._budget_left()
            if left < n:
                raise BudgetExhaustedError()

    def _last_error_cmd(self, p: list) -> list:
        return [self._last_error.encode()[:255], None, None, None]

    def _close(self, p: list) -> list:
        self._model = None
        self._kt = None
        return [None, None, None, None]


def create(tee: TeeApi) -> KeywordTA:
    """Entry point the TEE calls when it opens a session."""
    return KeywordTA(tee)
