"""Cross-validation by speaker: split specs, registered protocols and hyper-parameter grids.

Split specs (``estimators fit --cv SPEC``)
------------------------------------------
* ``groupkfold:K`` -- :class:`sklearn.model_selection.GroupKFold` with ``K`` folds, the
  groups being the speakers (every speaker is in exactly one test fold);
* ``logo`` -- :class:`sklearn.model_selection.LeaveOneGroupOut`: one fold per speaker;
* a split protocol registered in :data:`estimators.protocols.PROTOCOL_REGISTRY` (an alias
  of a spec, or a callable ``f(groups, y)``; see
  :func:`estimators.protocols.register_protocol`).

:func:`make_cv` turns a spec into a list of ``(train_index, test_index)`` pairs. Corpus
protocols (:class:`estimators.protocols.Protocol`: kept utterances, label map, fixed
validation speakers) need the utterance table and are applied by the experiment, not here.
:data:`PROTOCOLS` is the registry itself, under the name this module has always used.

Grids (``--grid "hidden=64,128;lr=1e-3,3e-4"``)
-----------------------------------------------
:func:`parse_grid` turns the short form into a scikit-learn parameter grid (a dict of
lists) with the estimator's parameter names; see :data:`GRID_NAMES` (both live in
``estimators/_grid.py`` and are public here).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import warnings
from typing import Any, Callable, Iterable

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

from ._grid import GRID_NAMES, parse_grid, parse_hidden
from .errors import ParameterError
from .protocols import PROTOCOL_REGISTRY, Protocol, list_protocols

__all__ = ["PROTOCOLS", "make_cv", "describe_cv_forms", "inner_cv", "parse_grid", "parse_hidden", "GRID_NAMES", "run_folds", "FoldResult"]

#: The protocol registry, :data:`estimators.protocols.PROTOCOL_REGISTRY` (the same dict):
#: name -> a Protocol, a split spec string or a callable ``f(groups, y)``.
PROTOCOLS = PROTOCOL_REGISTRY

_GROUPKFOLD = re.compile(r"groupkfold:(\d+)")


def describe_cv_forms() -> str:
    """The allowed forms of a split spec, for error messages and help texts."""
    return "'groupkfold:K' (K >= 2 folds by speaker), 'logo' (leave one speaker out), a protocol (" + ", ".join(list_protocols()) + ") or 'cross-corpus:TRAIN->TEST'"


def make_cv(spec: str, groups: Iterable, y: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer cross-validation splits by speaker.

    Parameters
    ----------
    spec : str
        ``groupkfold:K``, ``logo`` or the name of a split protocol in :data:`PROTOCOLS`.
    groups : array-like of shape (n_utterances,)
        Speaker of every utterance.
    y : ndarray, optional
        Targets, passed to registered protocols that want them.

    Returns
    -------
    list of (train_index, test_index)
        Integer positions; every split has a non-empty train and test part.

    Raises
    ------
    ParameterError
        Unknown spec (the message lists the allowed forms), ``K < 2``, more folds than
        speakers, or the name of a corpus protocol (it needs the utterance table:
        :meth:`estimators.protocols.Protocol.folds`).
    """
    groups = np.asarray(list(groups) if not isinstance(groups, np.ndarray) else groups).astype(str)
    n_speakers = len(np.unique(groups))
    text = spec.strip() if isinstance(spec, str) else spec
    if not isinstance(text, str) or not text:
        raise ParameterError("cv", describe_cv_forms(), spec)
    if text in PROTOCOL_REGISTRY:
        return _registered_splits(text, groups, y)
    low = text.lower()
    m = _GROUPKFOLD.fullmatch(low)
    if m:
        k = int(m.group(1))
        if k < 2:
            raise ParameterError("cv", "groupkfold:K with K >= 2", spec)
        if k > n_speakers:
            raise ParameterError("cv", f"groupkfold:K with K <= the number of speakers ({n_speakers})", spec)
        splitter = GroupKFold(n_splits=k)
    elif low == "logo":
        if n_speakers < 2:
            raise ParameterError("cv", "'logo' with at least 2 speakers", f"{spec} ({n_speakers} speaker)")
        splitter = LeaveOneGroupOut()
    else:
        raise ParameterError("cv", describe_cv_forms(), spec)
    splits = [(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)) for a, b in splitter.split(np.zeros(len(groups)), None, groups)]
    return _checked(splits, text)


def _registered_splits(name: str, groups: np.ndarray, y: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The splits of the split protocol registered as ``name``."""
    proto = PROTOCOL_REGISTRY[name]
    if isinstance(proto, Protocol):
        raise ParameterError(
            "cv", f"a split spec or split protocol (corpus protocol {name!r} needs the utterance table: Protocol.folds(table), or --cv {name})",
            f"{name} with speakers only",
        )
    if isinstance(proto, str):
        if proto in PROTOCOL_REGISTRY:
            raise ParameterError("cv", "a protocol that does not name another protocol", proto)
        return make_cv(proto, groups, y)
    out = proto(groups, y)
    if hasattr(out, "split"):
        out = out.split(np.zeros(len(groups)), y, groups)
    splits = [(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)) for a, b in out]
    return _checked(splits, name)


def _checked(splits: list[tuple[np.ndarray, np.ndarray]], spec: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if not splits:
        raise ParameterError("cv", "a protocol that yields at least one split", f"{spec} (no split)")
    for i, (a, b) in enumerate(splits):
        if len(a) == 0 or len(b) == 0:
            raise ParameterError("cv", "splits with non-empty train and test parts", f"{spec} (split {i})")
    return splits


def inner_cv(groups: np.ndarray, n_splits: int = 3) -> GroupKFold:
    """Inner (grid-search) GroupKFold by speaker: ``min(n_splits, speakers)`` folds.

    Raises
    ------
    ParameterError
        When the training part has fewer than 2 speakers.
    """
    n = len(np.unique(np.asarray(groups).astype(str)))
    if n < 2:
        raise ParameterError("grid", "training folds with at least 2 speakers (inner GroupKFold by speaker)", f"{n} speaker")
    return GroupKFold(n_splits=min(n_splits, n))


# --------------------------------------------------------------------------- running folds x seeds


class FoldResult:
    """What one (seed, fold) fit left: test positions, predictions, chosen parameters.

    Attributes
    ----------
    seed, fold : int
    test_index : ndarray of int
        Positions in ``X`` of the test utterances.
    y_pred : ndarray
        Predictions for ``test_index`` (labels, or regression outputs).
    best_params : dict or None
        Parameters chosen by the grid search (estimator names, without the Pipeline prefix).
    layer_weights : list of float or None
        Normalised layer weights of the fitted estimator (stream 0, when it has layers).
    stream_layer_weights : list of (list of float or None) or None
        The same for every stream (None for single-layer streams).
    best_epoch, n_epochs : int or None
    n_train : int
    pipeline : fitted Pipeline (only with ``keep_pipeline=True``)
    data_access : dict or None
        How the estimator read its training frames (its ``data_access_``: access mode,
        bytes selected, memory budget), None for estimators that do not say.
    """

    def __init__(self, seed, fold, test_index, y_pred, best_params, layer_weights, best_epoch, n_epochs, n_train, pipeline=None,
                 stream_layer_weights=None):
        self.seed = seed
        self.fold = fold
        self.test_index = test_index
        self.y_pred = y_pred
        self.best_params = best_params
        self.layer_weights = layer_weights
        self.best_epoch = best_epoch
        self.n_epochs = n_epochs
        self.n_train = n_train
        self.pipeline = pipeline
        self.stream_layer_weights = stream_layer_weights
        self.data_access = None


def _strip(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        k = k.split("__", 1)[1] if "__" in k else k
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _fit_with_validation(pipe, X, y, train, valid):
    """Fit the normaliser on ``train`` only, then the estimator with a fixed validation set."""
    steps = pipe.steps
    norm = steps[0][1] if len(steps) > 1 and steps[0][1] != "passthrough" else None
    Xt, Xv = X[train], X[valid]
    if norm is not None:
        Xt = norm.fit_transform(Xt, y[train])
        Xv = norm.transform(Xv)
    steps[-1][1].fit(Xt, y[train], X_val=Xv, y_val=y[valid])
    return pipe


def _one_fold(make_pipeline, X, y, groups, train, test, seed, fold, param_grid, task, grid_jobs, keep_pipeline, valid=None):
    pipe = make_pipeline(seed)
    best_params = None
    if valid is not None and len(valid):
        _fit_with_validation(pipe, X, y, train, valid)  # run_folds refuses a grid with these
    elif param_grid:
        from sklearn.model_selection import GridSearchCV

        if task == "classification":
            scoring = "balanced_accuracy"
        else:
            from .metrics import ccc_scorer

            scoring = ccc_scorer
        search = GridSearchCV(pipe, param_grid, scoring=scoring, cv=inner_cv(groups[train]), n_jobs=grid_jobs, refit=True, error_score="raise")
        search.fit(X[train], y[train], groups=groups[train])
        pipe = search.best_estimator_
        best_params = _strip(search.best_params_)
    else:
        pipe.fit(X[train], y[train])
    est = pipe.named_steps["est"] if hasattr(pipe, "named_steps") else pipe
    y_pred = pipe.predict(X[test]) if len(test) else np.asarray([])
    lw = getattr(est, "layer_weights_", None)
    slw = getattr(est, "stream_layer_weights_", None)
    result = FoldResult(
        seed, fold, np.asarray(test), np.asarray(y_pred), best_params,
        None if lw is None else [float(v) for v in np.ravel(lw)],
        getattr(est, "best_epoch_", None), getattr(est, "n_epochs_", None), len(train),
        pipe if keep_pipeline else None,
        None if slw is None else [None if w is None else [float(v) for v in np.ravel(w)] for w in slw],
    )
    result.data_access = getattr(est, "data_access_", None)
    return result


def run_folds(
    make_pipeline: Callable[[int], Any],
    X: Any,
    y: np.ndarray,
    groups: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    seeds: list[int],
    *,
    param_grid: dict | None = None,
    task: str = "classification",
    n_jobs: int = 1,
    progress: bool = True,
    keep_pipeline: bool = False,
) -> list[FoldResult]:
    """Fit and test ``make_pipeline(seed)`` on every split, for every seed.

    Parameters
    ----------
    make_pipeline : callable
        ``seed -> unfitted estimator`` (a Pipeline ``norm`` + ``est``).
    X : FeatureSet or anything indexable by integer arrays
    y : ndarray
    groups : ndarray
        Speakers (inner grid-search folds are by speaker).
    splits : list of (train, test) or (train, test, valid)
        ``valid`` (or None): a fixed validation set for early stopping (a protocol's); the
        normaliser is then fitted on ``train`` only and applied to ``valid``.
    seeds : list of int
    param_grid : dict, optional
        Grid (Pipeline names, ``est__...``): a :class:`~sklearn.model_selection.GridSearchCV`
        with an inner GroupKFold by speaker (:func:`inner_cv`) runs on each training fold,
        scored by balanced accuracy (classification) or CCC (regression).
    n_jobs : int
        With several folds x seeds they run in parallel (joblib); with one, the grid
        points do.
    progress : bool
        A tqdm bar over folds x seeds (on stderr).

    Returns
    -------
    list of FoldResult
        Ordered by seed, then fold.
    """
    from tqdm.auto import tqdm

    groups = np.asarray(groups)
    y = np.asarray(y)
    tasks = [(s, f, sp[0], sp[1], sp[2] if len(sp) > 2 else None) for s in seeds for f, sp in enumerate(splits)]
    if param_grid and any(t[4] is not None and len(t[4]) for t in tasks):  # before any fit runs
        raise ParameterError("grid", "a protocol without a fixed validation set (grids choose their own)", "a fixed validation set")
    fit = functools.partial(_one_fold, make_pipeline, X, y, groups, param_grid=param_grid, task=task, keep_pipeline=keep_pipeline)
    bar = tqdm(total=len(tasks), desc="folds x seeds", unit="fit", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    # the same warning from every fit (e.g. a one-speaker inner training fold) is shown once
    with _warnings_once():
        try:
            results = _fit_tasks(fit, tasks, n_jobs, bar)
        finally:
            bar.close()
    results.sort(key=lambda r: (r.seed, r.fold))
    return results


def _fit_tasks(fit: Callable[..., FoldResult], tasks: list[tuple], n_jobs: int | None, bar) -> list[FoldResult]:
    """Run ``fit`` on every (seed, fold, train, test, valid) task, in the order they finish.

    Several tasks and ``n_jobs`` not 0/1/None: the tasks run in parallel (joblib), each grid
    search on one job; else one after the other, each grid search on ``n_jobs`` jobs.
    """
    if n_jobs in (0, 1, None) or len(tasks) <= 1:
        results = []
        for s, f, tr, te, va in tasks:
            bar.set_postfix_str(f"seed {s} fold {f}", refresh=False)
            results.append(fit(train=tr, test=te, seed=s, fold=f, grid_jobs=n_jobs, valid=va))
            bar.update(1)
        return results
    from joblib import Parallel, delayed

    from .distributed import dask_is_active

    # on Dask the grid points of each fold are tasks too (joblib's nested Dask backend)
    grid_jobs = None if dask_is_active() else 1
    gen = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
        delayed(fit)(train=tr, test=te, seed=s, fold=f, grid_jobs=grid_jobs, valid=va) for s, f, tr, te, va in tasks
    )
    results = []
    for r in gen:
        results.append(r)
        bar.update(1)
    return results


@contextlib.contextmanager
def _warnings_once():
    """Record the warnings of the block; on leaving it (even by an error) issue each distinct one once."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        first: dict = {}
        for w in caught:
            first.setdefault((w.category, str(w.message)), w)
        for w in first.values():
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
