"""One processing path from signals to features, for corpora, files, signals and windows.

:func:`windows` cuts a long signal into the windows that ``estimators predict --segment``
classifies one by one; :func:`run_extractors` then treats each window as a signal.

As audinterface's ``Process``: whatever the signals come from (a corpus being extracted, the
files given to ``estimators predict``, the windows of a long recording), they reach the
extractors through :func:`run_extractors`, which resamples each signal to each extractor's
rate, refuses what is shorter than an extractor's minimum with a reason, and batches where
an extractor batches (self-supervised models). Nothing else resamples or checks lengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from featcache.audio import resample
from featcache.errors import AudioError, ParameterError
from featcache.extractors.base import Extractor

__all__ = [
    "MAX_WINDOWS_PER_FILE",
    "MIN_HOP_SECONDS",
    "MIN_SEGMENT_SECONDS",
    "Outcome",
    "check_windowing",
    "is_model",
    "prepare_signal",
    "run_extractors",
    "windows",
]

MIN_HOP_SECONDS = 0.01
MIN_SEGMENT_SECONDS = 0.01
MAX_WINDOWS_PER_FILE = 10_000  # a 10 ms hop over 100 s; a file needing more is refused, not streamed blindly


@dataclass
class Outcome:
    """What the extractors made of one signal.

    Attributes
    ----------
    results : dict of str to ndarray
        Store name → features: (n_frames, dim), or (n_layers, n_frames, dim) for a model.
    errors : dict of str to str
        Store name → why that extractor could not use the signal (too short...).
    """

    results: dict[str, np.ndarray] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def is_model(ex: Extractor) -> bool:
    """A self-supervised model (batched, several layers) rather than a handcrafted extractor."""
    return ex.n_layers > 1 or getattr(ex, "name", "") == "ssl"


def _too_short(ex: Extractor) -> str:
    n = ex.min_samples()
    if is_model(ex):
        return f"shorter than the model's receptive field ({n} samples = {1000 * n / ex.sampling_rate:.0f} ms)"
    return f"shorter than the {ex.name} extractor's minimum of {n} samples"


def prepare_signal(ex: Extractor, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
    """``signal`` at the extractor's rate, or :class:`AudioError` when too short for it.

    Parameters
    ----------
    signal : ndarray of shape (n_samples,), float32
        Mono waveform at ``sampling_rate``.
    """
    if int(sampling_rate) != int(ex.sampling_rate):
        signal = resample(signal, int(sampling_rate), int(ex.sampling_rate))
    if len(signal) < ex.min_samples():
        raise AudioError("<signal>", _too_short(ex))
    return signal


def run_extractors(
    signals: Sequence[np.ndarray],
    sampling_rate: int,
    extractors: Iterable[Extractor],
    needs: Sequence[set[str]] | None = None,
) -> list[Outcome]:
    """Run extractors on signals; an extractor that batches gets all its signals at once.

    Parameters
    ----------
    signals : sequence of ndarray of shape (n_samples_i,), float32
        Mono waveforms, all at ``sampling_rate``.
    sampling_rate : int
        Their rate (Hz); each extractor gets them resampled to its own.
    extractors : iterable of Extractor
    needs : sequence of set of str, optional
        Per signal, the store names still wanted (default: all).

    Returns
    -------
    list of Outcome
        One per signal, in order. Per-extractor failures (:class:`AudioError`: too short,
        nothing to analyse) are recorded in ``errors``; any other error propagates.
    """
    out = [Outcome() for _ in signals]
    for ex in extractors:
        key = ex.store_name
        todo, prepared = [], []
        for i, sig in enumerate(signals):
            if needs is not None and key not in needs[i]:
                continue
            try:
                prepared.append(prepare_signal(ex, sig, sampling_rate))
                todo.append(i)
            except AudioError as e:
                out[i].errors[key] = e.reason
        if not todo:
            continue
        if is_model(ex):
            for i, x in zip(todo, ex.batch(prepared, ex.sampling_rate)):
                out[i].results[key] = x
            continue
        for i, sig in zip(todo, prepared):
            try:
                out[i].results[key] = ex(sig, ex.sampling_rate)
            except AudioError as e:
                out[i].errors[key] = e.reason
    return out


def windows(n_samples: int, sampling_rate: int, segment: float, hop: float) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of windows of ``segment`` seconds every ``hop`` seconds.

    Windows start at 0, ``hop``, ``2 hop``... while they fit in the signal; when the last
    one does not reach the end, one more window ending at the end is added (so every sample
    is covered). A signal no longer than ``segment`` gives one window: the whole signal.

    Raises
    ------
    ParameterError
        ``segment`` below :data:`MIN_SEGMENT_SECONDS`, ``hop`` below :data:`MIN_HOP_SECONDS`,
        or more than :data:`MAX_WINDOWS_PER_FILE` windows.
    """
    check_windowing(segment, hop)
    seg = int(round(segment * sampling_rate))
    step = max(1, int(round(hop * sampling_rate)))
    if n_samples <= seg:
        return [(0, int(n_samples))]
    count = (n_samples - seg) // step + 1
    count += (count - 1) * step + seg < n_samples  # the window ending at the end
    if count > MAX_WINDOWS_PER_FILE:
        seconds = n_samples / sampling_rate
        raise ParameterError(
            "hop (--hop)",
            f"large enough for at most {MAX_WINDOWS_PER_FILE} windows per file (this {seconds:.1f} s file "
            f"needs hop >= {(seconds - segment) / (MAX_WINDOWS_PER_FILE - 1):.3g} s; or split the file)",
            hop,
        )
    out = [(a, a + seg) for a in range(0, n_samples - seg + 1, step)]
    if out[-1][1] < n_samples:
        out.append((n_samples - seg, n_samples))
    return out


def _is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_windowing(segment: Any, hop: Any) -> None:
    """Refuse a window length or hop (seconds) below the allowed minimum.

    Raises
    ------
    ParameterError
    """
    if not (_is_seconds(segment) and segment >= MIN_SEGMENT_SECONDS):
        raise ParameterError("segment (--segment)", f"a number of seconds >= {MIN_SEGMENT_SECONDS}", segment)
    if not (_is_seconds(hop) and hop >= MIN_HOP_SECONDS):
        raise ParameterError("hop (--hop)", f"a number of seconds >= {MIN_HOP_SECONDS}", hop)
