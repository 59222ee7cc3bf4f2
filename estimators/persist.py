"""Saving and loading fitted estimators without pickle.

A model directory holds

* ``model.json`` -- format name and version, estimator class, ``get_params()``,
  ``classes_``, the JSON-able fitted attributes (shapes, history, layer weights, target
  scaling...), ``feature_info_``, the module configuration, the SHA-256 of the weights
  file, library versions and the caller's ``extra`` dict;
* ``weights.safetensors`` -- the module's ``state_dict`` (float32 tensors).

``model.json`` carries the checksum of its own content (``checksum``) and the SHA-256 of
the weights file, so corruption of either is detected.

:func:`load_model` rebuilds the module from its configuration and loads the tensors; it
never unpickles anything. A model directory is untrusted input (see
:mod:`estimators._modelfiles`): the weights file must lie inside the directory, every
fitted attribute and size is checked, and the module configuration must match the shapes
of the stored tensors before the module is built. Any problem (missing or truncated file,
bad JSON, unknown format/version/class, checksum mismatch, missing/unexpected/wrongly
shaped tensors, out-of-range values) raises :class:`estimators.errors.ModelFileError`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.utils.validation import check_is_fitted

from featcache.fileio import atomic_write_bytes, atomic_write_json

from ._modelfiles import (
    MAX_WEIGHTS_BYTES,
    check_fitted,
    check_module_config,
    check_weights_match,
    read_inside,
    read_model_json,
    verify_doc_checksum,
    with_checksum,
)
from ._modules import build_module
from .errors import EstimatorsError, ModelFileError, ParameterError
from .registry import estimator_classes

__all__ = ["save_model", "load_model", "read_model_info", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "estimators.model"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


# fitted attributes written to model.json; arrays are stored as (list, dtype)
_SCALAR_ATTRS = (
    "n_features_in_",
    "n_layers_in_",
    "input_shapes_",
    "stream_ratios_",
    "history_",
    "best_epoch_",
    "n_epochs_",
    "n_outputs_",
    "y_ndim_",
    "averaged_epochs_",
)
_ARRAY_ATTRS = ("layer_weights_", "y_mean_", "y_scale_", "validation_index_")


def _jsonable(value: Any) -> Any:
    """Plain JSON types from numpy/tuples; raise TypeError for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def _params_json(estimator: Any) -> tuple[dict, list[str]]:
    params, dropped = {}, []
    for name, value in estimator.get_params(deep=False).items():
        try:
            params[name] = _jsonable(value)
        except TypeError:
            params[name] = None
            dropped.append(name)
    return params, dropped


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(estimator: Any, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a fitted estimator to ``directory`` (created if needed).

    Parameters
    ----------
    estimator : fitted estimator of :mod:`estimators`
    directory : str or path
    extra : dict or None
        JSON-able information stored with the model (e.g. corpus, feature spec, fold).

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    EstimatorsError
        When ``estimator`` is not one of the package's classes, or ``classes_``/``extra``
        cannot be written as JSON. Parameters that cannot (``callbacks``, a
        ``RandomState``) are stored as None and listed under ``dropped_params``.
    """
    name = type(estimator).__name__
    from ._classic_persist import is_classic_estimator, save_classic

    if is_classic_estimator(estimator):  # a classic baseline (estimators.classic): arrays, no module
        return save_classic(estimator, directory, extra)
    known = estimator_classes()
    if known.get(name) is not type(estimator):
        raise EstimatorsError(f"save_model supports {sorted(known)}; got {name}")
    check_is_fitted(estimator, "module_")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save

    state, upstream = estimator.module_.state_dict(), None
    if estimator.module_config_.get("kind") == "finetune":  # head here, the upstream in upstream/
        from ._finetune_persist import save_upstream_files

        state, upstream = save_upstream_files(estimator, directory)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    weights = save(tensors, metadata={"format": FORMAT_NAME})

    params, dropped = _params_json(estimator)
    fitted: dict[str, Any] = {}
    for attr in _SCALAR_ATTRS:
        if hasattr(estimator, attr):
            fitted[attr] = _jsonable(getattr(estimator, attr))
    for attr in _ARRAY_ATTRS:
        if hasattr(estimator, attr):
            value = getattr(estimator, attr)
            fitted[attr] = None if value is None else {"values": _jsonable(value), "dtype": str(value.dtype)}
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": name,
        "params": params,
        "dropped_params": dropped,
        "fitted": fitted,
        "module_config": estimator.module_config_,
        "weights": {"file": WEIGHTS_FILE, "sha256": _sha256(weights)},
        **({"upstream": upstream} if upstream is not None else {}),
        "versions": {"torch": torch.__version__, "sklearn": sklearn.__version__},
    }
    try:
        if hasattr(estimator, "classes_"):
            classes = estimator.classes_
            doc["classes"] = {"values": _jsonable(classes), "dtype": str(classes.dtype)}
        doc["extra"] = _jsonable(extra) if extra is not None else None
    except TypeError as exc:
        raise EstimatorsError(f"cannot save {name}: classes_/extra not JSON-able ({exc})") from exc
    try:
        doc["feature_info"] = _jsonable(estimator.feature_info_)
    except TypeError:
        doc["feature_info"] = {"repr": repr(estimator.feature_info_)}
    atomic_write_bytes(directory / WEIGHTS_FILE, weights)
    atomic_write_json(directory / MODEL_FILE, with_checksum(doc))
    return directory


def read_model_info(directory: str | os.PathLike) -> dict:
    """Parse and check ``model.json`` of a model directory (no weights loaded).

    Checks, in this order: readable JSON object within size and nesting limits, format and
    version, estimator class, the file's own checksum, then the structure and bounds of
    ``params``, ``fitted``, ``module_config`` and ``weights``.

    Returns
    -------
    dict
        The document (``class``, ``params``, ``fitted``, ``extra``...).

    Raises
    ------
    ModelFileError
    """
    path = Path(directory) / MODEL_FILE
    if not os.path.lexists(path):
        raise ModelFileError(f"{path}: missing (not a model directory?)")
    doc = read_model_json(path, MODEL_FILE)
    if doc.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not an {FORMAT_NAME} file")
    if doc.get("format_version") != FORMAT_VERSION or isinstance(doc.get("format_version"), bool):
        raise ModelFileError(
            f"{path}: format version {doc.get('format_version')!r} is not supported (this "
            f"library reads version {FORMAT_VERSION})"
        )
    known = estimator_classes()
    if not isinstance(doc.get("class"), str) or doc["class"] not in known:
        raise ModelFileError(f"{path}: unknown estimator class {doc.get('class')!r}")
    verify_doc_checksum(doc, path)
    for key, kind in (("params", dict), ("fitted", dict), ("module_config", dict), ("weights", dict)):
        if not isinstance(doc.get(key), kind):
            raise ModelFileError(f"{path}: {key!r} missing or not a {kind.__name__}")
    check_module_config(doc["module_config"], str(path))
    return doc


def _make_estimator(doc: dict, where: Path) -> Any:
    """The estimator with the recorded parameters, checked as ``fit`` checks them."""
    cls = estimator_classes()[doc["class"]]
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["params"].items()}
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ModelFileError(f"{where}: parameters do not match {cls.__name__} ({exc})") from exc
    device = estimator.get_params().get("device")
    try:
        # the device is checked where the model is used (it may have been trained on a GPU)
        estimator.set_params(device="cpu")
        estimator._check_params()
    except ParameterError as exc:
        raise ModelFileError(f"{where}: invalid parameter ({exc})") from exc
    except (TypeError, ValueError) as exc:  # a value of a type no check expects
        raise ModelFileError(f"{where}: invalid parameters ({type(exc).__name__}: {exc})") from exc
    if not (device is None or isinstance(device, str)):
        raise ModelFileError(f"{where}: invalid parameter (device must be a string; got {device!r})")
    estimator.set_params(device=device)
    return estimator


def _load_tensors(directory: Path, doc: dict) -> tuple[Path, dict]:
    weights = doc["weights"]
    if weights.get("sha256") is None:
        raise ModelFileError(f"{directory / MODEL_FILE}: weights.sha256 missing")
    wpath, data = read_inside(
        directory, weights.get("file", WEIGHTS_FILE), f"{MODEL_FILE} weights.file", weights["sha256"], MAX_WEIGHTS_BYTES
    )
    from safetensors.torch import load as st_load

    try:
        return wpath, st_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"{wpath}: not a valid safetensors file ({exc})") from exc


def load_model(directory: str | os.PathLike) -> Any:
    """Rebuild a fitted estimator saved with :func:`save_model`.

    The directory is untrusted input: see :mod:`estimators._modelfiles` for what is checked
    (nothing is unpickled, no file outside the directory is read, the module is built only
    when its configuration matches the stored tensors).

    Parameters
    ----------
    directory : str or path

    Returns
    -------
    estimator
        Fitted, its module on CPU (moved to ``device`` at the first prediction).

    Raises
    ------
    ModelFileError
    """
    directory = Path(directory)
    from ._classic_persist import is_classic_dir, load_classic

    if is_classic_dir(directory):  # a classic baseline (estimators.classic): arrays only
        return load_classic(directory)
    doc = read_model_info(directory)
    where = directory / MODEL_FILE
    estimator = _make_estimator(doc, where)
    fitted = check_fitted(doc, str(where))
    wpath, tensors = _load_tensors(directory, doc)
    if doc["module_config"]["kind"] == "finetune":
        from ._finetune_persist import load_finetune_module

        module = load_finetune_module(directory, doc, tensors, wpath)
    else:
        check_weights_match(doc["module_config"], tensors, str(where), wpath)
        try:
            module = build_module(doc["module_config"])
            module.load_state_dict(tensors, strict=True)
        except Exception as exc:  # noqa: BLE001 - shapes were checked; anything left is a bad file
            raise ModelFileError(f"{wpath}: weights do not match the model ({exc})") from exc
    module.eval()
    for attr, value in fitted.items():
        setattr(estimator, attr, value)
    estimator.feature_info_ = doc.get("feature_info")
    estimator.module_config_ = doc["module_config"]
    _check_consistency(estimator, directory)
    estimator.module_ = module
    estimator._set_summary()  # stream_layer_weights_ (not stored: the weights hold them)
    return estimator


def _check_consistency(estimator: Any, directory: Path) -> None:
    cfg = estimator.module_config_
    where = directory / MODEL_FILE
    shapes = getattr(estimator, "input_shapes_", None)
    if shapes is None or [list(s) for s in cfg.get("streams", [])] != [list(s) for s in shapes]:
        raise ModelFileError(f"{where}: input_shapes_ {shapes} do not match the module streams {cfg.get('streams')}")
    n_out = estimator.classes_.shape[0] if hasattr(estimator, "classes_") else getattr(estimator, "n_outputs_", None)
    if n_out != cfg.get("n_outputs"):
        raise ModelFileError(f"{where}: {n_out} outputs expected by the fitted attributes, module has {cfg.get('n_outputs')}")
    if len(getattr(estimator, "stream_ratios_", [])) != len(shapes):
        raise ModelFileError(f"{where}: stream_ratios_ does not match the number of streams")
