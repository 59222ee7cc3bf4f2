"""Per-speaker statistics of a store, combined exactly from per-utterance float64 sums."""

from __future__ import annotations

import h5py
import numpy as np

from featcache.errors import StoreError
from featcache.fileio import fsync_dir
from featcache.store import FORMAT_VERSION, SPEAKERS_FORMAT, StoreReader, check_version, now

__all__ = ["SpeakerStats", "combine_stats", "write_speaker_stats", "read_speaker_stats"]


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
        c = np.maximum(self.count, 1).astype(np.float64)[:, None, None]
        self.mean = self.sum / c
        self.std = np.sqrt(np.maximum(self.sumsq / c - self.mean**2, 0.0))
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
        spk = np.array([str(speaker_of[i]) for i in ids], dtype=object).astype(str)
        names, inv = np.unique(spk, return_inverse=True)
        shape = (len(names),) + s.shape[1:]
        sums, sqs = np.zeros(shape), np.zeros(shape)
        np.add.at(sums, inv, s)
        np.add.at(sqs, inv, q)
        count = np.bincount(inv, weights=n, minlength=len(names)).astype(np.int64)
        nutt = np.bincount(inv, minlength=len(names))
        return cls(names, nutt, count, sums, sqs, reader.token)


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
    import os

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
    """
    count = float(np.sum(n))
    if count == 0:
        raise StoreError("cannot compute statistics of zero frames")
    mean = np.sum(s, axis=0) / count
    var = np.maximum(np.sum(q, axis=0) / count - mean * mean, 0.0)
    return count, mean, np.sqrt(var)
