"""Classifiers: Dense, LSTM, CNN and Fusion heads over frame-level features."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._arch import FRAME_PARAMS_DOC, MAX_FRAMES_DOC, SHARED_PARAMS_DOC, CNNArch, DenseArch, FusionArch, LSTMArch
from ._base import BaseSequenceEstimator
from .errors import TargetError

__all__ = ["DenseClassifier", "LSTMClassifier", "CNNClassifier", "FusionClassifier"]

_ATTRIBUTES_DOC = """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Feature dimension of the first stream.
    n_layers_in_ : int
        Layers of the first stream.
    input_shapes_ : list of [n_layers, dim]
        Per stream.
    stream_ratios_ : list of int
        Frame-rate ratio of every stream to stream 0.
    feature_info_ : dict
        ``X.describe()`` for a FeatureSet, else a summary of the stream shapes.
    layer_weights_ : ndarray of shape (n_layers,)
        Normalised layer weights of stream 0 (only when it has more than one layer).
    history_ : list of dict
        One record per epoch: ``epoch`` (1-based), ``train_loss``, ``valid_loss``
        (cross-entropy), ``valid_score`` (accuracy), ``dur`` (seconds), ``best``.
    best_epoch_ : int
        Epoch whose weights were kept (the last one without validation).
    n_epochs_ : int
        Epochs trained.
    validation_index_ : ndarray or None
        Positions in ``X`` of the internal validation utterances.
    module_ : torch.nn.Module
    module_config_ : dict
        JSON-able description of ``module_`` (see :mod:`estimators.persist`).
"""


class _ClassifierBase(ClassifierMixin, BaseSequenceEstimator):
    _stratify = True

    def _prepare_targets(self, y: Any, n: int) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        if len(y) != n:
            raise TargetError(f"X has {n} utterances but y has {len(y)} labels")
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise TargetError(
                f"{type(self).__name__} needs utterances of 2 or more classes; got 1 class "
                f"({self.classes_[0]!r})"
            )
        return encoded.astype(np.int64)

    def _encode_targets(self, y: Any, n: int) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        if len(y) != n:
            raise TargetError(f"X_val has {n} utterances but y_val has {len(y)} labels")
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        unknown = self.classes_[idx] != y
        if unknown.any():
            raise TargetError(f"y_val has labels not in y: {sorted(set(np.asarray(y)[unknown].tolist()))[:10]}")
        return idx.astype(np.int64)

    def _targets_tensor(self, targets: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(targets, dtype=torch.long, device=device)

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def _valid_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float((outputs.argmax(1) == targets).float().mean())

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        X : FeatureSet-like, Packed, list of ndarray or array-like
            As in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n, n_classes)
            Columns in the order of ``classes_``.
        """
        return softmax(self._outputs(X), axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`, shape (n, n_classes)."""
        from scipy.special import log_softmax

        return log_softmax(self._outputs(X), axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of every utterance, shape (n,)."""
        outputs = self._outputs(X)
        return self.classes_[np.argmax(outputs, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of :meth:`predict` on ``X`` against ``y``.

        Labels of ``y`` that were not seen at fit can never be predicted: they count as
        errors, and a UserWarning names them.
        """
        check_is_fitted(self, "module_")
        unseen = sorted(set(np.asarray(column_or_1d(y, warn=True)).tolist()) - set(self.classes_.tolist()), key=str)
        if unseen:
            warnings.warn(
                f"y holds label(s) {unseen[:10]} not seen at fit (classes_: {self.classes_.tolist()}); "
                "they can never be predicted and count as errors",
                UserWarning,
                stacklevel=2,
            )
        return super().score(X, y, sample_weight)


class DenseClassifier(DenseArch, _ClassifierBase):
    __doc__ = f"""Per-frame dense network with pooling over time (Pepino et al. 2021).

    Optional trainable weighted average of the layers, ``len(hidden_sizes)`` per-frame
    dense layers (ReLU, dropout; kernel-1 convolutions), pooling over the frames of each
    utterance (computed on packed frames, no padding), a linear output; softmax in
    :meth:`predict_proba`. Trained with Adam on cross-entropy, early stopping on the
    validation loss.

    Parameters
    ----------
{SHARED_PARAMS_DOC}
{FRAME_PARAMS_DOC}
{MAX_FRAMES_DOC}
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        layer_weighting: str | None = "sum",
        pooling: str = "mean",
        hidden_sizes: tuple[int, ...] = (128, 128),
        dropout: float = 0.2,
        lr: float = 1e-3,
        batch_size: int = 32,
        max_epochs: int = 100,
        patience: int = 4,
        validation_fraction: float | None = 0.1,
        max_frames: int | None = None,
        device: str = "auto",
        precision: str = "fp32",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list[Callable] | None = None,
    ) -> None:
        self.layer_weighting = layer_weighting
        self.pooling = pooling
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_frames = max_frames
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks


class LSTMClassifier(LSTMArch, _ClassifierBase):
    __doc__ = f"""Dense + LSTM network with pooling over time (Pepino et al. 2021, "LSTM").

    Like :class:`DenseClassifier` with the last per-frame dense layer replaced by an LSTM:
    dense layers ``hidden_sizes[:-1]``, then an LSTM with ``hidden_sizes[-1]`` units per
    direction (run on zero-padded batches; padding never reaches a real frame), dropout, pooling,
    linear output.

    Parameters
    ----------
{SHARED_PARAMS_DOC}
{FRAME_PARAMS_DOC}
{MAX_FRAMES_DOC}
    bidirectional : bool, default=False
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        layer_weighting: str | None = "sum",
        pooling: str = "mean",
        hidden_sizes: tuple[int, ...] = (128, 128),
        bidirectional: bool = False,
        dropout: float = 0.2,
        lr: float = 1e-3,
        batch_size: int = 32,
        max_epochs: int = 100,
        patience: int = 4,
        validation_fraction: float | None = 0.1,
        max_frames: int | None = None,
        device: str = "auto",
        precision: str = "fp32",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list[Callable] | None = None,
    ) -> None:
        self.layer_weighting = layer_weighting
        self.pooling = pooling
        self.hidden_sizes = hidden_sizes
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_frames = max_frames
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks


class CNNClassifier(CNNArch, _ClassifierBase):
    __doc__ = f"""2-D CNN over the (frames x features) map (Dholariya et al.).

    Layers combined first (for layered input), every utterance zero-padded / cropped to
    ``max_frames`` frames, then ``n_blocks`` x [Conv2d(``n_filters``, ``kernel_size``,
    same padding), BatchNorm, ReLU, MaxPool(2, 2) (ceil mode), Dropout], flatten, dense
    ``dense_size``, dropout, BatchNorm, ReLU, linear output (softmax in
    :meth:`predict_proba`).

    Parameters
    ----------
{SHARED_PARAMS_DOC}
    max_frames : int, default=250
        Frames of the map (first ``max_frames`` frames, zero padding). Required.
    n_filters : int, default=32
    kernel_size : (int, int), default=(4, 10)
        (frames, features).
    n_blocks : int, default=4
    dense_size : int, default=64
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        layer_weighting: str | None = "sum",
        max_frames: int = 250,
        n_filters: int = 32,
        kernel_size: tuple[int, int] = (4, 10),
        n_blocks: int = 4,
        dense_size: int = 64,
        dropout: float = 0.2,
        lr: float = 1e-3,
        batch_size: int = 32,
        max_epochs: int = 100,
        patience: int = 4,
        validation_fraction: float | None = 0.1,
        device: str = "auto",
        precision: str = "fp32",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list[Callable] | None = None,
    ) -> None:
        self.layer_weighting = layer_weighting
        self.max_frames = max_frames
        self.n_filters = n_filters
        self.kernel_size = kernel_size
        self.n_blocks = n_blocks
        self.dense_size = dense_size
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks


class FusionClassifier(FusionArch, _ClassifierBase):
    __doc__ = f"""Fusion of several aligned streams (Pepino et al. 2021, "Fusion").

    Stream 0 is typically wav2vec2 (all layers, weighted average) and stream 1 eGeMAPS
    LLDs (one layer). Every stream gets its own per-frame dense layer
    (``hidden_sizes[0]``, ReLU, dropout); the per-frame outputs are concatenated, then
    go through the dense layers ``hidden_sizes[1:]``, pooling and a linear output.

    Streams whose ``frame_rate`` is an integer multiple ``r`` of stream 0's (eGeMAPS at
    100 frames/s next to wav2vec2 at 50) are averaged over groups of ``r`` consecutive
    frames; then every utterance is trimmed to its shortest stream. With a single stream
    (e.g. a plain array) the model reduces to :class:`DenseClassifier`.

    Parameters
    ----------
{SHARED_PARAMS_DOC}
{FRAME_PARAMS_DOC}
{MAX_FRAMES_DOC}
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        layer_weighting: str | None = "sum",
        pooling: str = "mean",
        hidden_sizes: tuple[int, ...] = (128, 128),
        dropout: float = 0.2,
        lr: float = 1e-3,
        batch_size: int = 32,
        max_epochs: int = 100,
        patience: int = 4,
        validation_fraction: float | None = 0.1,
        max_frames: int | None = None,
        device: str = "auto",
        precision: str = "fp32",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list[Callable] | None = None,
    ) -> None:
        self.layer_weighting = layer_weighting
        self.pooling = pooling
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_frames = max_frames
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
