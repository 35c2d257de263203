"""The offline synthetic corpus: text-to-speech engines and the generator."""

from .synth import PROFILES, SynthReport, synthesize
from .tts import ENGINES, Speaker, available_engines

__all__ = ["ENGINES", "PROFILES", "Speaker", "SynthReport", "available_engines", "synthesize"]
