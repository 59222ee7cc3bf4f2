"""Utterance-level openSMILE functionals: one feature vector per utterance.

``egemaps_functionals`` (eGeMAPSv02, 88 features; Eyben et al. 2016) and
``compare_functionals`` (ComParE 2016, 6373 features; Schuller et al. 2016) are the
classic inputs of a StandardScaler + SVC baseline. Their stores hold exactly one frame
per utterance (``n_frames = 1``, ``n_layers = 1``), so every reader path works unchanged:
``cache.select("egemaps_functionals", pooled="mean")`` is a plain ``(n, 88)`` array (the
mean of one frame is the frame), a FeatureSet of them is normalised per speaker or
globally by the same normalisers as frame features, and mean pooling is the identity.

``frame_rate`` is nominal (1 frame/s): a functional vector summarises the whole
utterance, so it has no time axis to align with frame-level streams.
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

__all__ = ["FUNCTIONALS", "ComParEFunctionals", "EGeMAPSFunctionals", "Functionals"]


class Functionals(Extractor):
    """openSMILE functionals of a feature set over the whole signal: shape ``(1, dim)``.

    ``opensmile.Smile(feature_set=..., feature_level=Functionals)`` on the whole signal
    (after the pipeline's cropping, ``max_seconds``). The ``Smile`` object is created on
    first use and dropped when pickling. Samples are clipped to ``[-1, 32767/32768]``
    before openSMILE converts them to 16-bit integers, as for the eGeMAPS LLDs.

    Inputs shorter than :attr:`min_ms` (100 ms) raise :class:`~featcache.errors.AudioError`:
    openSMILE fills the functionals of shorter segments with NaN. Any non-finite output
    is refused the same way, so a store never holds NaN.

    Parameters
    ----------
    sampling_rate : int
        Rate (Hz) of the signals given to openSMILE (the pipeline resamples to it).
    """

    name = "functionals"
    feature_set = ""
    n_features = 0
    min_ms = 100.0
    init_params = ("sampling_rate",)

    def __init__(self, sampling_rate: int = 16000) -> None:
        self.sampling_rate = positive_int("sampling_rate", sampling_rate, MAX_SAMPLING_RATE)
        if self.sampling_rate < 8000:
            raise ParameterError("sampling_rate", "at least 8000 Hz (openSMILE's pitch and spectral features)", sampling_rate)
        self.store_name = self.name
        self.frame_rate = 1.0  # nominal: one vector per utterance
        self.n_layers = 1
        self.dim = self.n_features
        self.dtype = np.dtype("float32")
        self._smile = None
        self.columns: list[str] | None = None

    @property
    def smile(self):
        """The ``opensmile.Smile`` object (created on first use)."""
        if self._smile is None:
            smile = make_smile(self.feature_set, "Functionals")
            if len(smile.feature_names) != self.n_features:
                raise ModelError(
                    f"openSMILE {self.feature_set} functionals has {len(smile.feature_names)} columns, "
                    f"expected {self.n_features}"
                )
            self.columns = list(smile.feature_names)
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
        return f"{type(self).__name__}(sampling_rate={self.sampling_rate})"

    def params(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "feature_level": "functionals",
            "sampling_rate": int(self.sampling_rate),
            "n_features": int(self.n_features),
            "clip": [-1.0, 32767 / 32768],
        }

    def versions(self) -> dict[str, str]:
        return library_versions("opensmile", "numpy")

    def min_samples(self) -> int:
        return int(math.ceil(self.min_ms * self.sampling_rate / 1000.0))

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Functionals of one signal.

        Returns
        -------
        ndarray of shape (1, dim), float32
        """
        self._check_rate(sampling_rate)
        x = check_signal(signal)
        if x.shape[0] < self.min_samples():
            raise AudioError(
                "<signal>",
                f"shorter than the extractor's minimum of {self.min_ms:g} ms "
                f"({x.shape[0]} < {self.min_samples()} samples at {self.sampling_rate} Hz)",
            )
        x = np.clip(x, -1.0, 32767.0 / 32768.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "segment too short": refused below
            frame = self.smile.process_signal(x, self.sampling_rate)
        out = np.ascontiguousarray(frame.to_numpy(), dtype=np.float32).reshape(-1, self.n_features)
        if out.shape[0] != 1 or not np.isfinite(out).all():
            raise AudioError("<signal>", f"openSMILE returned {out.shape[0]} row(s) or non-finite {self.feature_set} functionals")
        return out


class EGeMAPSFunctionals(Functionals):
    """eGeMAPSv02 functionals: 88 utterance-level features (store ``egemaps_functionals``)."""

    name = "egemaps_functionals"
    feature_set = "eGeMAPSv02"
    n_features = 88


class ComParEFunctionals(Functionals):
    """ComParE 2016 functionals: 6373 utterance-level features (store ``compare_functionals``)."""

    name = "compare_functionals"
    feature_set = "ComParE_2016"
    n_features = 6373


#: ``--features`` name (and recorded extractor name) -> class
FUNCTIONALS: dict[str, type[Functionals]] = {c.name: c for c in (EGeMAPSFunctionals, ComParEFunctionals)}
