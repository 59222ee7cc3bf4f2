"""save_model / load_model: round trips and refusal of damaged model directories."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from estimators import (
    CNNClassifier,
    DenseClassifier,
    FusionClassifier,
    LSTMRegressor,
    ModelFileError,
    load_model,
    save_model,
)
from estimators.persist import read_model_info
from featcache.packed import Packed, Stream


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _data(n=40, layers=3, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    utts = [rng.normal(size=(int(f), layers, dim)).astype(np.float16) for f in rng.integers(3, 9, n)]
    return utts, np.array(["angry", "happy", "sad", "neutral"])[np.arange(n) % 4]


@pytest.fixture(scope="module")
def fitted():
    utts, y = _data()
    return DenseClassifier(hidden_sizes=(8, 8), max_epochs=3, random_state=0).fit(utts, y), utts


def test_round_trip_identical_predictions(fitted, tmp_path):
    est, utts = fitted
    save_model(est, tmp_path / "m", extra={"corpus": "synthetic", "fold": 1})
    again = load_model(tmp_path / "m")
    assert type(again) is DenseClassifier
    np.testing.assert_array_equal(again.predict_proba(utts), est.predict_proba(utts))
    np.testing.assert_array_equal(again.predict(utts), est.predict(utts))
    assert again.get_params() == est.get_params()
    np.testing.assert_array_equal(again.classes_, est.classes_)
    np.testing.assert_array_equal(again.layer_weights_, est.layer_weights_)
    assert again.history_ == json.loads(json.dumps(est.history_))
    assert again.feature_info_ == est.feature_info_
    info = read_model_info(tmp_path / "m")
    assert info["extra"] == {"corpus": "synthetic", "fold": 1} and info["class"] == "DenseClassifier"


@pytest.mark.parametrize("kind", ["lstm_regressor", "cnn", "fusion"])
def test_round_trip_other_estimators(kind, tmp_path):
    utts, y = _data()
    if kind == "lstm_regressor":
        Y = np.random.default_rng(0).normal(size=(40, 2))
        est = LSTMRegressor(hidden_sizes=(8, 8), max_epochs=2, random_state=0, bidirectional=True).fit(utts, Y)
        X = utts
    elif kind == "cnn":
        est = CNNClassifier(max_frames=8, n_filters=4, n_blocks=2, dense_size=8, max_epochs=2, random_state=0)
        X = utts
        est.fit(X, y)
    else:
        ege = [np.ones((2 * len(u), 1, 3), np.float32) * i for i, u in enumerate(utts)]
        X = Packed([Stream.from_list(utts, frame_rate=50.0), Stream.from_list(ege, frame_rate=100.0)])
        est = FusionClassifier(hidden_sizes=(8, 8), max_epochs=2, random_state=0).fit(X, y)
    save_model(est, tmp_path)
    again = load_model(tmp_path)
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


def _corrupt(path, how):
    model, weights = path / "model.json", path / "weights.safetensors"
    doc = json.loads(model.read_text())
    if how == "bad_json":
        model.write_text(model.read_text()[:-20])
    elif how == "missing_json":
        model.unlink()
    elif how == "missing_weights":
        weights.unlink()
    elif how == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif how == "corrupt_weights_same_checksum":
        data = b"not a safetensors file at all"
        weights.write_bytes(data)
        import hashlib

        doc["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
        model.write_text(json.dumps(doc))
    elif how == "shape_mismatch":
        doc["module_config"]["branch_sizes"] = [9, 8]
        model.write_text(json.dumps(doc))
    elif how == "unknown_class":
        doc["class"] = "os.system"
        model.write_text(json.dumps(doc))
    elif how == "wrong_version":
        doc["format_version"] = 99
        model.write_text(json.dumps(doc))
    elif how == "unknown_param":
        doc["params"]["evil"] = 1
        model.write_text(json.dumps(doc))
    elif how == "inconsistent_classes":
        doc["classes"]["values"] = ["a", "b"]
        model.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "how",
    [
        "bad_json",
        "missing_json",
        "missing_weights",
        "truncated_weights",
        "corrupt_weights_same_checksum",
        "shape_mismatch",
        "unknown_class",
        "wrong_version",
        "unknown_param",
        "inconsistent_classes",
    ],
)
def test_tampered_model_directory_is_refused(fitted, tmp_path, how):
    est, _ = fitted
    save_model(est, tmp_path / "m")
    _corrupt(tmp_path / "m", how)
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "m")


def test_save_requires_fitted_package_estimator(tmp_path):
    from sklearn.exceptions import NotFittedError
    from sklearn.linear_model import LogisticRegression

    from estimators import EstimatorsError

    with pytest.raises(NotFittedError):
        save_model(DenseClassifier(), tmp_path)
    with pytest.raises(EstimatorsError):
        save_model(LogisticRegression(), tmp_path)
    shutil.rmtree(tmp_path)
