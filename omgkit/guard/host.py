"""The normal-world app: drives the three phases through the TEE Client API.

It holds only what the threat model lets the normal world hold: the sealed
model package, the license and the sealed key blob (files in
``storage``), and the labels that come back. :class:`GuardedModel` is the
recipe layer; :mod:`omg_ta.commands` is the contract underneath.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import numpy as np

from omg_ta import commands as C

from ..errors import ArtifactError, ConfigError
from ..tee import open_context, trace
from ..tee.client import Output, SharedMemory, Value
from ..util import atomic_write_bytes

LICENSE, SEALED, PACKAGE = "license.cose", "sealed_key.bin", "model.omgpkg"
CHAIN = "chain.cbor"
"""On a board whose TEE leaves the chain to the normal world (OP-TEE): the
device certificate and the manufacturer's root, DER, as a CBOR array."""
COSE_X5CHAIN = 33


def attach_chain(token: bytes, chain_file: Path) -> bytes:
    """The token with the device's certificate chain in its unprotected header.

    The unprotected header is not signed: the chain is public, and the vendor
    verifies it to a root it trusts (docs/formats.md). Only cbor2 is needed:
    a board has no X.509 parser."""
    if not chain_file.is_file():
        raise ArtifactError(
            f"{chain_file} is missing: the board was not enrolled (omg board create enrols it)"
        )
    chain = cbor2.loads(chain_file.read_bytes())
    msg = cbor2.loads(token)
    if not isinstance(msg, cbor2.CBORTag) or msg.tag != 18 or len(msg.value) != 4:
        raise ArtifactError("the TEE's attestation token is not a COSE_Sign1")
    prot, _, payload, sig = msg.value
    return cbor2.dumps(cbor2.CBORTag(18, [prot, {COSE_X5CHAIN: list(chain)}, payload, sig]))


def install_ta(device_dir: str | os.PathLike, bundle_dir: str | os.PathLike) -> Path:
    """Copy a signed TA bundle to the device's TA store (a normal-world step)."""
    dest = Path(device_dir) / "ta" / str(C.TA_UUID)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(bundle_dir, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


@dataclasses.dataclass
class Result:
    labels: list[int]
    scores: list[list[float]] | None
    seconds: float


class GuardedModel:
    """One model on one device, from the normal world's side."""

    def __init__(self, device_dir: str | os.PathLike, storage: str | os.PathLike, *,
                 recorder: Callable[[bytes], None] | None = None):  # fmt: skip
        self.device_dir = Path(device_dir)
        self.storage = Path(storage)
        self.storage.mkdir(parents=True, exist_ok=True)
        self.ctx = open_context(self.device_dir, recorder=recorder)
        self.session = None
        self.info: dict[str, Any] | None = None
        self.timings: dict[str, float] = {}
        self._window: SharedMemory | None = None

    def _session(self):
        if self.session is None:
            t = time.perf_counter()
            self.session = self.ctx.open_session(C.TA_UUID)
            self.timings["ta_load"] = time.perf_counter() - t
        return self.session

    # -- phase 1 -------------------------------------------------------------
    def attest(self, nonce: bytes) -> bytes:
        out = self._session().invoke(C.CMD_GET_ATTESTATION, C.SIGNATURES[C.CMD_GET_ATTESTATION],
                                     [nonce, Output(), None, None])  # fmt: skip
        if getattr(self.ctx, "attaches_chain", False):
            return attach_chain(out[1], self.device_dir / CHAIN)
        return out[1]

    def provision(self, license_blob: bytes) -> bytes:
        out = self._session().invoke(C.CMD_PROVISION, C.SIGNATURES[C.CMD_PROVISION],
                                     [license_blob, Output(), None, None])  # fmt: skip
        atomic_write_bytes(self.storage / LICENSE, license_blob)
        atomic_write_bytes(self.storage / SEALED, out[1])
        return out[1]

    def prepare(self, vendor, *, model_id: str, model_version: int, kem: str = "X25519") -> None:
        """Phase 1 (online once): attest to the vendor, get a license, seal the key."""
        t = time.perf_counter()
        token = self.attest(vendor.new_nonce())
        blob = vendor.issue_license(token, model_id=model_id, model_version=model_version, kem=kem)
        self.provision(blob)
        self.timings["preparation"] = time.perf_counter() - t

    def install_package(self, package: bytes) -> None:
        atomic_write_bytes(self.storage / PACKAGE, package)

    # -- phase 2 -------------------------------------------------------------
    def initialize(self) -> dict[str, Any]:
        """Phase 2 (offline, every start): unseal, check the license, decrypt into the TA."""
        paths = {n: self.storage / n for n in (SEALED, LICENSE, PACKAGE)}
        for p in paths.values():
            if not p.is_file():
                raise ArtifactError(
                    f"{p} is missing: run preparation (and install the package) first"
                )
        t = time.perf_counter()
        out = self._session().invoke(
            C.CMD_INITIALIZE, C.SIGNATURES[C.CMD_INITIALIZE],
            [paths[SEALED].read_bytes(), paths[LICENSE].read_bytes(), paths[PACKAGE].read_bytes(), Output()],
        )  # fmt: skip
        self.timings["initialization"] = time.perf_counter() - t
        self.info = cbor2.loads(out[3])
        return self.info

    # -- phase 3 -------------------------------------------------------------
    def classify_mic(self, max_clips: int = 1) -> Result:
        """Classify what the secure microphone heard (the audio never passes here)."""
        t = time.perf_counter()
        out = self._session().invoke(C.CMD_CLASSIFY, C.CLASSIFY_MIC_SIGNATURE,
                                     [Value(C.SOURCE_MIC, max_clips), None, self._reply(max_clips), None])  # fmt: skip
        return self._result(out[2], time.perf_counter() - t)

    SHARED_CLIPS = C.SHARED_WINDOW_CLIPS
    """Clips per shared-memory window (``omg_ta.commands.SHARED_WINDOW_CLIPS``)."""

    def classify_batch(self, audio: np.ndarray, shared: SharedMemory | None = None) -> Result:
        """Evaluation mode: a batch streamed through registered shared memory.

        ``shared`` is a window to reuse (one is allocated on first use
        otherwise); its size sets how many clips go per invocation. With a
        usage budget, each invocation spends its own clips: a budget that
        runs out mid-batch raises after the earlier chunks were counted.
        """
        a = np.asarray(audio, dtype="<i2").reshape(-1, C.CLIP_SAMPLES)
        t = time.perf_counter()
        if shared is None:
            if self._window is None:
                self._window = self.ctx.allocate_shared_memory(self.SHARED_CLIPS * C.CLIP_BYTES)
            shared = self._window
        per = min(len(shared.buffer) // C.CLIP_BYTES, C.MAX_BATCH)
        if per < 1:
            raise ConfigError(
                f"a shared window holds whole clips: {len(shared.buffer)} bytes < {C.CLIP_BYTES:,}"
            )
        view = np.frombuffer(shared.buffer, dtype="<i2", count=per * C.CLIP_SAMPLES)
        view = view.reshape(per, C.CLIP_SAMPLES)
        labels: list[int] = []
        scores: list[list[float]] | None = None
        session = self._session()
        try:
            for i in range(0, len(a), per):
                chunk = a[i : i + per]
                trace.mark("c.begin")
                view[: len(chunk)] = chunk
                trace.mark("c.copied")
                out = session.invoke(C.CMD_CLASSIFY, C.SIGNATURES[C.CMD_CLASSIFY],
                                     [Value(C.SOURCE_BUFFER, len(chunk)), shared.window(0, chunk.nbytes),
                                      self._reply(len(chunk)), None])  # fmt: skip
                d = cbor2.loads(out[2])
                trace.mark("c.end")
                labels += list(d["labels"])
                if d.get("scores") is not None:
                    scores = (scores or []) + list(d["scores"])
        finally:
            del view  # the window must not stay exported (an error's traceback would keep it)
        return Result(labels, scores, time.perf_counter() - t)

    def _reply(self, clips: int) -> Output:
        """An output sized for a classify reply (``commands.classify_reply_max``), from the model info."""
        if not self.info:  # not initialized: the TA says so
            return Output()
        return Output(
            C.classify_reply_max(clips, len(self.info["labels"]), bool(self.info["scores_allowed"]))
        )

    @staticmethod
    def _result(blob: bytes, seconds: float) -> Result:
        d = cbor2.loads(blob)
        return Result(list(d["labels"]), d.get("scores"), seconds)

    def close(self) -> None:
        self._window = None  # released with the context
        if self.session is not None:
            try:
                self.session.close()
            finally:
                self.session = None
        self.ctx.close()

    def __enter__(self) -> GuardedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
