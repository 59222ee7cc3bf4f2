"""What :func:`estimators.run_experiment` returns, and the files ``estimators fit`` writes.

:meth:`ExperimentResult.save` writes into one folder:

* ``report.json`` -- scores (``metrics``: mean ± std over seeds of the pooled scores),
  ``per_fold`` rows, confusion matrix, layer weights, chosen grid parameters, the model,
  normalisation, cv, seeds, features, versions (see :mod:`estimators.report`), and
  ``data_access``: how the frames were read (``memory`` / ``random`` / ``stream``, the memory
  budget and bytes selected; see :mod:`featcache.frames`);
* ``predictions.csv`` -- one row per test utterance, seed and fold;
* ``confusion.png`` (classification) and ``layer_weights.png``;
* ``model/`` (only with a refit) -- the final model (:func:`estimators.save_model`) and its
  preprocessing (:func:`estimators.predict.save_preprocessing`), for ``estimators predict``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ParameterError

__all__ = ["ExperimentResult", "summary_lines", "build_result"]


def summary_lines(scores: dict) -> list[str]:
    """The lines ``estimators fit`` prints: one per seed and fold, then one per metric.

    Parameters
    ----------
    scores : dict
        With ``metrics`` and ``per_fold`` (a report, or what ``on_scores`` receives).
    """
    lines = []
    for r in scores["per_fold"]:
        text = "  ".join(f"{k} {r[k]:.3f}" for k in scores["metrics"])
        lines.append(f"seed {r['seed']} fold {r['fold']}: {text}  (test {r['n_test']} utterances, speakers {','.join(r['test_speakers'])})")
    for k, m in scores["metrics"].items():
        lines.append(f"{k.upper():9s} {m['mean']:.4f} ± {m['std']:.4f}  (pooled over folds; mean ± std over {len(m['values'])} seed(s))")
    return lines


@dataclass
class ExperimentResult:
    """Scores, predictions and the final model of one experiment.

    Attributes
    ----------
    report : dict
        What ``report.json`` holds (``model_dir`` and ``wall_seconds`` are set by
        :meth:`save`).
    folds : list of estimators.cv.FoldResult
        One per seed and fold (test positions, predictions, chosen parameters).
    pipeline : sklearn Pipeline or None
        The final ``norm`` + ``est`` Pipeline fitted on all the data; None without refit.
    preprocessing : estimators.predict.Preprocessing or None
        What ``model/preprocessing.json`` records (None without refit).
    model_extra : dict or None
        The ``extra`` stored with the final model.
    eval_ids, eval_groups, eval_y : ndarray of shape (n_test_utterances, ...)
        Ids, speakers and true values of the utterances that ``folds`` index.
    notes : list of str
        Notes given while running (utterances left out, a cross-corpus run's labels).
    run_seconds : float
        Wall time of :func:`run_experiment`.
    """

    report: dict
    folds: list
    pipeline: Any = None
    preprocessing: Any = None
    model_extra: dict | None = None
    eval_ids: np.ndarray | None = None
    eval_groups: np.ndarray | None = None
    eval_y: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    run_seconds: float = 0.0

    @property
    def metrics(self) -> dict:
        """``{name: {"mean", "std", "values"}}``: per seed, the score of all test folds pooled."""
        return self.report["metrics"]

    @property
    def per_fold(self) -> list[dict]:
        """One row per seed and fold: sizes, test speakers, scores, epochs, parameters."""
        return self.report["per_fold"]

    @property
    def confusion_matrix(self) -> np.ndarray | None:
        """Counts of shape (n_classes, n_classes), rows = true class, summed over seeds."""
        cm = self.report.get("confusion_matrix")
        return None if cm is None else np.asarray(cm)

    @property
    def classes(self) -> list[str] | None:
        return self.report.get("classes")

    @property
    def layer_weights(self) -> np.ndarray | None:
        """Normalised layer weights, shape (n_fits, n_layers) (order: ``layer_weights_order``)."""
        lw = self.report.get("layer_weights")
        return None if lw is None else np.asarray(lw)

    @property
    def best_params(self) -> dict | None:
        """With a grid: ``{"final": ..., "per_fold": [...]}``; else None."""
        return self.report.get("best_params")

    @property
    def model(self):
        """The final fitted estimator (without its normaliser), or None without refit."""
        return None if self.pipeline is None else self.pipeline.named_steps["est"]

    def summary_lines(self) -> list[str]:
        """Per-fold and mean ± std lines, as ``estimators fit`` prints them."""
        return summary_lines(self.report)

    def save(self, out_dir: str | Path, *, overwrite: bool = False, echo: Callable[[str], None] | None = None) -> Path:
        """Write ``report.json``, ``predictions.csv``, the plots and ``model/`` into ``out_dir``.

        Parameters
        ----------
        out_dir : path
            Created if needed; refused when it holds files, unless ``overwrite``.
        echo : callable, optional
            Receives the notes about the plots (``confusion.png skipped`` ...).

        Returns
        -------
        Path
            ``out_dir``.

        Raises
        ------
        ParameterError
            ``out_dir`` is not empty and ``overwrite`` is False.
        OSError
            A write failed (full disk, permissions); ``report.json`` is written last.
        """
        from . import report as rep

        t0 = time.perf_counter()
        say = echo or (lambda message: None)
        out = Path(out_dir)
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise ParameterError("out_dir", "a new or empty folder (or overwrite=True)", str(out))
        out.mkdir(parents=True, exist_ok=True)
        report = dict(self.report)
        model_dir = out / "model"
        if self.pipeline is not None:
            from .persist import save_model
            from .predict import save_preprocessing

            save_model(self.model, model_dir, extra=self.model_extra)
            save_preprocessing(model_dir, self.preprocessing)
        report["model_dir"] = str(model_dir) if self.pipeline is not None else None
        task = "regression" if report.get("targets") else "classification"
        rep.write_predictions(out / "predictions.csv", self.folds, self.eval_ids, self.eval_groups, self.eval_y, task=task, targets=report.get("targets"))
        spec, kind = report["spec"], report["model"]["kind"]
        if task == "classification":
            rep.plot_confusion(np.asarray(report["confusion_matrix"]), report["classes"], out / "confusion.png",
                               title=f"{spec}, {kind}: UAR {report['metrics']['uar']['mean']:.3f}")
        else:
            say("confusion.png skipped: regression has no classes")
        lw = report.get("layer_weights")
        slw = report.get("stream_layer_weights")
        if slw and any(w is not None for w in slw):
            names = [st.get("name", f"stream {k}") for k, st in enumerate(report["features"]["streams"])]
            rep.plot_layer_weights(None, out / "layer_weights.png", streams=list(zip(names, slw)),
                                   title=f"{spec}: layer weights per stream, mean ± std over {len(self.folds)} fits")
        elif lw and len(lw[0]) > 1:
            rep.plot_layer_weights(np.asarray(lw), out / "layer_weights.png",
                                   title=f"layer weights of {report['features']['streams'][0]['name']}, mean ± std over {len(lw)} fits")
        else:
            # the same file for every run, so scripts can rely on it; it says why it is flat
            rep.plot_layer_weights(np.ones((max(len(self.folds), 1), 1)), out / "layer_weights.png",
                                   title=f"{spec}: a single layer, so no trainable layer weights (1.0 by construction)")
            say("layer_weights.png: the features have a single layer (no trainable layer weights)")
        report["wall_seconds"] = self.run_seconds + (time.perf_counter() - t0)
        rep.write_json(out / "report.json", report)
        self.report = report
        return out


def _final_model_info(exp, data, kind: str, final, describe: dict):
    """The ``extra`` of the saved final model and its Preprocessing (normaliser statistics)."""
    from .predict import Preprocessing

    norm = final.pipeline.named_steps["norm"]
    mean = scale = None
    if exp.normalize == "speaker":
        mean, scale = norm.global_mean_, norm.global_scale_
    elif exp.normalize == "global":
        mean, scale = norm.mean_, norm.scale_
    fc = data.fc
    extra = {
        "spec": data.spec, "corpus": describe.get("corpus", fc.corpus), "cache": str(fc.path), "normalization": exp.normalize,
        "label_map": data.label_map, "targets": data.targets, "best_params": final.best_params, "command": exp.command,
    }
    prep = Preprocessing(
        features=describe, spec=data.spec, normalization=exp.normalize, mean=mean, scale=scale,
        eps=float(getattr(norm, "eps", 1e-8)), label_map=data.label_map, targets=data.targets,
        info={"corpus": describe.get("corpus", fc.corpus), "cache": str(fc.path), "model": kind, "command": exp.command},
    )
    return extra, prep


def _stream_layer_weights(results: list, n_streams: int) -> list | None:
    """Per stream, the layer weights of every fit (fit order), or None for a single-layer
    stream; None for one-stream features (``layer_weights`` has them)."""
    if n_streams < 2:
        return None
    fits = [r.stream_layer_weights for r in results if getattr(r, "stream_layer_weights", None)]
    if not fits:
        return None
    return [None if any(f[k] is None for f in fits) else [f[k] for f in fits] for k in range(n_streams)]


def _data_access(final_est, results) -> dict | None:
    """How frames were read: the access mode of every fit (``memory``, ``random`` or
    ``stream``, see :mod:`featcache.frames`), with the budget and bytes of the final fit (or
    of the first fold without a refit)."""
    fits = [r.data_access for r in results if getattr(r, "data_access", None)]
    final = getattr(final_est, "data_access_", None)
    if not fits and final is None:
        return None
    out = dict(final if final is not None else fits[0])
    out["modes"] = sorted({a["mode"] for a in fits + ([final] if final else [])})
    return out


def build_result(exp, data, kind, est0, param_grid, splits, seeds, results, summary, final, evaluation, notes, seconds) -> ExperimentResult:
    """Assemble the report (the keys and order of ``report.json``) and the result."""
    from . import report as rep

    X = data.X
    describe = X.describe()
    lw = [r.layer_weights for r in results if r.layer_weights is not None]
    layer_weights = [list(map(float, w)) for w in lw] if lw else None
    est, extra, prep = est0, None, None
    if final is not None:
        est = final.pipeline.named_steps["est"]
        extra, prep = _final_model_info(exp, data, kind, final, describe)
    report = {
        "metrics": summary["metrics"],
        "metrics_note": rep.POOLING_NOTE,
        "per_fold": summary["per_fold"],
        "confusion_matrix": summary.get("confusion_matrix"),
        "classes": summary.get("classes"),
        "targets": data.targets,
        "best_params": (
            {"final": final.best_params if final else None, "per_fold": [{"seed": r.seed, "fold": r.fold, "params": r.best_params} for r in results]}
            if param_grid else None
        ),
        "layer_weights": layer_weights,
        "layer_weights_order": [{"seed": r.seed, "fold": r.fold} for r in results if r.layer_weights is not None] or None,
        "stream_layer_weights": _stream_layer_weights(results, len(describe.get("streams", []))),
        "final_layer_weights": [float(v) for v in est.layer_weights_] if getattr(est, "layer_weights_", None) is not None else None,
        "model": {"kind": kind, "class": type(est).__name__, "params": {k: v for k, v in est.get_params().items() if k != "callbacks"}},
        "normalize": exp.normalize,
        "cv": {"spec": exp.cv, "n_folds": len(splits)},
        "seeds": list(seeds),
        "label_map": data.label_map,
        "command": exp.command,
        "versions": rep.versions(),
        "features": describe,
        "spec": data.spec,
        "cache": str(data.fc.path),
        "n_utterances": int(len(X)),
        "n_speakers": int(len(np.unique(data.groups))),
        "leakage": getattr(data, "leakage", None),
        "data_access": _data_access(est if final is not None else None, results),
        "model_dir": None,
    }
    if data.cross is not None:
        c = data.cross
        report["cross_corpus"] = {
            "train": "+".join(c.train_corpora) or data.fc.corpus, "test": data.fc_test.corpus, "test_cache": str(data.fc_test.path), "labels": c.labels,
            "n_train": int(len(X)), "n_test": int(len(c.X_test)),
            "dropped_train": c.dropped_train, "dropped_test": c.dropped_test,
        }
    report["wall_seconds"] = seconds
    ids, groups, y = evaluation
    return ExperimentResult(report, results, final.pipeline if final is not None else None, prep, extra,
                            np.asarray(ids), np.asarray(groups), np.asarray(y), list(notes), seconds)
