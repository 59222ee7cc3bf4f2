"""Reading API: :func:`open` a corpus cache, :meth:`FeatureCache.select` a FeatureSet.

A :class:`FeatureSet` is a lazy, sklearn-indexable view of some utterances' features
(one or more aligned streams). Frames are memory-mapped from the shards and only
gathered into memory by :meth:`FeatureSet.to_packed` — once per store and process: every
subset (cross-validation fold, grid point) shares that one copy.
"""

from __future__ import annotations

import numbers
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featcache.errors import IncompleteStoreWarning, SpecError, StoreError
from featcache.fileio import read_json
from featcache.packed import Packed, Stream
from featcache.spec import StreamSpec, parse_spec
from featcache.store import StoreReader, check_version

__all__ = ["open_cache", "find_caches", "FeatureCache", "FeatureSet", "StreamSpec", "parse_spec"]


def find_caches(root: Path) -> list[Path]:
    """Corpus caches (folders holding ``corpus.json``) at or directly below ``root``."""
    root = Path(root)
    if (root / "corpus.json").exists():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "corpus.json").exists())


def open_cache(path: str | Path) -> "FeatureCache":
    """Open a corpus cache (``<cache-dir>/<corpus>``, or a cache root holding exactly one).

    Raises
    ------
    StoreError
        When ``path`` holds no corpus cache, or several (the message lists them).
    """
    found = find_caches(Path(path))
    if not found:
        raise StoreError(f"{path} holds no featcache corpus cache (no corpus.json); run featcache extract first")
    if len(found) > 1:
        raise StoreError(
            f"{path} holds several corpus caches; name one: " + ", ".join(str(p) for p in found)
        )
    return FeatureCache(found[0])


class FeatureCache:
    """A corpus cache: its utterance table and feature stores.

    Attributes
    ----------
    path : Path
    corpus : str
    utterances : pandas.DataFrame
        The utterance table (id, path, speaker, label, corpus fields, duration).
    stores : dict of str to StoreReader
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.info = read_json(self.path / "corpus.json", StoreError)
        check_version(
            "corpus cache", self.path / "corpus.json", self.info.get("format"), self.info.get("format_version"), "featcache.corpus"
        )
        self.corpus = self.info.get("corpus", self.path.name)
        self.utterances = pd.read_csv(
            self.path / "utterances.csv", dtype={"id": str, "speaker": str, "label": str}, keep_default_na=False
        )
        self.stores = {
            p.name: StoreReader(p) for p in sorted(self.path.iterdir()) if (p / "store.json").exists()
        }
        self._row = {uid: i for i, uid in enumerate(self.utterances["id"])}

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r}, corpus={self.corpus!r}, stores={list(self.stores)})"

    @property
    def features(self) -> pd.DataFrame:
        """One row per store: name, kind, layers, dim, frame rate, utterances, failed."""
        rows = []
        for name, r in self.stores.items():
            ext = r.info["extractor"]
            rows.append(
                {
                    "name": name,
                    "extractor": ext.get("name"),
                    "n_layers": r.n_layers,
                    "dim": r.dim,
                    "frame_rate": r.frame_rate,
                    "dtype": r.dtype.name,
                    "n_utterances": len(r.ids),
                    "n_failed": len(r.failed),
                }
            )
        return pd.DataFrame(rows)

    def select(
        self,
        spec: str,
        *,
        max_frames: int | None = None,
        pooled: str | None = None,
        label_map: str | dict | None = None,
        label_column: str = "label",
    ) -> "FeatureSet | np.ndarray":
        """Features of every utterance present in all the spec's stores.

        Parameters
        ----------
        spec : str
            Feature spec, see :func:`parse_spec`.
        max_frames : int, optional
            Keep the first ``max_frames`` frames of each utterance.
        pooled : {"mean"}, optional
            Return a plain ndarray of shape (n_utterances, n_layers * dim) (streams
            concatenated) instead of a FeatureSet; computed from the stored per-utterance
            sums when ``max_frames`` is None (no frame is read).
        label_map : str or dict, optional
            A name from :data:`featcache.corpora.LABEL_MAPS` (e.g. ``"ravdess7"``) or a mapping.
        """
        streams = parse_spec(spec, self.stores)
        for name in dict.fromkeys(s.store for s in streams):
            self._warn_incomplete(name)
        ids = [uid for uid in self.utterances["id"] if all(uid in self.stores[s.store] for s in streams)]
        fs = FeatureSet(self, streams, np.array([self._row[u] for u in ids], dtype=np.int64), max_frames, label_map, label_column)
        if pooled is None:
            return fs
        if pooled != "mean":
            raise SpecError(f"pooled must be None or 'mean'; got {pooled!r}")
        return fs.pooled_mean()


    def _warn_incomplete(self, name: str) -> None:
        """Warn when a store lacks utterances of the table that it does not list as failed."""
        r = self.stores[name]
        have = set(r.ids) | set(r.failed)
        missing = [u for u in self.utterances["id"] if u not in have]
        if missing:
            warnings.warn(
                f"store {name!r} of {self.path} holds {len(r.ids)} of the {len(self.utterances)} utterances"
                f" of the corpus table; {len(missing)} are neither committed nor recorded as failed"
                f" (first: {missing[0]}). Only the utterances present are selected. An interrupted run:"
                " re-run the same extract command; `featcache verify` tells whether shards are damaged.",
                IncompleteStoreWarning,
                stacklevel=3,
            )


class FeatureSet:
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
    def table(self) -> pd.DataFrame:
        """The utterance table rows of this set."""
        return self._cache.utterances.iloc[self._rows].reset_index(drop=True)

    @property
    def ids(self) -> np.ndarray:
        return self._cache.utterances["id"].to_numpy(dtype=object)[self._rows]

    @property
    def speakers(self) -> np.ndarray:
        return self._cache.utterances["speaker"].astype(str).to_numpy(dtype=object)[self._rows]

    @property
    def labels(self) -> np.ndarray:
        lab = self._cache.utterances[self.label_column].astype(str).to_numpy(dtype=object)[self._rows]
        if self.label_map is None:
            return lab
        from featcache.corpora import apply_label_map

        return np.asarray(apply_label_map(lab, self.label_map), dtype=object)

    def targets(self, columns: list[str]) -> np.ndarray:
        """Numeric target columns (e.g. ``["valence", "arousal"]``), shape (n, len(columns))."""
        missing = [c for c in columns if c not in self._cache.utterances.columns]
        if missing:
            raise SpecError(f"target columns {missing} are not in the utterance table")
        return self._cache.utterances[columns].to_numpy(dtype=np.float64)[self._rows]

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
        if isinstance(key, tuple):
            if len(key) == 2 and key[1] is Ellipsis:
                key = key[0]
            else:
                raise IndexError(f"FeatureSet supports X[key] and X[key, ...]; got {key!r}")
        if isinstance(key, numbers.Integral):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} utterances")
            arrays = [self._frames(s, self._rows[i], si, i) for si, s in enumerate(self.streams)]
            return arrays[0] if len(arrays) == 1 else tuple(arrays)
        if isinstance(key, slice):
            idx = np.arange(len(self))[key]
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise IndexError(f"boolean mask of shape {idx.shape} for {len(self)} utterances")
                idx = np.flatnonzero(idx)
            elif idx.size == 0:
                idx = idx.astype(np.int64)
            elif not np.issubdtype(idx.dtype, np.integer):
                raise IndexError(f"FeatureSet indices must be integers or a boolean mask; got {idx.dtype}")
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
        x = x.astype(np.float32)
        if self._norm is not None and self._norm[si] is not None:
            shift, scale, group = self._norm[si]
            x = (x - shift[group[i]]) / scale[group[i]]
        return x.astype(np.float32)

    # -- bulk access
    def to_packed(self) -> Packed:
        """All frames of this set as a :class:`~featcache.packed.Packed` (shared, not copied)."""
        streams = []
        ids = self.ids
        for si, s in enumerate(self.streams):
            r = self._cache.stores[s.store]
            data, where = _load_store(r, s.layers)
            pos = np.array([where[u] for u in ids], dtype=np.int64).reshape(-1, 2)
            starts, lengths = pos[:, 0].copy(), pos[:, 1].copy()
            if self.max_frames is not None:
                lengths = np.minimum(lengths, self.max_frames)
            st = Stream(data, starts, lengths, s.name, r.frame_rate)
            if self._norm is not None and self._norm[si] is not None:
                st.norm_shift, st.norm_scale, st.norm_group = self._norm[si]
            streams.append(st)
        return Packed(streams, ids=ids, speakers=self.speakers, meta={"describe": self.describe()})

    def utterance_stats(self, stream: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored per-utterance ``(n_frames (n,), sum (n, L, D), sumsq (n, L, D))`` in float64,
        over whole utterances (``max_frames`` is not applied)."""
        s = self.streams[stream]
        ids, n, sm, sq = _store_stats(self._cache.stores[s.store])
        pos = {u: i for i, u in enumerate(ids)}
        idx = np.array([pos[u] for u in self.ids], dtype=np.int64)
        layers = list(s.layers)
        return n[idx], sm[idx][:, layers], sq[idx][:, layers]

    def pooled_mean(self) -> np.ndarray:
        """Mean over frames per utterance, shape (n_utterances, total layers * dim), float64."""
        parts = []
        for si in range(len(self.streams)):
            if self.max_frames is None and (self._norm is None or self._norm[si] is None):
                n, sm, _ = self.utterance_stats(si)
                parts.append((sm / n[:, None, None]).reshape(len(self), -1))
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
_DATA: dict[tuple, tuple[np.ndarray, dict]] = {}
_STATS: dict[tuple, tuple] = {}


def _cached_open(path: str) -> FeatureCache:
    with _LOCK:
        if path not in _OPEN:
            _OPEN[path] = FeatureCache(Path(path))
        return _OPEN[path]


def _load_store(r: StoreReader, layers: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """Frames of every committed utterance of a store, (total_frames, len(layers), dim),
    loaded once per process (keyed by store, manifest token and layers)."""
    key = (str(r.path.resolve()), r.token, tuple(layers))
    with _LOCK:
        if key in _DATA:
            return _DATA[key]
        shards = [r.shard(si) for si in range(len(r.manifest["shards"]))]
        total = sum(sh.n_frames for sh in shards)
        data = np.empty((total, len(layers), r.dim), dtype=r.dtype)
        where: dict[str, tuple[int, int]] = {}
        a = 0
        for sh in shards:
            for li, k in enumerate(layers):
                data[a : a + sh.n_frames, li, :] = sh.layer(k)
            for uid, o, n in zip(sh.ids, sh.offsets[:-1], np.diff(sh.offsets)):
                where[uid] = (a + int(o), int(n))
            a += sh.n_frames
        _DATA.clear() if len(_DATA) > 8 else None
        _DATA[key] = (data, where)
        return _DATA[key]


def _store_stats(r: StoreReader) -> tuple:
    key = (str(r.path.resolve()), r.token)
    with _LOCK:
        if key not in _STATS:
            _STATS[key] = r.utterance_stats()
        return _STATS[key]


def clear_memory() -> None:
    """Forget every loaded store (frees memory)."""
    with _LOCK:
        _DATA.clear()
        _STATS.clear()
        _OPEN.clear()
