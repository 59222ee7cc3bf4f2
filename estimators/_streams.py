"""What a batch is, and the frame rules of a plan's streams.

:class:`Batch` and :class:`StreamSlice` are what :class:`estimators._batch.BatchPlan` hands the
models (packed frames, no padding: per-utterance row ranges into the stored streams);
:func:`stream_ratios` and :func:`utterance_level` decide how the streams of a fused set line up
(see :mod:`estimators._batch` for the rules); :func:`as_tensor` wraps stored arrays without a copy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from featcache.packed import Packed

from ._ops import Norm
from .errors import InputError

__all__ = ["StreamSlice", "Batch", "stream_ratios", "utterance_level", "as_tensor"]


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing memory with ``array`` (read-only arrays included)."""
    a = array
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    with warnings.catch_warnings():
        # torch warns about read-only arrays (memmaps...); frames are never written
        warnings.simplefilter("ignore", UserWarning)
        try:
            return torch.from_numpy(a)
        except ValueError:  # negative strides
            return torch.from_numpy(np.ascontiguousarray(a))


def utterance_level(packed: Packed) -> list[bool]:
    """Which streams hold one vector per utterance beside streams of frames.

    A stream whose every utterance has a single frame (functionals, statistics) while another
    stream has utterances of several frames: its vector is repeated over the output frames of
    the others (:attr:`StreamSlice.broadcast`) instead of cropping them to one frame.
    """
    single = [bool(len(s.lengths)) and bool((np.asarray(s.lengths) == 1).all()) for s in packed.streams]
    framed = [not one for one in single]
    return [one and any(f for j, f in enumerate(framed) if j != k) for k, one in enumerate(single)]


def stream_ratios(packed: Packed) -> list[int]:
    """How many frames of each stream make one frame of the coarsest stream.

    Parameters
    ----------
    packed : Packed

    Returns
    -------
    list of int
        1 for the coarsest stream (the lowest known ``frame_rate``), for streams at its rate,
        for streams of unknown rate and for utterance-level streams (:func:`utterance_level`),
        else ``frame_rate_k / coarsest``, which must be an integer. With stream 0 the
        coarsest (``all_layers+egemaps``) these are the ratios to stream 0.
    """
    flat = utterance_level(packed)
    rates = [None if s.frame_rate is None or u else float(s.frame_rate) for s, u in zip(packed.streams, flat)]
    known = [(r, k) for k, r in enumerate(rates) if r is not None]
    if not known:
        return [1] * len(rates)
    base, b = min(known)
    out = []
    for k, (s, rate) in enumerate(zip(packed.streams, rates)):
        if rate is None or rate == base:
            out.append(1)
            continue
        r = rate / base
        if abs(r - round(r)) > 1e-6:
            raise InputError(
                f"stream {k} ({s.name!r}) has frame rate {s.frame_rate}, the coarsest stream {b} "
                f"({packed.streams[b].name!r}) has {base:g}: the rate of every stream must be an "
                "integer multiple of the coarsest rate"
            )
        out.append(int(round(r)))
    return out


@dataclass
class StreamSlice:
    """The frames of one stream for one batch.

    Attributes
    ----------
    source : Tensor of shape (total_frames, n_layers, dim)
        The whole stored stream (CPU), shared with the numpy data.
    starts, counts : ndarray of shape (batch_size,), int64
        First row and number of rows read for every utterance.
    ratio : int
        Frames averaged into one output frame.
    raw_to_out : Tensor of shape (sum(counts),) or None
        Output frame of every row read (when ``ratio > 1``).
    out_counts : Tensor of shape (n_output_frames,) or None
        Rows averaged into every output frame (when ``ratio > 1``).
    norm : Norm or None
        Lazy normalisation of the stream (``Stream.norm_*``).
    groups : ndarray of shape (batch_size,) or None
        Normalisation group of every utterance (with ``norm``).
    broadcast : Tensor of shape (n_output_frames,) or None
        For an utterance-level stream (one row per utterance, :func:`utterance_level`): the
        utterance of every output frame, over which its vector is repeated.
    parts : ndarray of shape (batch_size,) or None
        When ``source`` is a tuple (one entry per shard of the stream, each a tuple of its
        memory-mapped layers of shape (frames, dim)): the shard of every utterance; ``starts``
        are then rows of that shard.
    """

    source: torch.Tensor
    starts: np.ndarray
    counts: np.ndarray
    ratio: int = 1
    raw_to_out: torch.Tensor | None = None
    out_counts: torch.Tensor | None = None
    norm: Norm | None = None
    groups: np.ndarray | None = None
    broadcast: torch.Tensor | None = None
    parts: np.ndarray | None = None

    def rows(self, i: int) -> torch.Tensor:
        """The rows read for utterance ``i`` of the batch, shape (counts[i], n_layers, dim)."""
        s, c = int(self.starts[i]), int(self.counts[i])
        if self.parts is None:
            return self.source[s : s + c]
        return torch.stack([layer[s : s + c] for layer in self.source[int(self.parts[i])]], dim=1)


@dataclass
class Batch:
    """Utterances of one batch, packed (no padding).

    Attributes
    ----------
    index : ndarray of shape (batch_size,)
        Positions of the utterances in the plan's Packed.
    streams : list of StreamSlice
    lengths : Tensor of shape (batch_size,), int64
        Output frames of every utterance (the same for every stream).
    offsets : Tensor of shape (batch_size + 1,), int64
        First output frame of every utterance, then the total.
    seg_ids : Tensor of shape (total_frames,), int64
        Utterance of every output frame.
    ids : ndarray of shape (batch_size,) or None
        Utterance ids (for error messages).
    """

    index: np.ndarray
    streams: list[StreamSlice]
    lengths: torch.Tensor
    offsets: torch.Tensor
    seg_ids: torch.Tensor
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)
