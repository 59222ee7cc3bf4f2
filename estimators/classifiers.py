"""Classifiers: Dense, LSTM, CNN, Fusion and ECAPA-TDNN heads over frame-level features."""

from __future__ import annotations

from typing import Any, Callable

from ._arch import (
    ECAPA_PARAMS_DOC,
    FRAME_PARAMS_DOC,
    FUSION_PARAMS_DOC,
    MAX_FRAMES_DOC,
    SHARED_PARAMS_DOC,
    CNNArch,
    DenseArch,
    ECAPAArch,
    FusionArch,
    LSTMArch,
)
from ._classifier_base import ATTRIBUTES_DOC, ClassifierBase

__all__ = ["DenseClassifier", "LSTMClassifier", "CNNClassifier", "FusionClassifier", "ECAPAClassifier"]

class DenseClassifier(DenseArch, ClassifierBase):
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
{ATTRIBUTES_DOC}"""

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
        average_checkpoints: int | None = None,
        memory_budget: int | str = "auto",
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
        self.average_checkpoints = average_checkpoints
        self.memory_budget = memory_budget


class LSTMClassifier(LSTMArch, ClassifierBase):
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
{ATTRIBUTES_DOC}"""

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
        average_checkpoints: int | None = None,
        memory_budget: int | str = "auto",
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
        self.average_checkpoints = average_checkpoints
        self.memory_budget = memory_budget


class CNNClassifier(CNNArch, ClassifierBase):
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
{ATTRIBUTES_DOC}"""

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
        average_checkpoints: int | None = None,
        memory_budget: int | str = "auto",
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
        self.average_checkpoints = average_checkpoints
        self.memory_budget = memory_budget


class FusionClassifier(FusionArch, ClassifierBase):
    __doc__ = f"""Fusion of two or more aligned streams with dense heads (Pepino et al. 2021, "Fusion").

    E.g. wav2vec2 (all layers, weighted average) + eGeMAPS LLDs (``all_layers+egemaps``),
    or two upstreams (``wav2vec_small:all_layers+hubert_base:all_layers``), each stream
    with its own layer weights. ``fusion`` chooses where the streams meet: per-frame
    branches concatenated (``"intermediate"``, the default: a dense layer ``hidden_sizes[0]``
    per stream, then ``hidden_sizes[1:]``, pooling, linear output), the frames themselves
    (``"early"``) or the pooled embeddings of one dense head per stream (``"late"``).

    Streams whose ``frame_rate`` is an integer multiple ``r`` of the coarsest stream's
    (eGeMAPS at 100 frames/s next to wav2vec2 at 50) are averaged over groups of ``r``
    consecutive frames; then every utterance is trimmed to its shortest stream. With a
    single stream (e.g. a plain array) the model reduces to :class:`DenseClassifier`.

    Parameters
    ----------
{SHARED_PARAMS_DOC}
{FRAME_PARAMS_DOC}
{MAX_FRAMES_DOC}
{FUSION_PARAMS_DOC}
{ATTRIBUTES_DOC}"""

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
        fusion: str = "intermediate",
        device: str = "auto",
        precision: str = "fp32",
        random_state: Any = None,
        verbose: int = 0,
        callbacks: list[Callable] | None = None,
        average_checkpoints: int | None = None,
        memory_budget: int | str = "auto",
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
        self.fusion = fusion
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.average_checkpoints = average_checkpoints
        self.memory_budget = memory_budget


class ECAPAClassifier(ECAPAArch, ClassifierBase):
    __doc__ = f"""ECAPA-TDNN over frame features (Desplanques et al. 2020; the aggregator of Morais et al.).

    The frames (the trainable weighted average of the layers of each stream), a first
    Conv1D, three SE-Res2Net blocks (dilations 2, 3, 4), multi-layer feature aggregation,
    channel- and context-dependent attentive statistics pooling, a linear embedding, a
    linear classifier (softmax in :meth:`predict_proba`); see :mod:`estimators._ecapa`.
    Batches are zero-padded per batch with a mask: batch normalisation, means and the
    attention use real frames only (an utterance's prediction does not depend on its
    batch); convolutions see zeros beyond the ends of an utterance. The defaults are sized
    for a CPU; the paper's setting is ``channels=512, scale=8, embedding_size=192``
    (``bottleneck`` 128).

    Parameters
    ----------
{SHARED_PARAMS_DOC}
{ECAPA_PARAMS_DOC}
{MAX_FRAMES_DOC}
{ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
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
