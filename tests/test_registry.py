"""The one estimator registry: names for the CLI and the runner, classes for load_model."""

from __future__ import annotations

import pytest

import estimators.registry as registry
from estimators import DenseClassifier, DenseRegressor, LSTMClassifier
from estimators.errors import ParameterError
from estimators.experiment import make_estimator


class WideDense(DenseClassifier):
    """A user's own head."""


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {k: dict(v) for k, v in registry._REGISTRY.items()})


def test_built_in_names_and_classes():
    assert registry.model_names() == ("dense", "lstm", "cnn", "fusion", "ecapa", "svc", "logreg")
    assert registry.model_names("regression") == ("dense", "lstm", "ecapa")
    assert registry.estimator_class("dense", "regression") is DenseRegressor
    assert registry.estimator_classes()["LSTMClassifier"] is LSTMClassifier


def test_unknown_names_say_what_is_allowed():
    with pytest.raises(ParameterError, match="one of dense, lstm, cnn, fusion"):
        registry.estimator_class("svm")
    with pytest.raises(ParameterError, match="--target.*one of dense, lstm"):
        registry.estimator_class("cnn", "regression")


def test_a_registered_model_is_seen_by_the_runner_and_by_load_model(clean_registry):
    registry.register_model("wide", classifier=WideDense)
    est = make_estimator("wide", "classification", {"hidden_sizes": (8,), "not_a_param": 1})
    assert type(est) is WideDense and est.hidden_sizes == (8,)
    assert registry.estimator_classes()["WideDense"] is WideDense
    assert registry.model_name_of(est) == "wide"
    with pytest.raises(ParameterError, match="not yet registered"):
        registry.register_model("wide", classifier=WideDense)


def test_an_unregistered_subclass_is_named_after_its_registered_base():
    class Mine(DenseClassifier):
        pass

    assert registry.model_name_of(Mine()) == "dense"
    assert registry.model_name_of(object()) == "object"
