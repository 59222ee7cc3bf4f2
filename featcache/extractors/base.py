"""The extractor protocol.

An extractor is a small callable ``(signal, sampling_rate) -> array`` with a name, its
parameters and the shape of what it returns. Files, corpora and shards are orchestrated
elsewhere (:mod:`featcache.pipeline`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Extractor(ABC):
    """Base class of every feature extractor.

    Attributes
    ----------
    name : str
        Short name of the extractor kind (``"mfcc"``, ``"logmel"``, ``"spectrogram"``,
        ``"egemaps"``, ``"ssl"``).
    store_name : str
        Name of the store folder this extractor writes to inside a corpus cache
        (``"mfcc"``, ``"wav2vec_small"``...).
    sampling_rate : int
        Rate (Hz) the extractor wants its input at; the pipeline resamples to it.
    frame_rate : float
        Output frames per second.
    n_layers : int
        Number of layers returned (1 for handcrafted features, ``num_hidden_layers + 1``
        for self-supervised models).
    dim : int
        Feature dimension per frame and layer.
    dtype : numpy dtype
        dtype the store keeps the features in.
    """

    name: str = "extractor"
    store_name: str = "extractor"
    sampling_rate: int = 16000
    frame_rate: float = 100.0
    n_layers: int = 1
    dim: int = 0
    dtype: np.dtype = np.dtype("float32")

    #: the keys of :meth:`params` that are constructor arguments (the others follow from them)
    init_params: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, params: dict[str, Any], **context: Any) -> "Extractor":
        """Rebuild the extractor whose :meth:`params` a store recorded.

        Parameters
        ----------
        params : dict
            ``params()`` as recorded (``store.json``, a model's ``preprocessing.json``).
        **context
            What is not a parameter of the features (a device); ignored here.

        Raises
        ------
        ParameterError
            ``params`` is not a dict, a value is refused by the constructor, or the rebuilt
            extractor's parameters differ from the recorded ones
            (:func:`featcache.params.param_differences`, the one rule for "same features").
        """
        from featcache.errors import ParameterError

        if not isinstance(params, dict):
            raise ParameterError(f"{cls.name} parameters", "a dict", params)
        obj = cls(**{k: params[k] for k in cls.init_params if k in params})
        obj.check_params(params)
        return obj

    def check_params(self, recorded: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
        """Refuse (:class:`ParameterError`) when :meth:`params` differ from ``recorded``."""
        from featcache.errors import ParameterError
        from featcache.params import param_differences

        diff = param_differences(recorded, self.params(), ignore=ignore)
        if diff:
            raise ParameterError(
                f"{self.name} extractor",
                "rebuilt with the parameters recorded (left: recorded, right: rebuilt)",
                "; ".join(map(str, diff)),
            )

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """All parameters that change the output, JSON-serialisable.

        Two extractors with equal ``params()`` produce equal features; the store refuses
        to mix features made with different parameters.
        """

    def versions(self) -> dict[str, str]:
        """Versions of the libraries that compute the features (recorded in the store)."""
        return {}

    def min_samples(self) -> int:
        """Shortest input (in samples at :attr:`sampling_rate`) that yields at least one frame."""
        return 1

    @abstractmethod
    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Extract features from one mono signal.

        Parameters
        ----------
        signal : ndarray of shape (n_samples,), float32
            Mono waveform in [-1, 1] at ``sampling_rate``.
        sampling_rate : int
            Must equal :attr:`sampling_rate`; anything else raises
            :class:`~featcache.errors.ParameterError`.

        Returns
        -------
        ndarray of shape (n_frames, dim) when ``n_layers == 1``, or
        (n_layers, n_frames, dim) otherwise.
        """

    def batch(self, signals: list[np.ndarray], sampling_rate: int) -> list[np.ndarray]:
        """Extract features from several signals; equal to calling the extractor on each.

        Subclasses override this where batching is faster (self-supervised models).
        """
        return [self(s, sampling_rate) for s in signals]

    def describe(self) -> dict[str, Any]:
        """What the store records about this extractor (its attributes and parameters)."""
        return {
            "name": self.name,
            "store_name": self.store_name,
            "sampling_rate": int(self.sampling_rate),
            "frame_rate": float(self.frame_rate),
            "n_layers": int(self.n_layers),
            "dim": int(self.dim),
            "dtype": np.dtype(self.dtype).name,
            "params": self.params(),
            "versions": self.versions(),
        }

    def _check_rate(self, sampling_rate: int) -> None:
        from featcache.errors import ParameterError

        if int(sampling_rate) != int(self.sampling_rate):
            raise ParameterError(
                "sampling_rate", f"{self.sampling_rate} (resample first)", sampling_rate
            )
