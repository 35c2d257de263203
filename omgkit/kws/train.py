"""`omg train`: train a keyword model on a Speech Commands-layout corpus.

Features are computed once, up front, by the same numpy frontend the TA
runs: the clean training clips plus ``augment.copies`` augmented copies of
each, then validation and test. Training itself (Keras 3, seeded, early
stopping on validation accuracy) is then bound by the network.

One engine can be held out of training and validation entirely
(``holdout_engine``; ``auto`` picks pico when the corpus has it): its clips
measure accuracy on voices the model has never heard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ConfigError, OmgError
from ..util import atomic_write_text
from .augment import AugmentSettings, augment, featurize_augmented
from .dataset import Dataset, load_dataset, load_noise
from .features import Frontend, FrontendSettings, featurize
from .models import MODELS, build_model
from .run import RunDir

HOLDOUT_PREFERENCE = ("pico", "flite", "festival", "mbrola")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings:
    model: str = "ds_cnn_s"
    """One of ``omgkit.kws.models.MODELS``."""
    epochs: int = 40
    """Upper bound; early stopping usually ends sooner."""
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 6
    """Epochs without validation improvement before stopping."""
    seed: int = 0
    balance_classes: bool = False
    """Weight each class by the inverse of its training frequency (unknown is 3x a keyword)."""
    holdout_engine: str = "auto"
    """Engine kept out of training; ``auto`` (pico, flite, ... if present) or ``none``."""
    frontend: FrontendSettings = FrontendSettings()
    augment: AugmentSettings = AugmentSettings()

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            from ..errors import UnknownNameError

            raise UnknownNameError("model", self.model, list(MODELS))
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSettings:
        """Settings as recorded in a run's manifest (``to_dict``)."""
        d = dict(d)
        d["frontend"] = FrontendSettings.from_dict(d["frontend"])
        # a key an older manifest lacks is an augmentation that did not exist then: off
        aug = {**AUGMENT_OFF_WHEN_ABSENT, **d.get("augment", {})}
        d["augment"] = AugmentSettings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in aug.items()}
        )
        return cls(**d)


AUGMENT_OFF_WHEN_ABSENT: dict[str, Any] = {
    "rooms": 0,
    "bandlimit_prob": 0.0,
    "floor_dbfs": None,
    "babble_prob": 0.0,
    "tones_prob": 0.0,
    "fluctuating_prob": 0.0,
    "impulses_prob": 0.0,
}
"""Augmentations added after the first manifests were written (issue 15), and their value
when a manifest does not name them."""


def resolve_holdout(ds: Dataset, name: str) -> str | None:
    """The engine to hold out: ``auto`` picks the first present of HOLDOUT_PREFERENCE."""
    if name == "none":
        return None
    if name == "auto":
        speech = [e for e in ds.engines if e not in ("human", "noise")]
        return next((e for e in HOLDOUT_PREFERENCE if e in speech and len(speech) > 1), None)
    if name not in ds.engines:
        raise ConfigError(
            f"holdout engine {name!r} is not in the corpus; it has: {', '.join(ds.engines)}"
        )
    return name


def training_features(
    ds: Dataset, audio: np.ndarray, labels: np.ndarray, s: TrainSettings, frontend: Frontend,
    *, show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Clean + augmented copies of the training set, featurised (a progress bar, one step a pass:
    on the quick profile each pass takes a minute or more, and nothing else prints meanwhile)."""
    from ..util import progress

    rng = np.random.default_rng([s.seed, 1])
    noise = [load_noise(ds.root / p) for p in ds.noise_files]
    with progress(total=(s.augment.copies + 1) * len(audio), desc="features (clean, then augmented)",
                  unit="clip", disable=not show_progress) as bar:  # fmt: skip
        feats = [featurize(frontend, audio)]
        bar.update(len(audio))
        speech = labels != 0
        for _ in range(s.augment.copies):
            aug = augment(audio, noise, rng, s.augment, is_speech=speech, seed=s.seed)
            feats.append(featurize_augmented(s.frontend, aug, rng, s.augment, speech))
            bar.update(len(audio))
    return np.concatenate(feats), np.tile(labels, s.augment.copies + 1)


def balanced_class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Weights that give every present class the same total weight (mean weight per clip 1)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (counts[present] * present.sum())
    return {i: float(v) for i, v in enumerate(w)}


def train(
    data: str | os.PathLike,
    out: str | os.PathLike,
    settings: TrainSettings = TrainSettings(),
    *,
    verbose: int | None = None,
) -> dict[str, Any]:
    """Train, save ``model.keras`` and the manifest in ``out``; return the metrics."""
    t0 = time.perf_counter()
    s = settings
    ds = load_dataset(data, seed=s.seed)
    holdout = resolve_holdout(ds, s.holdout_engine)
    frontend = Frontend(s.frontend)
    audio = ds.split_audio(holdout)
    x_tr, y_tr = training_features(ds, *audio["training"], s, frontend, show_progress=verbose != 0)
    x_va = featurize(frontend, audio["validation"][0])
    y_va = audio["validation"][1]
    t_feat = time.perf_counter() - t0

    from ..util import import_tensorflow

    tf = import_tensorflow()  # its start-up log lines filtered
    from tensorflow import keras

    keras.utils.set_random_seed(s.seed)
    labels = ds.labels
    model = build_model(s.model, s.frontend.shape, len(labels))
    model.compile(
        optimizer=keras.optimizers.Adam(s.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = [
        # val_loss, not val_accuracy: on synthetic voices validation accuracy
        # saturates near 1.0 within a few epochs and stops too early.
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=s.patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=1e-5),
    ]
    if verbose is None:
        verbose = 1 if sys.stderr.isatty() else 2
    ds_tr = (
        tf.data.Dataset.from_tensor_slices((x_tr, y_tr))
        .shuffle(len(y_tr), seed=s.seed, reshuffle_each_iteration=True)
        .batch(s.batch_size)
        .prefetch(2)
    )
    class_weight = balanced_class_weights(y_tr, len(labels)) if s.balance_classes else None
    hist = model.fit(
        ds_tr,
        class_weight=class_weight,
        validation_data=(x_va, y_va),
        epochs=s.epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )  # ds_tr shuffles itself
    t_fit = time.perf_counter() - t0 - t_feat
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}

    run = RunDir(out)
    run.path.mkdir(parents=True, exist_ok=True)
    tmp = run / ".model.tmp.keras"  # Keras wants the suffix; renamed into place once complete
    model.save(tmp)
    os.replace(tmp, run / "model.keras")
    rng = np.random.default_rng([s.seed, 2])
    n_clean = len(audio["training"][1])
    rep = x_tr[rng.choice(n_clean, size=min(500, n_clean), replace=False)]
    np.save(run / "representative.npy", rep)
    atomic_write_text(run / "history.json", json.dumps(history) + "\n")
    from ..show import plot_history

    plot_history(history).savefig(run / "learning_curves.png", dpi=110)

    best = int(np.argmin(history["val_loss"]))
    metrics = {
        "val_accuracy": float(history["val_accuracy"][best]),
        "best_epoch": best + 1,
        "epochs_run": len(history["loss"]),
        "train_examples": int(len(y_tr)),
        "seconds_features": round(t_feat, 1),
        "seconds_fit": round(t_fit, 1),
    }
    # one manifest update after the last file: from here on the step counts as done
    run.update(
        {
            "train": {"omgkit_version": __version__, "settings": s.to_dict(), "metrics": metrics},
            "data": {
                "path": str(Path(data).resolve()),
                "fingerprint": ds.fingerprint(),
                "engines": ds.engines,
                "holdout_engine": holdout,
                "counts": ds.counts(),
            },
            "labels": {"labels": list(labels)},
        },
        files=["model.keras", "representative.npy"],
    )
    return metrics


RUN_FILES = (
    "manifest.json",
    "model.keras",
    "representative.npy",
    "history.json",
    "learning_curves.png",
)
"""A trained run's files (what training writes)."""


def recorded_settings(manifest: dict[str, Any]) -> TrainSettings | None:
    """The training settings a run's manifest records, read as they were made (keys it lacks
    take their value from before they existed); None when it records none that read."""
    try:
        return TrainSettings.from_dict(manifest["train"]["settings"])
    except (KeyError, TypeError, ValueError, OmgError):
        return None


def reuse_run(src: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike,
              settings: TrainSettings) -> dict[str, Any] | None:  # fmt: skip
    """Copy a trained run from ``src`` to ``out`` instead of training again, if it is the same
    training: the same settings on the same corpus (by its fingerprint). Returns its metrics,
    or None (nothing copied) when ``src`` is not such a run.

    Notebook 01 uses it for `make demo`'s run: the same corpus and settings trained twice
    took 10 to 20 minutes for nothing (issue 14's newcomer)."""
    import shutil

    from .run import RunDir

    src_p, out_p = Path(src), Path(out)
    if not (src_p / "manifest.json").is_file() or src_p.resolve() == out_p.resolve():
        return None
    try:
        m = json.loads((src_p / "manifest.json").read_text())
        same = (recorded_settings(m) == settings
                and m["data"]["fingerprint"] == load_dataset(data, seed=settings.seed).fingerprint())  # fmt: skip
    except (OSError, KeyError, TypeError, ValueError):
        return None
    if not same or not all((src_p / f).is_file() for f in ("model.keras", "representative.npy")):
        return None
    out_p.mkdir(parents=True, exist_ok=True)
    (out_p / "manifest.json").unlink(missing_ok=True)  # a run here before is replaced whole
    for f in RUN_FILES[1:]:  # the training step's files; conversion and evaluation run again
        if (src_p / f).is_file():
            shutil.copy2(src_p / f, out_p / f)
    sections = {k: m[k] for k in ("train", "data", "labels")}
    sections["train"] = {k: v for k, v in sections["train"].items() if k != "files"}
    RunDir(out_p).update(sections, files=["model.keras", "representative.npy"])
    return dict(m["train"]["metrics"], reused_from=str(src_p))
