"""Architecture mixins: how each estimator family configures its torch module.

Each mixin turns the estimator's parameters and fitted input shapes into the JSON-able
``module_config_`` understood by :func:`estimators._modules.build_module`.
"""

from __future__ import annotations

from typing import Any

from ._base import is_int
from ._ecapa import default_bottleneck
from .errors import InputError, ParameterError

__all__ = [
    "DenseArch", "LSTMArch", "CNNArch", "FusionArch", "ECAPAArch", "FUSIONS", "SHARED_PARAMS_DOC",
    "FRAME_PARAMS_DOC", "MAX_FRAMES_DOC", "FUSION_PARAMS_DOC", "ECAPA_PARAMS_DOC",
]

SHARED_PARAMS_DOC = """\
    layer_weighting : {"sum", "softmax"} or None, default="sum"
        How the layers of a multi-layer stream (e.g. the 13 wav2vec2 layers) are combined.
        ``"sum"``: trainable weights ``alpha`` initialised to 1.0,
        ``f = sum_i alpha_i f_i / sum_i alpha_i`` (Pepino et al. 2021); ``"softmax"``:
        weights initialised to 0 and normalised with a softmax (s3prl). None: no weighting;
        every stream must then have exactly one layer (an :class:`InputError` is raised
        otherwise). Single-layer streams are never weighted.
    dropout : float, default=0.2
    lr : float, default=1e-3
        Adam learning rate.
    batch_size : int, default=32
        Utterances per batch (training and prediction).
    max_epochs : int, default=100
    patience : int, default=4
        Early stopping: epochs without a lower validation loss before stopping; the
        weights of the best epoch are restored.
    validation_fraction : float or None, default=0.1
        Share of the training utterances held out for early stopping: whole speakers
        when the input carries speakers (a Packed with ``speakers`` or a FeatureSet),
        else a stratified (classifiers) random split. 0 or None: no early stopping, train
        ``max_epochs`` epochs. Ignored when ``fit`` gets ``X_val``/``y_val``.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    precision : {"fp32", "bf16"}, default="fp32"
        ``"bf16"`` runs the network under bfloat16 autocast (the layer average stays
        float32). On CPUs without native bfloat16 it is much slower.
    random_state : int, RandomState or None, default=None
        Seeds weight initialisation, dropout, shuffling and the validation split; with an
        int, two CPU fits give the same predictions. The global torch RNG is left as is.
    verbose : int, default=0
        Print one line per epoch when > 0.
    callbacks : list or None, default=None
        :class:`estimators.Callback` objects or callables ``f(estimator, record)``
        called after every epoch (``record`` is the new ``history_`` entry); returning
        True stops training.
    average_checkpoints : int or None, default=None
        N > 1: the final weights are the element-wise mean of those of the N epochs with
        the best validation score (the last N epochs without validation), as Morais et
        al. (2022) average checkpoints; see :class:`estimators.CheckpointAveraging`.
    memory_budget : int, str or "auto", default="auto"
        Memory the reading of a featcache FeatureSet may count on (bytes, or a size such as
        ``"2GB"``): when the selected frames fit, batches are uniformly random; when they do
        not, shards are streamed through a shuffle buffer of half the budget
        (:mod:`featcache.frames`). ``"auto"``: ``$FEATCACHE_MEMORY_BUDGET``, else half the
        available memory. Frames are read in place from the shards either way (never a
        per-process copy of the store); the choice is in ``data_access_``. Arrays given
        in memory are not affected."""

FRAME_PARAMS_DOC = """\
    pooling : {"mean", "max", "first", "last", "attentive"}, default="mean"
        Pooling of the frame outputs over time. ``"attentive"``: attentive statistics
        pooling (Okabe et al. 2018): a scoring network ``Linear(H, H), tanh, Linear(H, 1)``
        over the ``H`` frame outputs, softmax over the frames of each utterance, then the
        weighted mean and standard deviation (``2H`` values) go to the output layer.
    hidden_sizes : tuple of int, default=(128, 128)
        Sizes of the per-frame layers (see the class description)."""

MAX_FRAMES_DOC = """\
    max_frames : int or None, default=None
        Keep only the first ``max_frames`` frames of every utterance (the paper used 250
        for RAVDESS and 400 for IEMOCAP at 50 frames/s). None: all frames."""


class DenseArch:
    """Dense head: per-frame dense layers ``hidden_sizes``, pooling, linear output."""

    _min_hidden = 1

    def _module_config(self: Any) -> dict:
        return {
            "kind": "frame",
            "streams": [list(s) for s in self.input_shapes_],
            "weighting": self.layer_weighting,
            "branch_sizes": [int(h) for h in self.hidden_sizes],
            "trunk_sizes": [],
            "lstm_size": None,
            "bidirectional": False,
            "dropout": float(self.dropout),
            "pooling": self.pooling,
            "n_outputs": self._n_outputs(),
        }


class LSTMArch:
    """LSTM head: dense layers ``hidden_sizes[:-1]``, an LSTM of ``hidden_sizes[-1]``."""

    _min_hidden = 1

    def _module_config(self: Any) -> dict:
        hs = [int(h) for h in self.hidden_sizes]
        return {
            "kind": "frame",
            "streams": [list(s) for s in self.input_shapes_],
            "weighting": self.layer_weighting,
            "branch_sizes": hs[:-1],
            "trunk_sizes": [],
            "lstm_size": hs[-1],
            "bidirectional": bool(self.bidirectional),
            "dropout": float(self.dropout),
            "pooling": self.pooling,
            "n_outputs": self._n_outputs(),
        }


FUSIONS = ("intermediate", "early", "late")

FUSION_PARAMS_DOC = """\
    fusion : {"intermediate", "early", "late"}, default="intermediate"
        How several feature streams are combined (every stream always has its own layer
        weights; the streams' frames are aligned first: brought to the coarsest frame rate,
        trimmed to the shortest stream). ``"intermediate"`` (Pepino et al.): a dense layer
        ``hidden_sizes[0]`` per stream, frame outputs concatenated, dense ``hidden_sizes[1:]``,
        pooling. ``"early"``: the frames concatenated, then the dense layers
        ``hidden_sizes``, pooling. ``"late"``: per stream dense ``hidden_sizes`` and pooling;
        the pooled embeddings concatenated before the output layer. One stream: all three
        are :class:`DenseClassifier`."""


def _check_fusion(est: Any) -> None:
    if not isinstance(est.fusion, str) or est.fusion not in est._fusions:
        raise ParameterError("fusion", " or ".join(map(repr, est._fusions)), est.fusion)


def _check_batch_norm_sizes(est: Any, n_train: int | None = None) -> None:
    """Batch normalisation over utterances needs 2 or more in a training batch."""
    if n_train is None:
        if not is_int(est.batch_size, 2):
            raise ParameterError("batch_size", "an int >= 2 (batch normalisation)", est.batch_size)
    elif n_train < 2:
        raise InputError(
            f"{type(est).__name__} needs 2 or more training utterances (batch "
            f"normalisation); got {n_train} sample"
        )


def _late(est: Any, heads: list[dict]) -> dict:
    return {
        "kind": "late",
        "streams": [list(s) for s in est.input_shapes_],
        "weighting": est.layer_weighting,
        "dropout": float(est.dropout),
        "n_outputs": est._n_outputs(),
        "heads": heads,
    }


class FusionArch:
    """Fusion head over several streams: intermediate (default), early or late (see ``fusion``)."""

    _min_hidden = 1
    _max_streams = None
    _fusions = FUSIONS

    def _check_params(self: Any) -> None:
        super()._check_params()  # type: ignore[misc]
        _check_fusion(self)

    def _frame_config(self: Any, streams: list, branch: list[int], trunk: list[int], n_outputs: int | None) -> dict:
        return {
            "kind": "frame",
            "streams": [list(s) for s in streams],
            "weighting": self.layer_weighting,
            "branch_sizes": branch,
            "trunk_sizes": trunk,
            "lstm_size": None,
            "bidirectional": False,
            "dropout": float(self.dropout),
            "pooling": self.pooling,
            "n_outputs": n_outputs,
        }

    def _module_config(self: Any) -> dict:
        hs = [int(h) for h in self.hidden_sizes]
        shapes = self.input_shapes_
        if self.fusion == "late" and len(shapes) > 1:
            return _late(self, [self._frame_config([s], hs, [], None) for s in shapes])
        if self.fusion == "early":
            return self._frame_config(shapes, [], hs, self._n_outputs())
        return self._frame_config(shapes, hs[:1], hs[1:], self._n_outputs())


ECAPA_PARAMS_DOC = """\
    channels : int, default=64
        ``C``, the width of the convolutional layers (a multiple of ``scale``); the
        multi-layer aggregation has ``3C`` channels and the pooled statistics ``6C`` values.
        The paper uses 512 (or 1024).
    scale : int, default=4
        Res2Net groups of ``C / scale`` channels (the paper: 8).
    embedding_size : int, default=64
        Width of the utterance embedding before the output layer (the paper: 192).
    bottleneck : int or None, default=None
        Hidden units of the squeeze-excitation blocks and of the attention; None:
        ``C / 4`` within [8, 128] (128 for the paper's C = 512).
    fusion : {"early", "late"}, default="early"
        Several streams: ``"early"`` concatenates their aligned frames (each stream with its
        own layer weights) before one ECAPA-TDNN (Morais et al.'s best); ``"late"`` runs
        one ECAPA-TDNN per stream and concatenates the embeddings before the output layer.
        Ignored for one stream."""


class ECAPAArch:
    """ECAPA-TDNN head (:mod:`estimators._ecapa`), early or late fusion of several streams."""

    _max_streams = None
    _fusions = ("early", "late")

    def _check_params(self: Any) -> None:
        super()._check_params()  # type: ignore[misc]
        for name in ("channels", "scale", "embedding_size"):
            if not is_int(getattr(self, name)):
                raise ParameterError(name, "a positive int", getattr(self, name))
        if self.channels % self.scale:
            raise ParameterError("channels", f"a multiple of scale ({self.scale})", self.channels)
        if self.bottleneck is not None and not is_int(self.bottleneck):
            raise ParameterError("bottleneck", "None or a positive int", self.bottleneck)
        _check_fusion(self)
        _check_batch_norm_sizes(self)

    def _check_training_size(self: Any, n_train: int) -> None:
        _check_batch_norm_sizes(self, n_train)

    def _ecapa_config(self: Any, streams: list, n_outputs: int | None) -> dict:
        return {
            "kind": "ecapa",
            "streams": [list(s) for s in streams],
            "weighting": self.layer_weighting,
            "channels": int(self.channels),
            "scale": int(self.scale),
            "embedding_size": int(self.embedding_size),
            "bottleneck": int(default_bottleneck(self.channels) if self.bottleneck is None else self.bottleneck),
            "dropout": float(self.dropout),
            "n_outputs": n_outputs,
        }

    def _module_config(self: Any) -> dict:
        shapes = self.input_shapes_
        if self.fusion == "late" and len(shapes) > 1:
            return _late(self, [self._ecapa_config([s], None) for s in shapes])
        return self._ecapa_config(shapes, self._n_outputs())


class CNNArch:
    """CNN head (Dholariya et al.) over utterances padded/cropped to ``max_frames``."""

    _requires_max_frames = True

    def _check_params(self: Any) -> None:
        super()._check_params()  # type: ignore[misc]
        for name in ("n_filters", "n_blocks", "dense_size"):
            if not is_int(getattr(self, name)):
                raise ParameterError(name, "a positive int", getattr(self, name))
        ks = self.kernel_size
        if not (isinstance(ks, (tuple, list)) and len(ks) == 2 and all(is_int(k) for k in ks)):
            raise ParameterError("kernel_size", "a pair of positive ints (frames, features)", ks)
        _check_batch_norm_sizes(self)

    def _check_training_size(self: Any, n_train: int) -> None:
        _check_batch_norm_sizes(self, n_train)

    def _module_config(self: Any) -> dict:
        return {
            "kind": "cnn",
            "streams": [list(s) for s in self.input_shapes_],
            "weighting": self.layer_weighting,
            "max_frames": int(self.max_frames),
            "n_filters": int(self.n_filters),
            "kernel_size": [int(k) for k in self.kernel_size],
            "n_blocks": int(self.n_blocks),
            "dense_size": int(self.dense_size),
            "dropout": float(self.dropout),
            "n_outputs": self._n_outputs(),
        }
