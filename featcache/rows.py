"""What every lazy selection of a cache's utterances shares: its rows of the utterance table.

:class:`featcache.reader.FeatureSet` (frames) and :class:`featcache.audioset.AudioSet`
(waveforms) both hold a cache and row indices into its ``utterances.csv``; the metadata a
scikit-learn user reads (ids, speakers for ``GroupKFold``, labels, regression targets) comes
from here.
"""

from __future__ import annotations

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
