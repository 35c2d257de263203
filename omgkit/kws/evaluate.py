"""`omg evaluate`: accuracy per split, on a held-out engine, across runtimes.

Everything runs on the converted TFLite models through the same runtime
adapters the TA uses (never through Keras), so the numbers are those of the
deployed model. Reported:

- accuracy of float32 and int8 on each split (speaker-disjoint);
- accuracy on the held-out engine's speech (voices never seen in training:
  the honest proxy for real users);
- accuracy per engine on the test split;
- agreement of int8 labels between ai-edge-litert and tflite-micro;
- the TA's C core against them (``labels_agree_c_litert``: C frontend + C
  engine against the numpy frontend + ai-edge-litert, every disagreement
  listed; ``c_engine_outputs_identical``: the C engine's int8 outputs against
  ai-edge-litert's for the same int8 input, and against tflite-micro's:
  ``c_engine_outputs_identical_tflm``);
- confusion matrices (PNG).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from omg_ta.runtime import load_runtime

from ..errors import OmgWarning
from ..util import atomic_write_text
from .conditions import accuracy
from .dataset import load_dataset
from .features import Frontend, featurize
from .release import model_file
from .run import RunDir


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Counts of (true, predicted) class pairs, ``n`` classes."""
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def plot_confusion(m: np.ndarray, labels, path: str | os.PathLike, title: str) -> None:
    from ..show import plot_confusion as figure

    figure(m, title, labels=labels).savefig(path, dpi=110)


def evaluate_run(
    run_dir: str | os.PathLike,
    json_path: str | os.PathLike | None = None,
    *,
    data: str | os.PathLike | None = None,
    plots: bool = True,
    conditions: list[str] | bool = False,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a converted run; write ``evaluation.json`` (and ``json_path``).

    ``conditions``: ``True`` for every condition of ``omgkit.kws.conditions``, or a list of
    their names (``clean`` is always added): accuracy under reverberation, band-limiting,
    noise, gain, shift and dither, in ``conditions`` and ``label_stability_lsb``, plotted
    in ``conditions.png``.
    """
    run = RunDir(run_dir)
    man = run.manifest()
    labels = man.labels
    models = {
        q: run.require(model_file(q), f"omg convert --run {run.path}").read_bytes()
        for q in ("float32", "int8")
    }
    data_path = Path(data or man.data_path)
    ds = load_dataset(data_path, seed=man.seed)
    fp = ds.fingerprint()
    if fp != man.data_fingerprint:
        warnings.warn(
            f"{data_path} differs from the corpus the model was trained on",
            OmgWarning,
            stacklevel=2,
        )
    holdout = man.holdout_engine
    frontend = Frontend(man.frontend)
    audio = ds.split_audio(holdout)
    feats = {k: (featurize(frontend, a), y) for k, (a, y) in audio.items()}

    preds: dict[tuple[str, str, str], np.ndarray] = {}
    for q, blob in models.items():
        rt = load_runtime("litert", blob)
        for split, (x, _) in feats.items():
            preds[("litert", q, split)] = rt.classify(x)
    tflm = load_runtime("tflm", models["int8"])
    for split in ("testing", "heldout"):
        if split in feats:
            preds[("tflm", "int8", split)] = tflm.classify(feats[split][0])

    res: dict[str, Any] = {
        "model": man.model,
        "labels": list(labels),
        "engines": [e for e in ds.engines if e != "noise"],
        "heldout_engine": holdout,
        "data_fingerprint_matches": fp == man.data_fingerprint,
        "accuracy": {},
    }
    for (rt, q, split), p in preds.items():
        if rt == "litert":
            res["accuracy"].setdefault(q, {})[split] = accuracy(feats[split][1], p)
    res["test_accuracy_float32"] = res["accuracy"]["float32"]["testing"]
    res["test_accuracy_int8"] = res["accuracy"]["int8"]["testing"]
    res["int8_minus_float32_points"] = 100 * (
        res["test_accuracy_int8"] - res["test_accuracy_float32"]
    )
    res["heldout_engine_accuracy_int8"] = res["accuracy"]["int8"].get("heldout")
    res["heldout_engine_accuracy_float32"] = res["accuracy"]["float32"].get("heldout")
    agree = {}
    for split in ("testing", "heldout"):
        if ("tflm", "int8", split) in preds:
            a, b = preds[("litert", "int8", split)], preds[("tflm", "int8", split)]
            agree[split] = {"agree": int(np.sum(a == b)), "total": int(len(a))}
    res["labels_agree_litert_tflm_detail"] = agree
    res["labels_agree_litert_tflm"] = all(v["agree"] == v["total"] for v in agree.values())
    test_items = ds.evaluation_items("testing", holdout)
    engines_of = np.asarray([it.engine for it in test_items])
    p_test = preds[("litert", "int8", "testing")]
    y_test = feats["testing"][1]
    res["test_accuracy_int8_per_engine"] = {
        e: accuracy(y_test[engines_of == e], p_test[engines_of == e])
        for e in sorted(set(engines_of))
    }
    cm = confusion(y_test, p_test, len(labels))
    res["confusion_int8_testing"] = cm.tolist()
    res["confusion_float32_testing"] = confusion(
        y_test, preds[("litert", "float32", "testing")], len(labels)
    ).tolist()
    if plots:
        plot_confusion(cm, labels, run / "confusion_int8.png", f"{man.model} int8, test split")
        if holdout:
            plot_confusion(
                confusion(feats["heldout"][1], preds[("litert", "int8", "heldout")], len(labels)),
                labels,
                run / "confusion_int8_heldout.png",
                f"int8, held-out engine: {holdout}",
            )
    res.update(c_core_agreement(models["int8"], man.frontend, audio, feats, preds, ds, holdout))
    if conditions:
        from ..show import plot_conditions
        from .conditions import evaluate_conditions

        splits = {k: audio[k] for k in ("testing", "heldout") if k in audio}
        names = None if conditions is True else list(conditions)
        res.update(evaluate_conditions(models, frontend, splits, labels, names, show_progress))
        if plots:
            plot_conditions(res["conditions"], f"{man.model}: accuracy by condition").savefig(
                run / "conditions.png", dpi=110
            )
    text = json.dumps(res, indent=2) + "\n"
    atomic_write_text(run / "evaluation.json", text)
    if json_path:
        atomic_write_text(json_path, text)
    summary = {
        k: res[k]
        for k in (
            "test_accuracy_float32",
            "test_accuracy_int8",
            "heldout_engine",
            "heldout_engine_accuracy_int8",
            "labels_agree_litert_tflm",
        )
    }
    if conditions:
        summary["conditions_int8"] = {k: v["int8"] for k, v in res["conditions"].items()}
        summary["label_stability_lsb"] = res["label_stability_lsb"]
    run.update({"evaluate": summary}, files=["evaluation.json"])
    return res


def c_core_agreement(model: bytes, settings, audio: dict, feats: dict, preds: dict, ds,
                     holdout: str | None) -> dict[str, Any]:  # fmt: skip
    """The TA's C core against the numpy frontend and ai-edge-litert, per split.

    ``labels_agree_c_litert``: labels of (C frontend + C engine) against
    (numpy frontend + ai-edge-litert), agree/total, and every clip that
    differs. ``c_engine_outputs_identical``: the fraction of clips whose C
    engine int8 output equals ai-edge-litert's for the very same int8 input.
    Without the C library built, says so instead.
    """
    from omg_ta import ccore
    from omg_ta.errors import RuntimeUnavailableError

    try:
        c = load_runtime("c", model)
        cfe = ccore.CFrontend(settings)
    except RuntimeUnavailableError as e:
        return {"c_core": f"unavailable: {e}"}
    lit, tflm = load_runtime("litert", model), load_runtime("tflm", model)
    agree, disagreements, same, same_tflm, total = {}, [], 0, 0, 0
    for split in ("testing", "heldout"):
        if split not in audio:
            continue
        x, y = audio[split]
        items = (ds.evaluation_items(split, holdout) if split != "heldout"
                 else [it for it in ds.items if it.engine == holdout])  # fmt: skip
        c_labels = c.classify(cfe(x)[..., None])
        ref = preds[("litert", "int8", split)]
        agree[split] = {"agree": int(np.sum(c_labels == ref)), "total": int(len(ref))}
        for i in np.flatnonzero(c_labels != ref):
            disagreements.append({"split": split, "clip": items[i].path, "truth": int(y[i]),
                                  "c": int(c_labels[i]), "litert": int(ref[i])})  # fmt: skip
        q = lit.quantize(feats[split][0])
        out_c = c.invoke_raw(q)
        same += int(np.sum(np.all(out_c == lit.invoke_raw(q), axis=1)))
        same_tflm += int(np.sum(np.all(out_c == tflm.invoke_raw(q), axis=1)))
        total += len(q)
    return {
        "labels_agree_c_litert": agree,
        "labels_disagree_c_litert": disagreements,
        "c_engine_outputs_identical": same / total if total else None,
        "c_engine_outputs_identical_tflm": same_tflm / total if total else None,
    }
