"""One experiment exactly as ``estimators fit`` runs it, as a Python function.

``estimators fit`` is a thin wrapper over :func:`run_experiment`::

    from estimators import run_experiment

    result = run_experiment(cache="cache/ravdess", features="egemaps", cv="groupkfold:4", seeds=3)
    result.metrics["uar"]      # {"mean", "std", "values"}: one pooled score per seed
    result.save("runs/eg")     # report.json, predictions.csv, plots, model/ (as ``--out runs/eg``)

The data come from one of three routes, chosen by ``cv``: a split spec (``groupkfold:K``,
``logo``: :func:`estimators.cv.make_cv`), a registered protocol (fixed folds, labels and
validation speakers: :mod:`estimators.protocols`) or ``cross-corpus:TRAIN->TEST``
(:mod:`estimators.crosscorpus`). Every fold fits a Pipeline of the normaliser (fitted on
the training fold) and the estimator, for every seed; then, with ``refit=True``, the same
Pipeline is fitted on all the (training) data and kept as the final model. The result and
its files are :class:`estimators.results.ExperimentResult`.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import numpy as np

from ._experiment_data import ExperimentData, find_cache, load_data, make_splits
from .errors import ParameterError
from .registry import estimator_class, model_name_of, model_names
from .results import ExperimentResult, summary_lines

__all__ = ["MODELS", "NORMALIZE", "Experiment", "ExperimentResult", "run_experiment", "find_cache", "make_estimator", "summary_lines"]

MODELS = model_names()  # the registry's names at import (see estimators.registry)
NORMALIZE = ("speaker", "global", "none")


@dataclass
class Experiment:
    """The arguments of one experiment (those of ``estimators fit``, same defaults).

    Attributes
    ----------
    cache : path, FeatureCache, FeatureSet or None
        A corpus cache; None: the one corpus cache in ``./cache``. For ``cross-corpus`` a
        root holding both caches. A FeatureSet is used as it is (its label map too).
    features : str or None
        Feature spec (``all_layers``, ``mfcc``, ``all_layers+egemaps``...); None:
        ``all_layers`` (for a FeatureSet: the names of its streams, only recorded);
        ``"audio"``: the waveforms (``cache.select("audio")``), for a fine-tuning estimator
        (:class:`estimators.FineTuneClassifier`, ``normalize="none"``; ``estimators finetune``).
    model : {"dense", "lstm", "cnn", "fusion", "ecapa", "svc", "logreg"} or estimator
        A name (built from ``hidden``, ``lr`` ... ``precision`` below) or an unfitted
        estimator of this package, used as it is (cloned; ``random_state`` set per seed).
        ``svc`` / ``logreg``: the classic baselines of :mod:`estimators.classic` (mean-pooled
        features, StandardScaler + RBF SVC / logistic regression; a protocol's fixed
        validation speakers join the training part, as they do no early stopping).
    target : str, list of str or None
        Regression targets (numeric columns of the utterance table): ``"valence,arousal"``.
    loss : {"ccc", "mse"}
        Regression loss (named models only).
    normalize : {"speaker", "global", "none"}
    label_map : str, dict or None
        E.g. ``"ravdess7"``; a protocol's own label map when None.
    cv : str
        ``groupkfold:K``, ``logo``, a protocol name or ``cross-corpus:TRAIN->TEST``.
    grid : str, dict or None
        ``"hidden=64,128;lr=1e-3,3e-4"`` or ``{"lr": [1e-3, 3e-4]}`` (estimator parameter
        names): a grid search per training fold (inner GroupKFold by speaker). None: no
        search, except for models with a ``default_grid()`` (svc: C and gamma, logreg: C),
        which is searched the same way.
    seeds : int or sequence of int
        N: ``random_state`` 0..N-1; or the seeds themselves.
    hidden : str or tuple of int
        ``"128"`` (two layers of 128), ``"128x64"`` or ``(128, 64)``; not for cnn.
    lr, dropout, batch_size, max_epochs, patience, max_frames, device, precision
        Estimator parameters (named models only).
    pooling : {"mean", "max", "first", "last", "attentive"} or None
        Pooling over time of the dense, lstm and fusion models; None: the model's default.
    fusion : {"intermediate", "early", "late"} or None
        How the streams of an ``a+b`` spec are combined (fusion: any of them; ecapa: early
        or late); None: the model's default (fusion: intermediate, ecapa: early).
    average_checkpoints : int or None
        Average the weights of the N best epochs (named models; see
        :class:`estimators.CheckpointAveraging`).
    n_jobs : int
        Parallel fits (folds x seeds, or grid points with one fold); ``-1`` under joblib's
        Dask backend (:mod:`estimators.distributed`): every fit a Dask task, grid points too.
    refit : bool
        Fit the final model on all the data (``False``: evaluation only).
    allow_leakage : str, list of str or None
        Leakage kinds to let through instead of stopping (``"duplicates,speakers"``; kinds:
        duplicates, speakers, validation; see :mod:`estimators.leakage`); what is found
        then is recorded in ``report.json`` (``leakage``).
    command : str or None
        Recorded in the report and the model directory (the CLI puts its command line).
    """

    cache: Any = None
    features: str | None = None
    model: Any = "dense"
    target: str | Sequence[str] | None = None
    loss: str = "ccc"
    normalize: str = "speaker"
    label_map: Any = None
    cv: str = "groupkfold:5"
    grid: str | dict | None = None
    seeds: int | Sequence[int] = 1
    hidden: str | Sequence[int] = "128"
    lr: float = 1e-3
    dropout: float = 0.2
    batch_size: int = 32
    max_epochs: int = 100
    patience: int = 4
    max_frames: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    pooling: str | None = None
    fusion: str | None = None
    average_checkpoints: int | None = None
    n_jobs: int = 1
    refit: bool = True
    allow_leakage: str | Sequence[str] | None = None
    command: str | None = None

    def run(self, **callbacks: Any) -> ExperimentResult:
        """:func:`run_experiment` of these arguments (``verbose``, ``echo``, ``on_scores``)."""
        return run_experiment(self, **callbacks)


# --------------------------------------------------------------------------- building blocks


def make_estimator(model: str, task: str, params: dict):
    """An unfitted estimator from a model name; ``params`` it does not take (or None) are left out."""
    cls = estimator_class(model, task)
    allowed = set(cls().get_params())
    return cls(**{k: v for k, v in params.items() if k in allowed and v is not None})


def _pipeline(est0, normalize: str, seed: int):
    """``seed -> Pipeline(norm, est)`` (module level so that joblib workers can pickle it)."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    from .normalize import GlobalNormalizer, SpeakerNormalizer

    norm = {"speaker": SpeakerNormalizer, "global": GlobalNormalizer}.get(normalize)
    est = clone(est0).set_params(random_state=seed)
    return Pipeline([("norm", norm() if norm else "passthrough"), ("est", est)])


def _check_args(exp: Experiment) -> list[int]:
    if exp.normalize not in NORMALIZE:
        raise ParameterError("normalize", "one of " + ", ".join(NORMALIZE), exp.normalize)
    if exp.loss not in ("ccc", "mse"):
        raise ParameterError("loss", "'ccc' or 'mse'", exp.loss)
    if isinstance(exp.seeds, (int, np.integer)) and not isinstance(exp.seeds, bool):
        if exp.seeds < 1:
            raise ParameterError("seeds", "a positive number of seeds or a list of seeds", exp.seeds)
        return list(range(int(exp.seeds)))
    seeds = list(exp.seeds) if isinstance(exp.seeds, (list, tuple, range, np.ndarray)) else None
    if not seeds or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise ParameterError("seeds", "a positive number of seeds or a non-empty list of integer seeds", exp.seeds)
    return [int(s) for s in seeds]


def _estimator(exp: Experiment, data: ExperimentData):
    """The unfitted estimator, its model name and the parameter grid (Pipeline names)."""
    from sklearn.base import clone, is_regressor

    n_streams = len(data.X.streams)
    if isinstance(exp.model, str):
        kind = exp.model
        if kind not in model_names():
            raise ParameterError("--model", "one of " + ", ".join(model_names()) + " or an estimator", kind)
    else:
        if not hasattr(exp.model, "get_params"):
            raise ParameterError("model", "a model name (" + ", ".join(model_names()) + ") or an unfitted estimator", exp.model)
        kind = model_name_of(exp.model)
    if kind == "fusion" and n_streams < 2:
        raise ParameterError("--model fusion", "used with a two-stream feature spec such as all_layers+egemaps", f"--features {data.spec} ({n_streams} stream)")
    if kind not in ("fusion", "ecapa") and n_streams > 1:
        raise ParameterError(f"--features for --model {kind}", "one stream (use --model fusion or ecapa for a+b specs)", data.spec)
    if isinstance(exp.model, str):
        from .cv import parse_hidden

        hidden = exp.hidden if not isinstance(exp.hidden, str) else parse_hidden(exp.hidden)
        params = {
            "hidden_sizes": None if kind == "cnn" else tuple(int(h) for h in hidden),
            "lr": exp.lr, "dropout": exp.dropout, "batch_size": exp.batch_size, "max_epochs": exp.max_epochs,
            "patience": exp.patience, "max_frames": exp.max_frames, "device": exp.device, "precision": exp.precision,
            "average_checkpoints": exp.average_checkpoints,
        }
        if data.task == "regression":
            params["loss"] = exp.loss
        allowed = set(estimator_class(kind, data.task)().get_params())
        for name, value, flag in (("pooling", exp.pooling, "--pooling"), ("fusion", exp.fusion, "--fusion"),
                                  ("average_checkpoints", exp.average_checkpoints, "--average")):
            if value is not None and name not in allowed:
                takes = [m for m in model_names(data.task) if name in estimator_class(m, data.task)().get_params()]
                raise ParameterError(flag, "used with --model " + " or ".join(takes), f"--model {kind}")
            params[name] = value
        est0 = make_estimator(kind, data.task, params)
    else:
        est0 = clone(exp.model)
        if (data.task == "regression") != is_regressor(est0):
            want = "a regressor (DenseRegressor, LSTMRegressor, ECAPARegressor) with target" if data.task == "regression" else "a classifier without target"
            raise ParameterError("model", want, type(est0).__name__)
    _check_audio(exp, data, est0)
    return est0, kind, _grid(exp.grid, est0)


def _check_audio(exp: Experiment, data: ExperimentData, est0) -> None:
    """Audio (``features="audio"``) goes with models over audio (fine-tuning), without a normaliser."""
    audio_in = bool(getattr(data.X, "is_audio", False))
    if audio_in != (getattr(est0, "input_kind", "features") == "audio"):
        if audio_in:
            raise ParameterError("model for --features audio", "a model over audio (FineTuneClassifier / FineTuneRegressor: estimators finetune)", type(est0).__name__)
        raise ParameterError(f"--features for {type(est0).__name__}", "'audio' (it fine-tunes on waveforms)", data.spec)
    if audio_in and exp.normalize != "none":
        raise ParameterError("normalize", "'none' for audio input (the model normalises every utterance itself)", exp.normalize)


def _grid(grid, est0) -> dict | None:
    from .cv import parse_grid

    if not grid:  # a model's own small default grid (the classic baselines: C, gamma)
        default = getattr(est0, "default_grid", None)
        return {f"est__{k}": list(v) for k, v in default().items()} if callable(default) else None
    if isinstance(grid, str):
        param_grid = parse_grid(grid, prefix="est__")
    elif isinstance(grid, dict):
        param_grid = {f"est__{k}": list(v) for k, v in grid.items()}
    else:
        raise ParameterError("grid", "'NAME=V1,V2;NAME=...' or a dict of parameter lists", grid)
    allowed = set(est0.get_params())
    bad = sorted(k[5:] for k in param_grid if k[5:] not in allowed)
    if bad:
        raise ParameterError("--grid", f"parameters of {type(est0).__name__} ({', '.join(sorted(allowed))})", ", ".join(bad))
    return param_grid


# --------------------------------------------------------------------------- the experiment


def run_experiment(
    experiment: Experiment | None = None,
    *,
    verbose: bool = False,
    echo: Callable[[str], None] | None = None,
    on_scores: Callable[[dict], None] | None = None,
    **arguments: Any,
) -> ExperimentResult:
    """Cross-validate (and refit) a model as ``estimators fit`` does; write nothing.

    Parameters
    ----------
    experiment : Experiment, optional
        The arguments; or give them as keywords (the fields of :class:`Experiment`:
        ``cache``, ``features``, ``model``, ``cv``, ``seeds``, ``grid`` ...).
    verbose : bool
        Progress bars (stderr) and progress messages.
    echo : callable, optional
        Receives the messages (``str``) instead of stderr: notes that are always given
        (utterances left out, what a cross-corpus run keeps) and, when ``verbose``,
        progress. Without it and without ``verbose`` nothing is printed; the notes are in
        ``result.notes`` either way.
    on_scores : callable, optional
        Called with ``{"metrics", "per_fold"}`` once the cross-validation is scored, before
        the refit (the CLI prints them then: :func:`summary_lines`).
    **arguments
        Fields of :class:`Experiment` (not together with ``experiment``).

    Returns
    -------
    ExperimentResult
        Scores, per-fold rows, confusion matrix, layer weights, the final Pipeline (None
        with ``refit=False``); ``.save(out_dir)`` writes the files of ``estimators fit``.

    Raises
    ------
    EstimatorsError, FeatcacheError
        (``ParameterError`` is also a ``ValueError``) for bad arguments, naming them,
        before any training.
    """
    t0 = time.perf_counter()
    if experiment is None:
        names = {f.name for f in fields(Experiment)}
        unknown = sorted(set(arguments) - names)
        if unknown:
            raise TypeError(f"run_experiment() got unexpected arguments {unknown}; allowed: {', '.join(sorted(names))}")
        experiment = Experiment(**arguments)
    elif arguments:
        raise TypeError("run_experiment() takes an Experiment or keyword arguments, not both")
    exp = experiment
    notes: list[str] = []

    def say(message: str, always: bool = False) -> None:
        if always:
            notes.append(message)
        if always or verbose:
            if echo is not None:
                echo(message)
            elif verbose:
                print(message, file=sys.stderr)

    seeds = _check_args(exp)
    data = load_data(exp, say)
    est0, kind, param_grid = _estimator(exp, data)
    if hasattr(est0, "_check_params"):
        est0._check_params()  # a bad device etc. now, not after the first fold
    splits = make_splits(exp, data, say)
    if getattr(est0, "uses_validation", True) is False:  # no early stopping: fixed validation speakers train
        splits = [(np.sort(np.concatenate([sp[0], sp[2]])) if len(sp) > 2 and sp[2] is not None else sp[0], sp[1]) for sp in splits]
    from .leakage import guard_experiment

    data.leakage = guard_experiment(exp, data, splits, param_grid, say)  # before any training
    X, y, groups = data.X, data.y, data.groups
    shapes = ", ".join(f"{s['n_layers']}x{s['dim']}" for s in X.describe()["streams"])
    say(f"{X.describe().get('corpus', data.fc.corpus)}: {len(X)} utterances, {len(np.unique(groups))} speakers, features {data.spec} ({shapes}), "
        f"{type(est0).__name__}, {len(splits)} folds ({exp.cv}) x {len(seeds)} seed(s), normalize {exp.normalize}")
    from .cv import run_folds

    factory = functools.partial(_pipeline, est0, exp.normalize)
    if data.cross is not None:
        from .crosscorpus import run_cross_corpus

        results = run_cross_corpus(factory, data.cross, seeds, progress=verbose, param_grid=param_grid)
        evaluation = (data.cross.X_test.ids, data.cross.groups_test, data.cross.y_test)
    else:
        results = run_folds(factory, X, y, groups, splits, seeds, param_grid=param_grid, task=data.task, n_jobs=exp.n_jobs, progress=verbose)
        evaluation = (X.ids, groups, y)
    from . import report as rep

    summary = rep.score_runs(results, evaluation[2], task=data.task, targets=data.targets, groups=evaluation[1])
    if on_scores is not None:
        on_scores({"metrics": summary["metrics"], "per_fold": summary["per_fold"]})
    final = None
    if exp.refit:
        say("refitting on all data ...")
        final = run_folds(factory, X, y, groups, [(np.arange(len(X)), np.arange(0))], seeds[:1],
                          param_grid=param_grid, task=data.task, n_jobs=exp.n_jobs, progress=False, keep_pipeline=True)[0]
    from .results import build_result

    return build_result(exp, data, kind, est0, param_grid, splits, seeds, results, summary, final, evaluation, notes, time.perf_counter() - t0)
