"""Fine-tuning a wav2vec2-family model with a head, as scikit-learn estimators over audio.

:class:`FineTuneClassifier` and :class:`FineTuneRegressor` train the self-supervised
upstream (wav2vec 2.0, HuBERT, WavLM: a short name, a Hugging Face id or a local
``save_pretrained`` directory, loaded with ``trust_remote_code=False``) jointly with a head,
as Morais et al. (2022) and the NTU report (HF ``AutoModelForAudioClassification`` +
``Trainer``) do, instead of training a head on frozen cached features. Input: audio
(``cache.select("audio")``, waveforms or file paths; :mod:`estimators._finetune_data`).

The fine-tuned (and checkpoint-averaged) upstream goes back into the cache:
``est.save_upstream(DIR)`` then ``featcache extract --model DIR`` caches its layers, and
every head of :mod:`estimators.classifiers` trains on them (Morais et al.'s pipeline).

Everything else is the estimators' contract: parameters only in ``__init__``, ``fit``
returns self, ``classes_``, ``random_state``, early stopping on a speaker-disjoint
validation split, ``get_params``/``set_params``/``clone``, ``GridSearchCV``,
:func:`estimators.run_experiment` (``estimators finetune``), :func:`estimators.save_model`.
"""

from __future__ import annotations

from typing import Any, Callable

from ._finetune_base import FineTuneMixin
from ._classifier_base import ClassifierBase
from .errors import ParameterError
from .regressors import RegressorBase

__all__ = ["FineTuneClassifier", "FineTuneRegressor"]

_PARAMS_DOC = """\
    model : str, default="wav2vec_small"
        Short name (:data:`featcache.models.MODELS`), Hugging Face id or local
        ``save_pretrained`` directory of a wav2vec2-family model.
    head : {"mean", "dense"}, default="mean"
        ``"mean"``: mean pooling of the last hidden state + linear (Morais et al. Fig. 2);
        ``"dense"``: trainable weighted average of all hidden states, per-frame dense layers
        ``hidden_sizes`` (ReLU, dropout), mean pooling, linear (Pepino et al. 2021).
    hidden_sizes : tuple of int, default=(128, 128)
        Dense head only.
    layer_weighting : {"sum", "softmax"}, default="sum"
        Dense head only (see :class:`estimators.DenseClassifier`).
    dropout : float, default=0.1
        Dropout of the head (the upstream keeps its config's dropouts).
    freeze_feature_encoder : bool, default=True
        Keep the CNN feature encoder frozen (as HF fine-tuning recipes do).
    freeze_layers : int, default=0
        Also freeze the first ``freeze_layers`` transformer blocks (and what lies below).
    lr : float, default=5e-5
        AdamW learning rate of the upstream.
    head_lr : float, default=1e-3
        AdamW learning rate of the head.
    weight_decay : float, default=0.0
    warmup_ratio : float, default=0.1
        Linear warm-up over this share of the steps, then linear decay to 0 over
        ``max_epochs`` (transformers' ``get_linear_schedule_with_warmup``, the Trainer default).
    max_grad_norm : float or None, default=1.0
        Gradient clipping (None: none).
    batch_seconds : float, default=16.0
        Audio per batch, in seconds: utterances of similar length are batched together
        (length-bucketed, shuffled); a longer utterance makes a batch of its own.
    accumulation_steps : int, default=1
        Batches whose gradients are accumulated into one optimisation step.
    gradient_checkpointing : bool, default=False
        Recompute the transformer blocks' activations in the backward pass (less memory,
        about a third more compute).
    spec_augment : bool, default=True
        Apply the model config's SpecAugment time/feature masking while training
        (``mask_time_prob``...), as transformers' fine-tuning does.
    max_seconds : float or None, default=15.0
        Crop every waveform to its first ``max_seconds`` (an audio set is already cropped to
        its own ``max_seconds``: the shorter applies). The same crop is used to predict.
    max_epochs : int, default=20
    patience : int, default=5
        Early stopping: epochs without a lower validation loss.
    validation_fraction : float or None, default=0.1
        Held out for early stopping and checkpoint averaging: whole speakers when the input
        has speakers (an audio set), else a stratified (classifier) random split.
    average_checkpoints : int or None, default=None
        N > 1: the final weights (upstream and head) are the element-wise mean of those of
        the N epochs with the best validation score (Morais et al.: N = 5).
    device : str, default="auto"
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        bf16 / fp16 autocast on CUDA only (fp16 with a gradient scaler).
    random_state : int, RandomState or None, default=None
    verbose : int, default=0
        One line per epoch when > 0.
    progress : bool, default=False
        A progress bar over the optimisation steps (stderr) with the loss and audio-s/s.
    callbacks : list or None, default=None
        As for the other estimators."""

_ATTRIBUTES_DOC = """
    Attributes
    ----------
    module_ : torch.nn.Module
        ``module_.upstream`` (the transformers model), ``module_.head``,
        ``module_.feature_extractor`` (the checkpoint's input normalisation).
    module_config_ : dict
        JSON-able description (head, sizes, freezing, sampling rate, crop, the upstream's
        transformers config).
    history_, best_epoch_, n_epochs_, validation_index_, averaged_epochs_, layer_weights_
        As for the other estimators (``layer_weights_``: dense head only).
    feature_info_ : dict
        The input's description (sampling rate, crop, corpus).
"""


def _init(self: Any, params: dict) -> None:
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(self, name, value)


class FineTuneClassifier(FineTuneMixin, ClassifierBase):
    __doc__ = f"""Fine-tune a wav2vec2-family upstream with a classification head (cross-entropy).

    Parameters
    ----------
{_PARAMS_DOC}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        model: str = "wav2vec_small",
        head: str = "mean",
        hidden_sizes: tuple[int, ...] = (128, 128),
        layer_weighting: str = "sum",
        dropout: float = 0.1,
        freeze_feature_encoder: bool = True,
        freeze_layers: int = 0,
        lr: float = 5e-5,
        head_lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        max_grad_norm: float | None = 1.0,
        batch_seconds: float = 16.0,
        accumulation_steps: int = 1,
        gradient_checkpointing: bool = False,
        spec_augment: bool = True,
        max_seconds: float | None = 15.0,
        max_epochs: int = 20,
        patience: int = 5,
        validation_fraction: float | None = 0.1,
        average_checkpoints: int | None = None,
        device: str = "auto",
        precision: str = "fp32",
        random_state: Any = None,
        verbose: int = 0,
        progress: bool = False,
        callbacks: list[Callable] | None = None,
    ) -> None:
        _init(self, locals())


class FineTuneRegressor(FineTuneMixin, RegressorBase):
    __doc__ = f"""Fine-tune a wav2vec2-family upstream with a regression head (CCC or MSE loss).

    Targets are standardised per output and predictions mapped back, as in
    :class:`estimators.DenseRegressor`.

    Parameters
    ----------
    loss : {{"ccc", "mse"}}, default="ccc"
        1 - concordance correlation coefficient over the batch (batches then hold 2 or more
        utterances), or the MSE of the standardised targets.
{_PARAMS_DOC}

    Attributes
    ----------
    n_outputs_, y_mean_, y_scale_
{_ATTRIBUTES_DOC}"""

    def __init__(
        self,
        *,
        loss: str = "ccc",
        model: str = "wav2vec_small",
        head: str = "mean",
        hidden_sizes: tuple[int, ...] = (128, 128),
        layer_weighting: str = "sum",
        dropout: float = 0.1,
        freeze_feature_encoder: bool = True,
        freeze_layers: int = 0,
        lr: float = 5e-5,
        head_lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        max_grad_norm: float | None = 1.0,
        batch_seconds: float = 16.0,
        accumulation_steps: int = 1,
        gradient_checkpointing: bool = False,
        spec_augment: bool = True,
        max_seconds: float | None = 15.0,
        max_epochs: int = 20,
        patience: int = 5,
        validation_fraction: float | None = 0.1,
        average_checkpoints: int | None = None,
        device: str = "auto",
        precision: str = "fp32",
        random_state: Any = None,
        verbose: int = 0,
        progress: bool = False,
        callbacks: list[Callable] | None = None,
    ) -> None:
        _init(self, locals())

    def _check_params(self) -> None:
        super()._check_params()
        if self.loss not in ("ccc", "mse"):
            raise ParameterError("loss", "'ccc' or 'mse'", self.loss)
