"""Per-speaker statistics of a store, combined exactly from per-utterance float64 sums."""

from __future__ import annotations

import os
from typing import NamedTuple

import h5py
import numpy as np

from featcache.errors import StoreError
from featcache.fileio import fsync_dir
from featcache.store import FORMAT_VERSION, SPEAKERS_FORMAT, StoreReader, check_version, now

__all__ = [
    "GroupStats",
    "SpeakerStats",
    "combine_groups",
    "combine_stats",
    "write_speaker_stats",
    "read_speaker_stats",
]


def _mean_std(count: np.ndarray, sums: np.ndarray, sumsq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one formula: population mean and std from a frame count and float64 sums.

    ``count`` has shape () or (G,) and is broadcast over the trailing axes of ``sums`` and
    ``sumsq`` (shape ``count.shape + (...)``); it must be positive.
    """
    c = np.asarray(count, dtype=np.float64)
    c = c.reshape(c.shape + (1,) * (np.ndim(sums) - c.ndim))
    mean = sums / c
    std = np.sqrt(np.maximum(sumsq / c - mean * mean, 0.0))
    return mean, std


class SpeakerStats:
    """Statistics per speaker of one store.

    Attributes
    ----------
    speakers : ndarray of shape (n_speakers,), str
    n_utterances : ndarray of shape (n_speakers,), int64
    count : ndarray of shape (n_speakers,), int64
        Frames per speaker.
    sum, sumsq : ndarray of shape (n_speakers, n_layers, dim), float64
    mean, std : ndarray of shape (n_speakers, n_layers, dim), float64
        Population statistics over all frames of the speaker.
    token : str
        The store's manifest token these statistics were computed from.
    """

    def __init__(self, speakers, n_utterances, count, sums, sumsq, token: str = "") -> None:
        self.speakers = np.asarray(speakers, dtype=object).astype(str)
        self.n_utterances = np.asarray(n_utterances, dtype=np.int64)
        self.count = np.asarray(count, dtype=np.int64)
        self.sum = np.asarray(sums, dtype=np.float64)
        self.sumsq = np.asarray(sumsq, dtype=np.float64)
        # a speaker without frames (never written by featcache) gets mean 0, std 0
        self.mean, self.std = _mean_std(np.maximum(self.count, 1), self.sum, self.sumsq)
        self.token = token

    def index(self, speaker: str) -> int:
        hits = np.flatnonzero(self.speakers == str(speaker))
        if not len(hits):
            raise KeyError(speaker)
        return int(hits[0])

    @classmethod
    def from_store(cls, reader: StoreReader, speaker_of: dict[str, str]) -> "SpeakerStats":
        """Combine the store's per-utterance sums by speaker."""
        ids, n, s, q = reader.utterance_stats()
        g = combine_groups(n, s, q, [speaker_of[i] for i in ids])
        return cls(g.names, g.n_utterances, g.count, g.sum, g.sumsq, reader.token)

    def select_layers(self, layers) -> "SpeakerStats":
        """The statistics of some layers only (``layers``: indices into the layer axis)."""
        layers = list(layers)
        return SpeakerStats(
            self.speakers, self.n_utterances, self.count, self.sum[:, layers], self.sumsq[:, layers], self.token
        )


def write_speaker_stats(reader: StoreReader, speaker_of: dict[str, str]) -> SpeakerStats:
    """Compute and write ``speakers.h5`` of a store atomically."""
    st = SpeakerStats.from_store(reader, speaker_of)
    path = reader.path / "speakers.h5"
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = SPEAKERS_FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = now()
        f.attrs["manifest_token"] = st.token
        f.create_dataset("speakers", data=st.speakers.astype(object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("n_utterances", data=st.n_utterances)
        f.create_dataset("count", data=st.count)
        for k in ("sum", "sumsq", "mean", "std"):
            f.create_dataset(k, data=getattr(st, k))
    # the file's blocks reach the disk before the rename makes it the current one
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(reader.path)
    return st


def read_speaker_stats(reader: StoreReader, speaker_of: dict[str, str] | None = None) -> SpeakerStats:
    """Read ``speakers.h5``; recompute it from the per-utterance sums when missing or stale.

    ``speaker_of`` (utterance id → speaker) is needed only when recomputing.
    """
    path = reader.path / "speakers.h5"
    if path.exists():
        try:
            with h5py.File(path, "r") as f:
                fmt = f.attrs.get("format")
                check_version("speakers", path, fmt, f.attrs.get("format_version"), SPEAKERS_FORMAT)
                token = f.attrs.get("manifest_token", "")
                if token == reader.token:
                    return SpeakerStats(
                        [x.decode() if isinstance(x, bytes) else x for x in f["speakers"][()]],
                        f["n_utterances"][()],
                        f["count"][()],
                        f["sum"][()],
                        f["sumsq"][()],
                        token,
                    )
        except (OSError, KeyError) as e:
            if speaker_of is None:
                raise StoreError(f"{path}: unreadable ({e})") from e
    if speaker_of is None:
        raise StoreError(f"{path}: missing or out of date; re-run featcache extract to rebuild it")
    return SpeakerStats.from_store(reader, speaker_of)


def combine_stats(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Exact mean and (population) std from per-utterance counts, sums and sums of squares.

    Parameters
    ----------
    n : ndarray of shape (n_utterances,)
    s, q : ndarray of shape (n_utterances, ...)

    Returns
    -------
    count : float, mean : ndarray (...), std : ndarray (...)

    Raises
    ------
    StoreError
        No frames at all.
    """
    count = float(np.sum(n))
    if count == 0:
        raise StoreError("cannot compute statistics of zero frames")
    mean, std = _mean_std(count, np.sum(s, axis=0), np.sum(q, axis=0))
    return count, mean, std


class GroupStats(NamedTuple):
    """Statistics per group (see :func:`combine_groups`); G groups, sorted by name."""

    names: np.ndarray  # (G,) str
    n_utterances: np.ndarray  # (G,) int64
    count: np.ndarray  # (G,) int64, frames
    sum: np.ndarray  # (G, ...) float64
    sumsq: np.ndarray  # (G, ...) float64
    mean: np.ndarray  # (G, ...) float64
    std: np.ndarray  # (G, ...) float64


def combine_groups(n: np.ndarray, s: np.ndarray, q: np.ndarray, groups) -> GroupStats:
    """:func:`combine_stats` for every group (speaker...) at once.

    Parameters
    ----------
    n : ndarray of shape (n_utterances,)
        Frames per utterance.
    s, q : ndarray of shape (n_utterances, ...)
        Per-utterance sums and sums of squares (float64).
    groups : array-like of shape (n_utterances,)
        Group of every utterance (compared as strings).

    Returns
    -------
    GroupStats
        A group without frames gets mean 0 and std 0 (callers that cannot use that check
        ``count``).
    """
    labels = np.array([str(x) for x in groups], dtype=object).astype(str)
    names, inv = np.unique(labels, return_inverse=True)
    s, q = np.asarray(s, dtype=np.float64), np.asarray(q, dtype=np.float64)
    shape = (len(names),) + s.shape[1:]
    sums, sqs = np.zeros(shape), np.zeros(shape)
    np.add.at(sums, inv, s)
    np.add.at(sqs, inv, q)
    count = np.bincount(inv, weights=n, minlength=len(names)).astype(np.int64)
    nutt = np.bincount(inv, minlength=len(names)).astype(np.int64)
    mean, std = _mean_std(np.maximum(count, 1), sums, sqs)
    return GroupStats(names, nutt, count, sums, sqs, mean, std)
