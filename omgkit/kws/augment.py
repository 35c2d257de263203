"""Training-time augmentation, batched in numpy.

Per clip, each with its own probability: time shift, speed change (which
also shifts pitch), reverberation through a simulated training room
(``omgkit.kws.rooms``), a random band-pass, gain, and noise at 0-30 dB SNR
(the training region of the corpus's noise files, babble from the batch's
own clips, random tones, coloured noise under a wandering envelope, or
bursts and clicks), then a white noise floor under every clip. Everything
is vectorised over the batch, so
augmenting and featurising a whole training set takes seconds and training
is bound by the network, not by per-clip Python (measured in the issue:
per-clip augmentation and MFCC took over half of each epoch).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ConfigError
from .audio import CLIP_SAMPLES, SAMPLE_RATE
from .dataset import noise_region


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentSettings:
    copies: int = 2
    """Augmented copies of each training clip (besides the clean one)."""
    shift_ms: float = 100.0
    """Largest time shift either way."""
    gain_db: tuple[float, float] = (-30.0, 6.0)
    """Gain range."""
    speed: tuple[float, float] = (0.88, 1.12)
    """Speed (and pitch) factor range."""
    speed_prob: float = 0.5
    reverb_prob: float = 0.5
    rt60_s: tuple[float, float] = (0.1, 0.5)
    """Reverberation time range."""
    noise_prob: float = 0.8
    snr_db: tuple[float, float] = (0.0, 30.0)
    """Signal-to-noise ratio range for background noise."""
    vtlp: tuple[float, float] = (1.0, 1.0)
    """Vocal tract length perturbation: mel band edges scaled by a factor from this range."""
    vtlp_bins: int = 5
    """VTLP factors are drawn from this many evenly spaced values (one frontend each)."""
    time_masks: int = 0
    """SpecAugment time masks per augmented feature map."""
    time_mask_frames: int = 4
    """Widest time mask, in frames."""
    tilt_prob: float = 0.0
    """Probability of a random spectral tilt (a brighter or darker voice or microphone)."""
    tilt_db_per_octave: tuple[float, float] = (-6.0, 6.0)
    """Tilt range, in dB per octave around 1 kHz."""
    rooms: int = 48
    """Simulated training rooms (``omgkit.kws.rooms``, image method) for reverberation;
    0: the older synthetic exponential tail."""
    bandlimit_prob: float = 0.3
    """Probability of a random band-pass (a telephone, a cheap microphone)."""
    bandlimit_low_hz: tuple[float, float] = (100.0, 500.0)
    """Range of the band-pass's lower edge."""
    bandlimit_high_hz: tuple[float, float] = (2800.0, 7000.0)
    """Range of its upper edge."""
    babble_prob: float = 0.3
    """Of the clips that get noise: the share whose noise is babble, several other training
    clips of the same batch at once."""
    tones_prob: float = 0.2
    """Of the clips that get noise: the share whose noise is random harmonic tones."""
    fluctuating_prob: float = 0.15
    """Of the clips that get noise: the share whose noise is randomly coloured noise under a
    random envelope of 0.3-8 Hz (a crowd's murmur, passing cars, wind)."""
    impulses_prob: float = 0.15
    """Of the clips that get noise: the share whose noise is random bursts and clicks (typing,
    cutlery, footsteps, a door)."""
    floor_dbfs: tuple[float, float] | None = (-90.0, -60.0)
    """A white noise floor at this level (dB full scale, RMS) under every augmented clip,
    silence rows included: a real microphone never delivers digital silence."""

    def __post_init__(self) -> None:
        shares = (self.babble_prob, self.tones_prob, self.fluctuating_prob, self.impulses_prob)
        if min(shares) < 0 or sum(shares) > 1 + 1e-9:
            raise ConfigError(
                "babble_prob, tones_prob, fluctuating_prob and impulses_prob are shares of the "
                f"noised clips: each >= 0 and together <= 1 (got {shares})"
            )


def _speed(x: np.ndarray, factor: np.ndarray, apply: np.ndarray) -> np.ndarray:
    """Resample each row by its factor (linear interpolation), keep the length."""
    n = x.shape[1]
    out = x.copy()
    t = np.arange(n, dtype=np.float32)
    for i in np.flatnonzero(apply):
        # play faster: read samples at t*factor, centred so the word stays in place
        src = (t - n / 2) * factor[i] + n / 2
        out[i] = np.interp(src, t, x[i], left=0.0, right=0.0)
    return out


def _reverb(
    x: np.ndarray, rt60: np.ndarray, apply: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    idx = np.flatnonzero(apply)
    if idx.size == 0:
        return x
    ir_len = int(0.5 * SAMPLE_RATE)
    t = np.arange(ir_len) / SAMPLE_RATE
    decay = np.exp(-6.9 * t[None, :] / rt60[idx, None])  # -60 dB at rt60
    tail = rng.standard_normal((idx.size, ir_len)) * decay
    # tail energy relative to the direct path: from a dry room to a wet hall
    wet = rng.uniform(0.2, 1.0, (idx.size, 1))
    ir = tail * np.sqrt(wet / ((tail**2).sum(axis=1, keepdims=True) + 1e-12))
    ir[:, 0] = 1.0
    nfft = 1 << (x.shape[1] + ir_len - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x[idx], nfft) * np.fft.rfft(ir, nfft), nfft)[:, : x.shape[1]]
    peak_in = np.abs(x[idx]).max(axis=1, keepdims=True) + 1e-9
    peak_out = np.abs(y).max(axis=1, keepdims=True) + 1e-9
    out = x.copy()
    out[idx] = (y * peak_in / peak_out).astype(np.float32)
    return out


def _tilt(x: np.ndarray, slope: np.ndarray, apply: np.ndarray) -> np.ndarray:
    """Tilt each row's spectrum by ``slope`` dB per octave around 1 kHz (loudness kept).

    Engines differ most in spectral balance (measured on the paper corpus:
    median spectral centroid of "go" 646 Hz for espeak, 316 Hz for pico), and
    so do microphones; a tilt teaches the model to ignore it.
    """
    idx = np.flatnonzero(apply)
    if idx.size == 0:
        return x
    f = np.fft.rfftfreq(x.shape[1], 1.0 / SAMPLE_RATE)
    octaves = np.log2(np.clip(f, 100.0, None) / 1000.0)
    gain = 10.0 ** (slope[idx, None] * octaves[None, :] / 20.0)
    y = np.fft.irfft(np.fft.rfft(x[idx], axis=1) * gain, x.shape[1], axis=1)
    rms_in = np.sqrt((x[idx] ** 2).mean(axis=1, keepdims=True)) + 1e-9
    rms_out = np.sqrt((y**2).mean(axis=1, keepdims=True)) + 1e-9
    out = x.copy()
    out[idx] = (y * rms_in / rms_out).astype(np.float32)
    return out


def augment(
    audio: np.ndarray,
    noise: list[np.ndarray],
    rng: np.random.Generator,
    s: AugmentSettings = AugmentSettings(),
    is_speech: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One augmented copy of a batch: int16 ``(N, 16000)`` in, float32 out.

    ``noise`` holds whole noise files; only their training region is used.
    ``is_speech`` marks rows that are speech (silence rows get gain and noise
    only: shifting or reverberating noise teaches nothing). ``seed`` picks the training rooms.
    """
    x = audio.astype(np.float32) / 32768.0
    n = x.shape[0]
    speech = np.ones(n, bool) if is_speech is None else np.asarray(is_speech, bool)
    # time shift
    max_shift = int(s.shift_ms * SAMPLE_RATE / 1000)
    shifts = rng.integers(-max_shift, max_shift + 1, n) * speech
    for i in np.flatnonzero(shifts):
        x[i] = np.roll(x[i], shifts[i])
        if shifts[i] > 0:
            x[i, : shifts[i]] = 0
        else:
            x[i, shifts[i] :] = 0
    x = _speed(x, rng.uniform(*s.speed, n), (rng.random(n) < s.speed_prob) & speech)
    rev = (rng.random(n) < s.reverb_prob) & speech
    if s.rooms > 0:
        from .rooms import impulse_responses, reverberate, training_rooms

        irs = impulse_responses(training_rooms(s.rooms, seed))
        idx = np.flatnonzero(rev)
        x[idx] = reverberate(x[idx], irs, rng.integers(0, len(irs), idx.size))
    else:
        x = _reverb(x, rng.uniform(*s.rt60_s, n), rev, rng)
    if s.bandlimit_prob > 0:
        x = _bandlimit(x, (rng.random(n) < s.bandlimit_prob) & speech, s, rng)
    if s.tilt_prob > 0:  # drawn only when enabled: older runs stay bit-identical
        x = _tilt(x, rng.uniform(*s.tilt_db_per_octave, n), (rng.random(n) < s.tilt_prob) & speech)
    x *= (10.0 ** (rng.uniform(*s.gain_db, n) / 20.0))[:, None].astype(np.float32)
    if noise:
        add = (rng.random(n) < s.noise_prob) & speech
        talkers = np.flatnonzero(speech)
        shares = np.cumsum([s.babble_prob, s.tones_prob, s.fluctuating_prob, s.impulses_prob])
        for i in np.flatnonzero(add):
            u = rng.random() if shares[-1] > 0 else 1.0
            if u < shares[0] and talkers.size >= 8:
                seg = _babble(audio, talkers, rng)
            elif u < shares[1]:
                seg = _tones(rng)
            elif u < shares[2]:
                seg = _fluctuating(rng)
            elif u < shares[3]:
                seg = _impulses(rng)
            else:
                src = noise[int(rng.integers(len(noise)))]
                lo, hi = noise_region(src.size, "training")
                off = int(rng.integers(lo, max(lo + 1, hi - CLIP_SAMPLES)))
                seg = src[off : off + CLIP_SAMPLES]
                if seg.size < CLIP_SAMPLES:
                    continue
            p_sig = float(np.mean(x[i] ** 2)) + 1e-10
            p_noise = float(np.mean(seg**2)) + 1e-10
            snr = rng.uniform(*s.snr_db)
            x[i] += seg * np.sqrt(p_sig / (p_noise * 10 ** (snr / 10)))
    if s.floor_dbfs is not None:
        level = 10.0 ** (rng.uniform(*s.floor_dbfs, n) / 20.0)
        x += (rng.standard_normal(x.shape) * level[:, None]).astype(np.float32)
    return np.clip(x, -1.0, 1.0)


def _babble(audio: np.ndarray, talkers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Four to seven training clips of the batch at once (possibly the clip itself among
    them), each moved in time: a crowd of the training voices (evaluation's babble is a
    different, synthetic one)."""
    k = int(rng.integers(4, 8))
    out = np.zeros(CLIP_SAMPLES, np.float32)
    for j in rng.choice(talkers, k, replace=False):
        out += np.roll(audio[j].astype(np.float32) / 32768.0, int(rng.integers(0, CLIP_SAMPLES)))
    return out


def _tones(rng: np.random.Generator) -> np.ndarray:
    """One to three harmonic tones whose pitch jumps every 0.1-0.5 s: tonal interference
    (a radio, an alarm, a hum's harmonics)."""
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    out = np.zeros(CLIP_SAMPLES)
    for _ in range(int(rng.integers(1, 4))):
        f0 = np.empty(CLIP_SAMPLES)
        i = 0
        while i < CLIP_SAMPLES:
            d = int(rng.uniform(0.1, 0.5) * SAMPLE_RATE)
            f0[i : i + d] = rng.uniform(90, 1200)
            i += d
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        for h in range(1, int(rng.integers(1, 7)) + 1):
            out += rng.uniform(0.2, 1.0) / h * np.sin(h * phase + rng.uniform(0, 6.3))
    return (out * (0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0, 6) * t))).astype(np.float32)


def _colour(rng: np.random.Generator, n: int) -> np.ndarray:
    """White noise through a random smooth spectrum: gains drawn at eight points spaced in
    log-frequency from 50 Hz to 8 kHz (±15 dB), interpolated between them."""
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    knots = np.linspace(np.log2(50.0), np.log2(8000.0), 8)
    db = np.interp(np.log2(np.clip(f, 50.0, 8000.0)), knots, rng.uniform(-15.0, 15.0, 8))
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * 10.0 ** (db / 20.0), n)


def _fluctuating(rng: np.random.Generator) -> np.ndarray:
    """Coloured noise (``_colour``) whose level follows a random envelope: the sum of one to
    four raised sinusoids of 0.3-8 Hz, or a smoothed random on/off gate."""
    n = CLIP_SAMPLES
    t = np.arange(n) / SAMPLE_RATE
    if rng.random() < 0.5:
        env = sum(1.0 + np.sin(2 * np.pi * rng.uniform(0.3, 8.0) * t + rng.uniform(0, 6.3))
                  for _ in range(int(rng.integers(1, 5))))  # fmt: skip
    else:
        k = int(rng.integers(3, 25))
        gate = np.repeat(rng.random(k) < 0.6, n // k + 1)[:n]
        env = np.convolve(gate.astype(np.float64) + 0.05, np.hanning(801) / 400.0, "same")
    return (_colour(rng, n) * env).astype(np.float32)


def _impulses(rng: np.random.Generator) -> np.ndarray:
    """Bursts of coloured noise over a floor 30-50 dB below full level: on average 1-20 a
    second (Poisson; now and then none, leaving the floor alone), each decaying with a time
    constant of 1-30 ms (cut after 120 ms) from 0.1-1.0 of full level."""
    n = CLIP_SAMPLES
    src = _colour(rng, n)
    out = src * 10.0 ** (-rng.uniform(30.0, 50.0) / 20.0)
    k = int(rng.poisson(rng.uniform(1.0, 20.0)))
    for at in rng.integers(0, n, k):
        m = min(int(0.12 * SAMPLE_RATE), n - at)
        tau = rng.uniform(0.001, 0.03) * SAMPLE_RATE
        out[at : at + m] += rng.uniform(0.1, 1.0) * src[at : at + m] * np.exp(-np.arange(m) / tau)
    return out.astype(np.float32)


def _bandlimit(x: np.ndarray, apply: np.ndarray, s: AugmentSettings,
               rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """A Butterworth band-pass (order 2 to 8) with random edges on the chosen rows."""
    from scipy.signal import butter, sosfilt

    out = x.copy()
    for i in np.flatnonzero(apply):
        lo, hi = rng.uniform(*s.bandlimit_low_hz), rng.uniform(*s.bandlimit_high_hz)
        sos = butter(int(rng.integers(1, 5)), [lo, min(hi, 0.45 * SAMPLE_RATE)], btype="bandpass",
                     fs=SAMPLE_RATE, output="sos")  # fmt: skip
        y = sosfilt(sos, x[i].astype(np.float64))
        out[i] = (y * (np.abs(x[i]).max() / (np.abs(y).max() + 1e-12))).astype(np.float32)
    return out


def featurize_augmented(settings, audio: np.ndarray, rng: np.random.Generator, s: AugmentSettings,
                        speech: np.ndarray) -> np.ndarray:  # fmt: skip
    """Features of augmented audio, with VTLP and SpecAugment time masks (speech rows only).

    VTLP scales the mel filterbank's band edges by a factor near 1 — a
    linear warp of the frequency axis, as a longer or shorter vocal tract
    would make — by computing features with a warped frontend. Time masks
    zero (set to the map's minimum) a few consecutive frames.
    """
    import dataclasses as _dc

    from omg_ta.frontend import Frontend

    from .features import featurize

    out = np.empty((audio.shape[0], *settings.shape, 1), np.float32)
    lo, hi = s.vtlp
    factors = np.linspace(lo, hi, s.vtlp_bins) if hi > lo else np.asarray([1.0])
    which = rng.integers(0, len(factors), audio.shape[0])
    which[~speech] = int(np.argmin(np.abs(factors - 1.0)))
    for k, f in enumerate(factors):
        idx = np.flatnonzero(which == k)
        if idx.size == 0:
            continue
        upper = min(settings.upper_hz * f, settings.sample_rate / 2)
        warped = _dc.replace(settings, lower_hz=settings.lower_hz * f, upper_hz=upper)
        out[idx] = featurize(Frontend(warped), audio[idx])
    for _ in range(s.time_masks):
        for i in np.flatnonzero(speech):
            w = int(rng.integers(0, s.time_mask_frames + 1))
            if w:
                t0 = int(rng.integers(0, settings.num_frames - w + 1))
                out[i, t0 : t0 + w] = out[i].min()
    return out
