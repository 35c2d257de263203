"""A release: what a converted run hands the vendor to seal.

One model's bytes with everything the TA needs to run it — its frontend
settings, its labels (in output order), its model id and the runtime the TA
should load it with. ``Release.from_run`` is the one way from a run to a
release; the vendor takes nothing else (``Vendor.seal_model``), and
``Release.check`` is what it runs before sealing: the model loads with the
runtime, its input is the frontend's feature map and its output has one
score per label. The TA runs the same check (``omg_ta.runtime.check_model``)
at initialization, before it changes any counter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from omg_ta.errors import ModelFormatError, RuntimeUnavailableError
from omg_ta.frontend import FrontendSettings
from omg_ta.runtime import DEFAULT_RUNTIME, RUNTIMES, load_checked

from ..errors import UnknownNameError
from .run import RunDir

DEFAULT_MODEL_ID = "kws"
"""The model id a run is released under unless another is given."""


def model_file(quantization: str) -> str:
    """The name of a run's converted model: ``model_<quantization>.tflite``."""
    return f"model_{quantization}.tflite"


@dataclasses.dataclass(frozen=True, repr=False)
class Release:
    """One model and what it needs to run, ready to be sealed."""

    model: bytes
    """The TFLite flatbuffer (int8 for the TA)."""
    frontend: FrontendSettings
    """The feature settings the model was trained with."""
    labels: tuple[str, ...]
    """Class names, in the order of the model's outputs."""
    model_id: str = DEFAULT_MODEL_ID
    runtime: str = DEFAULT_RUNTIME
    """The runtime the TA loads the model with (``omg_ta.runtime.RUNTIMES``)."""
    source: str = ""
    """Where the model came from (a file), for messages."""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UnknownNameError("runtime", self.runtime, RUNTIMES)
        object.__setattr__(self, "labels", tuple(self.labels))

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, model_id: str = DEFAULT_MODEL_ID,
                 quantization: str = "int8", runtime: str = DEFAULT_RUNTIME) -> Release:  # fmt: skip
        """The release of a converted run: its model, frontend settings and labels."""
        run = RunDir(run_dir)
        man = run.manifest()
        path = run.require(model_file(quantization), f"omg convert --run {run.path}")
        return cls(path.read_bytes(), man.frontend, man.labels, model_id, runtime, str(path))

    def with_runtime(self, runtime: str) -> Release:
        return dataclasses.replace(self, runtime=runtime)

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.model).digest()

    def check(self) -> None:
        """Refuse a model that would not run in the TA, saying what is wrong.

        Loads it with ai-edge-litert (which verifies the flatbuffer) and, when
        it is installed here, with the release's own runtime too.
        """
        where = f"{self.source}: " if self.source else ""
        runtimes = dict.fromkeys(["litert", self.runtime])
        for name in runtimes:
            try:
                load_checked(name, self.model, self.frontend, self.labels)
            except RuntimeUnavailableError:
                if name == "litert":
                    raise
            except ModelFormatError as e:
                raise ModelFormatError(f"{where}{e}") from None

    def __repr__(self) -> str:
        fe = self.frontend
        return (f"Release({self.model_id!r}, {len(self.model):,} bytes, {fe.kind} "
                f"{fe.num_frames}x{fe.num_features}, {len(self.labels)} labels, runtime {self.runtime!r})")  # fmt: skip
