"""Guarantee 4 (mismatch): other format versions and other features are refused, naming both.

Caches: a newer or unknown format version in any of corpus.json, store.json,
manifest.json, a shard or speakers.h5 is refused by readers, and by ``featcache extract``
before it changes anything. Estimators: fitted on one kind of features, predicting on
another (spec, layer count, dimension, model, extractor parameters) is refused with both
sides named; the same features from another cache are accepted.
"""

from __future__ import annotations

import json
import shutil
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import featcache
from cli.featcache import main
from estimators import DenseClassifier, InputError, load_model, save_model
from featcache.errors import StoreMismatchError
from featcache.stats import read_speaker_stats
from featcache.store import Shard, StoreReader

MODEL = "tiny_wav2vec2_0"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _set_json(path, **changes):
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _set_attr(path, name, value):
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value


@pytest.fixture
def copy(tmp_path, built_cache):
    dst = tmp_path / "ravdess"
    shutil.copytree(built_cache, dst)
    return dst


@pytest.mark.parametrize("version", ["2.0", "banana"])
@pytest.mark.parametrize("where", ["corpus.json", "store.json", "manifest.json"])
def test_newer_or_unknown_json_format_version_is_refused_before_anything_changes(copy, ravdess_dir, where, version):
    path = copy / where if where == "corpus.json" else copy / "mfcc" / where
    _set_json(path, format_version=version)
    files = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(StoreMismatchError) as e:
        featcache.open(copy).select("mfcc")[0]
    assert f"version {version!r}" in str(e.value) and "reads 1.0" in str(e.value)
    r = run("extract", "--corpus", "ravdess", "--data-dir", ravdess_dir, "--cache-dir", copy.parent, "--features", "mfcc", "--quiet")
    assert r.exit_code == 1 and f"version {version!r}" in r.output and "reads 1.0" in r.output, r.output
    assert {p: p.read_bytes() for p in files} == files  # refused before writing anything


def test_newer_shard_and_speakers_format_versions_are_refused(copy):
    shard = copy / "mfcc" / "shard-00001.h5"
    _set_attr(shard, "format_version", "2.0")
    with pytest.raises(StoreMismatchError, match=r"shard format version '2.0' cannot be read .*reads 1.0"):
        Shard(shard)
    X = featcache.open(copy).select("mfcc")
    assert X[0].shape[1:] == (1, 40)  # shard 0 is fine
    with pytest.raises(StoreMismatchError, match="'2.0'"):
        X.to_packed()
    v = run("verify", copy)
    assert v.exit_code == 1 and "shard-00001.h5" in v.output
    _set_attr(copy / "egemaps" / "speakers.h5", "format_version", "2.0")
    with pytest.raises(StoreMismatchError, match=r"speakers format version '2.0' .*reads 1.0"):
        read_speaker_stats(StoreReader(copy / "egemaps"))


@pytest.fixture(scope="module")
def layer1_fit(built_cache):
    X = featcache.open(built_cache).select(f"{MODEL}:layer:1")
    return DenseClassifier(hidden_sizes=(8, 8), max_epochs=1, random_state=0).fit(X, X.labels), X


def _refused(est, X, *phrases):
    with pytest.raises(InputError) as e:
        est.predict(X)
    for p in phrases:
        assert p in str(e.value), str(e.value)
    return str(e.value)


def test_other_features_are_refused_naming_both_sides(layer1_fit, built_cache, copy, tmp_path):
    est, X = layer1_fit
    cache = featcache.open(built_cache)
    # same shape, other layer (the feature spec)
    _refused(est, cache.select(f"{MODEL}:layer:2"), "layers: [1] (fit) != [2] (X)", "layer:1", "layer:2")
    # other layer count, other dimension
    _refused(est, cache.select(f"{MODEL}:layers:1-2"), "1 layers", "2 layers")
    _refused(est, cache.select("mfcc"), "40 features", "expecting 32")
    # same shapes from another model (other weights) or other extractor parameters
    ext = json.loads((copy / MODEL / "store.json").read_text())["extractor"]
    ext["params"].update(model="local:other_model", fingerprint="sha256:0123")
    _set_json(copy / MODEL / "store.json", extractor=ext)
    other = featcache.open(copy).select(f"{MODEL}:layer:1")
    msg = _refused(est, other, "params.model: 'local:tiny_wav2vec2_0' (fit) != 'local:other_model' (X)", "params.fingerprint")
    assert "fitted on: corpus 'ravdess'" in msg and "ssl local:other_model" in msg
    # a saved and re-loaded model refuses the same way (feature_info_ travels as JSON)
    save_model(est, tmp_path / "model")
    again = load_model(tmp_path / "model")
    _refused(again, cache.select(f"{MODEL}:layer:2"), "layers: [1] (fit) != [2] (X)")
    _refused(again, other, "params.model")


def test_same_features_from_another_cache_are_accepted(layer1_fit, built_cache, copy, tmp_path):
    est, X = layer1_fit
    moved = tmp_path / "elsewhere" / "other_corpus"
    shutil.copytree(copy, moved)
    _set_json(moved / "corpus.json", corpus="other_corpus")
    Y = featcache.open(moved).select(f"{MODEL}:layer:1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(est.predict_proba(Y), est.predict_proba(X))
    save_model(est, tmp_path / "model")
    np.testing.assert_array_equal(load_model(tmp_path / "model").predict_proba(Y), est.predict_proba(X))
    # a precision difference changes the numbers slightly: accepted with a warning naming both
    ext = json.loads((moved / MODEL / "store.json").read_text())["extractor"]
    ext["params"]["precision"] = "bf16"
    _set_json(moved / MODEL / "store.json", extractor=ext)
    with pytest.warns(UserWarning, match=r"params.precision: 'fp32' \(fit\) != 'bf16' \(X\)"):
        est.predict(featcache.open(moved).select(f"{MODEL}:layer:1"))
