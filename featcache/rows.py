"""What every lazy selection of a cache's utterances shares: its rows of the utterance table.

:class:`featcache.reader.FeatureSet` (frames) and :class:`featcache.audioset.AudioSet`
(waveforms) both hold a cache and row indices into its ``utterances.csv``; the metadata a
scikit-learn user reads (ids, speakers for ``GroupKFold``, labels, regression targets) comes
from here.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from featcache.errors import SpecError

__all__ = ["UtteranceRows"]


class UtteranceRows:
    """Mixin: ``table``, ``ids``, ``speakers``, ``labels``, ``targets`` of ``self._rows``.

    The class using it sets ``_cache`` (a FeatureCache), ``_rows`` (int64 row indices),
    ``label_column`` and ``label_map``.
    """

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

    def _index(self, key) -> int | np.ndarray:
        """A position (int, checked) or the row positions of a subset, as scikit-learn indexes.

        Accepts ``X[i]``, ``X[slice]``, ``X[int array]``, ``X[bool mask]`` and ``X[key, ...]``.
        """
        what = type(self).__name__
        if isinstance(key, tuple):
            if len(key) == 2 and key[1] is Ellipsis:
                key = key[0]
            else:
                raise IndexError(f"{what} supports X[key] and X[key, ...]; got {key!r}")
        if isinstance(key, numbers.Integral):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} utterances")
            return i
        if isinstance(key, slice):
            return np.arange(len(self))[key]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {idx.shape} for {len(self)} utterances")
            return np.flatnonzero(idx)
        if idx.size == 0:
            return idx.astype(np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"{what} indices must be integers or a boolean mask; got {idx.dtype}")
        return idx
