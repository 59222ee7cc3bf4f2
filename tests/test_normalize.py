"""SpeakerNormalizer and GlobalNormalizer on FeatureSets, Packed objects and arrays."""

from __future__ import annotations

import numpy as np
import pytest

import featcache
from estimators.normalize import GlobalNormalizer, SpeakerNormalizer
from featcache.packed import Packed, Stream


@pytest.fixture(scope="module")
def fs(built_cache):
    return featcache.open(built_cache).select("layers:1-2")


def frames_of(X) -> tuple[np.ndarray, np.ndarray]:
    """All normalised frames (float64) and the speaker of each frame."""
    st = X.to_packed().streams[0] if hasattr(X, "to_packed") else X.streams[0]
    x, lengths = st.gather(np.arange(st.n_utterances), dtype=np.float64)
    sp = X.speakers if hasattr(X, "speakers") else None
    return x, np.repeat(np.asarray(sp), lengths)


def test_global_uses_training_statistics_only(fs):
    train, test = fs[fs.speakers != "04"], fs[fs.speakers == "04"]
    norm = GlobalNormalizer().fit(train)
    x, _ = frames_of(norm.transform(train))
    np.testing.assert_allclose(x.reshape(-1, 2, 32).mean(0), 0, atol=2e-3)
    np.testing.assert_allclose(x.reshape(-1, 2, 32).std(0), 1, atol=2e-3)
    raw = np.concatenate([train[i].astype(np.float64) for i in range(len(train))])
    np.testing.assert_allclose(norm.mean_[0], raw.mean(0), rtol=1e-9, atol=1e-12)
    # test speakers are normalised with the training statistics, not their own
    xt, _ = frames_of(norm.transform(test))
    rawt = np.concatenate([test[i].astype(np.float64) for i in range(len(test))])
    np.testing.assert_allclose(xt, (rawt - norm.mean_[0]) / norm.scale_[0], rtol=1e-4, atol=1e-4)


def test_speaker_cache_stats_use_all_of_each_speakers_utterances(fs):
    sub = fs[::3]  # a subset; statistics still come from every cached utterance of the speaker
    out = SpeakerNormalizer(stats="cache").fit(sub).transform(sub)
    full_out = SpeakerNormalizer(stats="cache").fit(fs).transform(fs)
    x_full, sp = frames_of(full_out)
    for s in np.unique(sp):
        np.testing.assert_allclose(x_full[sp == s].mean(0), 0, atol=2e-3)
        np.testing.assert_allclose(x_full[sp == s].std(0), 1, atol=2e-3)
    x_sub, _ = frames_of(out)
    first = full_out.to_packed().streams[0]
    np.testing.assert_allclose(x_sub[: len(sub[0])], first.gather(np.array([0]), dtype=np.float64)[0], atol=1e-5)


def test_speaker_batch_stats_use_the_given_utterances_only(fs):
    sub = fs[:20]
    out = SpeakerNormalizer(stats="batch").fit(fs).transform(sub)
    x, sp = frames_of(out)
    for s in np.unique(sp):
        np.testing.assert_allclose(x[sp == s].mean(0), 0, atol=2e-3)


def test_unseen_speaker_falls_back_to_global_with_a_warning():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((5, 1, 3)) + i for i in range(6)]
    train = Packed([Stream.from_list(arrays[:4])], speakers=np.array(["a", "a", "b", "b"]))
    test = Packed([Stream.from_list(arrays[4:])], speakers=np.array(["a", "zz"]))
    norm = SpeakerNormalizer().fit(train)
    with pytest.warns(UserWarning, match="zz"):
        out = norm.transform(test)
    x, lengths = out.streams[0].gather(np.array([1]), dtype=np.float64)
    np.testing.assert_allclose(x, (arrays[5] - norm.global_mean_[0]) / norm.global_scale_[0], rtol=1e-5)


def test_plain_arrays_global_yes_speaker_no():
    X = np.random.default_rng(1).standard_normal((30, 7, 4)) * 3 + 2
    out = GlobalNormalizer().fit_transform(X)
    assert out.shape == X.shape
    np.testing.assert_allclose(out.reshape(-1, 4).mean(0), 0, atol=1e-5)
    with pytest.raises(ValueError, match="needs the speaker"):
        SpeakerNormalizer().fit(X)
    with pytest.raises(ValueError, match="stats must be one of"):
        SpeakerNormalizer(stats="nope").fit(X)


def test_constant_feature_is_centred_not_divided_by_zero():
    X = np.ones((10, 4, 2))
    X[:, :, 1] = np.arange(4)
    out = GlobalNormalizer().fit_transform(X)
    assert np.all(np.isfinite(out)) and np.all(out[:, :, 0] == 0)
