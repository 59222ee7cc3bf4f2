"""The decoded audio of a corpus cache's utterances: :class:`AudioSet` (``cache.select("audio")``).

Fine-tuning a self-supervised model needs the waveforms, not cached features. An
:class:`AudioSet` is a lazy, sklearn-indexable view of some utterances of a cache, like a
:class:`featcache.reader.FeatureSet`: ``ids``, ``speakers``, ``labels``, ``table``,
``X[int]`` (one waveform), ``X[slice | int array | bool mask]`` (a smaller set). Files are
read exactly as extraction reads them (:func:`featcache.audio.load_audio`: mono, cropped to
the first ``max_seconds`` at the file's rate, resampled with soxr), from the corpus folder
recorded in ``corpus.json`` (``data_dir``), resolved by the corpus loader as extraction does.

The crop defaults to the ``max_seconds`` the cache's stores were extracted with (all must
agree), so a fine-tuned model sees the audio its cached features came from. Utterances
that a store records as failed (unreadable or too short) are left out.

Signals are decoded once per process and shared by every subset (cross-validation folds,
grid points): :meth:`AudioSet.signals`. Pickling keeps only the cache path, the rows and the
settings (joblib workers decode for themselves).
"""

from __future__ import annotations

import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from featcache.audio import load_audio
from featcache.errors import CorpusError, ParameterError
from featcache.rows import UtteranceRows

__all__ = ["AudioSet", "AudioStream", "select_audio", "FROM_STORES", "clear_audio_memory"]

#: ``max_seconds`` default of :func:`select_audio`: the crop the cache's stores were made with.
FROM_STORES = "stores"
_DEFAULT_MAX_SECONDS = 15.0  # featcache.pipeline.extract's default, for a cache without stores
_DECODE_THREADS = 4


class AudioStream:
    """The one "stream" of an AudioSet (code that counts or names streams sees one, ``audio``)."""

    name = "audio"
    layers = (0,)

    def __repr__(self) -> str:
        return "AudioStream('audio')"


def _store_crop(cache) -> float | None:
    crops = {(r.info.get("pipeline") or {}).get("max_seconds") for r in cache.stores.values()}
    if not crops:
        return _DEFAULT_MAX_SECONDS
    if len(crops) > 1:
        raise ParameterError(
            "max_seconds", f"given explicitly: the stores of {cache.path} were extracted with different crops",
            sorted(crops, key=lambda v: (v is None, v)),
        )
    return crops.pop()


def select_audio(
    cache,
    *,
    sampling_rate: int = 16000,
    max_seconds: float | None | str = FROM_STORES,
    data_dir: str | os.PathLike | None = None,
    label_map: str | dict | None = None,
    label_column: str = "label",
) -> "AudioSet":
    """The audio of every usable utterance of ``cache`` (what ``cache.select("audio")`` returns).

    Parameters
    ----------
    cache : FeatureCache
    sampling_rate : int
        Rate the files are resampled to (16000 for the wav2vec2 family).
    max_seconds : float, None or "stores"
        Crop every file to its first ``max_seconds`` seconds; ``"stores"``: the crop the
        cache's stores were extracted with (15 s when it has none); None: no crop.
    data_dir : path, optional
        The corpus folder, when it moved since extraction (default: ``corpus.json``'s).
    label_map, label_column
        As for :meth:`FeatureCache.select`.

    Raises
    ------
    ParameterError
        Bad ``sampling_rate`` / ``max_seconds``, or stores extracted with different crops.
    CorpusError
        The corpus folder does not exist.
    """
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, numbers.Integral) or sampling_rate < 1:
        raise ParameterError("sampling_rate", "a positive integer (Hz)", sampling_rate)
    crop = _store_crop(cache) if isinstance(max_seconds, str) and max_seconds == FROM_STORES else max_seconds
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, numbers.Real) or not np.isfinite(crop) or crop <= 0):
        raise ParameterError("max_seconds", f"a positive number of seconds, None or {FROM_STORES!r}", max_seconds)
    folder = Path(data_dir) if data_dir is not None else Path(str(cache.info.get("data_dir", "")))
    if not str(folder) or not folder.is_dir():
        raise CorpusError(
            f"the corpus folder of {cache.path} ({folder}, corpus.json data_dir) is not a folder; "
            "pass data_dir= (select('audio', data_dir=...)) if the corpus moved"
        )
    failed = set().union(*(set(r.failed) for r in cache.stores.values())) if cache.stores else set()
    rows = [i for i, uid in enumerate(cache.utterances["id"]) if uid not in failed]
    settings = {"sampling_rate": int(sampling_rate), "max_seconds": None if crop is None else float(crop), "data_dir": str(folder.resolve())}
    return AudioSet(cache, np.asarray(rows, dtype=np.int64), settings, label_map, label_column)


class AudioSet(UtteranceRows):
    """A lazy view of the decoded audio of some utterances of a cache; sklearn can index it.

    Attributes
    ----------
    ids, speakers, labels : ndarray of shape (n_utterances,)
    sampling_rate : int
    max_seconds : float or None
    streams : list of one AudioStream
    is_audio : bool
        Always True (how estimators tell audio from features).
    """

    is_audio = True

    def __init__(self, cache, rows, settings: dict, label_map=None, label_column: str = "label") -> None:
        self._cache = cache
        self._rows = np.asarray(rows, dtype=np.int64)
        self._settings = dict(settings)
        self.label_map = label_map
        self.label_column = label_column
        self.streams = [AudioStream()]

    # -- metadata
    @property
    def cache(self):
        return self._cache

    @property
    def sampling_rate(self) -> int:
        return int(self._settings["sampling_rate"])

    @property
    def max_seconds(self) -> float | None:
        return self._settings["max_seconds"]

    @property
    def shape(self) -> tuple:
        return (len(self._rows),)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"AudioSet(n_utterances={len(self)}, sampling_rate={self.sampling_rate}, max_seconds={self.max_seconds})"

    def describe(self) -> dict[str, Any]:
        """What the input is (one ``audio`` stream: rate and crop), as ``FeatureSet.describe()``."""
        params = {"sampling_rate": self.sampling_rate, "max_seconds": self.max_seconds}
        stream = {
            "name": "audio", "store": None, "layers": [0], "n_layers": 1, "dim": 1,
            "frame_rate": float(self.sampling_rate), "extractor": "audio", "params": params,
            "pipeline": {"max_seconds": self.max_seconds},
        }
        return {"corpus": self._cache.corpus, "streams": [stream], "max_frames": None, "kind": "audio"}

    # -- indexing
    def __getitem__(self, key):
        idx = self._index(key)
        if isinstance(idx, int):
            return self._subset(np.array([idx])).signals()[0]
        return self._subset(idx)

    def _subset(self, idx: np.ndarray) -> "AudioSet":
        return AudioSet(self._cache, self._rows[idx], self._settings, self.label_map, self.label_column)

    # -- audio
    def paths(self) -> list[Path]:
        """The file of every utterance, resolved as extraction resolves it."""
        from featcache.corpora import get_corpus

        folder = self._settings["data_dir"]
        try:
            corpus = get_corpus(self._cache.corpus)
        except (CorpusError, KeyError, ValueError):
            corpus = None
        rel = self._cache.utterances["path"].astype(str).to_numpy(dtype=object)[self._rows]
        if corpus is None:
            return [Path(folder) / r for r in rel]
        return [Path(corpus.resolve(folder, r)) for r in rel]

    def signals(self) -> list[np.ndarray]:
        """The waveforms (float32, shape (n_samples,)), decoded once per process.

        Raises
        ------
        AudioError
            A file cannot be read (its path and the reason are named).
        """
        key = (str(self._cache.path), self.sampling_rate, self.max_seconds, self._settings["data_dir"])
        with _LOCK:
            memo = _MEMO.setdefault(key, {})
            if len(_MEMO) > 4:
                for old in [k for k in _MEMO if k != key][: len(_MEMO) - 4]:
                    del _MEMO[old]
        ids = self.ids
        todo = [(u, p) for u, p in zip(ids, self.paths()) if u not in memo]
        if todo:
            def read(item):
                return item[0], load_audio(item[1], sampling_rate=self.sampling_rate, max_seconds=self.max_seconds).signal

            with ThreadPoolExecutor(max_workers=min(_DECODE_THREADS, len(todo))) as pool:
                for uid, sig in pool.map(read, todo):
                    memo[uid] = sig
        return [memo[u] for u in ids]

    # -- pickling: only the description travels
    def __getstate__(self) -> dict:
        return {"path": str(self._cache.path), "rows": self._rows, "settings": self._settings,
                "label_map": self.label_map, "label_column": self.label_column}

    def __setstate__(self, state: dict) -> None:
        from featcache.cache import FeatureCache

        with _LOCK:
            cache = _OPEN.get(state["path"])
            if cache is None:
                cache = _OPEN[state["path"]] = FeatureCache(Path(state["path"]))
        self._cache = cache
        self._rows = state["rows"]
        self._settings = state["settings"]
        self.label_map = state["label_map"]
        self.label_column = state["label_column"]
        self.streams = [AudioStream()]


_LOCK = threading.Lock()
_MEMO: dict[tuple, dict[str, np.ndarray]] = {}
_OPEN: dict[str, Any] = {}


def clear_audio_memory() -> None:
    """Forget every decoded signal (frees memory)."""
    with _LOCK:
        _MEMO.clear()
        _OPEN.clear()
