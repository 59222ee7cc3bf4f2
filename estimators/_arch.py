"""Architecture mixins: how each estimator family configures its torch module.

Each mixin turns the estimator's parameters and fitted input shapes into the JSON-able
``module_config_`` understood by :func:`estimators._modules.build_module`.
"""

from __future__ import annotations

from typing import Any

from ._base import is_int
from .errors import InputError, ParameterError

__all__ = ["DenseArch", "LSTMArch", "CNNArch", "FusionArch", "SHARED_PARAMS_DOC"]

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
        True stops training."""

FRAME_PARAMS_DOC = """\
    pooling : {"mean", "max", "first", "last"}, default="mean"
        Pooling of the frame outputs over time.
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


class FusionArch:
    """Fusion head: per-stream dense ``hidden_sizes[0]``, concat, dense ``hidden_sizes[1:]``."""

    _min_hidden = 1
    _max_streams = None

    def _module_config(self: Any) -> dict:
        hs = [int(h) for h in self.hidden_sizes]
        return {
            "kind": "frame",
            "streams": [list(s) for s in self.input_shapes_],
            "weighting": self.layer_weighting,
            "branch_sizes": hs[:1],
            "trunk_sizes": hs[1:],
            "lstm_size": None,
            "bidirectional": False,
            "dropout": float(self.dropout),
            "pooling": self.pooling,
            "n_outputs": self._n_outputs(),
        }


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
        if not is_int(self.batch_size, 2):
            raise ParameterError("batch_size", "an int >= 2 (batch normalisation)", self.batch_size)

    def _check_training_size(self: Any, n_train: int) -> None:
        if n_train < 2:
            raise InputError(
                f"{type(self).__name__} needs 2 or more training utterances (batch "
                f"normalisation); got {n_train} sample"
            )

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
