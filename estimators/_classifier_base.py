"""What every classifier shares: label encoding, cross-entropy, probabilities, scores."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._base import BaseSequenceEstimator
from .errors import TargetError

__all__ = ["ATTRIBUTES_DOC", "ClassifierBase"]


ATTRIBUTES_DOC = """
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
        Frame-rate ratio of every stream to the coarsest stream.
    feature_info_ : dict
        ``X.describe()`` for a FeatureSet, else a summary of the stream shapes.
    layer_weights_ : ndarray of shape (n_layers,)
        Normalised layer weights of stream 0 (only when it has more than one layer).
    stream_layer_weights_ : list of (ndarray or None)
        Normalised layer weights of every stream (None for single-layer streams).
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


class ClassifierBase(ClassifierMixin, BaseSequenceEstimator):
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


#: public name of the shared base (targets, loss, outputs), reused by estimators.finetune
