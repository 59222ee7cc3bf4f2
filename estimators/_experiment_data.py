"""The data of an experiment: the corpus cache, the utterances of its route, labels, splits.

Used by :func:`estimators.experiment.run_experiment`; see there for the three routes
(split spec, protocol, cross-corpus).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import EstimatorsError, ParameterError

__all__ = ["ExperimentData", "find_cache", "load_data", "make_splits"]


def find_cache(cache: Any = None):
    """The corpus cache named by ``cache`` (a path or a FeatureCache), or the one in ``./cache``.

    Raises
    ------
    EstimatorsError
        When ``cache`` is None and ``./cache`` holds no corpus cache or several.
    """
    from featcache.reader import FeatureCache, find_caches, open_cache

    if isinstance(cache, FeatureCache):
        return cache
    if cache is not None:
        return open_cache(cache)
    found = find_caches(Path("cache"))
    if len(found) == 1:
        return FeatureCache(found[0])
    if not found:
        raise EstimatorsError("--cache PATH (cache=PATH) is required: ./cache holds no corpus cache (run `featcache extract` or name one)")
    raise EstimatorsError(f"--cache PATH (cache=PATH) is required: ./cache holds {len(found)} corpus caches: " + ", ".join(str(p) for p in found))


@dataclass
class ExperimentData:
    """What the experiment trains and tests on (after a protocol's selection and label map)."""

    fc: Any  # the (training) FeatureCache
    spec: str
    X: Any
    y: np.ndarray
    groups: np.ndarray
    task: str
    targets: list[str] | None
    label_map: Any
    protocol: Any = None
    cross: Any = None  # CrossCorpusData
    fc_test: Any = None
    leakage: dict | None = None  # what estimators.leakage checked (report.json "leakage")


def _targets(target) -> list[str] | None:
    if not target:
        return None
    names = target.split(",") if isinstance(target, str) else list(target)
    return [str(t).strip() for t in names if str(t).strip()] or None


def load_data(exp, say: Callable[..., None]) -> ExperimentData:
    """Select the data of the experiment's route; labels or regression targets; speakers."""
    from featcache import FeatureSet

    from .crosscorpus import cross_corpus_sets, parse_cross_corpus, resolve_caches
    from .protocols import corpus_protocol

    cv, label_map, given = exp.cv, exp.label_map, exp.cache if isinstance(exp.cache, FeatureSet) else None
    spec = exp.features or ("+".join(s.name for s in given.streams) if given is not None else "all_layers")
    cross = parse_cross_corpus(cv)
    cross_data = fc_test = None
    if cross is not None:
        if exp.target or label_map or exp.grid:
            raise ParameterError("--cv " + cv, "used without --target, --label-map and --grid (labels are harmonised and shared labels kept)",
                                 ", ".join(o for o, v in (("--target", exp.target), ("--label-map", label_map), ("--grid", exp.grid)) if v))
        if given is not None:
            raise ParameterError("cache with --cv " + cv, "a cache root holding both corpus caches (not a FeatureSet)", repr(given))
        trains, fc_test = resolve_caches(getattr(exp.cache, "path", exp.cache), cross)
        cross_data = cross_corpus_sets(trains, fc_test, spec)
        fc = trains[0] if isinstance(trains, tuple) else trains  # cross-corpus:A+B->T: A's cache stands for the training side
    else:
        fc = given.cache if given is not None else find_cache(exp.cache)
    protocol = corpus_protocol(cv)  # split protocols (aliases, callables) go through make_cv
    if given is not None:
        if label_map is not None and label_map != given.label_map:
            raise ParameterError("label_map with a FeatureSet", f"None or the set's own ({given.label_map!r})", label_map)
        label_map = given.label_map
    if protocol is not None:
        if protocol.corpus and protocol.corpus != fc.corpus:
            raise ParameterError("--cv", f"a protocol for this cache's corpus ({fc.corpus})", f"{cv} (defined for {protocol.corpus})")
        if given is not None and protocol.label_map and label_map is None:
            raise ParameterError(f"a FeatureSet for --cv {cv}", f"selected with label_map={protocol.label_map!r} (the protocol's labels)", "no label map")
        label_map = label_map or protocol.label_map
    X = cross_data.X_train if cross_data is not None else given if given is not None else fc.select(spec, label_map=label_map)
    if protocol is not None:
        X = X[np.flatnonzero(protocol.keep(X.table))]
    targets = _targets(exp.target)
    if targets:
        shown = exp.target if isinstance(exp.target, str) else ",".join(targets)
        try:
            Y = X.targets(targets)
        except ValueError as e:
            raise ParameterError("--target", "numeric columns of the utterance table", f"{shown} ({e})") from e
        keep = np.isfinite(Y).all(axis=1)
        if not keep.all():
            say(f"{int((~keep).sum())} utterance(s) without {shown} values left out", always=True)
            X, Y = X[np.flatnonzero(keep)], Y[keep]
        y = Y[:, 0] if len(targets) == 1 else Y
    else:
        y = np.asarray(X.labels).astype(str)
    if len(X) == 0:
        raise EstimatorsError(f"no utterance has every stream of --features {spec}")
    groups = np.asarray(X.speakers).astype(str)
    return ExperimentData(fc, spec, X, y, groups, "regression" if targets else "classification", targets, label_map, protocol, cross_data, fc_test)


def make_splits(exp, data: ExperimentData, say: Callable[..., None]) -> list:
    from .cv import make_cv

    X = data.X
    if data.cross is not None:
        c, fct = data.cross, data.fc_test
        train = "+".join(c.train_corpora) or data.fc.corpus
        counts = lambda d: ", ".join(f"{k} {v}" for k, v in d.items()) or "none"  # noqa: E731
        say(
            f"{exp.cv}: train {train} ({len(X)} utterances), test {fct.corpus} ({len(c.X_test)} utterances) "
            f"on the shared labels {', '.join(c.labels)}; left out: "
            f"{train} {counts(c.dropped_train)}, {fct.corpus} {counts(c.dropped_test)}; "
            f"validation: the estimator's speaker-disjoint split of {train}",
            always=True,
        )
        return [(np.arange(len(X)), np.arange(0))]
    if data.protocol is not None:
        p = data.protocol
        splits = [(f.train, f.test, f.valid) for f in p.folds(X.table)]
        say(f"protocol {p.name}: {p.description}; validation: {p.validation}")
        return splits
    return make_cv(exp.cv, data.groups, data.y)


