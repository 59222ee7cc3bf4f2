"""Feature normalisation as scikit-learn transformers: per speaker, or global.

Both accept FeatureSets (normalisation is attached lazily and applied when frames are
gathered, so the corpus is never copied), :class:`featcache.packed.Packed` objects and numeric
arrays, so ``make_pipeline(SpeakerNormalizer(), DenseClassifier())`` works.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from featcache.packed import Packed, Stream
from featcache.stats import combine_groups, combine_stats

from .errors import InputError

__all__ = ["SpeakerNormalizer", "GlobalNormalizer"]

_STATS = ("cache", "batch")


def _is_featureset(X) -> bool:
    return hasattr(X, "utterance_stats") and hasattr(X, "with_normalization")


def _scale(std: np.ndarray, eps: float) -> np.ndarray:
    """Standard deviations used as divisors: constant features are left unscaled (1.0)."""
    return np.where(std > eps, std, 1.0)


def _frame_stats(stream: Stream, index: np.ndarray | None = None):
    """Per-utterance (n_frames, sum, sumsq) in float64 from a packed stream's frames."""
    idx = np.arange(stream.n_utterances) if index is None else index
    n = stream.lengths[idx].astype(np.float64)
    s = np.empty((len(idx), stream.n_layers, stream.dim))
    q = np.empty_like(s)
    for j, i in enumerate(idx):
        x = stream.utterance(int(i)).astype(np.float64)
        s[j] = x.sum(0)
        q[j] = (x * x).sum(0)
    return n, s, q


_EMPTY = "cannot compute normalisation statistics of X: it holds 0 utterances (0 frames)"


def _check_finite(mean: np.ndarray, std: np.ndarray) -> None:
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise InputError(
            "cannot compute normalisation statistics of X: its features hold NaN or infinite values"
            " (for a featcache FeatureSet, `featcache verify` names the shards)"
        )


def _combine(n, s, q):
    """Mean and std from per-utterance counts, sums and sums of squares.

    Raises
    ------
    InputError
        No frames at all (empty input), or statistics that are not finite (NaN or
        infinite features): normalising with them would silently spoil every frame.
    """
    if float(np.sum(n)) == 0:
        raise InputError(_EMPTY)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is refused just below
        _, mean, std = combine_stats(n, s, q)
    _check_finite(mean, std)
    return mean, std


def _by_group(groups: np.ndarray, n, s, q):
    """Mean and std per group value; returns (names, mean (G, L, D), std (G, L, D))."""
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is refused just below
        g = combine_groups(n, s, q, groups)
    if not len(g.names) or (g.count == 0).any():
        raise InputError(_EMPTY)
    _check_finite(g.mean, g.std)
    return g.names, g.mean, g.std


def _streams_stats(X):
    """Per stream, per-utterance (n, sum, sumsq) of the input (FeatureSet: stored sums)."""
    if _is_featureset(X):
        return [X.utterance_stats(i) for i in range(len(X.streams))]
    return [_frame_stats(st) for st in X.streams]


def _as_packed(X) -> tuple[object, callable]:
    """Input as a FeatureSet or Packed, plus a function turning the result back into X's kind."""
    if _is_featureset(X) or isinstance(X, Packed):
        return X, lambda out: out
    from estimators._data import to_packed

    arr = X
    packed = to_packed(arr)

    def back(out: Packed):
        st = out.streams[0]
        frames = [st.gather(np.array([i]))[0] for i in range(st.n_utterances)]
        if isinstance(arr, np.ndarray):
            a = np.asarray(arr)
            stacked = np.stack(frames)  # (n, frames, layers, dim)
            if a.ndim == 2:
                return stacked[:, 0, 0, :]
            if a.ndim == 3:
                return stacked[:, :, 0, :]
            return stacked
        return [f[:, 0, :] if np.ndim(x) == 2 else f for f, x in zip(frames, arr)]

    return packed, back


def _apply(X, norms):
    """Attach per-stream ``(shift, scale, group)`` to a FeatureSet or Packed."""
    if _is_featureset(X):
        return X.with_normalization(norms)
    streams = [st.with_normalization(*norm) for st, norm in zip(X.streams, norms)]
    return Packed(streams, X.ids, X.speakers, dict(X.meta))


class GlobalNormalizer(TransformerMixin, BaseEstimator):
    """Subtract the mean and divide by the standard deviation of each feature (per layer),
    with statistics from the training data only (``fit``).

    On a FeatureSet the statistics are combined exactly from the cache's per-utterance
    float64 sums (no frame is read); otherwise from the frames.

    Parameters
    ----------
    eps : float
        Features whose standard deviation is at most ``eps`` are only centred.

    Attributes
    ----------
    mean_, scale_ : list of ndarray of shape (n_layers, dim)
        One entry per stream.
    """

    def __init__(self, eps: float = 1e-8):
        self.eps = eps

    def fit(self, X, y=None):
        P, _ = _as_packed(X)
        self.mean_, self.scale_ = [], []
        for n, s, q in _streams_stats(P):
            m, sd = _combine(n, s, q)
            self.mean_.append(m)
            self.scale_.append(_scale(sd, self.eps))
        self.n_streams_ = len(self.mean_)
        return self

    def transform(self, X):
        check_is_fitted(self, "mean_")
        P, back = _as_packed(X)
        n_streams = len(P.streams)
        if n_streams != self.n_streams_:
            raise ValueError(f"GlobalNormalizer was fitted on {self.n_streams_} stream(s); got {n_streams}")
        norms = []
        for m, sc, shape in zip(self.mean_, self.scale_, _stream_shapes(P)):
            if m.shape != shape:
                raise ValueError(f"GlobalNormalizer was fitted on features of shape {m.shape} (layers, dim); got {shape}")
            norms.append((m[None], sc[None], np.zeros(len(P), np.int64)))
        return back(_apply(P, norms))


def _stream_shapes(P) -> list[tuple[int, int]]:
    if _is_featureset(P):
        d = P.describe()["streams"]
        return [(s["n_layers"], s["dim"]) for s in d]
    return [(s.n_layers, s.dim) for s in P.streams]


class SpeakerNormalizer(TransformerMixin, BaseEstimator):
    """Normalise each speaker's features by that speaker's mean and standard deviation.

    Parameters
    ----------
    stats : {"cache", "batch"}
        ``"cache"`` (Pepino et al.): each speaker's statistics over *all* of that speaker's
        utterances in the feature cache, test utterances included. This is transductive: it
        assumes every recording of a test speaker is available at test time. For inputs
        without a cache (Packed, arrays with speakers) it uses the utterances seen at ``fit``.
        ``"batch"``: statistics from the utterances given to ``transform`` only (enrolment:
        the speaker's data at hand when predicting).
    eps : float
        Features whose standard deviation is at most ``eps`` are only centred.

    Notes
    -----
    A speaker without statistics (with ``stats="cache"`` on non-cache input, a speaker not
    seen at ``fit``) falls back to the global statistics of the training data, with a
    warning. Plain arrays carry no speakers: give a FeatureSet or a Packed with speakers.

    Attributes
    ----------
    global_mean_, global_scale_ : list of ndarray of shape (n_layers, dim)
        Fallback statistics of the training data, one entry per stream.
    speakers_ : ndarray of str
        Speakers seen at fit.
    """

    def __init__(self, stats: str = "cache", eps: float = 1e-8):
        self.stats = stats
        self.eps = eps

    def _check(self):
        if self.stats not in _STATS:
            raise ValueError(f"stats must be one of {_STATS}; got {self.stats!r}")

    def fit(self, X, y=None):
        self._check()
        P, _ = _as_packed(X)
        speakers = _speakers(P)
        stats = _streams_stats(P)
        self.global_mean_, self.global_scale_, self.speaker_stats_ = [], [], []
        for n, s, q in stats:
            m, sd = _combine(n, s, q)
            self.global_mean_.append(m)
            self.global_scale_.append(_scale(sd, self.eps))
            self.speaker_stats_.append(_by_group(speakers, n, s, q))
        self.speakers_ = np.unique(speakers.astype(str))
        return self

    def transform(self, X):
        check_is_fitted(self, "global_mean_")
        self._check()
        P, back = _as_packed(X)
        speakers = _speakers(P).astype(str)
        norms = []
        for si in range(len(P.streams)):
            if self.stats == "batch":
                names, mean, std = _by_group(speakers, *_streams_stats(P)[si])
            elif _is_featureset(P):
                names, mean, std = _cache_speaker_stats(P, si)
            else:
                names, mean, std = self.speaker_stats_[si]
            known = np.isin(speakers, names)
            if not known.all():
                missing = sorted(set(speakers[~known]))
                warnings.warn(
                    f"SpeakerNormalizer: no statistics for speaker(s) {missing[:5]}"
                    f"{'...' if len(missing) > 5 else ''}; using the training data's global statistics",
                    UserWarning,
                    stacklevel=2,
                )
            shift = np.concatenate([mean, self.global_mean_[si][None]])
            scale = np.concatenate([_scale(std, self.eps), self.global_scale_[si][None]])
            pos = {name: i for i, name in enumerate(names)}
            group = np.array([pos.get(s, len(names)) for s in speakers], dtype=np.int64)
            norms.append((shift, scale, group))
        return back(_apply(P, norms))


def _speakers(P) -> np.ndarray:
    sp = getattr(P, "speakers", None)
    if sp is None:
        raise ValueError(
            "SpeakerNormalizer needs the speaker of each utterance: give a featcache FeatureSet "
            "or a featcache.packed.Packed with speakers (plain arrays carry none)"
        )
    return np.asarray(sp).astype(str)


def _cache_speaker_stats(fs, si: int):
    """Per-speaker statistics of all of each speaker's utterances in the FeatureSet's cache."""
    st = fs.speaker_stats(si)
    return st.speakers.astype(str), st.mean, st.std
