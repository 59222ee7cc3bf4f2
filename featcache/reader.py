"""Reading API: :func:`open` a corpus cache, :meth:`FeatureCache.select` a FeatureSet
(:class:`FeatureCache`, :func:`open_cache` and :func:`find_caches` live in
:mod:`featcache.cache` and are re-exported here).

A :class:`FeatureSet` is a lazy, sklearn-indexable view of some utterances' features
(one or more aligned streams). Frames are never loaded whole: :meth:`FeatureSet.to_packed`
gives streams that read the memory-mapped shards in place, batch by batch
(:mod:`featcache.frames`), so processes share the operating system's page cache instead of
each holding a copy of the store.
"""

from __future__ import annotations

import numbers
import threading
from pathlib import Path
from typing import Any

import numpy as np

from featcache.cache import FeatureCache, find_caches, open_cache
from featcache.errors import SpecError
from featcache.frames import ShardFrames
from featcache.packed import Packed, Stream, apply_normalization, normalization_terms
from featcache.rows import UtteranceRows
from featcache.spec import StreamSpec, parse_spec
from featcache.stats import SpeakerStats, read_speaker_stats
from featcache.store import StoreReader

__all__ = ["open_cache", "find_caches", "FeatureCache", "FeatureSet", "StreamSpec", "parse_spec"]


class FeatureSet(UtteranceRows):
    """A lazy view of the features of some utterances; sklearn can index it.

    ``len(X)``, ``X.shape[0]``, ``X[int]`` (the frames of one utterance: ndarray of shape
    (n_frames, n_layers, dim), or a tuple of those with several streams),
    ``X[slice]``, ``X[int array]``, ``X[bool mask]`` and ``X[key, ...]`` (a smaller FeatureSet).

    Attributes
    ----------
    ids, speakers, labels : ndarray of shape (n_utterances,)
    streams : list of StreamSpec
    max_frames : int or None
    """

    def __init__(self, cache, streams, rows, max_frames=None, label_map=None, label_column="label", norm=None):
        self._cache = cache
        self.streams = list(streams)
        self._rows = np.asarray(rows, dtype=np.int64)
        self.max_frames = max_frames
        self.label_map = label_map
        self.label_column = label_column
        self._norm = norm  # per stream: None or (shift (G,L,D), scale (G,L,D), group (n,))
        if max_frames is not None and (not isinstance(max_frames, numbers.Integral) or max_frames < 1):
            raise SpecError(f"max_frames must be a positive integer or None; got {max_frames!r}")

    # -- metadata
    @property
    def cache(self) -> FeatureCache:
        return self._cache

    @property
    def shape(self) -> tuple:
        """``(n_utterances, None, n_layers, dim)`` for one stream (frames vary), else ``(n,)``."""
        if len(self.streams) == 1:
            r = self._cache.stores[self.streams[0].store]
            return (len(self._rows), None, len(self.streams[0].layers), r.dim)
        return (len(self._rows),)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        spec = "+".join(s.name for s in self.streams)
        return f"FeatureSet({spec!r}, n_utterances={len(self)}, max_frames={self.max_frames})"

    def describe(self) -> dict[str, Any]:
        """What the features are (stores, extractor parameters, layers, dims): estimators
        record it at fit and refuse to predict on features that differ."""
        out = []
        for s in self.streams:
            r = self._cache.stores[s.store]
            ext = r.info["extractor"]
            out.append(
                {
                    "name": s.name,
                    "store": s.store,
                    "layers": list(s.layers),
                    "n_layers": len(s.layers),
                    "dim": r.dim,
                    "frame_rate": r.frame_rate,
                    "extractor": ext.get("name"),
                    "params": ext.get("params"),
                    "pipeline": r.info.get("pipeline"),
                }
            )
        return {"corpus": self._cache.corpus, "streams": out, "max_frames": self.max_frames}

    # -- indexing
    def __getitem__(self, key):
        idx = self._index(key)
        if isinstance(idx, int):
            arrays = [self._frames(s, self._rows[idx], si, idx) for si, s in enumerate(self.streams)]
            return arrays[0] if len(arrays) == 1 else tuple(arrays)
        return self._subset(idx)

    def _subset(self, idx: np.ndarray) -> "FeatureSet":
        norm = None
        if self._norm is not None:
            norm = [None if n is None else (n[0], n[1], n[2][idx]) for n in self._norm]
        return FeatureSet(self._cache, self.streams, self._rows[idx], self.max_frames, self.label_map, self.label_column, norm)

    def with_normalization(self, norm: list) -> "FeatureSet":
        """A copy whose frames are normalised lazily: per stream ``None`` or
        ``(shift (G, L, D), scale (G, L, D), group (n_utterances,))``."""
        if len(norm) != len(self.streams):
            raise SpecError("one normalisation entry per stream is needed")
        return FeatureSet(self._cache, self.streams, self._rows, self.max_frames, self.label_map, self.label_column, list(norm))

    def _frames(self, s: StreamSpec, row: int, si: int, i: int) -> np.ndarray:
        uid = self._cache.utterances["id"].iat[int(row)]
        x = self._cache.stores[s.store].frames(uid, list(s.layers))
        if self.max_frames is not None:
            x = x[: self.max_frames]
        x = x.astype(np.float32)  # a copy: the stored frames are never written
        if self._norm is not None and self._norm[si] is not None:
            shift, scale, group = self._norm[si]
            g = int(group[i])
            apply_normalization(x, *normalization_terms(shift[g : g + 1], scale[g : g + 1]))
        return x

    # -- bulk access
    def to_packed(self) -> Packed:
        """This set as a :class:`~featcache.packed.Packed` whose streams read the shards in
        place (:class:`~featcache.frames.ShardFrames`): nothing is loaded here, and batches
        later copy only their own utterances' rows."""
        streams = []
        for si, s in enumerate(self.streams):
            r = self._cache.stores[s.store]
            data = _frame_source(r, s.layers)
            starts, lengths = data.rows_of([r.locate(u) for u in self.ids])
            if self.max_frames is not None:
                lengths = np.minimum(lengths, self.max_frames)
            st = Stream(data, starts, lengths, s.name, r.frame_rate)
            if self._norm is not None and self._norm[si] is not None:
                st = st.with_normalization(*self._norm[si])
            streams.append(st)
        return Packed(streams, ids=self.ids, speakers=self.speakers, meta={"describe": self.describe()})

    def utterance_stats(self, stream: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored per-utterance ``(n_frames (n,), sum (n, L, D), sumsq (n, L, D))`` in float64,
        over whole utterances (``max_frames`` is not applied)."""
        s = self.streams[stream]
        ids, n, sm, sq = _store_stats(self._cache.stores[s.store])
        pos = {u: i for i, u in enumerate(ids)}
        idx = np.array([pos[u] for u in self.ids], dtype=np.int64)
        layers = list(s.layers)
        return n[idx], sm[idx][:, layers], sq[idx][:, layers]

    def speaker_stats(self, stream: int = 0) -> SpeakerStats:
        """Per-speaker statistics of a stream's layers over *all* the cache's utterances of
        each speaker (not only this set's), from ``speakers.h5`` (recomputed when stale).

        Returns
        -------
        SpeakerStats
            ``mean``/``std`` of shape (n_speakers, n_layers of the stream, dim).
        """
        s = self.streams[stream]
        table = self._cache.utterances
        st = read_speaker_stats(self._cache.stores[s.store], dict(zip(table["id"], table["speaker"].astype(str))))
        return st.select_layers(s.layers)

    def pooled_mean(self) -> np.ndarray:
        """Mean over frames per utterance, shape (n_utterances, total layers * dim), float64.

        Without ``max_frames`` it comes from the stored per-utterance sums (no frame is
        read), normalised when the set is: the mean of ``(x - shift) / scale`` is
        ``(mean - shift) / scale``. With ``max_frames`` the kept frames are read.
        """
        parts = []
        for si in range(len(self.streams)):
            if self.max_frames is None:
                n, sm, _ = self.utterance_stats(si)
                mean = sm / n[:, None, None]
                if self._norm is not None and self._norm[si] is not None:
                    shift, scale, group = self._norm[si]
                    g = np.asarray(group, dtype=np.int64)
                    mean = (mean - np.asarray(shift, np.float64)[g]) / np.asarray(scale, np.float64)[g]
                parts.append(mean.reshape(len(self), -1))
            else:
                s, rows = self.streams[si], self._rows
                parts.append(
                    np.stack([self._frames(s, rows[i], si, i).astype(np.float64).mean(0).ravel() for i in range(len(self))])
                )
        return np.concatenate(parts, axis=1)

    # -- pickling: only the description travels; data is reloaded (memory-mapped) lazily
    def __getstate__(self) -> dict:
        return {
            "path": str(self._cache.path),
            "streams": self.streams,
            "rows": self._rows,
            "max_frames": self.max_frames,
            "label_map": self.label_map,
            "label_column": self.label_column,
            "norm": self._norm,
        }

    def __setstate__(self, state: dict) -> None:
        self._cache = _cached_open(state["path"])
        self.streams = state["streams"]
        self._rows = state["rows"]
        self.max_frames = state["max_frames"]
        self.label_map = state["label_map"]
        self.label_column = state["label_column"]
        self._norm = state["norm"]


# --------------------------------------------------------------------------- process-wide caches

_LOCK = threading.Lock()
_OPEN: dict[str, FeatureCache] = {}
_SOURCES: dict[tuple, ShardFrames] = {}
_STATS: dict[tuple, tuple] = {}


def _cached_open(path: str) -> FeatureCache:
    with _LOCK:
        if path not in _OPEN:
            _OPEN[path] = FeatureCache(Path(path))
        return _OPEN[path]


def _frame_source(r: StoreReader, layers: tuple[int, ...]) -> ShardFrames:
    """The in-place frame source of a store's layers, one per process (keyed by store,
    manifest token and layers): it holds only shard handles and memory maps."""
    key = (str(r.path.resolve()), r.token, tuple(layers))
    with _LOCK:
        if key not in _SOURCES:
            if len(_SOURCES) > 16:
                _SOURCES.clear()
            _SOURCES[key] = ShardFrames.of_store(r, layers)
        return _SOURCES[key]


def _store_stats(r: StoreReader) -> tuple:
    key = (str(r.path.resolve()), r.token)
    with _LOCK:
        if key not in _STATS:
            _STATS[key] = r.utterance_stats()
        return _STATS[key]


def clear_memory() -> None:
    """Forget every opened store, frame source and statistics table."""
    with _LOCK:
        _SOURCES.clear()
        _STATS.clear()
        _OPEN.clear()
