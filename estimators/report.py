"""Metrics, the ``report.json`` of a cross-validated run, and its plots.

Scores (classification)
-----------------------
* ``uar``: unweighted average recall = balanced accuracy (mean of per-class recalls);
* ``wa``: weighted accuracy = plain accuracy (the fraction of utterances right);
* ``f1_macro``: unweighted mean of per-class F1.

Regression: ``ccc`` (concordance correlation coefficient, mean over targets) and
``ccc_<target>`` per target.

How they are aggregated (:func:`summarize_runs`): for each seed, the predictions of every
test fold are concatenated and scored once ("pooled over folds"); ``mean`` and ``std``
(sample standard deviation, ``ddof=1``; 0 with one seed) are taken over these per-seed
scores, whose list is ``values``. Per-fold scores (each test fold scored alone) are
listed separately in ``per_fold``.
"""

from __future__ import annotations

import io
import json
import math
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from featcache import fileio

__all__ = [
    "classification_scores",
    "regression_scores",
    "summarize",
    "summarize_runs",
    "confusion",
    "plot_confusion",
    "plot_layer_weights",
    "versions",
    "write_json",
    "score_runs",
    "write_predictions",
    "POOLING_NOTE",
]

POOLING_NOTE = (
    "metrics.*.values: one score per seed, computed on the predictions of all test folds "
    "concatenated (pooled over folds); mean and std (sample std, ddof=1; 0 for one seed) are over "
    "seeds. per_fold: each test fold scored on its own."
)


def classification_scores(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """``{"uar", "wa", "f1_macro"}`` of one set of predictions."""
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    import warnings

    with warnings.catch_warnings():
        # a fold may lack a class the model predicts: sklearn warns, the score stays right
        warnings.simplefilter("ignore", UserWarning)
        return {
            "uar": float(balanced_accuracy_score(y_true, y_pred)),
            "wa": float(accuracy_score(y_true, y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        }


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray, targets: Sequence[str]) -> dict[str, float]:
    """``{"ccc": mean over targets, "ccc_<target>": ...}``."""
    from .metrics import ccc_per_output

    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    per = ccc_per_output(t, p)
    out = {"ccc": float(np.mean(per))}
    for name, v in zip(targets, per):
        out[f"ccc_{name}"] = float(v)
    return out


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}``; std is the sample standard deviation (0 for one value)."""
    v = np.asarray(values, dtype=np.float64)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()) if len(v) else math.nan, "std": std, "values": [float(x) for x in v]}


def summarize_runs(per_seed: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per metric, :func:`summarize` over the per-seed (pooled) scores."""
    keys = list(per_seed[0]) if per_seed else []
    return {k: summarize([s[k] for s in per_seed]) for k in keys}


def confusion(y_true: Sequence, y_pred: Sequence, classes: Sequence[str]) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class, in the order of ``classes``."""
    labels = [str(c) for c in classes]
    return confusion_matrix(np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str), labels=labels)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (each true class sums to 1) with class names."""
    plt = _plt()
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        _save_figure(fig, path)
    finally:
        plt.close(fig)
    return Path(path)


def _layer_panel(ax, w: np.ndarray | None, name: str) -> None:
    if w is None:
        ax.text(0.5, 0.5, "a single layer:\nno layer weights", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        mean = w.mean(0)
        std = w.std(0, ddof=1) if len(w) > 1 else np.zeros_like(mean)
        x = np.arange(w.shape[1])
        ax.bar(x, mean, yerr=std, capsize=3, color="tab:blue", alpha=0.8)
        ax.axhline(1.0 / len(x), color="gray", lw=0.8, ls="--", label="uniform")
        ax.set_xticks(x)
        ax.set_xlabel("layer (0 = local encoder)")
        ax.set_ylabel("weight")
        ax.legend(fontsize=8)
    if name:
        ax.set_title(name, fontsize=8)


def plot_layer_weights(weights: np.ndarray, path: Path, title: str = "", streams: Sequence | None = None) -> Path:
    """Mean ± std over runs (folds x seeds) of the normalised weight of each layer.

    Parameters
    ----------
    weights : ndarray of shape (n_runs, n_layers)
        The weights of stream 0 (used when ``streams`` is None).
    streams : sequence of (name, ndarray of shape (n_runs, n_layers_k) or None), optional
        One panel per stream (None: a single-layer stream, a panel that says so), e.g. the
        two upstreams of ``wav2vec_small:all_layers+hubert_base:all_layers``.
    """
    plt = _plt()
    panels = [(name, None if w is None else np.asarray(w, dtype=np.float64)) for name, w in streams] if streams else [
        ("", np.asarray(weights, dtype=np.float64))
    ]
    widths = [max(4.0, 0.4 * (1 if w is None else w.shape[1]) + 1.5) if w is not None else 2.5 for _, w in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths), 3.2), squeeze=False, gridspec_kw={"width_ratios": widths})
    for ax, (name, w) in zip(axes[0], panels):
        _layer_panel(ax, w, name)
    n_runs = next((len(w) for _, w in panels if w is not None), 0)
    text = title or f"layer weights, mean ± std over {n_runs} runs"
    if len(panels) == 1:
        axes[0][0].set_title(text, fontsize=9)
    else:
        fig.suptitle(text, fontsize=9)
    fig.tight_layout()
    try:
        _save_figure(fig, path)
    finally:
        plt.close(fig)
    return Path(path)


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries a run depends on."""
    import importlib

    out = {"python": platform.python_version()}
    for name in ("featcache", "numpy", "torch", "sklearn", "transformers", "h5py"):
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except Exception:  # noqa: BLE001 - a missing library is reported, not fatal
            out[name] = "unavailable"
    return out


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy values converted), atomically.

    Raises
    ------
    OSError
        The write failed (e.g. a full disk); ``path`` is then left as it was.
    """
    text = json.dumps(obj, indent=1, default=_default, allow_nan=True) + "\n"
    fileio.atomic_write_bytes(Path(path), text.encode("utf-8"))
    return Path(path)


def _save_figure(fig, path: Path) -> None:
    """PNG bytes of ``fig``, written atomically (like every file of a run)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    fileio.atomic_write_bytes(Path(path), buf.getvalue())


def score_runs(results: list, y: np.ndarray, *, task: str = "classification", targets: Sequence[str] | None = None, groups: np.ndarray | None = None) -> dict[str, Any]:
    """Scores of the folds x seeds of a cross-validation (:func:`estimators.cv.run_folds`).

    Returns
    -------
    dict
        ``metrics`` ({name: {"mean", "std", "values"}}, see the module docstring),
        ``per_fold`` (one dict per seed and fold: ``seed``, ``fold``, ``n_train``,
        ``n_test``, ``test_speakers``, the scores, ``best_epoch``, ``n_epochs``,
        ``best_params``, ``layer_weights``), and for classification ``classes`` and
        ``confusion_matrix`` (counts over all test folds, summed over seeds; rows = true).
    """
    y = np.asarray(y)
    if task == "classification":
        y = y.astype(str)
        classes = [str(c) for c in np.unique(y)]
    seeds = sorted({r.seed for r in results})
    per_fold, per_seed = [], []
    cm = None
    for s in seeds:
        rs = [r for r in results if r.seed == s]
        idx = np.concatenate([r.test_index for r in rs]).astype(np.int64)
        pred = np.concatenate([np.asarray(r.y_pred).reshape(len(r.test_index), *np.shape(y)[1:]) for r in rs])
        if task == "classification":
            per_seed.append(classification_scores(y[idx], pred))
            c = confusion(y[idx], pred, classes)
            cm = c if cm is None else cm + c
        else:
            per_seed.append(regression_scores(y[idx], pred, targets or ["y"]))
    for r in results:
        t = y[r.test_index]
        scores = classification_scores(t, r.y_pred) if task == "classification" else regression_scores(t, r.y_pred, targets or ["y"])
        row = {"seed": int(r.seed), "fold": int(r.fold), "n_train": int(r.n_train), "n_test": int(len(r.test_index))}
        if groups is not None:
            row["test_speakers"] = sorted({str(g) for g in np.asarray(groups)[r.test_index]})
        row.update(scores)
        row.update({"best_epoch": r.best_epoch, "n_epochs": r.n_epochs, "best_params": r.best_params, "layer_weights": r.layer_weights})
        per_fold.append(row)
    out: dict[str, Any] = {"metrics": summarize_runs(per_seed), "per_fold": per_fold}
    if task == "classification":
        out["classes"] = classes
        out["confusion_matrix"] = cm.tolist()
    return out


def write_predictions(path: Path, results: list, ids: np.ndarray, groups: np.ndarray, y: np.ndarray, *, task: str = "classification", targets: Sequence[str] | None = None) -> Path:
    """``predictions.csv``: one row per test utterance, fold and seed (id, speaker, seed, fold,
    true value(s), prediction(s)), written atomically."""
    import pandas as pd

    y = np.asarray(y)
    frames = []
    for r in results:
        idx = np.asarray(r.test_index, dtype=np.int64)
        df = pd.DataFrame({"id": np.asarray(ids)[idx], "speaker": np.asarray(groups)[idx], "seed": r.seed, "fold": r.fold})
        if task == "classification":
            df["label"] = y[idx]
            df["predicted"] = np.asarray(r.y_pred)
        else:
            names = list(targets or ["y"])
            t = y[idx].reshape(len(idx), -1)
            p = np.asarray(r.y_pred, dtype=np.float64).reshape(len(idx), -1)
            for j, n in enumerate(names):
                df[n] = t[:, j]
                df[f"predicted_{n}"] = p[:, j]
        frames.append(df)
    text = pd.concat(frames, ignore_index=True).to_csv(index=False)
    fileio.atomic_write_bytes(Path(path), text.encode("utf-8"))
    return Path(path)
