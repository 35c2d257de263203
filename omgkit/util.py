"""Small helpers shared across the workbench: atomic writes, hashing, progress."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from pathlib import Path


def _atomic_write(path: str | os.PathLike, data: bytes, mode: int) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same directory, fsync, then rename.

    Readers see the old file or the new one, never a part; the file gets
    the mode a plain ``open(path, "w")`` would give it.
    """
    _atomic_write(path, data, 0o666 & ~_umask())


def write_secret(path: str | os.PathLike, data: bytes) -> None:
    """Write key material atomically, readable by its owner only (0600) from the first byte.

    The temporary file is created 0600 (``mkstemp``) and renamed into place:
    at no moment does a wider mode exist, as it would with write-then-chmod.
    """
    _atomic_write(path, data, 0o600)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def progress(*, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False):
    """A tqdm bar (notebook-aware) that writes to stderr; a no-op without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is pinned in the workbench
        disable = True
        from contextlib import nullcontext

        class _Null:
            def update(self, n: int = 1) -> None: ...

        return nullcontext(_Null())
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=disable,
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    )


def fixed_heap() -> None:
    """Keep large temporaries on a heap that is not handed back between calls (Linux, glibc).

    A TA's heap is sized once (OP-TEE: ``CFG_TA_HEAP_SIZE``). glibc instead
    serves large blocks with fresh ``mmap``s and adapts that threshold only
    slowly, so the frontend's per-chunk spectra (~3 MB) were new pages,
    faulted in on every call: measured, a guarded batch ran 2.2x slower than
    plain (0.68 against 0.31 ms per clip) until glibc adapted, and a fresh
    plain process was slower than the TA. The TEE daemon and ``omg bench``
    (for plain) both call this, so the two sides run under one allocator
    policy. The peak RSS is the same.
    """
    import sys

    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallopt"):
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks below 32 MB come from the heap
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD: keep up to 128 MB of freed heap


def timing_summary(xs: list[float]) -> dict:
    """Median, 10th and 90th percentiles of durations in seconds, as milliseconds; and the count."""
    import statistics

    xs = sorted(xs)
    return {"median_ms": statistics.median(xs) * 1000, "p10_ms": xs[len(xs) // 10] * 1000,
            "p90_ms": xs[(len(xs) * 9) // 10] * 1000, "n": len(xs)}  # fmt: skip


_NATIVE_NOISE = (
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"  # absl's INFO and WARNING lines
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|fully_quantize: \d"  # the TFLite converter's quantizer
    r"|To enable the following instructions|This TensorFlow binary is optimized)"
)


@contextlib.contextmanager
def native_stderr_filtered():
    """Keep TensorFlow's native log lines (absl INFO/WARNING, oneDNN notices, the converter's
    quantizer) off the user's screen: file descriptor 2 goes to a temporary file for the
    block, and every other line is written back to ``sys.stderr`` afterwards (errors too)."""
    import re

    noise = re.compile(_NATIVE_NOISE)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                ln
                for ln in tmp.read().decode(errors="replace").splitlines()
                if not noise.search(ln)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def import_tensorflow():
    """``tensorflow``, imported with its start-up log lines filtered (:func:`native_stderr_filtered`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_filtered():
        import tensorflow as tf
    return tf
