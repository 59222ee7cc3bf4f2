"""Checks of the files of a saved model directory, which is untrusted input.

A model directory may come from a colleague or a shared drive, so everything read from it
is checked before it is used (:mod:`estimators.persist`, :mod:`estimators.predict`):

* JSON files are read with :func:`featcache.fileio.read_json` (size, nesting and type
  limits) and every name of a file in them is resolved with
  :func:`featcache.fileio.resolve_inside` (it must stay inside the directory);
* every file is covered by a SHA-256: each JSON file carries the checksum of its own
  content (``checksum``, over the canonical JSON of the document without that key) and
  names the SHA-256 of the binary file it refers to (weights, normalisation statistics);
* every size and shape is bounded, and those of the module configuration must equal the
  shapes of the tensors of the weights file before the torch module is built;
* binary files are read only when they are regular files under a size limit.

Every problem raises :class:`estimators.errors.ModelFileError`.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from ._modelio import (  # re-exported: the checks of a model directory, in one import
    CHECKSUM_KEY,
    doc_checksum,
    read_inside,
    read_model_json,
    short_repr,
    verify_doc_checksum,
    with_checksum,
)
from .errors import ModelFileError

__all__ = [
    "CHECKSUM_KEY",
    "MAX_WEIGHTS_BYTES",
    "MAX_STATS_BYTES",
    "doc_checksum",
    "with_checksum",
    "read_model_json",
    "verify_doc_checksum",
    "read_inside",
    "check_module_config",
    "check_weights_match",
    "check_fitted",
    "check_preprocessing",
]

MAX_WEIGHTS_BYTES = 2 << 30  # our heads are a few MB; 2 GiB leaves room for big CNN heads
MAX_STATS_BYTES = 256 << 20
MAX_STREAMS = 16
MAX_LAYERS = 4096
MAX_DIM = 1 << 20
MAX_WIDTH = 1 << 20
MAX_DEPTH = 32  # dense layers in a list of sizes
MAX_OUTPUTS = 100_000
MAX_RATIO = 10_000
_ARRAY_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
        raise ModelFileError(f"{what} must be an integer in [{low}, {high}]; got {short_repr(value)}")
    return int(value)


def _real(value: Any, what: str, low: float, high: float, *, open_high: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = low <= v < high if open_high else low <= v <= high
    if not ok:
        raise ModelFileError(f"{what} must be a number in [{low:g}, {high:g}{')' if open_high else ']'}; got {short_repr(value)}")
    return float(value)


def _choice(value: Any, what: str, allowed: tuple) -> Any:
    if not any(type(value) is type(a) and value == a for a in allowed):
        raise ModelFileError(f"{what} must be one of {', '.join(map(repr, allowed))}; got {short_repr(value)}")
    return value


def _int_list(value: Any, what: str, low: int, high: int, max_len: int, min_len: int = 0) -> list[int]:
    if not isinstance(value, list) or not min_len <= len(value) <= max_len:
        raise ModelFileError(f"{what} must be a list of {min_len} to {max_len} integers; got {short_repr(value)}")
    return [_int(v, f"{what}[{i}]", low, high) for i, v in enumerate(value)]


def _get(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise ModelFileError(f"{where}: {key!r} missing")
    return d[key]


# --------------------------------------------------------------------------- module config


#: integer sizes of the module kinds without lists: key -> (low, high)
_KIND_INTS = {
    "cnn": {"max_frames": (1, MAX_WIDTH), "n_filters": (1, 4096), "n_blocks": (1, 16), "dense_size": (1, MAX_WIDTH)},
    "ecapa": {"channels": (1, 4096), "scale": (1, 64), "embedding_size": (1, MAX_WIDTH), "bottleneck": (1, 4096)},
}
_POOLINGS = ("mean", "max", "first", "last", "attentive")


def check_module_config(cfg: dict, where: str, *, head: bool = False) -> None:
    """Bound every size of a ``module_config`` (kind, streams, layer sizes...).

    The sizes are compared with the weights later (:func:`check_weights_match`); these bounds
    only keep building a description of the module (on the meta device) cheap. ``head``:
    the configuration of one head of a late-fusion module (one stream, no output layer).
    """
    w = f"{where} module_config"
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{w} must be an object; got {short_repr(cfg)}")
    kinds = ("frame", "ecapa") if head else ("frame", "cnn", "ecapa", "late", "finetune")
    kind = _choice(_get(cfg, "kind", w), f"{w}.kind", kinds)
    streams = _get(cfg, "streams", w)
    if not isinstance(streams, list) or not 1 <= len(streams) <= (1 if head else MAX_STREAMS):
        raise ModelFileError(f"{w}.streams must be a list of 1 to {1 if head else MAX_STREAMS} [n_layers, dim]; got {short_repr(streams)}")
    for k, s in enumerate(streams):
        if not isinstance(s, list) or len(s) != 2:
            raise ModelFileError(f"{w}.streams[{k}] must be [n_layers, dim]; got {short_repr(s)}")
        _int(s[0], f"{w}.streams[{k}][0] (layers)", 1, MAX_LAYERS)
        _int(s[1], f"{w}.streams[{k}][1] (dim)", 1, MAX_DIM)
    _choice(_get(cfg, "weighting", w), f"{w}.weighting", ("sum", "softmax", None))
    _real(_get(cfg, "dropout", w), f"{w}.dropout", 0.0, 1.0, open_high=True)
    if head:
        _choice(_get(cfg, "n_outputs", w), f"{w}.n_outputs", (None,))
    else:
        _int(_get(cfg, "n_outputs", w), f"{w}.n_outputs", 1, MAX_OUTPUTS)
    for key, (low, high) in _KIND_INTS.get(kind, {}).items():
        _int(_get(cfg, key, w), f"{w}.{key}", low, high)
    if kind == "frame":
        _int_list(_get(cfg, "branch_sizes", w), f"{w}.branch_sizes", 1, MAX_WIDTH, MAX_DEPTH)
        _int_list(_get(cfg, "trunk_sizes", w), f"{w}.trunk_sizes", 1, MAX_WIDTH, MAX_DEPTH)
        lstm = _get(cfg, "lstm_size", w)
        if lstm is not None:
            _int(lstm, f"{w}.lstm_size", 1, MAX_WIDTH)
        _choice(_get(cfg, "bidirectional", w), f"{w}.bidirectional", (True, False))
        _choice(_get(cfg, "pooling", w), f"{w}.pooling", _POOLINGS)
    elif kind == "cnn":
        if len(streams) != 1:
            raise ModelFileError(f"{w}.streams: a cnn module takes one stream; got {len(streams)}")
        _int_list(_get(cfg, "kernel_size", w), f"{w}.kernel_size", 1, 1024, 2, 2)
    elif kind == "ecapa" and cfg["channels"] % cfg["scale"]:
        raise ModelFileError(f"{w}.channels ({cfg['channels']}) must be a multiple of scale ({cfg['scale']})")
    elif kind == "finetune":
        from ._finetune_persist import check_finetune_config  # a fine-tuned upstream + head

        check_finetune_config(cfg, w)
    elif kind == "late":
        heads = _get(cfg, "heads", w)
        if not isinstance(heads, list) or len(heads) != len(streams):
            raise ModelFileError(f"{w}.heads must be a list of {len(streams)} head configurations (one per stream); got {short_repr(heads)}")
        for k, h in enumerate(heads):
            check_module_config(h, f"{where} heads[{k}]", head=True)
            if h["streams"] != [streams[k]]:
                raise ModelFileError(f"{w}.heads[{k}].streams must be [{streams[k]}]; got {short_repr(h['streams'])}")


def check_weights_match(cfg: dict, tensors: dict, where: str, wpath: Path) -> None:
    """Refuse weights whose tensor names, shapes or dtypes differ from the module's.

    The module is built on PyTorch's ``meta`` device (shapes only, no memory), so a
    configuration asking for huge layers is refused here, before a real module is built:
    the real module then takes as much memory as the weights file.
    """
    import torch

    from ._modules import build_module

    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_module(cfg).state_dict().items()}
    except Exception as exc:  # noqa: BLE001 - any failure is a bad configuration
        raise ModelFileError(f"{where}: invalid module_config ({type(exc).__name__}: {exc})") from exc
    got = {k: tuple(t.shape) for k, t in tensors.items()}
    problems = [f"missing tensor {k!r}" for k in expected if k not in got]
    problems += [f"unexpected tensor {k!r}" for k in got if k not in expected]
    problems += [
        f"{k!r} has shape {got[k]}, module_config asks for {expected[k]}"
        for k in expected
        if k in got and got[k] != expected[k]
    ]
    problems += [f"{k!r} is {t.dtype}, not float32" for k, t in tensors.items() if t.dtype != torch.float32]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelFileError(f"{wpath}: weights do not match the model: {'; '.join(problems[:3])}{more}")


# --------------------------------------------------------------------------- fitted attributes


def _array(v: Any, what: str, *, classes: bool = False) -> np.ndarray | None:
    if v is None:
        return None
    if not isinstance(v, dict) or not isinstance(v.get("dtype"), str) or not isinstance(v.get("values"), list):
        raise ModelFileError(f"{what} must be {{'values': [...], 'dtype': ...}}; got {short_repr(v)}")
    dtype = v["dtype"]
    unicode = dtype.startswith("<U") and dtype[2:].isdigit() and 0 < int(dtype[2:]) <= 10_000
    if not (dtype in _ARRAY_DTYPES or (classes and (unicode or dtype == "object"))):
        raise ModelFileError(f"{what}.dtype {short_repr(dtype)} is not allowed (numbers{', strings' if classes else ''} only)")
    values = v["values"]
    if classes and not all(isinstance(x, (str, int, float, bool)) for x in values):
        raise ModelFileError(f"{what}.values must be a flat list of strings or numbers")
    try:
        out = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelFileError(f"{what}: values do not fit dtype {dtype} ({exc})") from exc
    if out.dtype == object and any(isinstance(x, (list, dict)) for x in out.ravel()):
        raise ModelFileError(f"{what}.values must be a flat list")
    return out


def check_fitted(doc: dict, where: str) -> dict[str, Any]:
    """The fitted attributes of ``model.json`` as Python values, every one checked.

    Returns
    -------
    dict
        Attribute name -> value (arrays as ndarrays; ``classes_`` included when present).
    """
    fitted = doc["fitted"]
    w = f"{where} fitted"
    n_streams = len(doc["module_config"]["streams"])
    out: dict[str, Any] = {}
    for name in ("n_features_in_", "n_layers_in_", "n_outputs_"):
        if name in fitted:
            out[name] = _int(fitted[name], f"{w}.{name}", 1, MAX_DIM)
    for name in ("best_epoch_", "n_epochs_"):
        if name in fitted:
            out[name] = None if fitted[name] is None else _int(fitted[name], f"{w}.{name}", 0, 1 << 31)
    if "averaged_epochs_" in fitted:
        out["averaged_epochs_"] = _int_list(fitted["averaged_epochs_"], f"{w}.averaged_epochs_", 1, 1 << 31, 1 << 16)
    if "y_ndim_" in fitted:
        out["y_ndim_"] = _choice(fitted["y_ndim_"], f"{w}.y_ndim_", (1, 2))
    shapes = _get(fitted, "input_shapes_", w)
    if not isinstance(shapes, list) or len(shapes) != n_streams:
        raise ModelFileError(f"{w}.input_shapes_ must be a list of {n_streams} [n_layers, dim]; got {short_repr(shapes)}")
    out["input_shapes_"] = [_int_list(s, f"{w}.input_shapes_[{k}]", 1, MAX_DIM, 2, 2) for k, s in enumerate(shapes)]
    out["stream_ratios_"] = _int_list(_get(fitted, "stream_ratios_", w), f"{w}.stream_ratios_", 1, MAX_RATIO, n_streams, n_streams)
    if "history_" in fitted:
        if not isinstance(fitted["history_"], list):
            raise ModelFileError(f"{w}.history_ must be a list; got {short_repr(fitted['history_'])}")
        out["history_"] = fitted["history_"]
    for name in ("layer_weights_", "y_mean_", "y_scale_", "validation_index_"):
        if name in fitted:
            out[name] = _array(fitted[name], f"{w}.{name}")
    n_out = doc["module_config"]["n_outputs"]
    for name in ("y_mean_", "y_scale_"):
        a = out.get(name)
        if a is not None and a.shape != (n_out,):
            raise ModelFileError(f"{w}.{name} must have shape ({n_out},); got {a.shape}")
    if "classes" in doc:
        classes = _array(doc["classes"], f"{where} classes", classes=True)
        if classes is None or classes.ndim != 1:
            raise ModelFileError(f"{where} classes must be a flat list")
        out["classes_"] = classes
    return out


# --------------------------------------------------------------------------- preprocessing.json


def _opt_str(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ModelFileError(f"{what} must be a string or null; got {short_repr(value)}")
    return value


def _check_stream(s: Any, k: int, w: str) -> None:
    ws = f"{w}.streams[{k}]"
    if not isinstance(s, dict):
        raise ModelFileError(f"{ws} must be an object; got {short_repr(s)}")
    if not isinstance(s.get("extractor"), str):
        raise ModelFileError(f"{ws}.extractor must be a string; got {short_repr(s.get('extractor'))}")
    if not isinstance(s.get("params", {}), dict):
        raise ModelFileError(f"{ws}.params must be an object; got {short_repr(s.get('params'))}")
    for key in ("store", "name"):
        _opt_str(s.get(key), f"{ws}.{key}")
    if s.get("layers") is not None:
        _int_list(s["layers"], f"{ws}.layers", 0, MAX_LAYERS - 1, MAX_LAYERS)
    for key, high in (("dim", MAX_DIM), ("n_layers", MAX_LAYERS)):
        if s.get(key) is not None:
            _int(s[key], f"{ws}.{key}", 1, high)
    if s.get("frame_rate") is not None:
        _real(s["frame_rate"], f"{ws}.frame_rate", 1e-3, 1e6)
    pipe = s.get("pipeline")
    if pipe is not None:
        if not isinstance(pipe, dict):
            raise ModelFileError(f"{ws}.pipeline must be an object; got {short_repr(pipe)}")
        if pipe.get("max_seconds") is not None:
            _real(pipe["max_seconds"], f"{ws}.pipeline.max_seconds", 1e-3, 1e7)


def check_preprocessing(info: dict, where: str) -> None:
    """Check the structure and bounds of a parsed ``preprocessing.json``."""
    features = _get(info, "features", where)
    w = f"{where} features"
    if not isinstance(features, dict):
        raise ModelFileError(f"{w} must be an object; got {short_repr(features)}")
    streams = _get(features, "streams", w)
    if not isinstance(streams, list) or not 1 <= len(streams) <= MAX_STREAMS:
        raise ModelFileError(f"{w}.streams must be a list of 1 to {MAX_STREAMS} streams; got {short_repr(streams)}")
    for k, s in enumerate(streams):
        _check_stream(s, k, w)
    if features.get("max_frames") is not None:
        _int(features["max_frames"], f"{w}.max_frames", 1, MAX_WIDTH)
    norm = info.get("normalization")
    if norm is not None and not isinstance(norm, dict):
        raise ModelFileError(f"{where} normalization must be an object; got {short_repr(norm)}")
    norm = norm or {}
    _choice(norm.get("kind", "none"), f"{where} normalization.kind", ("speaker", "global", "none"))
    _real(norm.get("eps", 1e-8), f"{where} normalization.eps", 0.0, 1.0)
    _int(norm.get("n_streams", 0), f"{where} normalization.n_streams", 0, len(streams))
    _opt_str(norm.get("statistics"), f"{where} normalization.statistics")
    _opt_str(info.get("spec"), f"{where} spec")
    _opt_str(info.get("label_map"), f"{where} label_map")
    targets = info.get("targets")
    if targets is not None and not (isinstance(targets, list) and len(targets) <= MAX_OUTPUTS and all(isinstance(t, str) for t in targets)):
        raise ModelFileError(f"{where} targets must be null or a list of strings; got {short_repr(targets)}")
    if info.get("info") is not None and not isinstance(info["info"], dict):
        raise ModelFileError(f"{where} info must be an object; got {short_repr(info['info'])}")
