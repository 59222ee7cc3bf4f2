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

TRAIN may name several corpora, ``cross-corpus:ravdess+emovo->urdu``: the labels kept are
those every corpus (each training one and the test one) has, and the training utterances of
all of them form one :class:`CorpusUnion` (their frames copied into memory; speakers named
``corpus:speaker`` so that two corpora's ``01`` stay apart; per-speaker statistics then come
from each speaker's kept utterances).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from featcache.corpora import HARMONISE, harmonise_labels
from featcache.frames import ShardFrames
from featcache.packed import Packed, Stream

from .errors import ParameterError

__all__ = ["CorpusUnion", "CrossCorpusSpec", "CrossCorpusData", "HARMONISE", "parse_cross_corpus", "resolve_caches", "cross_corpus_sets", "run_cross_corpus"]

_SPEC = re.compile(r"cross-corpus:([A-Za-z0-9_.+-]+?)->([A-Za-z0-9_.-]+)")


@dataclass(frozen=True)
class CrossCorpusSpec:
    """``train`` is one corpus name or several joined by ``+`` (:attr:`train_corpora`)."""

    train: str
    test: str

    @property
    def train_corpora(self) -> tuple[str, ...]:
        return tuple(self.train.split("+"))

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
    train_corpora: list[str] = field(default_factory=list)


def parse_cross_corpus(spec: str) -> CrossCorpusSpec | None:
    """``cross-corpus:TRAIN->TEST`` -> spec; None for other cv strings.

    Raises
    ------
    ParameterError
        A string starting with ``cross-corpus`` that is not of that form, TRAIN == TEST, the
        test corpus among the training ones or a training corpus named twice.
    """
    text = str(spec).strip()
    if not text.lower().startswith("cross-corpus"):
        return None
    m = _SPEC.fullmatch(text)
    trains = m.group(1).split("+") if m is not None else []
    if m is None or not all(trains):
        raise ParameterError("cv", "cross-corpus:TRAIN->TEST with corpus names (TRAIN: one, or several joined by +), "
                             "e.g. cross-corpus:ravdess->emodb or cross-corpus:ravdess+emovo->urdu", spec)
    if m.group(2) in trains:
        raise ParameterError("cv", "two different corpora in cross-corpus:TRAIN->TEST", spec)
    if len(set(trains)) != len(trains):
        raise ParameterError("cv", "each training corpus named once in cross-corpus:A+B->TEST", spec)
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
    (FeatureCache or tuple of FeatureCache, FeatureCache)
        Training cache (a tuple of them when TRAIN names several corpora) and test cache.
    """
    from featcache.reader import FeatureCache, find_caches

    root = Path("cache") if root is None else Path(root)
    if (root / "corpus.json").exists():
        root = root.parent
    found = {}
    for p in find_caches(root):
        c = FeatureCache(p)
        found.setdefault(c.corpus, c)
    missing = [n for n in (*spec.train_corpora, spec.test) if n not in found]
    if missing:
        have = ", ".join(sorted(found)) or "none"
        raise ParameterError(
            "--cache for --cv " + str(spec),
            f"a cache root holding the caches of both corpora (it holds: {have})",
            f"{root} (missing {', '.join(missing)})",
        )
    trains = tuple(found[n] for n in spec.train_corpora)
    return (trains[0] if len(trains) == 1 else trains), found[spec.test]


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
    """Select ``features`` from the caches, harmonise labels, keep the shared ones.

    Parameters
    ----------
    train_cache : FeatureCache or sequence of FeatureCache
        One training corpus, or several (their kept utterances form a :class:`CorpusUnion`).
    test_cache : FeatureCache
    features : str
        Feature spec, the same for every cache.

    Raises
    ------
    ParameterError
        When the corpora share fewer than two labels, or the caches' features differ.
    """
    trains = list(train_cache) if isinstance(train_cache, (list, tuple)) else [train_cache]
    sets = [_harmonised_set(c, features) for c in trains]
    X_te = _harmonised_set(test_cache, features)
    labs = [set(np.asarray(X.labels).astype(str)) for X in sets]
    lab_te = set(np.asarray(X_te.labels).astype(str))
    shared = lab_te.intersection(*labs)
    if len(shared) < 2:
        have = "; ".join(f"{c.corpus}: {', '.join(sorted(lab))}" for c, lab in zip([*trains, test_cache], [*labs, lab_te]))
        raise ParameterError("--cv cross-corpus", "corpora sharing at least two labels", have)
    kept = [_keep(X, shared) for X in sets]
    X_te, d_te = _keep(X_te, shared)
    if len(trains) == 1:
        X_tr, d_tr = kept[0]
    else:
        X_tr = CorpusUnion.of([x for x, _ in kept], [c.corpus for c in trains])
        d_tr = {f"{c.corpus}:{k}": v for c, (_, d) in zip(trains, kept) for k, v in d.items()}
    return CrossCorpusData(
        X_tr, np.asarray(X_tr.labels).astype(str), np.asarray(X_tr.speakers).astype(str),
        X_te, np.asarray(X_te.labels).astype(str), np.asarray(X_te.speakers).astype(str),
        [str(v) for v in sorted(shared)], d_tr, d_te, [c.corpus for c in trains],
    )


def _union_stream(parts: list[Stream]) -> Stream:
    """One stream over the utterances of several: shards read in place when every part
    reads its shards (FeatureSets), else the frames concatenated in their stored dtype."""
    first = parts[0]
    if all(isinstance(p.data, ShardFrames) and p.norm_group is None for p in parts):
        data = ShardFrames.concat([p.data for p in parts])
        shift = np.concatenate([[0], np.cumsum([p.data.shape[0] for p in parts])[:-1]])
        starts = np.concatenate([p.starts + o for p, o in zip(parts, shift)]).astype(np.int64)
        lengths = np.concatenate([p.lengths for p in parts]).astype(np.int64)
        return Stream(data, starts, lengths, first.name, first.frame_rate)
    gathered = [p.gather(np.arange(p.n_utterances), dtype=p.data.dtype) for p in parts]
    lengths = np.concatenate([n for _, n in gathered])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return Stream(np.concatenate([f for f, _ in gathered]), starts, lengths, first.name, first.frame_rate)


@dataclass
class CorpusUnion(Packed):
    """The utterances of several corpus caches as one training set (a :class:`Packed`).

    What the experiment needs of a FeatureSet: ``ids``, ``speakers`` (``corpus:speaker``),
    ``labels`` (harmonised), ``table`` (the corpora's rows, with a ``corpus`` column),
    ``describe()``, ``len``, indexing by positions (``X[idx]``, ``X[idx, ...]``) and what the
    normalisers read of a FeatureSet: ``utterance_stats`` (the caches' stored sums),
    ``speaker_stats`` (each speaker over all the union's utterances, so that an inner
    grid-search fold normalises its held-out speakers by their own statistics, as the test
    corpus is) and ``with_normalization``.
    """

    table: pd.DataFrame | None = None
    labels: np.ndarray | None = None
    utt_stats: list | None = field(default=None, repr=False)  # per stream (n, sum, sumsq) per utterance
    spk_stats: list | None = field(default=None, repr=False)  # per stream SpeakerStats of the whole union

    @classmethod
    def of(cls, sets: list, corpora: list[str]) -> "CorpusUnion":
        """Concatenate FeatureSets of the same features (their shards read in place, nothing copied)."""
        from featcache.params import param_differences

        first = sets[0].describe()
        keys = ("extractor", "n_layers", "dim", "frame_rate", "params")
        for X, name in zip(sets[1:], corpora[1:]):
            other = X.describe()
            diff = [d for a, b in zip(first["streams"], other["streams"]) for d in param_differences({k: a.get(k) for k in keys}, {k: b.get(k) for k in keys})]
            if diff or len(other["streams"]) != len(first["streams"]):
                raise ParameterError("training caches of cross-corpus:A+B->TEST", f"the same features in every cache ({corpora[0]}'s)",
                                     f"{name}: " + ("; ".join(map(str, diff)) or "other streams"))
        packs = [X.to_packed() for X in sets]
        streams = []
        for k, st0 in enumerate(packs[0].streams):
            streams.append(_union_stream([p.streams[k] for p in packs]))
        tables = []
        for X, name in zip(sets, corpora):
            t = X.table.copy()
            t.insert(0, "corpus", name)
            t["speaker"] = name + ":" + t["speaker"].astype(str)
            tables.append(t)
        table = pd.concat(tables, ignore_index=True)
        describe = {**first, "corpus": "+".join(corpora), "corpora": list(corpora)}
        labels = np.concatenate([np.asarray(X.labels, dtype=object) for X in sets])
        speakers = table["speaker"].to_numpy(dtype=object)
        utt = [tuple(np.concatenate(parts) for parts in zip(*(X.utterance_stats(k) for X in sets))) for k in range(len(streams))]
        return cls(streams, table["id"].to_numpy(dtype=object), speakers, {"describe": describe}, table, labels,
                   utt, [_speaker_stats(speakers, *u) for u in utt])

    def utterance_stats(self, stream: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-utterance ``(n_frames, sum (n, L, D), sumsq (n, L, D))``, float64."""
        return self.utt_stats[stream]

    def speaker_stats(self, stream: int = 0):
        """:class:`featcache.stats.SpeakerStats` of every speaker of the whole union."""
        return self.spk_stats[stream]

    def with_normalization(self, norm: list) -> "CorpusUnion":
        """A copy normalised lazily: per stream None or ``(shift, scale, group)``."""
        streams = [st if n is None else st.with_normalization(*n) for st, n in zip(self.streams, norm)]
        return CorpusUnion(streams, self.ids, self.speakers, dict(self.meta), self.table, self.labels, self.utt_stats, self.spk_stats)

    @property
    def shape(self) -> tuple:
        return (len(self),)

    def describe(self) -> dict:
        return self.meta["describe"]

    def subset(self, index) -> "CorpusUnion":
        index = np.asarray(index)
        p = Packed.subset(self, index)
        utt = [tuple(a[index] for a in u) for u in self.utt_stats]
        return CorpusUnion(p.streams, p.ids, p.speakers, p.meta, self.table.iloc[index].reset_index(drop=True), self.labels[index],
                           utt, self.spk_stats)

    def __getitem__(self, key) -> "CorpusUnion":
        if isinstance(key, tuple) and len(key) == 2 and key[1] is Ellipsis:
            key = key[0]
        idx = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"CorpusUnion indices must be a 1-D integer array, a boolean mask or a slice; got {key!r}")
        return self.subset(idx.astype(np.int64))


def _speaker_stats(speakers: np.ndarray, n: np.ndarray, s: np.ndarray, q: np.ndarray):
    """Per-speaker sums of per-utterance statistics, as a SpeakerStats."""
    from featcache.stats import SpeakerStats

    names, inv = np.unique(np.asarray(speakers).astype(str), return_inverse=True)
    sums = np.zeros((len(names), *s.shape[1:]))
    sumsq = np.zeros_like(sums)
    np.add.at(sums, inv, s)
    np.add.at(sumsq, inv, q)
    return SpeakerStats(names, np.bincount(inv, minlength=len(names)), np.bincount(inv, weights=n, minlength=len(names)), sums, sumsq)


def run_cross_corpus(make_pipeline: Callable[[int], Any], data: CrossCorpusData, seeds: list[int], *, progress: bool = True,
                     param_grid: dict | None = None) -> list:
    """Fit ``make_pipeline(seed)`` on the training corpus and predict the test corpus, per seed.

    With ``param_grid`` (Pipeline names: a model's default grid), the parameters are chosen
    by the grid search of :func:`estimators.cv.run_folds` on the training corpus alone
    (inner GroupKFold by speaker), then the best Pipeline predicts the test corpus.

    Returns
    -------
    list of :class:`estimators.cv.FoldResult`
        One per seed (fold 0); ``test_index`` are positions in ``data.X_test``.
    """
    from tqdm.auto import tqdm

    from .cv import FoldResult

    results = []
    for seed in tqdm(seeds, desc="seeds", unit="fit", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        best = None
        if param_grid:
            from .cv import run_folds

            everything = [(np.arange(len(data.X_train)), np.arange(0))]
            fit = run_folds(make_pipeline, data.X_train, data.y_train, data.groups_train, everything, [seed],
                            param_grid=param_grid, progress=False, keep_pipeline=True)[0]
            pipe, best = fit.pipeline, fit.best_params
        else:
            pipe = make_pipeline(seed)
            pipe.fit(data.X_train, data.y_train)
        est = pipe.named_steps["est"] if hasattr(pipe, "named_steps") else pipe
        lw = getattr(est, "layer_weights_", None)
        results.append(FoldResult(
            seed, 0, np.arange(len(data.X_test)), np.asarray(pipe.predict(data.X_test)), best,
            None if lw is None else [float(v) for v in np.ravel(lw)],
            getattr(est, "best_epoch_", None), getattr(est, "n_epochs_", None), len(data.X_train),
        ))
    return results
