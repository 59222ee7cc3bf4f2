"""Guarantee 7 (estimators refuse bad input): NaN/inf, empty input, one class, labels unseen
at fit in ``score``, non-finite normalisation statistics. Each is a clear error or a
documented fallback with a warning.

Covered elsewhere: a feature dimension or layer count other than at fit
(tests/test_estimators.py::test_shape_mismatch_errors_name_both_sides,
tests/test_reliability_mismatch.py), a speaker unseen by SpeakerNormalizer
(tests/test_normalize.py::test_unseen_speaker_falls_back_to_global_with_a_warning).
"""

from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest

import featcache
from estimators import DenseClassifier, InputError, TargetError
from estimators.normalize import GlobalNormalizer, SpeakerNormalizer
from featcache.packed import Packed, Stream


def utterances(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(k), 2, 4)).astype(np.float32) for k in rng.integers(2, 6, n)]


@pytest.fixture(scope="module")
def fitted():
    X, y = utterances(), np.array(["a", "b", "c"] * 8)
    return DenseClassifier(hidden_sizes=(4, 4), max_epochs=2, random_state=0).fit(X, y), X, y


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_at_fit_and_predict(fitted, bad):
    est, X, y = fitted
    X = [x.copy() for x in X]
    X[5][1, 0, 3] = bad
    packed = Packed([Stream.from_list(X)])  # a Packed is not scanned up front: batches are
    for form in (X, packed):
        with pytest.raises(InputError, match="NaN or infinity"):
            est.predict(form)
        with pytest.raises(InputError, match="NaN or infinity"):
            DenseClassifier(max_epochs=1).fit(form, y)
    with pytest.raises(InputError, match="NaN or infinite"):
        GlobalNormalizer().fit(packed)
    with pytest.raises(InputError, match="NaN or infinite"):
        SpeakerNormalizer().fit(Packed([Stream.from_list(X)], speakers=np.array(["s1", "s2"] * 12)))


def test_non_finite_features_in_a_cache_are_refused(built_cache, tmp_path):
    cache = tmp_path / "ravdess"
    shutil.copytree(built_cache, cache)
    with h5py.File(cache / "mfcc" / "shard-00000.h5", "r+") as f:  # as an extractor gone wrong would write
        f["layers/00"][3, 5] = np.nan
        f["stats/sum"][0, 0, 5] = np.nan
    X = featcache.open(cache).select("mfcc")
    with pytest.raises(InputError, match="NaN or infinity"):
        DenseClassifier(max_epochs=1).fit(X, X.labels)
    with pytest.raises(InputError, match="NaN or infinite"):
        GlobalNormalizer().fit(X)


def test_empty_input_is_refused(fitted, built_cache):
    est, _, _ = fitted
    X = featcache.open(built_cache).select("mfcc")
    empty = X[np.zeros(len(X), bool)]
    assert len(empty) == 0
    for call in (lambda: DenseClassifier().fit(empty, empty.labels), lambda: est.predict(empty),
                 lambda: GlobalNormalizer().fit(empty), lambda: SpeakerNormalizer().fit(empty)):
        with pytest.raises(InputError, match="0 utterances"):
            call()
    with pytest.raises(ValueError):
        est.predict(np.zeros((0, 4)))


def test_one_class_is_refused(built_cache):
    X = featcache.open(built_cache).select("mfcc")
    one = X[X.labels == X.labels[0]]
    with pytest.raises(TargetError, match=rf"2 or more classes; got 1 class \('{X.labels[0]}'\)"):
        DenseClassifier(max_epochs=1).fit(one, one.labels)


def test_labels_unseen_at_fit_count_as_errors_with_a_warning(fitted):
    est, X, y = fitted
    pred = est.predict(X)
    y2 = y.astype(object)
    y2[:6] = "zzz"
    with pytest.warns(UserWarning, match=r"label\(s\) \['zzz'\] not seen at fit"):
        score = est.score(X, y2)
    assert score == pytest.approx(np.mean(pred == y2))
    assert score == pytest.approx(np.mean(pred == y) - np.sum(pred[:6] == y[:6]) / len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert est.score(X, y) == pytest.approx(np.mean(pred == y))
