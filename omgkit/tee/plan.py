"""Will it fit? A model's needs in a C TA, against a target TEE's limits.

OP-TEE gives a TA a heap and a stack of fixed sizes, set when the TA is
built (``TA_DATA_SIZE``, ``TA_STACK_SIZE`` in its ``user_ta_header_defines.h``)
and taken from the TEE's TA RAM when a session opens; an allocation past
them fails with ``TEE_ERROR_OUT_OF_MEMORY`` (0xffff000c) at run time. This
module says it before deployment: from the model's bytes (the C engine's
own plan, ``omg_ta.ccore.plan``) and the frontend settings it adds up what
the C TA holds on its heap during a classification, and compares it with a
target's limits.

The heap terms are those of the C TA (``ta/optee/ta``): the decrypted model
(the engine reads its weights in place), the engine's arena, the frontend's
state, one clip's features and int8 input, the copied license, sealed blob
and package header (inputs are copied before they are checked), and a fixed
allowance for the GP crypto operations and the TA's own bookkeeping. The
stack is the TA's deepest call chain, measured from the core's compiled
frames (``ccore.stack_bytes``) plus the GP glue's.
"""

from __future__ import annotations

import dataclasses

from omg_ta.frontend import FrontendSettings

KIB = 1024
MIB = 1024 * KIB

#: Heap kept for GP crypto operations (AES-GCM, Ed25519, X25519/HPKE, HKDF
#: objects and their contexts in libutee), the session state and the CBOR
#: writer of the results. An allowance until the OP-TEE board measures it.
CRYPTO_AND_STATE_BYTES = 32 * KIB
#: The most the TA copies of a license, a sealed blob and a package header.
INPUT_COPIES_BYTES = 8 * KIB + 1 * KIB + 64 * KIB
#: Stack of the GP entry points and handlers above the core (TA_InvokeCommandEntryPoint ...).
GLUE_STACK_BYTES = 4 * KIB


@dataclasses.dataclass(frozen=True)
class Target:
    """A TEE's limits for one TA."""

    name: str
    ta_heap_bytes: int
    """TA_DATA_SIZE: the heap this TA is built with."""
    ta_stack_bytes: int
    """TA_STACK_SIZE."""
    ta_ram_bytes: int
    """The TEE's whole TA RAM (all TAs' code, data, heaps and stacks)."""
    note: str = ""


TARGETS = {
    "optee-qemu": Target("optee-qemu", 512 * KIB, 16 * KIB, 13 * MIB,
                         "OP-TEE 4.10 vexpress-qemu_armv8a: about 13 MiB of TA RAM in all"),
    "hikey960": Target("hikey960", 512 * KIB, 16 * KIB, 13 * MIB,
                       "OP-TEE on a HiKey 960: TA RAM not measured here, assumed no larger than QEMU's"),
    "optee-example": Target("optee-example", 32 * KIB, 2 * KIB, 13 * MIB,
                            "optee_examples' hello_world limits: what a TA gets if nobody sizes it"),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TaMemory:
    """What one model needs in the C TA, term by term."""

    model_bytes: int
    arena_bytes: int
    frontend_bytes: int
    buffers_bytes: int
    inputs_bytes: int
    crypto_and_state_bytes: int
    ta_heap_bytes: int
    ta_stack_bytes: int
    target: Target
    engine: dict

    @property
    def fits(self) -> bool:
        t = self.target
        return (
            self.ta_heap_bytes <= t.ta_heap_bytes
            and self.ta_stack_bytes <= t.ta_stack_bytes
            and self.ta_heap_bytes + self.ta_stack_bytes <= t.ta_ram_bytes
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["target"] = dataclasses.asdict(self.target)
        d["fits"] = self.fits
        d["heap_headroom_bytes"] = self.target.ta_heap_bytes - self.ta_heap_bytes
        return d


def plan(model: bytes, frontend: FrontendSettings, target: str | Target = "optee-qemu") -> TaMemory:
    """The C TA's heap and stack for ``model`` with ``frontend`` settings, against ``target``."""
    from omg_ta import ccore

    from ..errors import UnknownNameError

    if isinstance(target, str):
        if target not in TARGETS:
            raise UnknownNameError("target", target, list(TARGETS))
        target = TARGETS[target]
    engine = ccore.plan(model)
    fe = ccore.CFrontend(frontend)
    n_features = fe.shape[0] * fe.shape[1]
    buffers = n_features * 4 + n_features + engine.output_size  # float features, int8 input, scores
    heap = (len(model) + engine.arena_bytes + fe.plan.state_bytes + buffers + INPUT_COPIES_BYTES
            + CRYPTO_AND_STATE_BYTES)  # fmt: skip
    stack = ccore.stack_bytes() + GLUE_STACK_BYTES
    return TaMemory(len(model), engine.arena_bytes, fe.plan.state_bytes, buffers, INPUT_COPIES_BYTES,
                    CRYPTO_AND_STATE_BYTES, heap, stack, target, dataclasses.asdict(engine))  # fmt: skip
