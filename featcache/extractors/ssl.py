"""Hidden states of self-supervised speech models (wav2vec 2.0, HuBERT, WavLM).

:class:`SSLExtractor` returns, for one utterance, every hidden state that transformers
returns with ``output_hidden_states=True``: an array of shape
``(num_hidden_layers + 1, n_frames, hidden_size)`` (13 x T x 768 for base models,
25 x T x 1024 for large ones), 50 frames per second at 16 kHz.

What the layers are (transformers 5.23, read from ``modeling_wav2vec2.py``,
``modeling_hubert.py`` and ``modeling_wavlm.py``; the hidden states are recorded by hooks
on the encoder layers, ``capture_outputs(tie_last_hidden_states=False)``):

* index 0 is the input of the first transformer block. For base models
  (``do_stable_layer_norm=False``: wav2vec2-base, hubert-base, wavlm-base-plus) it is
  ``LayerNorm(P + PosConv(P))`` where ``P = Linear(LayerNorm(CNN(x)))`` is the projected
  CNN output (HuBERT applies that LayerNorm only when ``config.feat_proj_layer_norm``) and ``PosConv`` the grouped positional convolution
  (kernel 128, 16 groups, GELU). For large models (``do_stable_layer_norm=True``:
  wav2vec2-large*, xlsr-53, hubert-large, wavlm-large) it is ``P + PosConv(P)`` without
  LayerNorm (the blocks are pre-LN).
* index ``i`` (1..L) is the output of transformer block ``i``; index ``L`` is the output of
  the last block. For large (stable-layer-norm) models this is the last block's output
  *before* the encoder's final LayerNorm, i.e. it differs from ``last_hidden_state``
  (transformers 4.x returned the LayerNorm-ed state there). For base models it equals
  ``last_hidden_state``.
* the CNN features themselves (``extract_features``) are not included.

Preprocessing follows the checkpoint's own feature-extractor config
(``preprocessor_config.json``) per utterance: with ``do_normalize`` each utterance is
scaled to zero mean and unit variance, ``(x - mean) / sqrt(var + 1e-7)``, exactly as
``Wav2Vec2FeatureExtractor`` does (it is called to do it).

Batching (:meth:`SSLExtractor.batch`) never pads raw audio (the first conv layer's GroupNorm
over time would see it): the CNN runs per utterance and the transformer once per length-sorted
group of padded frames with a frame mask (:func:`featcache.extractors.runtime.encode_padded`
says why that equals one-at-a-time extraction; tested to <= 1e-4 in fp32). Models outside
wav2vec2 / HuBERT / WavLM, or with a batch-normalised positional convolution, run one at a time.

Precision (``precision=``):

* ``"fp32"`` (default, paper-faithful): float32 everywhere; on CUDA TF32 is switched off
  for the duration of the call so that results match the CPU to float rounding. On the CPU
  the first conv layer and its GroupNorm run as one folded matmul
  (:meth:`~featcache.extractors._cpu_bf16.ConvEncoder.first_layer`; max difference to the
  model's own layer ~3e-6 of its largest value), the rest of the model as it is.
* ``"bf16"``: on CUDA ``torch.autocast(device, torch.bfloat16)``; on the CPU the weights are
  cast to bf16 once and the CNN runs as time-major matmuls
  (:mod:`featcache.extractors._cpu_bf16`; autocast for models it does not cover). Against
  fp32 (transformers 5.24, torch 2.13): on the tiny random test models the max abs difference
  per layer is 2.5-4.4 % of that layer's largest absolute value and the mean 0.3-0.5 %; on a
  randomly initialised full-size ``Wav2Vec2Config()`` with RAVDESS utterances max 2.8 %, mean
  0.2 %. Speed depends on native bf16: on a 2-core AMD EPYC with AVX2 only bf16 was 25-40x
  *slower* than fp32 (the model: 0.22 vs 8.48 audio-s/s on 2026-12-03); on a 2-core Xeon
  with AMX the model ran at 41.7 audio-s/s in bf16 vs 14.0 in fp32 (``python -m benchmarks --only extraction``, docs/benchmarks.md).
* ``"fp16"``: ``torch.autocast("cuda", torch.float16)``; CUDA only (a
  :class:`~featcache.errors.ParameterError` on CPU, where fp16 autocast is not supported).
* ``"auto"``: bf16 on a CUDA device that supports it, fp32 otherwise -- on every CPU, so that
  the numbers do not depend on the machine (pass ``bf16`` on a CPU with AVX512-BF16 / AMX).

The precision actually used is part of :meth:`SSLExtractor.params`, so a store never mixes
fp32 and bf16 features. The extractor always returns float32 arrays; the store keeps SSL
states in float16 (:attr:`SSLExtractor.dtype`).

``layers="0,6-12"`` keeps some hidden states (:mod:`featcache.extractors._layers`), each equal
to that layer of a full extraction; they are part of :meth:`SSLExtractor.params`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Sequence

import numpy as np

from featcache.errors import AudioError, ModelError, ModelSourceError, ParameterError
from featcache.extractors._cpu_bf16 import ConvEncoder
from featcache.extractors._layers import parse_layers
from featcache.extractors.base import Extractor
from featcache.extractors.runtime import (
    DEVICES,
    PRECISIONS,
    encode_padded,
    length_groups,
    no_tf32,
    resolve_device,
    resolve_precision,
    to_device,
    to_numpy,
)
from featcache.models import ResolvedModel, load_config, load_model, model_identity, resolve_model

__all__ = ["SSLExtractor", "PRECISIONS", "DEVICES", "DEFAULT_MAX_BATCH_FRAMES"]

#: Default bound on ``batch size x longest utterance`` (frames) of one encoder batch:
#: 3000 frames = 60 s of audio at 50 frames/s.
DEFAULT_MAX_BATCH_FRAMES = 3000

#: model types whose encoder is run on padded frame batches (checked equal to
#: one-at-a-time by the tests).
_BATCHABLE_TYPES = frozenset({"wav2vec2", "hubert", "wavlm"})


class SSLExtractor(Extractor):
    """All hidden states of a wav2vec 2.0 / HuBERT / WavLM model.

    Parameters
    ----------
    model : str
        Short name (see :data:`featcache.models.MODELS`; default ``"wav2vec_small"`` =
        facebook/wav2vec2-base, the model of Pepino et al. 2021), a Hugging Face id
        ``org/name`` or a local ``save_pretrained`` directory.
    precision : {"fp32", "bf16", "fp16", "auto"}
        See the module docstring. Default fp32.
    device : {"auto", "cpu", "cuda"}
        ``auto`` = CUDA when available. ``cuda:N`` is accepted too.
    max_batch_frames : int
        Bound on ``number of utterances x longest utterance`` (in frames) of one encoder
        batch in :meth:`batch`; a longer utterance runs alone.
    layers : str, sequence of int or None
        Model layer numbers (hidden-state indices) to return, e.g. ``"0,6-12"``; None (or
        ``"all"``): every one. :attr:`n_layers` is the number kept.

    The config and the preprocessor config are read at construction (small files; a
    :class:`~featcache.errors.ModelError` there when they cannot be had); the weights are
    loaded on first use, and dropped when the extractor is pickled.

    Raises
    ------
    ParameterError
        Bad ``precision``, ``device``, ``max_batch_frames`` or ``layers``.
    ModelError
        Unknown model, or its config cannot be loaded.
    """

    name = "ssl"
    dtype = np.dtype("float16")

    def __init__(
        self,
        model: str = "wav2vec_small",
        *,
        precision: str = "fp32",
        device: str = "auto",
        max_batch_frames: int = DEFAULT_MAX_BATCH_FRAMES,
        layers: str | Sequence[int] | None = None,
    ) -> None:
        if (
            isinstance(max_batch_frames, bool)
            or not isinstance(max_batch_frames, (int, np.integer))
            or max_batch_frames < 1
        ):
            raise ParameterError("max_batch_frames", "a positive integer", max_batch_frames)
        self._device = resolve_device(device)
        self.precision = resolve_precision(precision, self._device)
        self.max_batch_frames = int(max_batch_frames)
        self.resolved: ResolvedModel = resolve_model(model)
        self.store_name = self.resolved.store_name
        self._config, self._feature_extractor = load_config(self.resolved)
        cfg = self._config
        for attr in ("conv_kernel", "conv_stride", "num_hidden_layers", "hidden_size"):
            if not hasattr(cfg, attr):
                raise ModelError(
                    f"{self.resolved.source!r} (model_type {getattr(cfg, 'model_type', '?')!r}) "
                    f"is not a wav2vec2-style model: its config has no {attr!r}"
                )
        self._kernels = [int(k) for k in cfg.conv_kernel]
        self._strides = [int(s) for s in cfg.conv_stride]
        self.sampling_rate = int(getattr(self._feature_extractor, "sampling_rate", 16000))
        self.frame_rate = self.sampling_rate / float(math.prod(self._strides))
        self.model_layers = int(cfg.num_hidden_layers) + 1
        self.layers = parse_layers(layers, self.model_layers)  # model layer numbers kept, None: all
        self._keep = list(self.layers or range(self.model_layers))
        self.n_layers = len(self._keep)
        self.dim = int(cfg.hidden_size)
        self.model_type = str(getattr(cfg, "model_type", ""))
        self._identity = model_identity(self.resolved, cfg)
        self._model: Any = None
        self._cnn: ConvEncoder | None = None  # set on loading on the CPU (bf16; fp32: first layer)

    @classmethod
    def from_params(cls, params: dict[str, Any], *, model: str | None = None, device: str = "auto", **context: Any) -> "SSLExtractor":
        """Rebuild the extractor whose :meth:`params` a store or a model directory recorded.

        Parameters
        ----------
        params : dict
            The recorded ``params()``.
        model : str, optional
            Where to load the model from, as the *user* says (short name, Hub id or local
            directory). Without it the recorded ``model`` is used, which must then be a short
            name or a Hub id: a name read from a file never makes featcache load a local path
            (:func:`featcache.models.resolve_model` with ``allow_local=False``), and a model
            recorded as ``local:<name>`` needs ``model``.
        device : str
            Where to run it (not a parameter of the features).

        Raises
        ------
        ModelError
            The recorded model may not be loaded without ``model``, or cannot be loaded.
        ParameterError
            The rebuilt extractor differs from the recorded one: same weights are required
            (the fingerprint when one is recorded, else the same Hub id and, when both are
            known, revision), and every other parameter equal.
        """
        if not isinstance(params, dict):
            raise ParameterError("ssl parameters", "a dict", params)
        recorded = str(params.get("model", ""))
        if model is None:
            if recorded.startswith("local:"):
                raise ModelSourceError(
                    f"the features were made with a local model directory ({recorded[6:]!r}, fingerprint"
                    f" {params.get('fingerprint')}), which is recorded by name only: say where it is"
                )
            try:
                resolve_model(recorded, allow_local=False)
            except ModelError as e:
                raise ModelSourceError(str(e)) from e
            model = recorded
        kept = params.get("layers")
        ex = cls(str(model), precision=params.get("precision", "fp32"), device=device,
                 layers=kept if isinstance(kept, list) else None)
        now = ex.params()
        ignore = ("model", "revision", "fingerprint")
        ex.check_params(params, ignore=ignore)
        fp = params.get("fingerprint")
        if recorded.startswith("local:") or fp:
            if now.get("fingerprint") != fp:
                raise ParameterError(
                    "ssl model weights", f"those recorded ({recorded}, fingerprint {fp})",
                    f"{model} with fingerprint {now.get('fingerprint') or now.get('model')}",
                )
        elif now.get("model") != recorded or (params.get("revision") and now.get("revision") and params["revision"] != now["revision"]):
            raise ParameterError(
                "ssl model", f"the recorded {recorded!r} (revision {params.get('revision')})",
                f"{now.get('model')!r} (revision {now.get('revision')})",
            )
        return ex

    # ------------------------------------------------------------------ metadata

    @property
    def device(self) -> str:
        return str(self._device)

    def params(self) -> dict[str, Any]:
        fe = self._feature_extractor
        return {
            "model": self._identity["model"],
            "revision": self._identity["revision"],
            "fingerprint": self._identity["fingerprint"],
            "model_type": self.model_type,
            "precision": self.precision,
            "do_normalize": bool(getattr(fe, "do_normalize", False)),
            "sampling_rate": int(self.sampling_rate),
            "layers": "hidden_states" if self.layers is None else list(self.layers),
            **({} if self.layers is None else {"model_layers": self.model_layers}),
        }

    def versions(self) -> dict[str, str]:
        import torch
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__}

    def min_samples(self) -> int:
        """Receptive field of the CNN feature encoder, in samples (400 for wav2vec2)."""
        n = 1
        for k, s in zip(reversed(self._kernels), reversed(self._strides)):
            n = (n - 1) * s + k
        return n

    def n_frames(self, n_samples: int) -> int:
        """Number of output frames for ``n_samples`` input samples (0 if too short)."""
        n = int(n_samples)
        for k, s in zip(self._kernels, self._strides):
            if n < k:
                return 0
            n = (n - k) // s + 1
        return n

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        state["_cnn"] = None
        state["_device"] = str(self._device)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import torch

        state = dict(state)
        state["_device"] = torch.device(state["_device"])
        state.setdefault("_cnn", None)
        self.__dict__.update(state)

    # ------------------------------------------------------------------ running

    def _get_model(self) -> Any:
        if self._model is None:
            with warnings.catch_warnings():
                # a missing preprocessor_config.json was already reported at construction
                warnings.filterwarnings("ignore", message=".*no preprocessor_config.json.*")
                model, _ = load_model(self.resolved, device=self._device)
            if model.config.num_hidden_layers + 1 != self.model_layers:  # pragma: no cover
                raise ModelError(f"{self.resolved.source!r}: config changed while loading")
            if self._cpu_bf16(model):
                import torch

                self._cnn = ConvEncoder(model.feature_extractor)
                model.to(torch.bfloat16)  # cast once; no autocast on every call
            elif self._device.type == "cpu" and self.precision == "fp32" and self._batchable():
                self._cnn = ConvEncoder.first_layer(model.feature_extractor)  # None: the model's own
            self._model = model
        return self._model

    def _cpu_bf16(self, model: Any) -> bool:
        """bf16 on the CPU runs :mod:`featcache.extractors._cpu_bf16` where the model allows."""
        return (self._device.type == "cpu" and self.precision == "bf16" and self._batchable()
                and ConvEncoder.supports(model.feature_extractor))

    def load(self) -> SSLExtractor:
        """Load the weights now (they are otherwise loaded on first use)."""
        self._get_model()
        return self

    def _prepare(self, signal: np.ndarray) -> np.ndarray:
        x = np.asarray(signal)
        if x.ndim != 1:
            raise ParameterError("signal", "a 1-D mono waveform", f"array of shape {x.shape}")
        x = x.astype(np.float32, copy=False)
        need = self.min_samples()
        if x.shape[0] < need:
            raise AudioError(
                "<signal>",
                f"shorter than the model's receptive field ({need} samples = "
                f"{1000.0 * need / self.sampling_rate:g} ms): {x.shape[0]} samples",
            )
        if not np.isfinite(x).all():
            raise AudioError("<signal>", "contains NaN or infinite samples")
        fe = self._feature_extractor
        out = fe(x, sampling_rate=self.sampling_rate, return_tensors="np")
        return np.ascontiguousarray(out["input_values"][0], dtype=np.float32)

    def _run_context(self) -> contextlib.ExitStack:
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self._cnn is not None:  # bf16 weights already cast; fp32 on the CPU needs nothing more
            return stack
        if self.precision == "fp32":
            if self._device.type == "cuda":
                stack.enter_context(no_tf32())
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            stack.enter_context(torch.autocast(self._device.type, dtype=dtype))
        return stack

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Hidden states of one utterance, float32 array ``(n_layers, n_frames, dim)``."""
        self._check_rate(sampling_rate)
        return self._single(self._prepare(signal))

    def _single(self, x: np.ndarray) -> np.ndarray:
        import torch

        model = self._get_model()
        if self._cnn is not None:  # one processing path for one and many utterances
            return self._encode_group([x])[0]
        with self._run_context():
            xt = to_device(x, self._device)[None]
            out = model(xt, output_hidden_states=True)
            hs = torch.stack([out.hidden_states[k][0].float() for k in self._keep])
        return to_numpy(hs)

    def _batchable(self) -> bool:
        cfg = self._config
        return self.model_type in _BATCHABLE_TYPES and not getattr(
            cfg, "conv_pos_batch_norm", False
        )

    def batch(self, signals: list[np.ndarray], sampling_rate: int) -> list[np.ndarray]:
        """Hidden states of several utterances, equal to calling the extractor on each.

        Utterances are sorted by length and grouped so that ``len(group) x longest`` stays
        within ``max_batch_frames``; per group the CNN runs per utterance and the
        transformer encoder once on the padded frames (see the module docstring). Results
        come back in input order. An unusable signal raises its
        :class:`~featcache.errors.AudioError` before anything is computed.
        """
        self._check_rate(sampling_rate)
        prepared = [self._prepare(s) for s in signals]
        if not prepared:
            return []
        if not self._batchable():
            return [self._single(x) for x in prepared]
        frames = [self.n_frames(len(x)) for x in prepared]
        results: list[np.ndarray | None] = [None] * len(prepared)
        for group in length_groups(frames, self.max_batch_frames):
            if len(group) == 1:
                results[group[0]] = self._single(prepared[group[0]])
                continue
            for j, out in zip(group, self._encode_group([prepared[j] for j in group])):
                results[j] = out
        return results  # type: ignore[return-value]

    def _encode_group(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states of a group: the CNN per utterance, the encoder once on padded frames."""
        model = self._get_model()
        with self._run_context():
            hs, lengths = encode_padded(model, [to_device(x, self._device)[None] for x in xs], cnn=self._cnn)
            if hs.shape[0] != self.model_layers:  # pragma: no cover - layerdrop / odd encoder
                raise ModelError(
                    f"{self.resolved.source!r}: captured {hs.shape[0]} hidden states, expected {self.model_layers}"
                )
            if self.layers is not None:
                hs = hs[self._keep]
        arr = to_numpy(hs)
        return [np.ascontiguousarray(arr[:, b, : lengths[b]]) for b in range(len(xs))]
