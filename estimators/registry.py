"""The one estimator registry: model names (``--model dense``) and their classes.

``estimators fit --model NAME``, :func:`estimators.run_experiment` and
:func:`estimators.load_model` all look estimators up here. Classes are named as
``"module:Class"`` strings until first used, so the command line can list the names
without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ParameterError

__all__ = ["TASKS", "audio_model_names", "estimator_class", "estimator_classes", "model_name_of", "model_names", "register_model"]

TASKS = ("classification", "regression")

#: model name -> {task: "module:Class" or a class}
_REGISTRY: dict[str, dict[str, Any]] = {
    "dense": {"classification": "estimators.classifiers:DenseClassifier", "regression": "estimators.regressors:DenseRegressor"},
    "lstm": {"classification": "estimators.classifiers:LSTMClassifier", "regression": "estimators.regressors:LSTMRegressor"},
    "cnn": {"classification": "estimators.classifiers:CNNClassifier"},
    "fusion": {"classification": "estimators.classifiers:FusionClassifier"},
    "ecapa": {"classification": "estimators.classifiers:ECAPAClassifier", "regression": "estimators.regressors:ECAPARegressor"},
    # classic baselines (StandardScaler + SVC / logistic regression on pooled features)
    "svc": {"classification": "estimators.classic:SVCClassifier"},
    "logreg": {"classification": "estimators.classic:LogRegClassifier"},
}

#: models over audio rather than cached features (``estimators finetune``); kept apart so that
#: ``--model`` of ``estimators fit`` lists feature models only
_AUDIO_REGISTRY: dict[str, dict[str, Any]] = {
    "finetune": {"classification": "estimators.finetune:FineTuneClassifier", "regression": "estimators.finetune:FineTuneRegressor"},
}


def audio_model_names() -> tuple[str, ...]:
    """Registered models that take audio (fine-tuning), not cached features."""
    return tuple(_AUDIO_REGISTRY)


def model_names(task: str | None = None) -> tuple[str, ...]:
    """Registered model names (those with an estimator for ``task``, when given)."""
    return tuple(n for n, by in _REGISTRY.items() if task is None or task in by)


def _load(ref: Any) -> type:
    if isinstance(ref, str):
        module, _, name = ref.partition(":")
        return getattr(importlib.import_module(module), name)
    return ref


def estimator_class(name: str, task: str = "classification") -> type:
    """The estimator class of a model name for a task.

    Raises
    ------
    ParameterError
        Unknown name, or no estimator of that name for the task.
    """
    if task not in TASKS:
        raise ParameterError("task", " or ".join(TASKS), task)
    names = model_names(task)
    if name not in names:
        what = "--model" if task == "classification" else "--model with --target (regressors)"
        raise ParameterError(what, "one of " + ", ".join(names) + " or an estimator", name)
    return _load(_REGISTRY[name][task])


def estimator_classes() -> dict[str, type]:
    """Class name -> class of every registered estimator (what a saved model may name)."""
    out = {}
    for by in (*_REGISTRY.values(), *_AUDIO_REGISTRY.values()):
        for ref in by.values():
            cls = _load(ref)
            out[cls.__name__] = cls
    return out


def model_name_of(estimator: Any) -> str:
    """The model name of an estimator instance (its class, else the nearest registered base
    class), or its class name when unregistered."""
    pairs = [(name, _load(ref)) for name, by in (*_REGISTRY.items(), *_AUDIO_REGISTRY.items()) for ref in by.values()]
    for name, cls in pairs:
        if type(estimator) is cls:
            return name
    for klass in type(estimator).__mro__[1:]:
        for name, cls in pairs:
            if klass is cls:
                return name
    return type(estimator).__name__


def register_model(name: str, *, classifier: Any = None, regressor: Any = None, replace: bool = False) -> None:
    """Register a model name (classes or ``"module:Class"`` strings).

    Raises
    ------
    ParameterError
        An empty name, no class given, or a name already taken without ``replace``.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ParameterError("name", "a non-empty model name without surrounding spaces", name)
    if classifier is None and regressor is None:
        raise ParameterError("classifier/regressor", "at least one estimator class", None)
    if name in _REGISTRY and not replace:
        raise ParameterError("name", f"a name not yet registered (or replace=True); taken: {', '.join(_REGISTRY)}", name)
    _REGISTRY[name] = {t: c for t, c in zip(TASKS, (classifier, regressor)) if c is not None}
