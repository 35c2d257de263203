"""The offline synthetic corpus: text-to-speech engines and the generator."""

from .synth import PROFILES, SynthReport, corpus_made_as, synthesize
from .tts import ENGINES, Speaker, available_engines

__all__ = [
    "ENGINES",
    "PROFILES",
    "Speaker",
    "SynthReport",
    "available_engines",
    "corpus_made_as",
    "synthesize",
]
