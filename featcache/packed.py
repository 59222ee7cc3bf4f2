"""Packed (ragged, CSR-style) in-memory features: what estimators train on.

A :class:`Packed` holds, for each feature stream, every frame of every utterance in one
array of shape ``(total_frames, n_layers, dim)`` plus an offsets array of shape
``(n_utterances + 1,)``: utterance ``i`` is ``data[offsets[i]:offsets[i + 1]]``. No padding
is ever materialised; heads pool per utterance with segment operations.

:meth:`featcache.reader.FeatureSet.to_packed` builds one from a cache; estimators build
one from plain arrays or lists of arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Packed", "Stream"]


@dataclass
class Stream:
    """One aligned feature stream.

    Attributes
    ----------
    data : ndarray of shape (total_frames, n_layers, dim)
        All frames of all utterances, concatenated (float16 or float32).
    offsets : ndarray of shape (n_utterances + 1,), int64
        Start of each utterance in ``data``; ``offsets[0] == 0`` and
        ``offsets[-1] == total_frames``.
    name : str
        Spec of the stream (``"all_layers"``, ``"egemaps"``...).
    frame_rate : float or None
        Frames per second (None when unknown, e.g. for arrays).
    """

    data: np.ndarray
    offsets: np.ndarray
    name: str = "x"
    frame_rate: float | None = None

    @property
    def n_utterances(self) -> int:
        return int(len(self.offsets) - 1)

    @property
    def n_layers(self) -> int:
        return int(self.data.shape[1])

    @property
    def dim(self) -> int:
        return int(self.data.shape[2])

    @property
    def lengths(self) -> np.ndarray:
        """Frames per utterance, shape (n_utterances,)."""
        return np.diff(self.offsets)

    def utterance(self, i: int) -> np.ndarray:
        """Frames of utterance ``i``, shape (n_frames, n_layers, dim) (a view)."""
        return self.data[self.offsets[i] : self.offsets[i + 1]]


@dataclass
class Packed:
    """Several aligned streams of the same utterances, with their metadata.

    Attributes
    ----------
    streams : list of Stream
        One or more streams, each with the same number of utterances.
    ids : ndarray of shape (n_utterances,) or None
        Utterance ids.
    speakers : ndarray of shape (n_utterances,) or None
        Speaker of each utterance (used for speaker-disjoint validation splits).
    """

    streams: list[Stream]
    ids: np.ndarray | None = None
    speakers: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.streams:
            raise ValueError("Packed needs at least one stream")
        n = {s.n_utterances for s in self.streams}
        if len(n) != 1:
            raise ValueError(f"streams hold different numbers of utterances: {sorted(n)}")

    def __len__(self) -> int:
        return self.streams[0].n_utterances
