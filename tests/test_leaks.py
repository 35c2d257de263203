"""Nothing leaks: every byte the TEE sends out and every normal-world file is checked.

The attacker is root in the normal world, so what it can see is exactly (a)
what crosses from the TEE to the normal world and (b) normal-world storage.
Neither may contain any 64-byte window of the plaintext model or of the
audio the secure microphone heard.
"""

from __future__ import annotations

import numpy as np

from omgkit.tee import mic_feed

WINDOW = 64


def _windows(secret: bytes, step: int = 1) -> set[bytes]:
    return {secret[i : i + WINDOW] for i in range(0, len(secret) - WINDOW + 1, step)}


def _find(haystack: bytes, windows: set[bytes]) -> int | None:
    """Offset of the first WINDOW-byte run of ``haystack`` that is in ``windows``."""
    for i in range(len(haystack) - WINDOW + 1):
        if haystack[i : i + WINDOW] in windows:
            return i
    return None


def test_no_model_or_audio_reaches_the_normal_world(guard_world, tiny_corpus):
    from omgkit.kws.dataset import load_dataset

    frames: list[bytes] = []
    g = guard_world.prepared("dev-leak", recorder=frames.append)
    g.initialize()
    ds = load_dataset(tiny_corpus)
    audio, _ = ds.load(ds.select("testing")[:8])
    mic_feed(g.device_dir, audio)  # the user speaks; the audio goes to the TEE only
    labels = g.classify_mic(8).labels
    assert len(labels) == 8
    g.close()

    model_windows = _windows(guard_world.model)
    audio_windows = _windows(audio.astype("<i2").tobytes())
    assert len(frames) >= 5 and sum(map(len, frames)) > 1000  # the recorder saw the traffic
    for f in frames:
        assert _find(f, model_windows) is None
        assert _find(f, audio_windows) is None
    normal_files = [p for p in g.device_dir.rglob("*") if p.is_file() and "secure" not in p.parts]
    normal_files += [p for p in g.storage.rglob("*") if p.is_file()]
    assert any(p.name == "model.omgpkg" for p in normal_files)
    for p in normal_files:
        data = p.read_bytes()
        assert _find(data, model_windows) is None, p
        assert _find(data, audio_windows) is None, p


def test_the_check_itself_finds_a_leak():
    """The detector is not vacuous: a 64-byte copy anywhere is found."""
    secret = np.random.default_rng(0).bytes(5000)
    w = _windows(secret)
    assert _find(b"x" * 100 + secret[1234 : 1234 + 64] + b"y" * 10, w) == 100
    assert _find(b"x" * 100 + secret[1234 : 1234 + 63] + b"y" * 10, w) is None
