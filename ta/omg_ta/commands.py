"""The contract between the host (normal world) and the keyword TA.

This module is the one home of the TA's UUID, its command IDs and what each
of the four parameters of each command carries, as ``optee_examples``'
headers are. The host (``omgkit.tee.client``) and the TA
(``omg_ta.entry``) both import it; a test checks that the docs agree.

Parameter types follow the GlobalPlatform TEE Client API: four slots, each
NONE, VALUE_* (two 32-bit integers a, b) or MEMREF_* (a buffer: a temporary
one copied with the call, or a window of registered shared memory).
"""

from __future__ import annotations

import uuid

#: The keyword-spotting TA.
TA_UUID = uuid.UUID("6f6d676b-6974-4b57-5300-000000000001")

# --- parameter types (TEEC_*) -------------------------------------------
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


# --- commands -------------------------------------------------------------

CMD_GET_ATTESTATION = 0
"""Attest this TA to a vendor.

- p0 MEMREF_INPUT: the vendor's nonce (16 to 64 bytes).
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
"""Unseal the model key, check the license, decrypt the model into TA memory.

- p0 MEMREF_INPUT: the sealed key blob.
- p1 MEMREF_INPUT: the license.
- p2 MEMREF_INPUT: the sealed model package.
- p3 MEMREF_OUTPUT: model info, CBOR {model_id, model_version, labels,
  runtime, scores_allowed, budget_left}.
"""

CMD_CLASSIFY = 3
"""Classify audio inside the TA; only labels (and scores, if allowed) leave.

- p0 VALUE_INPUT: a = source (SOURCE_MIC or SOURCE_BUFFER), b = most clips.
- p1 MEMREF_INPUT: with SOURCE_BUFFER (evaluation mode), int16
  little-endian audio, n x 16000 samples; NONE with SOURCE_MIC.
- p2 MEMREF_OUTPUT: results, CBOR {labels: [int], scores: [[float]] or
  absent}.
- p3: NONE.
"""

CMD_CLOSE = 4
"""Wipe the model and the key from TA memory. All parameters NONE."""

SOURCE_MIC = 0
SOURCE_BUFFER = 1

#: Most clips one CMD_CLASSIFY takes (p0.b).
MAX_BATCH = 4096

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
}

#: The parameter types each command accepts (the TA checks them first).
SIGNATURES = {
    CMD_GET_ATTESTATION: param_types(MEMREF_INPUT, MEMREF_OUTPUT),
    CMD_PROVISION: param_types(MEMREF_INPUT, MEMREF_OUTPUT),
    CMD_INITIALIZE: param_types(MEMREF_INPUT, MEMREF_INPUT, MEMREF_INPUT, MEMREF_OUTPUT),
    CMD_CLASSIFY: param_types(VALUE_INPUT, MEMREF_INPUT, MEMREF_OUTPUT),
    CMD_CLOSE: param_types(),
}

#: CMD_CLASSIFY from the microphone has p1 NONE.
CLASSIFY_MIC_SIGNATURE = param_types(VALUE_INPUT, NONE, MEMREF_OUTPUT)

TEE_SUCCESS = 0
