"""Packed (ragged, CSR-style) in-memory features: what estimators train on.

A :class:`Packed` holds, for each feature stream, the frames of the utterances in one
array of shape ``(total_frames, n_layers, dim)`` plus per-utterance ``starts`` and
``lengths``: utterance ``i`` is ``data[starts[i]:starts[i] + lengths[i]]``. No padding is
ever materialised; heads pool per utterance with segment operations. Subsets
(:meth:`Packed.subset`) share ``data`` with their parent, so cross-validation folds and grid
points never copy the frames.

:meth:`featcache.reader.FeatureSet.to_packed` builds one from a cache; estimators build
one from plain arrays or lists of arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["Packed", "Stream", "apply_normalization", "normalization_terms"]


def normalization_terms(shift: np.ndarray, scale: np.ndarray, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, 1 / scale)`` in ``dtype``, the terms :func:`apply_normalization` takes.

    The reciprocal is taken in float64 (exact for float32 ``dtype``: rounding 1/x to float64
    and then to float32 gives the correctly rounded float32 result).

    Parameters
    ----------
    shift, scale : ndarray of shape (n_groups, n_layers, dim)

    Returns
    -------
    shift, inv : ndarray of shape (n_groups, n_layers, dim), ``dtype``
    """
    shift = np.asarray(shift).astype(dtype, copy=False)
    inv = (1.0 / np.asarray(scale, dtype=np.float64)).astype(dtype, copy=False)
    return shift, inv


def apply_normalization(x, shift, inv):
    """Normalise frames in place: ``x = (x - shift) * inv``; the one place of this formula.

    Every read path calls it: :meth:`Stream.gather`, ``FeatureSet[i]`` (through
    :class:`featcache.reader.FeatureSet`) and the torch kernels of ``estimators`` (it works
    on numpy arrays and torch tensors alike).

    Parameters
    ----------
    x : ndarray or Tensor of shape (n_frames, n_layers, dim)
        Frames in the working precision (float32); overwritten. It must not share memory
        with stored data.
    shift, inv : ndarray or Tensor broadcastable to ``x``
        From :func:`normalization_terms` (one group's ``(n_layers, dim)``, or one row per frame).

    Returns
    -------
    x
    """
    x -= shift
    x *= inv
    return x


@dataclass
class Stream:
    """One aligned feature stream.

    Attributes
    ----------
    data : ndarray or featcache.frames.ShardFrames of shape (total_frames, n_layers, dim)
        Frames of utterances, concatenated (float16 or float32); may hold more
        utterances than this stream refers to. A :class:`~featcache.frames.ShardFrames`
        (what :meth:`featcache.reader.FeatureSet.to_packed` gives) reads the shards in
        place: only the rows gathered are ever copied.
    starts : ndarray of shape (n_utterances,), int64
        First row of each utterance in ``data``.
    lengths : ndarray of shape (n_utterances,), int64
        Number of frames of each utterance (at least 1).
    name : str
        Spec of the stream (``"all_layers"``, ``"egemaps"``...).
    frame_rate : float or None
        Frames per second (None when unknown, e.g. for arrays).
    norm_shift, norm_scale : ndarray of shape (n_groups, n_layers, dim) or None
        Optional normalisation applied when frames are gathered, by
        :func:`apply_normalization`: ``(x - norm_shift[g]) * (1 / norm_scale[g])`` with
        ``g = norm_group[i]`` for utterance ``i`` (per-speaker or global statistics; see
        :mod:`estimators.normalize`). Keeping it lazy means normalising never copies the
        corpus; :meth:`with_normalization` attaches it.
    norm_group : ndarray of shape (n_utterances,), int64, or None
    """

    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    name: str = "x"
    frame_rate: float | None = None
    norm_shift: np.ndarray | None = None
    norm_scale: np.ndarray | None = None
    norm_group: np.ndarray | None = None

    @classmethod
    def from_list(cls, arrays: list[np.ndarray], **kw) -> "Stream":
        """Concatenate arrays of shape (n_frames_i, n_layers, dim) into one stream."""
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return cls(np.concatenate(arrays, axis=0), offsets[:-1], lengths, **kw)

    def subset(self, index: np.ndarray) -> "Stream":
        """The utterances at ``index`` (ints), sharing ``data``."""
        return Stream(
            self.data,
            self.starts[index],
            self.lengths[index],
            self.name,
            self.frame_rate,
            self.norm_shift,
            self.norm_scale,
            None if self.norm_group is None else self.norm_group[index],
        )

    def gather(self, index: np.ndarray, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Frames of the utterances at ``index``, concatenated and normalised.

        Returns
        -------
        frames : ndarray of shape (sum of lengths, n_layers, dim)
        lengths : ndarray of shape (len(index),), int64
        """
        index = np.asarray(index, dtype=np.int64)
        starts, lengths = self.starts[index], self.lengths[index]
        total = int(lengths.sum())
        if not isinstance(self.data, np.ndarray):  # a ShardFrames: read in place
            out = np.ascontiguousarray(self.data.read(starts, lengths), dtype=dtype)
        elif len(index) == 1 or np.all(starts[1:] == starts[:-1] + lengths[:-1]):
            out = self.data[int(starts[0]) : int(starts[0]) + total].astype(dtype, copy=True)
        else:
            rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
            rows += np.arange(total)
            out = self.data[rows].astype(dtype, copy=False)
        if self.norm_group is not None:
            shift, inv = normalization_terms(self.norm_shift, self.norm_scale, dtype)
            a = 0
            for g, n in zip(self.norm_group[index], lengths):
                apply_normalization(out[a : a + n], shift[g], inv[g])
                a += n
        return out, lengths

    def with_normalization(self, shift: np.ndarray, scale: np.ndarray, group: np.ndarray) -> "Stream":
        """A copy (sharing ``data``) normalised lazily with ``shift``/``scale`` (G, L, D) per
        ``group`` (n_utterances,) (see the class attributes ``norm_*``)."""
        return replace(self, norm_shift=shift, norm_scale=scale, norm_group=group)

    @property
    def n_utterances(self) -> int:
        return int(len(self.starts))

    @property
    def n_layers(self) -> int:
        return int(self.data.shape[1])

    @property
    def dim(self) -> int:
        return int(self.data.shape[2])

    def utterance(self, i: int) -> np.ndarray:
        """Frames of utterance ``i``, shape (n_frames, n_layers, dim): a view of in-memory
        ``data``, a fresh copy when ``data`` reads the shards (never write to it)."""
        s = int(self.starts[i])
        return self.data[s : s + int(self.lengths[i])]


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

    def subset(self, index: np.ndarray) -> "Packed":
        """The utterances at ``index`` (integer array), sharing the frame arrays."""
        index = np.asarray(index)
        return Packed(
            [s.subset(index) for s in self.streams],
            None if self.ids is None else self.ids[index],
            None if self.speakers is None else self.speakers[index],
            dict(self.meta),
        )

    def describe(self) -> dict:
        """Shapes of the streams (what estimators compare between fit and predict)."""
        return {
            "streams": [
                {"name": s.name, "n_layers": s.n_layers, "dim": s.dim, "frame_rate": s.frame_rate}
                for s in self.streams
            ]
        }
