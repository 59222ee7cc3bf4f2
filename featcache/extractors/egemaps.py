"""eGeMAPS low-level descriptors from openSMILE (25 LLDs at 100 frames/s).

Follows the frame convention of :mod:`featcache.extractors.handcrafted` (centred frames,
through zero-padding of the input); ``align=False`` gives openSMILE's native framing.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from featcache.audio import check_signal
from featcache.errors import AudioError, ModelError, ParameterError
from featcache.extractors._limits import MAX_SAMPLING_RATE, library_versions, make_smile, positive_int
from featcache.extractors.base import Extractor

__all__ = ["EGEMAPS_COLUMNS", "EGeMAPS"]


EGEMAPS_COLUMNS: dict[str, tuple[str, ...]] = {
    "eGeMAPSv02": (
        "Loudness_sma3",
        "alphaRatio_sma3",
        "hammarbergIndex_sma3",
        "slope0-500_sma3",
        "slope500-1500_sma3",
        "spectralFlux_sma3",
        "mfcc1_sma3",
        "mfcc2_sma3",
        "mfcc3_sma3",
        "mfcc4_sma3",
        "F0semitoneFrom27.5Hz_sma3nz",
        "jitterLocal_sma3nz",
        "shimmerLocaldB_sma3nz",
        "HNRdBACF_sma3nz",
        "logRelF0-H1-H2_sma3nz",
        "logRelF0-H1-A3_sma3nz",
        "F1frequency_sma3nz",
        "F1bandwidth_sma3nz",
        "F1amplitudeLogRelF0_sma3nz",
        "F2frequency_sma3nz",
        "F2bandwidth_sma3nz",
        "F2amplitudeLogRelF0_sma3nz",
        "F3frequency_sma3nz",
        "F3bandwidth_sma3nz",
        "F3amplitudeLogRelF0_sma3nz",
    ),
}


class EGeMAPS(Extractor):
    """eGeMAPS low-level descriptors from openSMILE: 25 LLDs at 100 frames/s.

    ``opensmile.Smile(feature_set=eGeMAPSv02, feature_level=LowLevelDescriptors)``; the
    names of the 25 columns are in :attr:`columns`. The ``Smile`` object is created on
    first use and dropped when pickling, so the extractor can be sent to worker
    processes.

    Framing. openSMILE's own frames start at ``i * 10`` ms and its 20 ms frames (energy
    and spectral LLDs) are centred at ``i * 10 + 10`` ms; an input of ``d`` ms natively
    gives ``1 + (d - 50) // 10`` frames (96 for 1 s). With ``align=True`` (default) the
    input is zero-padded by 10 ms before and 40 ms after, so that frame ``i`` is centred
    at ``i * 10`` ms and a signal of ``n`` samples gives ``1 + n // hop_length`` frames
    (101 for 1 s at 16 kHz), exactly like the librosa extractors: eGeMAPS frames line up
    with MFCC / log-mel / spectrogram frames. ``align=False`` keeps openSMILE's native
    framing. Note that openSMILE computes the pitch-based LLDs (F0, jitter, shimmer, HNR,
    H1-H2, H1-A3, formants) on 60 ms windows that lag the 20 ms frames by about 20 ms
    either way.

    Inputs shorter than 60 ms (one pitch window, :meth:`min_samples`) raise
    :class:`~featcache.errors.AudioError`. Samples are clipped to ``[-1, 32767/32768]``
    before openSMILE converts them to 16-bit integers (a full-scale ``+1.0`` would
    otherwise wrap around to -32768).
    """

    name = "egemaps"
    min_ms = 60.0

    init_params = ("feature_set", "sampling_rate", "align")

    def __init__(
        self, feature_set: str = "eGeMAPSv02", sampling_rate: int = 16000, align: bool = True
    ) -> None:
        if not isinstance(feature_set, str) or feature_set not in EGEMAPS_COLUMNS:
            raise ParameterError("feature_set", f"one of {sorted(EGEMAPS_COLUMNS)}", feature_set)
        self.feature_set = feature_set
        self.sampling_rate = positive_int("sampling_rate", sampling_rate, MAX_SAMPLING_RATE)
        if self.sampling_rate % 100 != 0:
            raise ParameterError(
                "sampling_rate", "a multiple of 100 Hz (10 ms must be whole samples)", sampling_rate
            )
        if not isinstance(align, (bool, np.bool_)):
            raise ParameterError("align", "True or False", align)
        self.align = bool(align)
        self.store_name = self.name
        self.frame_rate = 100.0
        self.hop_ms = 10.0
        self.hop_length = self.sampling_rate // 100
        self.n_layers = 1
        self.columns: list[str] = list(EGEMAPS_COLUMNS[feature_set])
        self.dim = len(self.columns)
        self.dtype = np.dtype("float32")
        self._smile = None

    # -- openSMILE object, created lazily, never pickled ---------------------------------
    @property
    def smile(self):
        """The ``opensmile.Smile`` object (created on first use)."""
        if self._smile is None:
            smile = make_smile(self.feature_set, "LowLevelDescriptors")
            if list(smile.feature_names) != self.columns:
                raise ModelError(
                    f"openSMILE {self.feature_set} returns columns {smile.feature_names}, "
                    f"expected {self.columns}"
                )
            self._smile = smile
        return self._smile

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_smile"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._smile = None

    def __repr__(self) -> str:
        return (
            f"EGeMAPS(feature_set={self.feature_set!r}, sampling_rate={self.sampling_rate}, "
            f"align={self.align})"
        )

    # -- protocol ------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "feature_level": "lld",
            "sampling_rate": int(self.sampling_rate),
            "hop_ms": self.hop_ms,
            "align": self.align,
            "center": self.align,
            "pad_ms": [10.0, 40.0] if self.align else [0.0, 0.0],
            "clip": [-1.0, 32767 / 32768],
        }

    def versions(self) -> dict[str, str]:
        return library_versions("opensmile", "numpy")

    def min_samples(self) -> int:
        return int(math.ceil(self.min_ms * self.sampling_rate / 1000.0))

    def n_frames(self, n_samples: int) -> int:
        """Number of frames returned for a signal of ``n_samples`` (>= :meth:`min_samples`)."""
        n = int(n_samples)
        if self.align:
            return 1 + n // self.hop_length
        return 1 + (n - 5 * self.hop_length) // self.hop_length

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        self._check_rate(sampling_rate)
        x = check_signal(signal)
        if x.shape[0] < self.min_samples():
            raise AudioError(
                "<signal>",
                f"shorter than the extractor's minimum of {self.min_ms:g} ms "
                f"({x.shape[0]} < {self.min_samples()} samples at {self.sampling_rate} Hz)",
            )
        n = x.shape[0]
        x = np.clip(x, -1.0, 32767.0 / 32768.0)
        if self.align:
            x = np.pad(x, (self.hop_length, 4 * self.hop_length), mode="constant")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            frame = self.smile.process_signal(x, self.sampling_rate)
        out = np.ascontiguousarray(frame.to_numpy(), dtype=np.float32)
        expected = self.n_frames(n)
        if out.shape[0] > expected:
            out = out[:expected]
        if out.shape[0] == 0 or not np.isfinite(out).all():
            raise AudioError("<signal>", "openSMILE returned no frames or non-finite values")
        return out
