"""Estimators on FeatureSets from a real (synthetic-audio) cache, inside sklearn's tools."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.pipeline import make_pipeline

import featcache
from estimators import DenseClassifier, FusionClassifier
from estimators.normalize import GlobalNormalizer, SpeakerNormalizer


@pytest.fixture(scope="module")
def X(built_cache):
    return featcache.open(built_cache).select("all_layers")


def test_pipeline_grid_search_groupkfold_parallel_on_featuresets(X):
    pipe = make_pipeline(SpeakerNormalizer(), DenseClassifier(max_epochs=3, hidden_sizes=(16, 16), random_state=0))
    grid = GridSearchCV(pipe, {"denseclassifier__lr": [1e-3, 1e-2]}, cv=GroupKFold(2), n_jobs=2, scoring="balanced_accuracy")
    grid.fit(X, X.labels, groups=X.speakers)
    assert grid.best_params_["denseclassifier__lr"] in (1e-3, 1e-2)
    est = grid.best_estimator_[-1]
    assert list(est.classes_) == sorted(set(X.labels))
    assert est.layer_weights_.shape == (3,) and np.isclose(est.layer_weights_.sum(), 1.0)
    proba = grid.predict_proba(X[:5])
    assert proba.shape == (5, 8) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_cross_validate_fusion_with_global_normalizer(built_cache):
    X2 = featcache.open(built_cache).select("all_layers+egemaps")
    pipe = make_pipeline(GlobalNormalizer(), FusionClassifier(max_epochs=2, hidden_sizes=(16, 16), random_state=0))
    res = cross_validate(pipe, X2, X2.labels, groups=X2.speakers, cv=GroupKFold(2))
    assert res["test_score"].shape == (2,) and np.all((res["test_score"] >= 0) & (res["test_score"] <= 1))


def test_internal_validation_of_a_featureset_is_speaker_disjoint(X):
    est = DenseClassifier(max_epochs=2, hidden_sizes=(8, 8), validation_fraction=0.25, random_state=0).fit(X, X.labels)
    val = np.zeros(len(X), bool)
    val[est.validation_index_] = True
    assert val.any() and (~val).any()
    assert set(X.speakers[val]).isdisjoint(set(X.speakers[~val]))


def test_predicting_on_other_features_is_refused(X, built_cache):
    est = DenseClassifier(max_epochs=1, hidden_sizes=(8, 8), random_state=0).fit(X, X.labels)
    other = featcache.open(built_cache).select("mfcc")
    with pytest.raises(ValueError) as e:
        est.predict(other)
    msg = str(e.value)
    assert "32" in msg and "40" in msg
