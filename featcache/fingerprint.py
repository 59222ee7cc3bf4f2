"""Content fingerprints of utterances: exact and near-duplicate detection.

Computed at extraction from the decoded, cropped signal at the extraction rate (see
:mod:`featcache.pipeline`) and stored in every shard (format 1.1, README "On-disk format"):

``pcm_sha256``
    sha256 of the signal rounded to 16-bit integers: equal for the same decoded audio,
    whatever the container (WAV and FLAC of one recording hash the same).
``fingerprint``
    A spectro-temporal signature of :data:`FINGERPRINT_DIM` values: the signal is resampled
    to 8 kHz, a 20-band log-mel spectrogram (100-3100 Hz, 32 ms windows, 10 ms hop) is
    pooled into 4 band groups x 96 equal time segments spanning the utterance, floored
    35 dB below the loudest frame, centred per band and scaled to unit length. Centring
    makes it gain-invariant (and indifferent to a channel's colouring); the 8 kHz band
    limit makes it indifferent to the source rate (an 8 kHz copy of a 48 kHz file
    matches); pooling makes it tolerant of lossy codecs. The time axis is what separates
    two *takes* of the same sentence by the same speaker: their timing differs, a copy's
    does not.

Two utterances are near-duplicates when the Euclidean distance of their fingerprints is at
most :data:`NEAR_DUPLICATE_DISTANCE` = 0.10. Measured on the real RAVDESS speech corpus:
copies of the 63 original 48 kHz files resampled to 8-22 kHz, gain-changed by -20 to +6 dB
(with clipping), MP3/Vorbis/Opus/mu-law re-encoded stay below 0.07; distinct recordings
of the same sentence by the same actor (all 1440 files) are at least 0.19 apart. Not
detected: copies cropped differently (the time axis spans the utterance) and heavy
degradations such as 8-bit re-quantisation of quiet recordings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import soxr

__all__ = [
    "FINGERPRINT_DIM",
    "FINGERPRINT_METHOD",
    "NEAR_DUPLICATE_DISTANCE",
    "Fingerprints",
    "DuplicatePair",
    "pcm_sha256",
    "fingerprint",
    "read_fingerprints",
    "duplicate_pairs",
    "duplicate_groups",
]

FINGERPRINT_METHOD = "logmel-st-8k-20x4x96-v1"
_RATE, _NFFT, _HOP = 8000, 256, 80
_N_MEL, _FMIN, _FMAX = 20, 100.0, 3100.0
_GROUPS, _SEGMENTS, _FLOOR_DB = 4, 96, 35.0
FINGERPRINT_DIM = _GROUPS * _SEGMENTS
#: Largest fingerprint distance still called a near-duplicate (see the module docstring).
NEAR_DUPLICATE_DISTANCE = 0.10


def _mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _filterbank() -> np.ndarray:
    """Triangular mel filters, shape (n_mel, n_fft // 2 + 1)."""
    edges = 700.0 * (10 ** (np.linspace(_mel(_FMIN), _mel(_FMAX), _N_MEL + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(_NFFT, 1.0 / _RATE)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)


_FBANK = _filterbank()
_WINDOW = np.hanning(_NFFT)


def pcm_sha256(signal: np.ndarray) -> str:
    """sha256 (hex) of a float signal in [-1, 1] rounded to 16-bit integers, shape (n,).

    The scale is libsndfile's (a 16-bit sample k decodes to k / 32768), so the hash of a
    16-bit file is that of its samples, whatever the container.
    """
    pcm = np.clip(np.round(np.asarray(signal, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()


def _mel_power(signal: np.ndarray, rate: int) -> np.ndarray:
    """Mel power spectrogram at 8 kHz, shape (n_frames, n_mel)."""
    x = np.asarray(signal, dtype=np.float32)
    if rate != _RATE:
        x = soxr.resample(x, rate, _RATE)
    x = x.astype(np.float64)
    if len(x) < _NFFT:
        x = np.pad(x, (0, _NFFT - len(x)))
    n = 1 + (len(x) - _NFFT) // _HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, _NFFT)[:: _HOP][:n]
    return (np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2) @ _FBANK.T


def fingerprint(signal: np.ndarray, rate: int) -> np.ndarray:
    """The near-duplicate fingerprint of one signal.

    Parameters
    ----------
    signal : ndarray of shape (n,)
        Mono waveform.
    rate : int
        Its sampling rate (Hz).

    Returns
    -------
    ndarray of shape (FINGERPRINT_DIM,), float32
        Unit length; all NaN for a signal without content (digital silence), which is
        then never called a near-duplicate of anything (its ``pcm_sha256`` still is).
    """
    mel = _mel_power(signal, rate)
    n = len(mel)
    ref = float(mel.sum(axis=1).max())
    if not np.isfinite(ref) or ref <= 1e-20:
        return np.full(FINGERPRINT_DIM, np.nan, dtype=np.float32)
    bands = np.add.reduceat(mel, np.linspace(0, _N_MEL, _GROUPS + 1).astype(int)[:-1], axis=1)
    start = np.floor(np.arange(_SEGMENTS) * n / _SEGMENTS).astype(int)
    stop = np.maximum(start + 1, np.floor(np.arange(1, _SEGMENTS + 1) * n / _SEGMENTS).astype(int))
    csum = np.vstack([np.zeros((1, _GROUPS)), np.cumsum(bands, axis=0)])
    seg = (csum[stop] - csum[start]) / (stop - start)[:, None]
    db = 10.0 * np.log10(np.maximum(seg, ref * 10 ** (-_FLOOR_DB / 10.0) / _GROUPS))
    v = (db - db.mean(axis=0)).ravel()  # each band's own mean: gain and channel colouring go
    norm = float(np.linalg.norm(v))
    if norm < 1e-9:  # a constant tone: no time structure to compare
        return np.full(FINGERPRINT_DIM, np.nan, dtype=np.float32)
    return (v / norm).astype(np.float32)


@dataclass
class Fingerprints:
    """The content fingerprints of the utterances of one corpus cache.

    Attributes
    ----------
    corpus : str
    ids : list of str
        Utterances that have fingerprints.
    sha256 : ndarray of shape (n,), object
    vectors : ndarray of shape (n, FINGERPRINT_DIM), float32
    missing : list of str
        Committed utterances without fingerprints (shards written before format 1.1).
    """

    corpus: str
    ids: list[str]
    sha256: np.ndarray
    vectors: np.ndarray
    missing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Iterable[str]) -> "Fingerprints":
        """The fingerprints of ``ids`` (those without any go to ``missing``)."""
        pos = {u: i for i, u in enumerate(self.ids)}
        want = [str(u) for u in ids]
        have = [u for u in want if u in pos]
        rows = np.array([pos[u] for u in have], dtype=np.int64)
        return Fingerprints(self.corpus, have, self.sha256[rows], self.vectors[rows].reshape(len(rows), self.vectors.shape[1]),
                            [u for u in want if u not in pos])


def read_fingerprints(cache) -> Fingerprints:
    """Fingerprints of every committed utterance of a corpus cache (from any of its stores).

    Parameters
    ----------
    cache : FeatureCache or path
        A corpus cache (``featcache.open_cache``).

    Returns
    -------
    Fingerprints
        Shards of format 1.0, or written with another fingerprint method, give none: their
        utterances are listed in ``missing`` unless another store has them.
    """
    if isinstance(cache, (str, Path)):
        from featcache.cache import open_cache

        cache = open_cache(cache)
    got: dict[str, tuple[str, np.ndarray]] = {}
    committed: set[str] = set()
    for reader in cache.stores.values():
        committed.update(reader.ids)
        for si, entry in enumerate(reader.manifest["shards"]):
            if all(u in got for u in entry["ids"]):
                continue  # another store gave them already
            content = reader.shard(si).fingerprints()
            if content is None or content[2] != FINGERPRINT_METHOD:
                continue
            for uid, sha, vec in zip(entry["ids"], content[0], content[1]):
                got.setdefault(uid, (sha, vec))
    order = [u for u in cache.utterances["id"] if u in got]
    vectors = np.stack([got[u][1] for u in order]).astype(np.float32) if order else np.zeros((0, FINGERPRINT_DIM), np.float32)
    return Fingerprints(cache.corpus, order, np.array([got[u][0] for u in order], dtype=object), vectors,
                        sorted(committed - set(got)))


@dataclass(frozen=True)
class DuplicatePair:
    """Two utterances with the same content: ``kind`` is ``"exact"`` or ``"near"``."""

    a: int
    b: int
    kind: str
    distance: float


def duplicate_pairs(
    first: Fingerprints, second: Fingerprints | None = None, *, threshold: float = NEAR_DUPLICATE_DISTANCE, block: int = 2048,
) -> list[DuplicatePair]:
    """Exact (same ``pcm_sha256``) and near (fingerprint distance <= ``threshold``) duplicates.

    Parameters
    ----------
    first, second : Fingerprints
        Pairs within ``first`` (``a < b``) when ``second`` is None, else pairs ``(a in
        first, b in second)``.
    threshold : float
        Largest distance called a near-duplicate.

    Returns
    -------
    list of DuplicatePair
        Positions into ``first`` / ``second``, exact pairs with distance 0.
    """
    self_pairs = second is None
    other = first if self_pairs else second
    out: list[DuplicatePair] = []
    where: dict[str, list[int]] = {}
    for j, h in enumerate(other.sha256):
        where.setdefault(str(h), []).append(j)
    exact = set()
    for i, h in enumerate(first.sha256):
        for j in where.get(str(h), ()):
            if not self_pairs or j > i:
                exact.add((i, j))
                out.append(DuplicatePair(i, j, "exact", 0.0))
    A = np.nan_to_num(first.vectors.astype(np.float32), nan=np.inf)
    B = np.nan_to_num(other.vectors.astype(np.float32), nan=np.inf)
    okA, okB = np.isfinite(A).all(axis=1), np.isfinite(B).all(axis=1)
    A, B = np.where(okA[:, None], A, np.float32(0)), np.where(okB[:, None], B, np.float32(0))
    sqB = (B * B).sum(axis=1)
    for s in range(0, len(A), block):
        a = A[s : s + block]
        d2 = (a * a).sum(axis=1)[:, None] + sqB[None, :] - 2.0 * a @ B.T
        d2[~okA[s : s + block]] = np.inf
        d2[:, ~okB] = np.inf
        ii, jj = np.nonzero(d2 <= threshold * threshold)
        for i, j in zip(ii + s, jj):
            if (self_pairs and j <= i) or (i, j) in exact:
                continue
            out.append(DuplicatePair(int(i), int(j), "near", float(np.sqrt(max(d2[i - s, j], 0.0)))))
    out.sort(key=lambda p: (p.a, p.b))
    return out


def duplicate_groups(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected groups (size >= 2) of ``n`` items linked by ``pairs``, each sorted, sorted by first item."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
