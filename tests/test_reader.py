"""Reading API: specs, FeatureSet indexing, packing, and use inside scikit-learn."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.utils import _safe_indexing

import featcache
from featcache.errors import SpecError, StoreError

SSL = "tiny_wav2vec2_0"


@pytest.fixture(scope="module")
def cache(built_cache):
    return featcache.open(built_cache)


def test_open_root_with_one_corpus_and_errors(built_cache, tmp_path):
    assert featcache.open(built_cache.parent).path == built_cache
    with pytest.raises(StoreError, match="no featcache corpus cache"):
        featcache.open(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "corpus.json").write_text("{}")
    with pytest.raises(StoreError, match="several corpus caches"):
        featcache.open(tmp_path)


@pytest.mark.parametrize(
    "spec, layers",
    [
        ("all_layers", (0, 1, 2)),
        ("layer:1", (1,)),
        ("layers:1-2", (1, 2)),
        ("local_encoder", (0,)),
        ("output", (2,)),
        (f"{SSL}:layer:2", (2,)),
        ("mfcc", (0,)),
    ],
)
def test_specs_select_layers(cache, spec, layers):
    fs = cache.select(spec)
    assert fs.streams[0].layers == layers
    assert fs[0].shape[1] == len(layers)


def test_layer_slices_match_all_layers(cache):
    full = cache.select("all_layers")[5]
    np.testing.assert_array_equal(cache.select("layer:1")[5][:, 0], full[:, 1])
    np.testing.assert_array_equal(cache.select("output")[5][:, 0], full[:, -1])


@pytest.mark.parametrize("spec, msg", [("layer:7", "does not exist"), ("nonsense", "unknown feature spec"), ("", "non-empty")])
def test_bad_specs_are_explained(cache, spec, msg):
    with pytest.raises(SpecError, match=msg):
        cache.select(spec)


def test_two_streams(cache):
    fs = cache.select("all_layers+egemaps")
    a, b = fs[3]
    assert a.shape[1:] == (3, 32) and b.shape[1:] == (1, 25)
    assert abs(len(b) - 2 * len(a)) <= 4  # 100 vs 50 frames/s
    p = fs.to_packed()
    assert len(p.streams) == 2 and p.streams[1].frame_rate == 100.0


def test_indexing_like_sklearn_does(cache):
    fs = cache.select("all_layers")
    assert len(fs) == 64 and fs.shape[0] == 64
    sub = fs[np.array([5, 1, 9])]
    assert list(sub.ids) == [fs.ids[5], fs.ids[1], fs.ids[9]]
    np.testing.assert_array_equal(sub[1], fs[1])
    assert list(fs[2:5].ids) == list(fs.ids[2:5])
    mask = np.zeros(64, bool)
    mask[[0, 63]] = True
    assert list(fs[mask].ids) == [fs.ids[0], fs.ids[63]]
    assert list(_safe_indexing(fs, [3, 4]).ids) == list(fs.ids[3:5])
    assert list(fs[np.array([7]), ...].ids) == [fs.ids[7]]
    with pytest.raises(IndexError):
        fs[64]


def test_labels_speakers_and_label_map(cache):
    fs = cache.select("mfcc")
    assert set(fs.labels) == {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}
    fs7 = cache.select("mfcc", label_map="ravdess7")
    assert "calm" not in set(fs7.labels) and (fs7.labels == "neutral").sum() == 2 * (fs.labels == "neutral").sum()
    assert len(set(fs.speakers)) == 4


def test_max_frames_crops(cache):
    fs = cache.select("all_layers", max_frames=10)
    assert all(len(fs[i]) <= 10 for i in range(5))
    assert np.all(fs.to_packed().streams[0].lengths <= 10)


def test_pooled_mean_from_stats_equals_mean_of_frames(cache):
    pooled = cache.select("layers:1-2", pooled="mean")
    fs = cache.select("layers:1-2")
    ref = np.stack([fs[i].astype(np.float64).mean(0).ravel() for i in range(len(fs))])
    assert pooled.shape == (64, 64)
    np.testing.assert_allclose(pooled, ref, rtol=1e-5, atol=1e-6)
    cropped = cache.select("mfcc", max_frames=5, pooled="mean")
    np.testing.assert_allclose(cropped[0], cache.select("mfcc")[0][:5].astype(np.float64).mean(0).ravel(), rtol=1e-6)


def test_packed_subsets_share_one_copy(cache):
    fs = cache.select("all_layers")
    a, b = fs[:10].to_packed(), fs[10:].to_packed()
    assert a.streams[0].data is b.streams[0].data
    for i in (0, 7):
        np.testing.assert_array_equal(a.streams[0].utterance(i), fs[i].astype(np.float16))
    assert list(b.speakers) == list(fs.speakers[10:])


def test_pickle_travels_small_and_reopens(cache):
    fs = cache.select("all_layers")[::3]
    blob = pickle.dumps(fs)
    assert len(blob) < 5000
    again = pickle.loads(blob)
    assert list(again.ids) == list(fs.ids)
    np.testing.assert_array_equal(again[2], fs[2])


class PooledLR(ClassifierMixin, BaseEstimator):
    """A minimal estimator that takes a FeatureSet: records what it was fitted on."""

    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y):
        self.seen_ = set(X.ids)
        self.lr_ = LogisticRegression(C=self.C, max_iter=2000).fit(X.pooled_mean(), y)
        self.classes_ = self.lr_.classes_
        return self

    def predict(self, X):
        return self.lr_.predict(X.pooled_mean())


def test_featureset_in_cross_val_and_grid_search_with_groupkfold(cache):
    fs = cache.select("mfcc")
    y, groups = fs.labels, fs.speakers
    scores = cross_val_score(PooledLR(), fs, y, groups=groups, cv=GroupKFold(4))
    assert scores.shape == (4,) and np.all(np.isfinite(scores))
    gs = GridSearchCV(PooledLR(), {"C": [0.1, 1.0]}, cv=GroupKFold(2), n_jobs=2).fit(fs, y, groups=groups)
    assert gs.best_params_["C"] in (0.1, 1.0)
    assert gs.best_estimator_.seen_ == set(fs.ids)  # refit on everything
    # inside a fold, the estimator saw only training speakers' utterances
    tr, te = next(GroupKFold(4).split(fs, y, groups))
    est = PooledLR().fit(fs[tr], y[tr])
    assert est.seen_.isdisjoint(set(fs.ids[te]))
