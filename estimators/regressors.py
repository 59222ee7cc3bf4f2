"""Regressors for dimensional targets (arousal, valence, dominance...): Dense, LSTM and ECAPA heads.

Targets are standardised internally (per output) and predictions mapped back; the CCC is
unchanged by that (it is invariant to one affine map applied to both sides), the MSE is
computed in standardised units.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import RegressorMixin
from sklearn.utils import check_array

from ._arch import ECAPA_PARAMS_DOC, FRAME_PARAMS_DOC, MAX_FRAMES_DOC, SHARED_PARAMS_DOC, DenseArch, ECAPAArch, LSTMArch
from ._base import BaseSequenceEstimator
from .errors import ParameterError, TargetError
from .metrics import ccc_loss

__all__ = ["DenseRegressor", "LSTMRegressor", "ECAPARegressor"]

_LOSS_DOC = """\
    loss : {"ccc", "mse"}, default="ccc"
        ``"ccc"``: 1 - concordance correlation coefficient computed over the batch and
        averaged over outputs (Nguyen et al.); ``"mse"``: mean squared error of the
        standardised targets. Early stopping monitors the same loss on the validation
        set (CCC over the whole validation set)."""

_ATTRIBUTES_DOC = """
    Attributes
    ----------
    n_outputs_ : int
    y_mean_, y_scale_ : ndarray of shape (n_outputs,)
        Standardisation of the targets.
    n_features_in_, n_layers_in_, input_shapes_, stream_ratios_, feature_info_,
    layer_weights_, stream_layer_weights_, best_epoch_, n_epochs_, validation_index_, module_, module_config_
        As for the classifiers.
    history_ : list of dict
        ``epoch``, ``train_loss``, ``valid_loss``, ``valid_score`` (CCC, mean over
        outputs), ``dur``, ``best``.
"""


class _RegressorBase(RegressorMixin, BaseSequenceEstimator):
    _stratify = False

    def _check_params(self) -> None:
        super()._check_params()
        if self.loss not in ("ccc", "mse"):
            raise ParameterError("loss", "'ccc' or 'mse'", self.loss)

    def _check_y(self, y: Any, n: int, name: str) -> np.ndarray:
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name=name)
        if y.ndim not in (1, 2):
            raise TargetError(f"{name} must have shape (n,) or (n, n_outputs); got {y.shape}")
        if len(y) != n:
            raise TargetError(f"X has {n} utterances but {name} has {len(y)} rows")
        return y

    def _prepare_targets(self, y: Any, n: int) -> np.ndarray:
        y = self._check_y(y, n, "y")
        Y = y.reshape(len(y), -1)
        self.n_outputs_ = int(Y.shape[1])
        self.y_ndim_ = int(y.ndim)
        self.y_mean_ = Y.mean(axis=0)
        scale = Y.std(axis=0)
        self.y_scale_ = np.where(scale > 1e-12, scale, 1.0)
        return (Y - self.y_mean_) / self.y_scale_

    def _encode_targets(self, y: Any, n: int) -> np.ndarray:
        y = self._check_y(y, n, "y_val")
        Y = y.reshape(len(y), -1)
        if Y.shape[1] != self.n_outputs_:
            raise TargetError(f"y_val has {Y.shape[1]} outputs, y has {self.n_outputs_}")
        return (Y - self.y_mean_) / self.y_scale_

    def _targets_tensor(self, targets: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(targets, dtype=torch.float32, device=device)

    def _n_outputs(self) -> int:
        return self.n_outputs_

    def _compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss == "ccc":
            return ccc_loss(outputs, targets)
        return F.mse_loss(outputs.float(), targets)

    def _valid_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(1.0 - ccc_loss(outputs, targets))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : FeatureSet-like, Packed, list of ndarray or array-like
            As in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n,) or (n, n_outputs)
            The shape of ``y`` given to :meth:`fit`.
        """
        out = self._outputs(X)
        out = out * self.y_scale_ + self.y_mean_
        return out.ravel() if self.y_ndim_ == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


#: public name of the shared base (targets, loss, outputs), reused by estimators.finetune
RegressorBase = _RegressorBase


class DenseRegressor(DenseArch, _RegressorBase):
    __doc__ = f"""Per-frame dense network with pooling over time, for (multi-output) regression.

    Same network as :class:`DenseClassifier` with ``n_outputs`` linear outputs.

    Parameters
    ----------
{_LOSS_DOC}
{SHARED_PARAMS_DOC}
{FRAME_PARAMS_DOC}
{MAX_FRAMES_DOC}
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        loss: str = "ccc",
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
        average_checkpoints: int | None = None,
        memory_budget: int | str = "auto",
    ) -> None:
        self.loss = loss
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
        self.average_checkpoints = average_checkpoints
        self.memory_budget = memory_budget


class LSTMRegressor(LSTMArch, _RegressorBase):
    __doc__ = f"""Dense + LSTM network with pooling over time, for (multi-output) regression.

    Same network as :class:`LSTMClassifier` with ``n_outputs`` linear outputs.

    Parameters
    ----------
{_LOSS_DOC}
{SHARED_PARAMS_DOC}
{FRAME_PARAMS_DOC}
{MAX_FRAMES_DOC}
    bidirectional : bool, default=False
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        loss: str = "ccc",
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
        average_checkpoints: int | None = None,
        memory_budget: int | str = "auto",
    ) -> None:
        self.loss = loss
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
        self.average_checkpoints = average_checkpoints
        self.memory_budget = memory_budget


class ECAPARegressor(ECAPAArch, _RegressorBase):
    __doc__ = f"""ECAPA-TDNN over frame features, for (multi-output) regression.

    Same network as :class:`estimators.ECAPAClassifier` with ``n_outputs`` linear outputs.

    Parameters
    ----------
{_LOSS_DOC}
{SHARED_PARAMS_DOC}
{ECAPA_PARAMS_DOC}
{MAX_FRAMES_DOC}
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        loss: str = "ccc",
        layer_weighting: str | None = "sum",
        channels: int = 64,
        scale: int = 4,
        embedding_size: int = 64,
        bottleneck: int | None = None,
        fusion: str = "early",
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
        average_checkpoints: int | None = None,
        memory_budget: int | str = "auto",
    ) -> None:
        self.loss = loss
        self.layer_weighting = layer_weighting
        self.channels = channels
        self.scale = scale
        self.embedding_size = embedding_size
        self.bottleneck = bottleneck
        self.fusion = fusion
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
        self.average_checkpoints = average_checkpoints
        self.memory_budget = memory_budget
