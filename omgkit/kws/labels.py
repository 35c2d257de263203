"""The 12 classes of the paper's task, in Speech Commands order."""

from __future__ import annotations

SILENCE = "_silence_"
UNKNOWN = "_unknown_"
KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
LABELS: tuple[str, ...] = (SILENCE, UNKNOWN, *KEYWORDS)

#: The other words of Speech Commands v2; their clips form the "unknown" class.
UNKNOWN_WORDS: tuple[str, ...] = (
    "backward",
    "bed",
    "bird",
    "cat",
    "dog",
    "eight",
    "five",
    "follow",
    "forward",
    "four",
    "happy",
    "house",
    "learn",
    "marvin",
    "nine",
    "one",
    "seven",
    "sheila",
    "six",
    "three",
    "tree",
    "two",
    "visual",
    "wow",
    "zero",
)

BACKGROUND_DIR = "_background_noise_"


def label_of(word: str) -> str:
    """The class a word directory belongs to."""
    return word if word in KEYWORDS else UNKNOWN
