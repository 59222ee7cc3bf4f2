"""Cross-corpus evaluation: train on one cached corpus, test on another, on the labels they share.

``estimators fit --cache cache --cv cross-corpus:ravdess->emodb`` (``cache`` holds both
corpus caches) or from Python::

    spec = parse_cross_corpus("cross-corpus:ravdess->emodb")
    train_cache, test_cache = resolve_caches(Path("cache"), spec)
    data = cross_corpus_sets(train_cache, test_cache, "egemaps")
    results = run_cross_corpus(make_pipeline, data, seeds=[0, 1, 2])

Labels are harmonised first (IEMOCAP's ``neu/hap/ang/sad`` become ``neutral/happy/angry/sad``,
the names every other loader uses: :data:`featcache.corpora.HARMONISE`, re-exported here);
utterances whose label the other corpus lacks are left out and counted (``RAVDESS -> EmoDB``:
calm and surprised are dropped on the training side, bored on the test side). Early stopping uses the estimator's own speaker-disjoint validation
split of the *training* corpus; the test corpus is never seen before testing. Normalisers are
fitted on the training corpus (speaker normalisation uses each corpus's own per-speaker
statistics, as within a corpus).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featcache.corpora import HARMONISE, harmonise_labels

from .errors import ParameterError

__all__ = ["CrossCorpusSpec", "CrossCorpusData", "HARMONISE", "parse_cross_corpus", "resolve_caches", "cross_corpus_sets", "run_cross_corpus"]

_SPEC = re.compile(r"cross-corpus:([A-Za-z0-9_.-]+?)->([A-Za-z0-9_.-]+)")


@dataclass(frozen=True)
class CrossCorpusSpec:
    train: str
    test: str

    def __str__(self) -> str:
        return f"cross-corpus:{self.train}->{self.test}"


@dataclass
class CrossCorpusData:
    """The training and test utterances of a cross-corpus run (FeatureSets with labels)."""

    X_train: Any
    y_train: np.ndarray
    groups_train: np.ndarray
    X_test: Any
    y_test: np.ndarray
    groups_test: np.ndarray
    labels: list[str]
    dropped_train: dict[str, int] = field(default_factory=dict)
    dropped_test: dict[str, int] = field(default_factory=dict)


def parse_cross_corpus(spec: str) -> CrossCorpusSpec | None:
    """``cross-corpus:TRAIN->TEST`` -> spec; None for other cv strings.

    Raises
    ------
    ParameterError
        A string starting with ``cross-corpus`` that is not of that form, or TRAIN == TEST.
    """
    text = str(spec).strip()
    if not text.lower().startswith("cross-corpus"):
        return None
    m = _SPEC.fullmatch(text)
    if m is None:
        raise ParameterError("cv", "cross-corpus:TRAIN->TEST with two corpus names, e.g. cross-corpus:ravdess->emodb", spec)
    if m.group(1) == m.group(2):
        raise ParameterError("cv", "two different corpora in cross-corpus:TRAIN->TEST", spec)
    return CrossCorpusSpec(m.group(1), m.group(2))


def resolve_caches(root: Path | str | None, spec: CrossCorpusSpec):
    """The two corpus caches named by ``spec`` under a cache root.

    Parameters
    ----------
    root : path or None
        A cache root holding both corpus caches (default ``./cache``), or one corpus cache:
        the other is then looked for beside it.

    Returns
    -------
    (FeatureCache, FeatureCache)
        Training and test caches.
    """
    from featcache.reader import FeatureCache, find_caches

    root = Path("cache") if root is None else Path(root)
    if (root / "corpus.json").exists():
        root = root.parent
    found = {}
    for p in find_caches(root):
        c = FeatureCache(p)
        found.setdefault(c.corpus, c)
    missing = [n for n in (spec.train, spec.test) if n not in found]
    if missing:
        have = ", ".join(sorted(found)) or "none"
        raise ParameterError(
            "--cache for --cv " + str(spec),
            f"a cache root holding the caches of both corpora (it holds: {have})",
            f"{root} (missing {', '.join(missing)})",
        )
    return found[spec.train], found[spec.test]


def _harmonised_set(cache, features: str):
    labels = sorted({str(v) for v in cache.utterances["label"].dropna()})
    return cache.select(features, label_map=harmonise_labels(labels))


def _keep(X, shared: set[str]):
    lab = np.asarray(X.labels).astype(str)
    keep = np.isin(lab, sorted(shared))
    dropped: dict[str, int] = {}
    for v in lab[~keep]:
        dropped[str(v)] = dropped.get(str(v), 0) + 1
    return X[np.flatnonzero(keep)], dict(sorted(dropped.items()))


def cross_corpus_sets(train_cache, test_cache, features: str) -> CrossCorpusData:
    """Select ``features`` from both caches, harmonise labels, keep the shared ones.

    Raises
    ------
    ParameterError
        When the corpora share fewer than two labels.
    """
    X_tr = _harmonised_set(train_cache, features)
    X_te = _harmonised_set(test_cache, features)
    lab_tr = set(np.asarray(X_tr.labels).astype(str))
    lab_te = set(np.asarray(X_te.labels).astype(str))
    shared = lab_tr & lab_te
    if len(shared) < 2:
        raise ParameterError(
            "--cv cross-corpus",
            "two corpora sharing at least two labels",
            f"{train_cache.corpus}: {', '.join(sorted(lab_tr))}; {test_cache.corpus}: {', '.join(sorted(lab_te))}",
        )
    X_tr, d_tr = _keep(X_tr, shared)
    X_te, d_te = _keep(X_te, shared)
    return CrossCorpusData(
        X_tr, np.asarray(X_tr.labels).astype(str), np.asarray(X_tr.speakers).astype(str),
        X_te, np.asarray(X_te.labels).astype(str), np.asarray(X_te.speakers).astype(str),
        [str(v) for v in sorted(shared)], d_tr, d_te,
    )


def run_cross_corpus(make_pipeline: Callable[[int], Any], data: CrossCorpusData, seeds: list[int], *, progress: bool = True) -> list:
    """Fit ``make_pipeline(seed)`` on the training corpus and predict the test corpus, per seed.

    Returns
    -------
    list of :class:`estimators.cv.FoldResult`
        One per seed (fold 0); ``test_index`` are positions in ``data.X_test``.
    """
    from tqdm.auto import tqdm

    from .cv import FoldResult

    results = []
    for seed in tqdm(seeds, desc="seeds", unit="fit", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        pipe = make_pipeline(seed)
        pipe.fit(data.X_train, data.y_train)
        est = pipe.named_steps["est"] if hasattr(pipe, "named_steps") else pipe
        lw = getattr(est, "layer_weights_", None)
        results.append(FoldResult(
            seed, 0, np.arange(len(data.X_test)), np.asarray(pipe.predict(data.X_test)), None,
            None if lw is None else [float(v) for v in np.ravel(lw)],
            getattr(est, "best_epoch_", None), getattr(est, "n_epochs_", None), len(data.X_train),
        ))
    return results
