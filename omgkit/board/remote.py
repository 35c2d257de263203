"""`RemoteEnclave`: the three phases on a board, over one long-lived SSH channel.

The workbench starts the board agent (``python -m omgkit.board.agent
serve``) over exec and exchanges frames (``omgkit.tee.wire``) with it on
that channel: no new connection or process per request. The agent drives
the board's TEE with the TEE Client API; what comes back is what the
board's normal world sees — tokens, labels — never the model or audio
beyond what the caller sent for evaluation.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from omg_ta import commands as C
from omg_ta.errors import OmgError

from ..errors import BoardError
from ..tee import wire
from .connection import Board


class RemoteEnclave:
    def __init__(self, board: Board):
        self.board = board
        self._chan = None

    def open(self) -> RemoteEnclave:
        if self._chan is None:
            self._chan = self.board.exec_channel(
                f"{self.board.addr.python} -m omgkit.board.agent serve"
            )
            self._chan.settimeout(300)
            self.call("ping")
        return self

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._chan.recv(n - len(buf))
            if not chunk:
                err = b""
                while self._chan.recv_stderr_ready():
                    err += self._chan.recv_stderr(65536)
                raise BoardError(
                    f"board agent stopped: {err.decode(errors='replace')[-500:] or 'channel closed'}"
                )
            buf += chunk
        return bytes(buf)

    def call(self, op: str, **fields: Any) -> dict:
        if self._chan is None:
            self.open()
        self._chan.sendall(wire.frame({"op": op, **fields}))
        reply, _ = wire.read_frame(self._recv_exact)
        wire.raise_for(reply)
        return reply

    def ping(self) -> float:
        """Round-trip time of one request over the open channel, seconds."""
        t = time.perf_counter()
        self.call("ping")
        return time.perf_counter() - t

    def attest(self, nonce: bytes) -> bytes:
        """The board TA's attestation token for ``nonce`` (this channel's TA session)."""
        return self.call("attest", nonce=nonce)["token"]

    def provision(self, license_blob: bytes) -> None:
        """Hand the TA a license issued for this session's token; it seals the key."""
        self.call("provision", license=license_blob)

    def prepare(self, vendor, *, model_id: str, model_version: int, kem: str = "X25519") -> None:
        token = self.attest(vendor.new_nonce())
        self.provision(
            vendor.issue_license(token, model_id=model_id, model_version=model_version, kem=kem)
        )

    def initialize(self) -> dict:
        return self.call("initialize")["info"]

    def classify_mic(self, audio: np.ndarray) -> list[int]:
        """Play clips into the board's secure microphone, then classify what it heard."""
        a = np.asarray(audio, dtype="<i2").reshape(-1, C.CLIP_SAMPLES)
        self.call("mic_play", audio=a.tobytes())
        return list(self.call("classify_mic", n=len(a))["labels"])

    def classify_batch(self, audio: np.ndarray) -> list[int]:
        a = np.asarray(audio, dtype="<i2").reshape(-1, C.CLIP_SAMPLES)
        return list(self.call("classify_batch", audio=a.tobytes())["labels"])

    def close(self) -> None:
        if self._chan is not None:
            try:
                self.call("close")
            except (OmgError, OSError):
                pass
            self._chan.close()
            self._chan = None

    def __enter__(self) -> RemoteEnclave:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
