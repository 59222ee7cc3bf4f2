"""Saving and loading the classic baselines (:mod:`estimators.classic`) without pickle.

A classic model directory holds ``model.json`` (format ``estimators.classic``: class,
``get_params()``, ``classes_``, ``gamma_``, the names, dtypes and shapes of the fitted
arrays, the SHA-256 of the arrays file, the caller's ``extra``; its own checksum) and
``arrays.safetensors`` (standardisation mean and scale; support vectors, dual
coefficients, intercepts and support counts of the SVC, or the weights and biases of the
logistic regression). :func:`estimators.save_model` / :func:`estimators.load_model` call
these for classic estimators, so ``estimators fit --model svc`` writes ``OUT/model`` like
any model.

The directory is untrusted input, as any model directory (:mod:`estimators._modelfiles`):
the arrays file must lie inside it and match its checksum, and every array's dtype, shape
and values are checked against the others before the estimator is rebuilt; any problem
raises :class:`~estimators.errors.ModelFileError`.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from featcache.fileio import atomic_write_bytes, atomic_write_json

from ._modelfiles import MAX_WEIGHTS_BYTES, read_inside, read_model_json, verify_doc_checksum, with_checksum
from .errors import EstimatorsError, ModelFileError, ParameterError

__all__ = ["CLASSIC_FORMAT", "is_classic_dir", "is_classic_estimator", "load_classic", "save_classic"]

CLASSIC_FORMAT = "estimators.classic"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.safetensors"
MAX_CLASSES = 10_000

#: fitted arrays of each class, with their dtypes
_ARRAYS = {
    "SVCClassifier": {"mean_": "float64", "scale_": "float64", "support_vectors_": "float64", "dual_coef_": "float64",
                      "intercept_": "float64", "n_support_": "int64"},
    "LogRegClassifier": {"mean_": "float64", "scale_": "float64", "coef_": "float64", "intercept_": "float64"},
}


def _classes() -> dict[str, type]:
    from .classic import LogRegClassifier, SVCClassifier

    return {"SVCClassifier": SVCClassifier, "LogRegClassifier": LogRegClassifier}


def is_classic_estimator(estimator: Any) -> bool:
    """Whether ``estimator`` is one of the classic baselines (saved by :func:`save_classic`)."""
    return _classes().get(type(estimator).__name__) is type(estimator)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def save_classic(estimator: Any, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a fitted classic estimator to ``directory`` (created if needed).

    Raises
    ------
    EstimatorsError
        Not fitted, or its parameters, classes or ``extra`` cannot be written as JSON.
    """
    from safetensors.numpy import save
    from sklearn.utils.validation import check_is_fitted

    name = type(estimator).__name__
    if not is_classic_estimator(estimator):
        raise EstimatorsError(f"save_classic supports {sorted(_classes())}; got {name}")
    check_is_fitted(estimator, "mean_")
    arrays = {k: np.ascontiguousarray(getattr(estimator, k), dtype=dt) for k, dt in _ARRAYS[name].items()}
    data = save(arrays, metadata={"format": CLASSIC_FORMAT})
    classes = estimator.classes_
    try:
        doc = {
            "format": CLASSIC_FORMAT,
            "format_version": FORMAT_VERSION,
            "class": name,
            "params": _plain(estimator.get_params(deep=False)),
            "classes": {"values": _plain(classes.tolist()), "dtype": str(classes.dtype)},
            "gamma_": float(getattr(estimator, "gamma_", 0.0)) or None,
            "arrays": {k: list(v.shape) for k, v in arrays.items()},
            "weights": {"file": ARRAYS_FILE, "sha256": hashlib.sha256(data).hexdigest()},
            "extra": _plain(extra),
        }
    except TypeError as exc:
        raise EstimatorsError(f"cannot save {name}: parameters, classes_ or extra not JSON-able ({exc})") from exc
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / ARRAYS_FILE, data)
    atomic_write_json(directory / MODEL_FILE, with_checksum(doc))
    return directory


def is_classic_dir(directory: str | os.PathLike) -> bool:
    """Whether ``directory/model.json`` is a classic model (False when it cannot be read)."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        return False
    try:
        return read_model_json(path, MODEL_FILE).get("format") == CLASSIC_FORMAT
    except ModelFileError:
        return False


def _doc(directory: Path) -> dict:
    where = directory / MODEL_FILE
    doc = read_model_json(where, MODEL_FILE)
    if doc.get("format") != CLASSIC_FORMAT:
        raise ModelFileError(f"{where}: not an {CLASSIC_FORMAT} file")
    if doc.get("format_version") != FORMAT_VERSION or isinstance(doc.get("format_version"), bool):
        raise ModelFileError(f"{where}: format version {doc.get('format_version')!r} is not supported (this library reads {FORMAT_VERSION})")
    if doc.get("class") not in _classes():
        raise ModelFileError(f"{where}: unknown classic estimator class {doc.get('class')!r}")
    verify_doc_checksum(doc, where)
    for key in ("params", "classes", "arrays", "weights"):
        if not isinstance(doc.get(key), dict):
            raise ModelFileError(f"{where}: {key!r} missing or not an object")
    return doc


def _classes_array(doc: dict, where: Path) -> np.ndarray:
    c = doc["classes"]
    values, dtype = c.get("values"), c.get("dtype")
    ok_dtype = isinstance(dtype, str) and (dtype in ("int64", "int32", "float64", "bool", "object")
                                           or (dtype.startswith("<U") and dtype[2:].isdigit() and 0 < int(dtype[2:]) <= 10_000))
    if not ok_dtype or not isinstance(values, list) or not 2 <= len(values) <= MAX_CLASSES:
        raise ModelFileError(f"{where}: classes must be 2 to {MAX_CLASSES} values with a numeric or string dtype")
    if not all(isinstance(v, (str, int, float, bool)) for v in values):
        raise ModelFileError(f"{where}: classes must be a flat list of strings or numbers")
    try:
        out = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelFileError(f"{where}: classes do not fit dtype {dtype} ({exc})") from exc
    if len(np.unique(out)) != len(out):
        raise ModelFileError(f"{where}: classes are not distinct")
    return out


def _check_arrays(name: str, arrays: dict, k: int, where: Path) -> None:
    """Dtypes, shapes and values consistent with each other and with ``k`` classes."""
    want = _ARRAYS[name]
    if set(arrays) != set(want):
        raise ModelFileError(f"{where}: arrays {sorted(arrays)} are not the expected {sorted(want)}")
    for key, dt in want.items():
        if str(arrays[key].dtype) != dt:
            raise ModelFileError(f"{where}: array {key} has dtype {arrays[key].dtype}, expected {dt}")
        if dt == "float64" and not np.isfinite(arrays[key]).all():
            raise ModelFileError(f"{where}: array {key} holds NaN or infinite values")
    d = arrays["mean_"].shape
    if len(d) != 1 or d[0] < 1 or arrays["scale_"].shape != d or not (arrays["scale_"] > 0).all():
        raise ModelFileError(f"{where}: mean_ and scale_ must be vectors of one length, scale_ positive")
    d = d[0]
    if name == "SVCClassifier":
        ns, sv, dc = arrays["n_support_"], arrays["support_vectors_"], arrays["dual_coef_"]
        n_sv = int(ns.sum()) if ns.ndim == 1 and (ns >= 0).all() else -1
        shapes_ok = (ns.shape == (k,) and sv.shape == (n_sv, d) and dc.shape == (k - 1, n_sv)
                     and arrays["intercept_"].shape == (k * (k - 1) // 2,))
    else:
        rows = 1 if k == 2 else k
        shapes_ok = arrays["coef_"].shape == (rows, d) and arrays["intercept_"].shape == (rows,)
    if not shapes_ok:
        raise ModelFileError(f"{where}: fitted array shapes {({n: list(a.shape) for n, a in arrays.items()})} do not fit {k} classes and {d} features")


def load_classic(directory: str | os.PathLike) -> Any:
    """Rebuild a classic estimator saved with :func:`save_classic` (nothing is unpickled).

    Raises
    ------
    ModelFileError
        Any problem with the directory (see the module docstring).
    """
    from safetensors.numpy import load

    directory = Path(directory)
    where = directory / MODEL_FILE
    doc = _doc(directory)
    name, cls = doc["class"], _classes()[doc["class"]]
    try:
        est = cls(**doc["params"])
        est._check_params()
    except (TypeError, ParameterError) as exc:
        raise ModelFileError(f"{where}: invalid parameters for {name} ({exc})") from exc
    classes = _classes_array(doc, where)
    wpath, data = read_inside(directory, doc["weights"].get("file"), f"{MODEL_FILE} weights.file", doc["weights"].get("sha256"), MAX_WEIGHTS_BYTES)
    try:
        arrays = load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"{wpath}: not a valid safetensors file ({exc})") from exc
    _check_arrays(name, arrays, len(classes), where)
    if name == "SVCClassifier":
        g = doc.get("gamma_")
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not (math.isfinite(g) and g > 0):
            raise ModelFileError(f"{where}: gamma_ must be a positive number; got {g!r}")
        est.gamma_ = float(g)
    for key, value in arrays.items():
        setattr(est, key, value)
    est.classes_ = classes
    est.n_features_in_ = int(arrays["mean_"].shape[0])
    return est
