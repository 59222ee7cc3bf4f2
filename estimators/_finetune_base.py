"""What the fine-tuning estimators share: parameter checks, ``fit``, steps, outputs, export.

Mixed in before :class:`estimators.classifiers.ClassifierBase` /
:class:`estimators.regressors.RegressorBase`, whose target handling, loss, scores and
``predict*`` methods are used as they are; the epoch loop, early stopping, checkpoint
averaging, seeding, the speaker-disjoint validation split and pickling come from
:class:`estimators._base.BaseSequenceEstimator` / :class:`estimators._training.TrainingLoop`.
What differs is the input (audio, :mod:`estimators._finetune_data`), the module
(:mod:`estimators._finetune_module`), the optimiser (AdamW with one learning rate for the
upstream and one for the head, warm-up then linear decay as transformers' Trainer), steps
made of several batches (gradient accumulation), gradient clipping and fp16/bf16 autocast
on CUDA.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._base import is_int
from ._finetune_data import AudioData, AudioPlan, StepBatch, min_samples, to_audio
from ._finetune_module import HEADS, build_finetune_net, upstream_config
from ._training import Callback
from .errors import InputError, ParameterError

__all__ = ["FineTuneMixin", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16", "fp16")


def _real(v: Any, low: float, high: float | None = None, open_low: bool = False, open_high: bool = True) -> bool:
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not np.isfinite(float(v)):
        return False
    v = float(v)
    ok_low = v > low if open_low else v >= low
    ok_high = high is None or (v < high if open_high else v <= high)
    return ok_low and ok_high


def _crop(a: float | None, b: float | None) -> float | None:
    """The shorter of two crops (None: no crop)."""
    vals = [float(v) for v in (a, b) if v is not None]
    return min(vals) if vals else None


class FineTuneMixin:
    """Fine-tuning of a wav2vec2-family upstream with a head (see :mod:`estimators.finetune`)."""

    input_kind = "audio"  # how estimators.predict tells audio models from feature models

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        p = self.get_params(deep=False)
        if not isinstance(p["model"], (str, os.PathLike)) or not str(p["model"]).strip():
            raise ParameterError("model", "a short name (wav2vec_small...), a Hugging Face id or a local save_pretrained directory", p["model"])
        if p["head"] not in HEADS:
            raise ParameterError("head", " or ".join(map(repr, HEADS)), p["head"])
        if p["layer_weighting"] not in ("sum", "softmax"):
            raise ParameterError("layer_weighting", "'sum' or 'softmax'", p["layer_weighting"])
        hs = p["hidden_sizes"]
        if not isinstance(hs, (tuple, list)) or not hs or not all(is_int(h) for h in hs):
            raise ParameterError("hidden_sizes", "a tuple of 1 or more positive ints", hs)
        checks = (
            ("dropout", _real(p["dropout"], 0, 1), "a number in [0, 1)"),
            ("lr", _real(p["lr"], 0, open_low=True), "a positive number"),
            ("head_lr", _real(p["head_lr"], 0, open_low=True), "a positive number"),
            ("weight_decay", _real(p["weight_decay"], 0), "a number >= 0"),
            ("warmup_ratio", _real(p["warmup_ratio"], 0, 1), "a number in [0, 1)"),
            ("max_grad_norm", p["max_grad_norm"] is None or _real(p["max_grad_norm"], 0, open_low=True), "None or a positive number"),
            ("batch_seconds", _real(p["batch_seconds"], 0, open_low=True), "a positive number of seconds"),
            ("max_seconds", p["max_seconds"] is None or _real(p["max_seconds"], 0, open_low=True), "None or a positive number of seconds"),
            ("freeze_layers", is_int(p["freeze_layers"], 0), "an int >= 0 (transformer blocks frozen)"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ParameterError(name, allowed, p[name])
        for name in ("accumulation_steps", "max_epochs", "patience"):
            if not is_int(p[name]):
                raise ParameterError(name, "a positive int", p[name])
        for name in ("freeze_feature_encoder", "gradient_checkpointing", "spec_augment", "progress"):
            if not isinstance(p[name], (bool, np.bool_)):
                raise ParameterError(name, "True or False", p[name])
        vf = p["validation_fraction"]
        if vf is not None and not _real(vf, 0, 1):
            raise ParameterError("validation_fraction", "None or a number in [0, 1)", vf)
        n_avg = p["average_checkpoints"]
        if n_avg is not None and not is_int(n_avg):
            raise ParameterError("average_checkpoints", "None or a positive int (epochs averaged)", n_avg)
        cbs = p["callbacks"]
        if cbs is not None and (not isinstance(cbs, (list, tuple)) or not all(isinstance(c, Callback) or callable(c) for c in cbs)):
            raise ParameterError("callbacks", "None or a list of Callback objects or callables", cbs)
        if p["precision"] not in PRECISIONS:
            raise ParameterError("precision", "'fp32', 'bf16' or 'fp16'", p["precision"])
        self._resolve_device()

    # ------------------------------------------------------------------ pieces
    def _load_upstream(self, device: torch.device) -> tuple[Any, Any]:
        from featcache.models import load_model, resolve_model  # trust_remote_code=False there

        upstream, fe = load_model(resolve_model(str(self.model)), device="cpu")
        if not all(hasattr(upstream, a) for a in ("feature_extractor", "feature_projection", "encoder")):
            raise ParameterError("model", "a wav2vec2-family model (wav2vec2, HuBERT, WavLM...)", f"{self.model} ({type(upstream).__name__})")
        if self.freeze_layers > upstream.config.num_hidden_layers:
            raise ParameterError("freeze_layers", f"at most the model's {upstream.config.num_hidden_layers} blocks", self.freeze_layers)
        return upstream, fe

    def _finetune_config(self, up_cfg: dict, fe: Any, crop: float | None) -> dict:
        dense = self.head == "dense"
        return {
            "kind": "finetune", "streams": [[1, 1]], "weighting": self.layer_weighting if dense else None,
            "dropout": float(self.dropout), "n_outputs": int(self._n_outputs()), "head": self.head,
            "hidden_sizes": [int(h) for h in self.hidden_sizes] if dense else [],
            "n_layers": int(up_cfg["num_hidden_layers"]) + 1, "hidden_size": int(up_cfg["hidden_size"]),
            "freeze_feature_encoder": bool(self.freeze_feature_encoder), "freeze_layers": int(self.freeze_layers),
            "gradient_checkpointing": bool(self.gradient_checkpointing), "spec_augment": bool(self.spec_augment),
            "sampling_rate": int(fe.sampling_rate), "max_seconds": crop, "min_samples": min_samples(up_cfg),
            "model": str(self.model), "upstream_config": up_cfg, "feature_extractor": json.loads(fe.to_json_string()),
        }

    def _make_module(self, config: dict) -> torch.nn.Module:
        return build_finetune_net(config)

    def _plan(self, data: AudioData, device: torch.device, fe: Any = None) -> AudioPlan:
        cfg = self.module_config_
        fe = fe if fe is not None else self.module_.feature_extractor
        rate = int(cfg["sampling_rate"])

        def prepare(x: np.ndarray) -> np.ndarray:
            return fe(x, sampling_rate=rate, return_tensors="np")["input_values"][0]

        min_items = 2 if getattr(self, "loss", None) == "ccc" else 1
        return AudioPlan(data.signals, prepare, rate, device, float(self.batch_seconds), min_items)

    def _make_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW: ``lr`` for the trainable upstream parameters, ``head_lr`` for the head."""
        up = [p for p in module.upstream.parameters() if p.requires_grad]
        head = [p for n, p in module.named_parameters() if not n.startswith("upstream.") and p.requires_grad]
        groups = [{"params": head, "lr": float(self.head_lr)}]
        if up:
            groups.insert(0, {"params": up, "lr": float(self.lr)})
        return torch.optim.AdamW(groups, weight_decay=float(self.weight_decay))

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if device.type == "cuda" and self.precision in ("bf16", "fp16"):
            return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ fit
    def _inputs(self, X: Any, rate: int, crop: float | None, min_len: int, what: str = "X") -> AudioData:
        try:
            return to_audio(X, sampling_rate=rate, max_seconds=crop, min_len=min_len)
        except InputError as e:
            if what == "X":
                raise
            raise InputError(f"{what}: {e}") from e

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None):
        """Fine-tune the upstream with the head.

        Parameters
        ----------
        X : audio set, list of 1-D ndarray or list of paths
            See :mod:`estimators._finetune_data`.
        y : array-like of shape (n,) (or (n, n_outputs) for the regressor)
        X_val, y_val : optional
            Explicit validation set for early stopping and checkpoint averaging.

        Returns
        -------
        self
        """
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        if (X_val is None) != (y_val is None):
            raise InputError("X_val and y_val must be given together")
        device = self._resolve_device()
        if self.precision != "fp32" and device.type != "cuda":
            raise ParameterError("precision", "'fp32' on a CPU (bf16/fp16 autocast is used on CUDA only)", self.precision)
        upstream, fe = self._load_upstream(device)
        up_cfg = upstream_config(upstream)
        rate, min_len = int(fe.sampling_rate), min_samples(up_cfg)
        data = self._inputs(X, rate, self.max_seconds, min_len)
        targets = self._prepare_targets(y, len(data))
        valid_data = None if X_val is None else self._inputs(X_val, rate, self.max_seconds, min_len, "X_val")
        valid_targets = None if X_val is None else self._encode_targets(y_val, len(valid_data))
        crop = _crop(self.max_seconds, data.info["streams"][0]["params"].get("max_seconds"))
        self.feature_info_, self.input_shapes_, self.stream_ratios_ = data.info, [[1, 1]], [1]
        seed = self._seed()
        try:
            with self._seeded(seed, device):
                rng = np.random.default_rng(seed)
                if valid_data is None:
                    train_idx, valid_idx = self._split_validation(data, targets, rng)
                else:
                    train_idx, valid_idx = np.arange(len(data)), np.arange(len(valid_data))
                self.validation_index_ = None if valid_data is not None else valid_idx
                self.module_config_ = self._finetune_config(up_cfg, fe, crop)
                self.module_ = build_finetune_net(self.module_config_, upstream, fe).to(device)
                self._fit_module(data, targets, train_idx, valid_data, valid_targets, valid_idx, device, rng)
        finally:
            for name in ("_scheduler", "_scaler", "_bar", "_accum"):
                self.__dict__.pop(name, None)
        self._set_summary()
        return self

    def _fit_module(self, data, targets, train_idx, valid_data, valid_targets, valid_idx, device, rng) -> None:
        from tqdm.auto import tqdm
        from transformers import get_linear_schedule_with_warmup

        plan = self._plan(data, device)
        tt = self._targets_tensor(targets, device)
        valid = None
        if valid_data is not None:
            valid = (self._plan(valid_data, device), valid_idx, self._targets_tensor(valid_targets, device))
        elif valid_idx is not None:
            valid = (plan, valid_idx, tt)
        optimizer = self._make_optimizer(self.module_)
        self._accum = int(self.accumulation_steps)
        total = int(self.max_epochs) * plan.n_steps(train_idx, self._accum)
        self._scheduler = get_linear_schedule_with_warmup(optimizer, int(np.ceil(float(self.warmup_ratio) * total)), total)
        self._scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" and device.type == "cuda" else None
        self._bar = tqdm(total=total, desc=f"fine-tuning {self.model}", unit="step", file=sys.stderr,
                         disable=not self.progress, dynamic_ncols=True)
        try:
            self._fit_loop((plan, train_idx, tt), valid, optimizer, rng)
        finally:
            self._bar.close()

    # ------------------------------------------------------------------ steps (TrainingLoop hooks)
    def _iter_batches(self, plan: AudioPlan, index: np.ndarray, rng: np.random.Generator | None = None):
        return plan.steps(index, self._accum, rng)

    def _train_step(self, batch: StepBatch, targets: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        """One optimisation step over the batches of ``batch`` (accumulated gradients)."""
        t0 = time.perf_counter()
        module, scaler, device = self.module_, self._scaler, targets.device
        module.train()
        optimizer.zero_grad(set_to_none=True)
        total, pos, n = 0.0, 0, len(batch)
        for mb in batch.micro:
            with self._autocast(device):
                outputs = module(mb)
            loss = self._compute_loss(outputs.float(), targets[pos : pos + len(mb)])
            pos += len(mb)
            scaled = loss * (len(mb) / n)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total += float(loss.detach()) * len(mb)
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], float(self.max_grad_norm))
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        self._scheduler.step()
        loss_value = total / max(n, 1)
        if not np.isfinite(loss_value):
            raise InputError(f"{type(self).__name__}: the training loss became {loss_value} (lower lr, or precision='fp32')")
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{loss_value:.4f}", audio_s_per_s=f"{batch.seconds / (time.perf_counter() - t0):.1f}", refresh=False)
        return loss_value

    def _run(self, plan: AudioPlan, index: np.ndarray) -> torch.Tensor:
        """Outputs for ``index`` (in its order), evaluation mode, length-sorted batches."""
        module = self.module_
        module.eval()
        index = np.asarray(index, dtype=np.int64)
        pos = {int(i): k for k, i in enumerate(index)}
        outs: list[torch.Tensor] = [None] * len(index)  # type: ignore[list-item]
        with torch.inference_mode(), self._autocast(plan.device):
            for g in plan.groups(index):
                o = module(plan.batch(g)).float()
                for i, row in zip(g, o):
                    outs[pos[int(i)]] = row
        return torch.stack(outs)

    def _evaluate(self, plan: AudioPlan, index: np.ndarray, targets: torch.Tensor) -> tuple[float, float]:
        outputs = self._run(plan, index)
        t = targets[torch.from_numpy(np.asarray(index, dtype=np.int64)).to(targets.device)]
        return float(self._compute_loss(outputs, t)), float(self._valid_score(outputs, t))

    def _outputs(self, X: Any) -> np.ndarray:
        """Raw outputs, shape (n, n_outputs), float64."""
        check_is_fitted(self, "module_")
        cfg = self.module_config_
        data = self._inputs(X, int(cfg["sampling_rate"]), cfg["max_seconds"], int(cfg["min_samples"]))
        device = self._resolve_device()
        self.module_.to(device)
        plan = self._plan(data, device)
        return self._run(plan, np.arange(len(data))).cpu().numpy().astype(np.float64)

    def audio_settings(self) -> tuple[int, float | None, int]:
        """(sampling rate, crop in seconds or None, fewest samples) of the fitted model's input."""
        check_is_fitted(self, "module_")
        cfg = self.module_config_
        return int(cfg["sampling_rate"]), cfg["max_seconds"], int(cfg["min_samples"])

    # ------------------------------------------------------------------ export
    def save_upstream(self, directory: str | os.PathLike) -> Path:
        """Write the fine-tuned (averaged) upstream and its feature extractor with ``save_pretrained``.

        ``featcache extract --model DIR`` then caches its layers like any local model.

        Returns
        -------
        Path
        """
        check_is_fitted(self, "module_")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.module_.upstream.save_pretrained(out)
        self.module_.feature_extractor.save_pretrained(out)
        return out

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for name in ("_scheduler", "_scaler", "_bar", "_accum"):
            state.pop(name, None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = False
        tags.input_tags.two_d_array = False
        tags.non_deterministic = True
        return tags
