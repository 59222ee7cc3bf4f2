"""Shared estimator machinery: parameters, input checks, ``fit``, raw outputs, pickling.

The concrete classes (:mod:`estimators.classifiers`, :mod:`estimators.regressors`) only
define their ``__init__`` (the parameter list), the module configuration and the
target/loss/score specifics.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from featcache.memory import parse_memory_budget, resolve_memory_budget
from featcache.packed import Packed

from ._batch import BatchPlan, stream_ratios
from ._data import describe_packed, describe_streams, feature_differences, stream_shapes, to_packed
from ._modules import build_module
from ._split import n_validation, random_split, speaker_split
from ._training import Callback, TrainingLoop
from .errors import InputError, ParameterError

__all__ = ["BaseSequenceEstimator"]

_POOLINGS = ("mean", "max", "first", "last", "attentive")
_WEIGHTINGS = ("sum", "softmax", None)
_PRECISIONS = ("fp32", "bf16")

_bf16_warned = False


def _denormals_flushed() -> bool:
    """Whether this thread already flushes denormal floats to zero."""
    return torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0


@contextlib.contextmanager
def _flush_denormals(device: torch.device):
    """Flush denormal floats to zero while training or predicting on a CPU.

    Gradients that fade through many LSTM steps become denormal (below about 1e-38), and
    x86 CPUs handle those up to 100x slower: the LSTM's backward pass on 100 frames/s
    features ran 5x slower without this. Values that small change nothing a model
    learns. The previous setting is restored on exit.
    """
    if device.type != "cpu" or _denormals_flushed():
        yield
        return
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


def is_int(v: Any, low: int = 1) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= low


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(float(v))


class BaseSequenceEstimator(TrainingLoop, BaseEstimator):
    """Base of every estimator of the package (not usable by itself).

    Subclasses set ``_max_streams`` (None: any number), ``_min_hidden`` (fewest
    ``hidden_sizes``), ``_requires_max_frames`` and implement ``_module_config``,
    ``_prepare_targets``, ``_encode_targets``, ``_compute_loss`` and ``_valid_score``.
    """

    _max_streams: int | None = 1
    _min_hidden: int = 1
    _requires_max_frames: bool = False

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        p = self.get_params(deep=False)
        if p.get("layer_weighting", "sum") not in _WEIGHTINGS:
            raise ParameterError("layer_weighting", "'sum', 'softmax' or None", p["layer_weighting"])
        if "pooling" in p and p["pooling"] not in _POOLINGS:
            raise ParameterError("pooling", "one of " + ", ".join(map(repr, _POOLINGS)), p["pooling"])
        if "hidden_sizes" in p:
            hs = p["hidden_sizes"]
            if (
                not isinstance(hs, (tuple, list))
                or len(hs) < self._min_hidden
                or not all(is_int(h) for h in hs)
            ):
                raise ParameterError(
                    "hidden_sizes", f"a tuple of {self._min_hidden} or more positive ints", hs
                )
        if not (_is_real(p["dropout"]) and 0 <= p["dropout"] < 1):
            raise ParameterError("dropout", "a number in [0, 1)", p["dropout"])
        if not (_is_real(p["lr"]) and p["lr"] > 0):
            raise ParameterError("lr", "a positive number", p["lr"])
        for name in ("batch_size", "max_epochs", "patience"):
            if not is_int(p[name]):
                raise ParameterError(name, "a positive int", p[name])
        vf = p["validation_fraction"]
        if vf is not None and not (_is_real(vf) and 0 <= vf < 1):
            raise ParameterError("validation_fraction", "None or a number in [0, 1)", vf)
        mf = p["max_frames"]
        if mf is None and self._requires_max_frames:
            raise ParameterError("max_frames", f"a positive int for {type(self).__name__}", mf)
        if mf is not None and not is_int(mf):
            raise ParameterError("max_frames", "None or a positive int", mf)
        if p["precision"] not in _PRECISIONS:
            raise ParameterError("precision", "'fp32' or 'bf16'", p["precision"])
        cbs = p["callbacks"]
        if cbs is not None and (
            not isinstance(cbs, (list, tuple)) or not all(isinstance(c, Callback) or callable(c) for c in cbs)
        ):
            raise ParameterError("callbacks", "None or a list of Callback objects or callables", cbs)
        if "memory_budget" in p:
            try:
                parse_memory_budget(p["memory_budget"])
            except ValueError as exc:
                raise ParameterError("memory_budget", "'auto', a positive int of bytes or a size such as '2GB'", p["memory_budget"]) from exc
        n_avg = p.get("average_checkpoints")
        if n_avg is not None and not is_int(n_avg):
            raise ParameterError("average_checkpoints", "None or a positive int (epochs averaged)", n_avg)
        self._resolve_device()

    def _resolve_device(self) -> torch.device:
        dev = self.device
        if dev is None or dev == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(dev)
        except (RuntimeError, TypeError) as exc:
            raise ParameterError("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", dev) from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ParameterError("device", "'cpu' or 'auto' (CUDA is not available here)", dev)
        return device

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    @contextlib.contextmanager
    def _seeded(self, seed: int, device: torch.device):
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _flush_denormals(device):
            torch.manual_seed(seed)
            yield

    # ------------------------------------------------------------------ inputs
    def _set_input_spec(self, X: Any, packed: Packed) -> None:
        name = type(self).__name__
        n = len(packed.streams)
        if self._max_streams is not None and n > self._max_streams:
            raise InputError(
                f"{name} takes {self._max_streams} feature stream(s); X has {n} "
                f"({', '.join(repr(s.name) for s in packed.streams)}); use FusionClassifier or "
                "ECAPAClassifier for several streams or select one"
            )
        shapes = stream_shapes(packed)
        weighting = getattr(self, "layer_weighting", "sum")
        for k, (n_layers, _) in enumerate(shapes):
            if n_layers > 1 and weighting is None:
                raise InputError(
                    f"layer_weighting=None needs single-layer input, but stream {k} "
                    f"({packed.streams[k].name!r}) has {n_layers} layers: select one layer or use "
                    "layer_weighting='sum' or 'softmax'"
                )
        self.input_shapes_ = [list(s) for s in shapes]
        self.stream_ratios_ = stream_ratios(packed)
        self.n_features_in_ = shapes[0][1]
        self.n_layers_in_ = shapes[0][0]
        if hasattr(X, "to_packed") and callable(getattr(X, "describe", None)):
            self.feature_info_ = X.describe()
        else:
            self.feature_info_ = describe_packed(packed)

    def _check_input_spec(self, packed: Packed) -> None:
        name = type(self).__name__
        fitted = [tuple(s) for s in self.input_shapes_]
        shapes = stream_shapes(packed)
        if len(shapes) != len(fitted):
            raise InputError(
                f"X has {len(shapes)} feature stream(s), but {name} was fitted on {len(fitted)} "
                f"(fitted (n_layers, dim) per stream: {fitted}; X: {shapes})"
            )
        for k, ((fl, fd), (xl, xd)) in enumerate(zip(fitted, shapes)):
            if xd != fd:
                raise InputError(
                    f"X has {xd} features, but {name} is expecting {fd} features as input "
                    f"(stream {k} {packed.streams[k].name!r}: fitted on (n_layers, dim) = ({fl}, {fd}), "
                    f"got ({xl}, {xd}))"
                )
            if xl != fl:
                raise InputError(
                    f"X has {xl} layers in stream {k} ({packed.streams[k].name!r}), but {name} was "
                    f"fitted on {fl} layers (fitted (n_layers, dim) = ({fl}, {fd}), got ({xl}, {xd}))"
                )
        ratios = stream_ratios(packed)
        if ratios != list(self.stream_ratios_):
            raise InputError(
                f"the frame-rate ratios of the streams of X are {ratios}, but {name} was fitted "
                f"with {list(self.stream_ratios_)}"
            )
        self._check_feature_info(packed)

    def _check_feature_info(self, packed: Packed) -> None:
        """Refuse features of another extractor, parameters or spec than those seen at fit.

        Compared only when both sides are described (fitted on and given a featcache
        FeatureSet, or a Packed made from one); see :func:`estimators._data.feature_differences`.
        """
        fitted = getattr(self, "feature_info_", None)
        given = packed.meta.get("describe") if isinstance(packed.meta, dict) else None
        refused, warned = feature_differences(fitted, given)
        name = type(self).__name__
        if refused:
            raise InputError(
                f"X holds other features than {name} was fitted on:\n  " + "\n  ".join(refused)
                + f"\nfitted on: {describe_streams(fitted)}\nX: {describe_streams(given)}"
            )
        if warned:
            warnings.warn(
                f"X was extracted with other numeric settings than the features {name} was fitted on "
                f"({'; '.join(warned)}); predictions may differ slightly",
                UserWarning,
                stacklevel=4,
            )

    def _plan(self, packed: Packed, device: torch.device) -> BatchPlan:
        budget, source = resolve_memory_budget(getattr(self, "memory_budget", "auto"))
        plan = BatchPlan(packed, list(self.stream_ratios_), self.max_frames, device, memory_budget=budget)
        plan.access["budget_from"] = source
        return plan

    def _record_access(self, plan: BatchPlan) -> None:
        """``data_access_``: how the training frames were read (and say it when verbose)."""
        self.data_access_ = dict(plan.access)
        a = self.data_access_
        if self.verbose and a["mode"] != "memory":
            how = ("uniform random batches (the selection fits)" if a["mode"] == "random"
                   else f"shard-buffered shuffle, windows of {a['window_bytes'] / 2**30:.2f} GiB")
            print(f"[{type(self).__name__}] reading {a['selection_bytes'] / 2**30:.2f} GiB of stored frames "
                  f"from {a['shards']} shard(s) in place: {how}; memory budget "
                  f"{a['budget_bytes'] / 2**30:.2f} GiB ({a['budget_from']}); "
                  + ("batches read ahead in a thread" if a["read_ahead"] else "batches read in turn (no core to spare)"))

    # ------------------------------------------------------------------ steps
    def _make_module(self, config: dict) -> torch.nn.Module:
        """Build the torch module from ``module_config_``."""
        return build_module(config)

    def _split_validation(
        self, packed: Packed, y: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(train, validation) positions: speaker-disjoint when ``packed`` has speakers.

        Returns ``(arange(n), None)`` when ``validation_fraction`` is 0/None or there are
        fewer than 2 utterances.
        """
        n = len(packed)
        frac = self.validation_fraction
        if not frac or n_validation(n, float(frac)) == 0:
            return np.arange(n), None
        if packed.speakers is not None:
            split = speaker_split(np.asarray(packed.speakers), float(frac), rng)
            if split is not None:
                return split
            warnings.warn(
                "X has speakers but only one: the validation split for early stopping is not "
                "speaker-disjoint",
                UserWarning,
                stacklevel=3,
            )
        classes = y if getattr(self, "_stratify", False) else None
        return random_split(n, float(frac), rng, classes)

    # ------------------------------------------------------------------ fit / outputs
    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None):
        """Train the model.

        Parameters
        ----------
        X : FeatureSet-like, Packed, list of ndarray or array-like
            Utterances (see :func:`estimators._data.to_packed` for the accepted forms):
            e.g. an array of shape (n, dim), (n, n_frames, dim) or
            (n, n_frames, n_layers, dim), or a list of n arrays of shape
            (n_frames_i, dim) or (n_frames_i, n_layers, dim).
        y : array-like of shape (n,) (or (n, n_outputs) for regressors)
        X_val, y_val : optional
            Explicit validation set for early stopping (same forms); when given,
            ``validation_fraction`` is ignored and all of ``X`` is used for training.

        Returns
        -------
        self
        """
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        packed = to_packed(X)
        self._set_input_spec(X, packed)
        targets = self._prepare_targets(y, len(packed))
        valid_packed = valid_targets = None
        if X_val is not None or y_val is not None:
            if X_val is None or y_val is None:
                raise InputError("X_val and y_val must be given together")
            valid_packed = to_packed(X_val)
            self._check_input_spec(valid_packed)
            valid_targets = self._encode_targets(y_val, len(valid_packed))
        device = self._resolve_device()
        self._warn_precision(device)
        seed = self._seed()
        with self._seeded(seed, device):
            rng = np.random.default_rng(seed)
            if valid_packed is None:
                train_idx, valid_idx = self._split_validation(packed, targets, rng)
            else:
                train_idx, valid_idx = np.arange(len(packed)), np.arange(len(valid_packed))
            self.validation_index_ = None if valid_packed is not None else valid_idx
            self._check_training_size(len(train_idx))
            self.module_config_ = self._module_config()
            self.module_ = self._make_module(self.module_config_).to(device)
            optimizer = self._make_optimizer(self.module_)
            plan = self._plan(packed, device)
            self._record_access(plan)
            tt = self._targets_tensor(targets, device)
            valid = None
            if valid_packed is not None:
                valid = (self._plan(valid_packed, device), valid_idx, self._targets_tensor(valid_targets, device))
            elif valid_idx is not None:
                valid = (plan, valid_idx, tt)
            self._fit_loop((plan, train_idx, tt), valid, optimizer, rng)
        self._set_summary()
        return self

    def _check_training_size(self, n_train: int) -> None:
        """Hook: refuse training sets a model cannot use (CNN: batch norm needs 2)."""

    def _warn_precision(self, device: torch.device) -> None:
        global _bf16_warned
        if self.precision == "bf16" and device.type == "cpu" and not _bf16_warned:
            try:
                native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            except Exception:  # pragma: no cover - depends on the torch build
                native = True
            if not native:
                _bf16_warned = True
                warnings.warn(
                    "precision='bf16' on a CPU without native bfloat16 support is much slower "
                    "than 'fp32'",
                    UserWarning,
                    stacklevel=3,
                )

    def _set_summary(self) -> None:
        """``layer_weights_`` (stream 0) and ``stream_layer_weights_`` (every stream) from the module."""
        per_stream = []
        for mixer in self.module_.mixers:
            weights = mixer.normalized_weights()
            per_stream.append(None if weights is None else weights.detach().float().cpu().numpy().astype(np.float64))
        self.stream_layer_weights_ = per_stream
        if per_stream[0] is not None:
            self.layer_weights_ = per_stream[0].copy()
        elif hasattr(self, "layer_weights_"):
            del self.layer_weights_

    def _outputs(self, X: Any) -> np.ndarray:
        """Raw model outputs, shape (n, n_outputs), float64."""
        check_is_fitted(self, "module_")
        packed = to_packed(X)
        self._check_input_spec(packed)
        device = self._resolve_device()
        module = self.module_.to(device)
        module.eval()
        plan = self._plan(packed, device)
        outs = []
        with torch.inference_mode(), self._autocast(device), _flush_denormals(device):
            for batch in plan.iter_batches(np.arange(len(packed)), int(self.batch_size)):
                outs.append(module(batch).float().cpu())
        return torch.cat(outs).numpy().astype(np.float64)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        module = state.get("module_")
        if module is not None:
            state["module_"] = None
            state["_module_state"] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        module_state = state.pop("_module_state", None)
        super().__setstate__(state)
        if module_state is not None:
            module = self._make_module(self.module_config_)
            module.load_state_dict(module_state)
            module.eval()
            self.module_ = module

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags
