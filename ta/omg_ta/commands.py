"""The contract between the host (normal world) and the keyword TA.

This module is the one home of everything the two sides share, as
``optee_examples``' headers are: the TA's UUID, its command IDs and what
each of the four parameters of each command carries, the result code of
every error the TA can return, the clip format, the batch limits and the
names of the TA bundle's files. The host (``omgkit.tee.client``,
``omgkit.guard.host``), the TA (``omg_ta.entry``) and the C TA's header
(``ta/optee/include/omg_ta.h``, checked against this module by a test)
all take their values from here; nothing else spells them out.

Parameter types follow the GlobalPlatform TEE Client API: four slots, each
NONE, VALUE_* (two 32-bit integers a, b) or MEMREF_* (a buffer: a temporary
one copied with the call, or a window of registered shared memory).
"""

from __future__ import annotations

import uuid

#: The keyword-spotting TA.
TA_UUID = uuid.UUID("6f6d676b-6974-4b57-5300-000000000001")

# --- the clip format ----------------------------------------------------------

SAMPLE_RATE = 16000
"""Samples per second of every clip the TA takes."""
CLIP_SAMPLES = SAMPLE_RATE
"""Samples of one clip: one second."""
SAMPLE_BYTES = 2
"""Bytes per sample: int16, little-endian."""
CLIP_BYTES = CLIP_SAMPLES * SAMPLE_BYTES
"""Bytes of one clip in a memref."""

# --- limits -------------------------------------------------------------------

MAX_BATCH = 4096
"""Most clips one CMD_CLASSIFY takes (p0.b)."""
SHARED_WINDOW_CLIPS = 64
"""Clips per registered shared-memory window the host streams a batch
through (2,048,000 bytes, the order of OP-TEE's static shared-memory pool):
a larger batch goes in several invocations, so neither world maps more."""
NONCE_MIN, NONCE_MAX = 16, 64
"""Bounds of an attestation nonce, bytes."""
MAX_OUTPUT = 16 << 20
"""Default size of an output memref, bytes."""

# --- the TA bundle ------------------------------------------------------------

BUNDLE_SIG_FILE = "bundle.sig"
"""The TA signing key's signature over the bundle's measurement (not part of the bundle)."""
VENDOR_KEY_FILE = "vendor_ed25519.pub"
"""The vendor's raw Ed25519 public key, in the bundle: the one vendor this TA trusts."""

# --- parameter types (TEEC_*) -------------------------------------------------
NONE = 0x0
VALUE_INPUT = 0x1
VALUE_OUTPUT = 0x2
VALUE_INOUT = 0x3
MEMREF_INPUT = 0x5
MEMREF_OUTPUT = 0x6
MEMREF_INOUT = 0x7


def param_types(t0: int = NONE, t1: int = NONE, t2: int = NONE, t3: int = NONE) -> int:
    """TEEC_PARAM_TYPES: four 4-bit types in one integer."""
    return t0 | (t1 << 4) | (t2 << 8) | (t3 << 12)


def param_type(types: int, index: int) -> int:
    return (types >> (4 * index)) & 0xF


# --- commands -----------------------------------------------------------------

CMD_GET_ATTESTATION = 0
"""Attest this TA to a vendor.

- p0 MEMREF_INPUT: the vendor's nonce (NONCE_MIN to NONCE_MAX bytes).
- p1 MEMREF_OUTPUT: the attestation token, COSE_Sign1 (docs/formats.md).
- p2, p3: NONE.

The TA makes (once per session) its key-transport key pair and asks the
TEE to sign {nonce, measurement, TA public key, device id, TEE version}.
"""

CMD_PROVISION = 1
"""Take a license, unwrap its model key, seal it to this TA on this device.

- p0 MEMREF_INPUT: the license, COSE_Sign1 signed by the vendor.
- p1 MEMREF_OUTPUT: the sealed key blob (for normal-world storage).
- p2, p3: NONE.

Needs CMD_GET_ATTESTATION earlier in the same session (the key was
wrapped to that session's TA public key).
"""

CMD_INITIALIZE = 2
"""Unseal the model key, check the license, decrypt and check the model in TA memory.

- p0 MEMREF_INPUT: the sealed key blob.
- p1 MEMREF_INPUT: the license.
- p2 MEMREF_INPUT: the sealed model package.
- p3 MEMREF_OUTPUT: model info, CBOR {model_id, model_version, labels,
  runtime, scores_allowed, budget_left}.

The decrypted model must load and fit the package's frontend settings and
labels (RESULT_MODEL_FORMAT otherwise) before the TA advances the model's
version counter or starts a budget: a bad model changes nothing.
"""

CMD_CLASSIFY = 3
"""Classify audio inside the TA; only labels (and scores, if allowed) leave.

- p0 VALUE_INPUT: a = source (SOURCE_MIC or SOURCE_BUFFER), b = most clips
  (1 to MAX_BATCH).
- p1 MEMREF_INPUT: with SOURCE_BUFFER (evaluation mode), int16
  little-endian audio, whole clips of CLIP_BYTES; NONE with SOURCE_MIC.
- p2 MEMREF_OUTPUT: results, CBOR {labels: [int], scores: [[float]] or
  absent}; at least ``classify_reply_max(p0.b, labels, scores allowed)``
  bytes, else RESULT_SHORT_BUFFER (with that size) before any audio is
  read or any budget spent.
- p3: NONE.
"""

CLASSIFY_REPLY_FIXED = 24
"""Most bytes of a CMD_CLASSIFY reply besides its clips: the map, its two keys, two array heads."""
CLASSIFY_REPLY_PER_CLIP = 3
"""Most bytes of one clip's label (a CBOR unsigned integer below 65,536; the C TA takes 64 labels)."""
CLASSIFY_REPLY_PER_SCORE_ROW = 3
"""Most bytes of the head of one clip's scores (a CBOR array)."""
CLASSIFY_REPLY_PER_SCORE = 9
"""Most bytes of one score (a CBOR float64; the C TA writes float32, 5)."""


def classify_reply_max(clips: int, classes: int, scores: bool) -> int:
    """The most bytes a CMD_CLASSIFY reply for ``clips`` clips (p0.b) can take.

    A client sizes p2 with it from the model info CMD_INITIALIZE returned
    (its labels and scores_allowed). A right-sized output matters on OP-TEE:
    libteec allocates, registers and copies back a temporary output memref
    on every call (256 KiB costs ~5 ms per call under QEMU).
    """
    per = CLASSIFY_REPLY_PER_CLIP
    if scores:
        per += CLASSIFY_REPLY_PER_SCORE_ROW + classes * CLASSIFY_REPLY_PER_SCORE
    return CLASSIFY_REPLY_FIXED + clips * per


CMD_CLOSE = 4
"""Wipe the model and the key from TA memory. All parameters NONE."""

CMD_LAST_ERROR = 5
"""The message of this session's last failed command (GP carries only a result code).

- p0 MEMREF_OUTPUT: the message, UTF-8, at most 255 bytes; empty if nothing
  failed or if the failure was a security refusal (its class says all).
- p1, p2, p3: NONE.

A client of a TEE whose transport has no messages (OP-TEE's libteec) asks
for it after an operational failure; the emulated TEE sends messages along.
"""

SOURCE_MIC = 0
SOURCE_BUFFER = 1

# Memory references: a MEMREF_INPUT may arrive as a view into shared memory
# that the normal world can still write while the TA runs (as in OP-TEE).
# The TA copies every input it checks before using it (no double fetch);
# only audio is read in place, chunk by chunk: nothing is checked on it.

COMMANDS = {
    "get_attestation": CMD_GET_ATTESTATION,
    "provision": CMD_PROVISION,
    "initialize": CMD_INITIALIZE,
    "classify": CMD_CLASSIFY,
    "close": CMD_CLOSE,
    "last_error": CMD_LAST_ERROR,
}

#: The parameter types each command accepts (the TA checks them first).
SIGNATURES = {
    CMD_GET_ATTESTATION: param_types(MEMREF_INPUT, MEMREF_OUTPUT),
    CMD_PROVISION: param_types(MEMREF_INPUT, MEMREF_OUTPUT),
    CMD_INITIALIZE: param_types(MEMREF_INPUT, MEMREF_INPUT, MEMREF_INPUT, MEMREF_OUTPUT),
    CMD_CLASSIFY: param_types(VALUE_INPUT, MEMREF_INPUT, MEMREF_OUTPUT),
    CMD_CLOSE: param_types(),
    CMD_LAST_ERROR: param_types(MEMREF_OUTPUT),
}

#: CMD_CLASSIFY from the microphone has p1 NONE.
CLASSIFY_MIC_SIGNATURE = param_types(VALUE_INPUT, NONE, MEMREF_OUTPUT)

# --- result codes ---------------------------------------------------------------
# GlobalPlatform's codes where one fits (TEE Client API spec, table 4-4),
# OMG's own (0x80000000 and up: the range GP leaves to implementations)
# otherwise. Each error class of ``omg_ta.errors`` (and of the workbench, for
# errors that cross a board's agent) carries one; ``omg_ta.errors.from_result``
# turns a code and a message back into that class.

TEE_SUCCESS = 0x00000000
RESULT_GENERIC = 0xFFFF0000
"""TEE_ERROR_GENERIC: an error with no code of its own (its message says what)."""
RESULT_BAD_PARAMETERS = 0xFFFF0006
"""TEE_ERROR_BAD_PARAMETERS: wrong parameter types or sizes."""
RESULT_BAD_STATE = 0xFFFF0007
"""TEE_ERROR_BAD_STATE: a command before the step it needs."""
RESULT_ITEM_NOT_FOUND = 0xFFFF0008
"""TEE_ERROR_ITEM_NOT_FOUND: no TA with this UUID is installed."""
RESULT_OUT_OF_MEMORY = 0xFFFF000C
"""TEE_ERROR_OUT_OF_MEMORY: the TA cannot hold what it was given."""
RESULT_COMMUNICATION = 0xFFFF000E
"""TEE_ERROR_COMMUNICATION: the TEE does not answer."""
RESULT_SECURITY = 0xFFFF000F
"""TEE_ERROR_SECURITY: a security check refused (no more specific code)."""
RESULT_SHORT_BUFFER = 0xFFFF0010
"""TEE_ERROR_SHORT_BUFFER: an output does not fit its memref."""
RESULT_MAC_INVALID = 0xFFFF3071
"""TEE_ERROR_MAC_INVALID: a signature or tag did not verify."""
RESULT_PACKAGE_INTEGRITY = 0x80000101
RESULT_LICENSE_INVALID = 0x80000102
RESULT_TOKEN_INVALID = 0x80000103
RESULT_UNSEAL = 0x80000104
RESULT_DEVICE_MISMATCH = 0x80000105
RESULT_LICENSE_EXPIRED = 0x80000106
RESULT_ROLLBACK = 0x80000107
RESULT_BUDGET_EXHAUSTED = 0x80000108
RESULT_TA_LOAD = 0x80000109
RESULT_MEASUREMENT_NOT_APPROVED = 0x8000010A
RESULT_NONCE = 0x8000010B
RESULT_MODEL_FORMAT = 0x80000201
"""The model does not load, or does not fit its frontend settings or labels."""
RESULT_RUNTIME_UNAVAILABLE = 0x80000202
"""The package names an inference runtime this TEE image does not have."""
RESULT_CONFIG = 0x80000203
"""A setting or name is not one the TA knows (e.g. frontend settings)."""
RESULT_ARTIFACT = 0x80000204
"""A file a step needs is missing (normal world; crosses a board's agent)."""

#: Every result code by name (the C header carries the same names).
RESULT_CODES = {name: value for name, value in globals().items() if name.startswith("RESULT_")}
