"""Utterance-level openSMILE functionals: one frame per utterance, selectable and normalisable."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import synth_utterance
from emovo_urdu_fixtures import write_emovo_like
from featcache.audio import load_audio
from featcache.errors import AudioError, ParameterError
from featcache.extractors import extractor_class, from_description
from featcache.extractors.functionals import ComParEFunctionals, EGeMAPSFunctionals
from featcache.pipeline import FEATURE_NAMES, build_extractors


@pytest.fixture(scope="module")
def emovo_cache(tmp_path_factory) -> Path:
    """A synthetic EMOVO (3 actors x 7 emotions x 2 sentences) with eGeMAPS functionals and MFCC."""
    from featcache.pipeline import extract

    data = write_emovo_like(tmp_path_factory.mktemp("fx_data") / "emovo", speakers=("f1", "f2", "m1"))
    root = tmp_path_factory.mktemp("fx_cache")
    extract("emovo", data, root, build_extractors(["egemaps_functionals", "mfcc"]), progress=False)
    return root / "emovo"


def test_names_and_shapes():
    assert {"egemaps_functionals", "compare_functionals"} <= set(FEATURE_NAMES)
    x = synth_utterance(1, 3, 1, 0.8, 0)
    eg, cp = build_extractors(["egemaps_functionals", "compare_functionals"])
    assert type(eg) is EGeMAPSFunctionals and type(cp) is ComParEFunctionals
    a, b = eg(x, 16000), cp(x, 16000)
    assert a.shape == (1, 88) and b.shape == (1, 6373) and a.dtype == b.dtype == np.float32
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert len(eg.columns) == 88 and eg.columns[0].startswith("F0semitone")
    d = eg.describe()
    assert (d["name"], d["store_name"], d["n_layers"], d["dim"]) == ("egemaps_functionals", "egemaps_functionals", 1, 88)


def test_params_round_trip_and_mismatch_refused():
    for cls in (EGeMAPSFunctionals, ComParEFunctionals):
        ex = cls()
        d = ex.describe()
        assert extractor_class(d["name"]) is cls
        again = from_description(d["name"], d["params"])
        assert type(again) is cls and again.params() == ex.params()
        with pytest.raises(ParameterError, match="rebuilt with the parameters recorded"):
            from_description(d["name"], {**d["params"], "n_features": 5})
    with pytest.raises(ParameterError, match="sampling_rate"):
        EGeMAPSFunctionals(sampling_rate=4000)


def test_short_input_refused_and_clipping():
    ex = EGeMAPSFunctionals()
    with pytest.raises(AudioError, match="minimum of 100 ms"):
        ex(np.zeros(1599, np.float32), 16000)
    with pytest.raises(ParameterError, match="resample first"):
        ex(np.zeros(16000, np.float32), 8000)
    x = synth_utterance(2, 5, 1, 0.6, 1)
    loud = x / np.abs(x).max()  # reaches +1.0: clipped, not wrapped to -32768
    assert np.array_equal(ex(loud, 16000), ex(np.clip(loud, -1.0, 32767 / 32768), 16000))
    restored = pickle.loads(pickle.dumps(ex))
    assert restored._smile is None and np.array_equal(restored(x, 16000), ex(x, 16000))


def test_store_holds_one_frame_per_utterance(emovo_cache):
    from featcache import open_cache

    cache = open_cache(emovo_cache)
    r = cache.stores["egemaps_functionals"]
    assert (r.n_layers, r.dim) == (1, 88) and len(r.ids) == 42
    assert sum(s["n_frames"] for s in r.manifest["shards"]) == 42  # one frame each
    X = cache.select("egemaps_functionals")
    assert X.shape == (42, None, 1, 88) and all(X[i].shape == (1, 1, 88) for i in (0, 41))
    pooled = cache.select("egemaps_functionals", pooled="mean")
    assert isinstance(pooled, np.ndarray) and pooled.shape == (42, 88)
    # the stored vector is the extractor's on the decoded file
    row = cache.utterances.iloc[5]
    audio = load_audio(Path(cache.info["data_dir"]) / row["path"], sampling_rate=16000)
    expected = EGeMAPSFunctionals()(audio.signal, 16000)[0]
    pos = list(X.ids).index(row["id"])
    np.testing.assert_allclose(pooled[pos], expected, rtol=1e-6, atol=1e-6)
    assert list(X.labels[:2]) == list(cache.utterances.set_index("id").loc[list(X.ids[:2]), "label"])


def test_normalisers_on_one_frame_utterances(emovo_cache):
    from featcache import open_cache

    from estimators.classic import pool_features
    from estimators.normalize import GlobalNormalizer, SpeakerNormalizer

    cache = open_cache(emovo_cache)
    X = cache.select("egemaps_functionals")
    Z = cache.select("egemaps_functionals", pooled="mean")
    sp = np.asarray(X.speakers).astype(str)
    # per speaker: each speaker's own mean and (population) std, all its utterances
    want = np.empty_like(Z)
    for s in np.unique(sp):
        m = sp == s
        sd = Z[m].std(0)
        want[m] = (Z[m] - Z[m].mean(0)) / np.where(sd > 1e-8, sd, 1.0)
    got = pool_features(SpeakerNormalizer().fit(X).transform(X))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # globally: statistics of the training part only, applied to the rest
    train = np.flatnonzero(sp != "m1")
    test = np.flatnonzero(sp == "m1")
    g = GlobalNormalizer().fit(X[train])
    mu, sd = Z[train].mean(0), Z[train].std(0)
    np.testing.assert_allclose(pool_features(g.transform(X[test])), (Z[test] - mu) / np.where(sd > 1e-8, sd, 1.0), rtol=1e-4, atol=1e-4)
