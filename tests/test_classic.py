"""The classic baselines (StandardScaler + SVC / logistic regression) as first-class models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import write_ravdess_like
from emovo_urdu_fixtures import write_emovo_like, write_urdu_like
from estimators import load_model, run_experiment, save_model
from estimators.classic import LogRegClassifier, SVCClassifier, pool_features
from estimators.errors import ModelFileError
from estimators.protocols import Fold, Protocol, get_protocol, register_protocol
from estimators.registry import estimator_class, model_names


@parametrize_with_checks([SVCClassifier(), LogRegClassifier()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _data(k: int, n: int = 150, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.array([f"c{i}" for i in range(k)])[rng.integers(0, k, n)]
    X = rng.normal(size=(n, d)) + (np.char.replace(y, "c", "").astype(int)[:, None] == np.arange(d) % k) * 1.2
    return X, y, rng.normal(size=(200, d)) + 0.3


@pytest.mark.parametrize("k", [2, 3, 5])
def test_numbers_equal_scikit_learns(k):
    X, y, Xt = _data(k)
    for shape in ("ovo", "ovr"):
        svc = SVCClassifier(C=3.0, gamma=0.2, decision_function_shape=shape).fit(X, y)
        ref = make_pipeline(StandardScaler(), SVC(C=3.0, gamma=0.2, decision_function_shape=shape)).fit(X, y)
        assert np.array_equal(svc.predict(Xt), ref.predict(Xt))
        np.testing.assert_allclose(svc.decision_function(Xt), ref.decision_function(Xt), atol=1e-9)
    scaled = SVCClassifier().fit(X, y)  # gamma="scale" resolved as scikit-learn does
    ref = make_pipeline(StandardScaler(), SVC()).fit(X, y)
    assert scaled.gamma_ == pytest.approx(ref[-1]._gamma) and np.array_equal(scaled.predict(Xt), ref.predict(Xt))
    lr = LogRegClassifier(C=0.3).fit(X, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)).fit(X, y)
    assert np.array_equal(lr.predict(Xt), ref.predict(Xt))
    np.testing.assert_allclose(lr.predict_proba(Xt), ref.predict_proba(Xt), atol=1e-6)


def test_frames_are_mean_pooled():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 9, 60)
    y = np.array(["a", "b", "c"])[np.arange(60) % 3]
    ragged = [rng.normal(size=(n, 4)) + (y[i] == "b") for i, n in enumerate(lengths)]
    pooled = np.stack([r.mean(0) for r in ragged])
    np.testing.assert_allclose(pool_features(ragged), pooled, rtol=1e-6)
    a = SVCClassifier(C=2.0).fit(ragged, y)
    b = SVCClassifier(C=2.0).fit(pooled, y)
    assert a.n_features_in_ == 4 and np.array_equal(a.predict(ragged), b.predict(pooled))
    # 3-D input (n, frames, dim) and 4-D (n, frames, layers, dim): layers concatenated
    cube = rng.normal(size=(10, 5, 2, 3))
    np.testing.assert_allclose(pool_features(cube), cube.mean(1).reshape(10, 6), rtol=1e-6)
    with pytest.raises(ValueError, match="X has 6 features, but SVCClassifier is expecting 4"):
        a.predict(cube)


@pytest.mark.parametrize("cls", [SVCClassifier, LogRegClassifier])
def test_saved_without_pickle_and_predicting_the_same(cls, tmp_path):
    X, y, Xt = _data(4)
    est = cls(C=2.0).fit(X, y)
    save_model(est, tmp_path / "m", extra={"corpus": "x"})
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["format"] == "estimators.classic" and doc["class"] == cls.__name__ and doc["extra"] == {"corpus": "x"}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["arrays.safetensors", "model.json"]
    again = load_model(tmp_path / "m")
    assert type(again) is cls and again.get_params() == est.get_params()
    assert np.array_equal(again.predict(Xt), est.predict(Xt)) and list(again.classes_) == list(est.classes_)
    np.testing.assert_array_equal(again.decision_function(Xt), est.decision_function(Xt))


def test_damaged_model_directories_are_refused(tmp_path):
    X, y, _ = _data(3)
    save_model(SVCClassifier().fit(X, y), tmp_path / "m")
    arrays = tmp_path / "m" / "arrays.safetensors"
    good = arrays.read_bytes()
    arrays.write_bytes(good[:-8] + b"\0" * 8)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(tmp_path / "m")
    arrays.write_bytes(good)
    path = tmp_path / "m" / "model.json"
    doc = json.loads(path.read_text())
    doc["classes"]["values"] = doc["classes"]["values"][:2]  # 2 classes do not fit the arrays
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="checksum"):  # an edit without a new checksum
        load_model(tmp_path / "m")
    from estimators._modelfiles import with_checksum

    path.write_text(json.dumps(with_checksum({k: v for k, v in doc.items() if k != "checksum"})))
    with pytest.raises(ModelFileError, match="do not fit 2 classes"):
        load_model(tmp_path / "m")
    doc["params"]["C"] = -1
    doc["classes"]["values"] = list("abc")
    path.write_text(json.dumps(with_checksum({k: v for k, v in doc.items() if k != "checksum"})))
    with pytest.raises(ModelFileError, match="invalid parameters for SVCClassifier .C must be a positive"):
        load_model(tmp_path / "m")


def test_registered_for_the_cli_and_the_runner():
    assert {"svc", "logreg"} <= set(model_names("classification")) and "svc" not in model_names("regression")
    assert estimator_class("svc") is SVCClassifier and estimator_class("logreg") is LogRegClassifier
    from estimators.cv import parse_grid

    assert parse_grid("C=1,10;gamma=scale,0.01", prefix="est__") == {"est__C": [1.0, 10.0], "est__gamma": ["scale", 0.01]}


# --------------------------------------------------------------------------- experiments on caches


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Path:
    """A cache root: synthetic EMOVO (6 actors; functionals + MFCC), RAVDESS and URDU (MFCC)."""
    from featcache.pipeline import build_extractors, extract

    data = tmp_path_factory.mktemp("cl_data")
    root = tmp_path_factory.mktemp("cl_cache")
    extract("emovo", write_emovo_like(data / "emovo"), root, build_extractors(["egemaps_functionals", "mfcc"]), progress=False)
    mfcc = build_extractors(["mfcc"])
    extract("ravdess", write_ravdess_like(data / "ravdess"), root, mfcc, progress=False)
    extract("urdu", write_urdu_like(data / "urdu"), root, mfcc, progress=False)
    return root


def test_emovo_loao_with_the_default_grid_inside_training_folds(roots, monkeypatch):
    import estimators.cv as cv

    seen = []
    real = cv.inner_cv

    def spy(groups, n_splits=3):
        seen.append(set(np.asarray(groups).astype(str)))
        return real(groups, n_splits)

    monkeypatch.setattr(cv, "inner_cv", spy)
    res = run_experiment(cache=roots / "emovo", features="egemaps_functionals", model="svc", cv="emovo-loao", normalize="speaker")
    assert len(res.report["per_fold"]) == 6
    # inner grid-search folds over each outer fold's 5 training actors only, and over all 6
    # for the refit (the leakage guard checks the same inner folds: each set is seen twice)
    actors = {"f1", "f2", "f3", "m1", "m2", "m3"}
    assert {frozenset(s) for s in seen} == {frozenset(actors - {t}) for t in actors} | {frozenset(actors)}
    grid = SVCClassifier.default_grid()
    for row in res.best_params["per_fold"]:
        assert row["params"]["C"] in grid["C"] and row["params"]["gamma"] in grid["gamma"]
    assert res.report["model"]["kind"] == "svc" and res.metrics["uar"]["mean"] > 0.3  # 7 classes: chance 0.14
    assert get_protocol("emovo-loao").corpus == "emovo"


def test_fixed_validation_speakers_join_the_training_part(roots, monkeypatch):
    def folds(table):
        sp = table["speaker"].astype(str).to_numpy()
        pos = np.arange(len(sp))
        return [Fold(pos[np.isin(sp, ["f1", "f2", "m1"])], pos[sp == "m3"], pos[sp == "f3"])]

    import estimators.protocols as protocols

    monkeypatch.setattr(protocols, "PROTOCOL_REGISTRY", dict(protocols.PROTOCOL_REGISTRY))
    register_protocol("emovo-fixed", Protocol("emovo-fixed", "test", "f3", "emovo", None, lambda t: np.ones(len(t), bool), folds))
    res = run_experiment(cache=roots / "emovo", features="mfcc", model="logreg", cv="emovo-fixed", normalize="global", refit=False)
    assert res.report["per_fold"][0]["n_train"] == 4 * 14  # f1, f2, m1 and the validation actor f3
    assert res.best_params["per_fold"][0]["params"]["C"] in LogRegClassifier.default_grid()["C"]


def test_urdu_5fold_is_speaker_disjoint(roots):
    from featcache import open_cache

    table = open_cache(roots / "urdu").utterances
    folds = get_protocol("urdu-5fold").folds(table)
    sp = table["speaker"].astype(str).to_numpy()
    assert len(folds) == 5
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(table)))  # every file tested once
    for f in folds:
        assert not set(sp[f.test]) & set(sp[f.train]) and f.valid is None


def test_cross_corpus_with_two_training_corpora(roots, tmp_path):
    from cli.estimators import main

    out = tmp_path / "xc"
    res = CliRunner().invoke(main, ["fit", "--cache", str(roots), "--features", "mfcc", "--model", "logreg",
                                    "--cv", "cross-corpus:ravdess+emovo->urdu", "--normalize", "speaker", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "shared labels angry, happy, neutral, sad" in res.output
    rep = json.loads((out / "report.json").read_text())
    xc = rep["cross_corpus"]
    assert (xc["train"], xc["test"]) == ("ravdess+emovo", "urdu")
    assert xc["n_train"] == 4 * 4 * 2 + 6 * 4 * 2 and xc["n_test"] == 4 * 12  # RAVDESS 4 actors, EMOVO 6, both 2 per emotion
    assert xc["dropped_train"]["ravdess:calm"] == 8 and xc["dropped_train"]["emovo:disgust"] == 12
    assert rep["n_speakers"] == 10 and rep["best_params"]["per_fold"][0]["params"]["C"] in LogRegClassifier.default_grid()["C"]
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 48 and set(pred["speaker"]) <= {"SM1", "SM2", "SF1", "SF3", "SM5", "SM7"}
    model = load_model(out / "model")
    assert type(model) is LogRegClassifier and json.loads((out / "model" / "model.json").read_text())["extra"]["corpus"] == "ravdess+emovo"


def test_cli_fit_svc_writes_a_loadable_model(roots, tmp_path):
    from cli.estimators import main

    out = tmp_path / "svc"
    res = CliRunner().invoke(main, ["fit", "--cache", str(roots / "emovo"), "--features", "egemaps_functionals", "--model", "svc",
                                    "--cv", "groupkfold:3", "--grid", "C=1,10", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert {r["params"]["C"] for r in rep["best_params"]["per_fold"]} <= {1.0, 10.0}
    assert "gamma" not in rep["best_params"]["per_fold"][0]["params"]  # the given grid, not the default one
    model = load_model(out / "model")
    from featcache import open_cache

    X = open_cache(roots / "emovo").select("egemaps_functionals")
    assert type(model) is SVCClassifier and model.n_features_in_ == 88 and len(model.predict(X)) == len(X)


def test_corpus_union_normalises_held_out_speakers_by_their_own_statistics(roots):
    import warnings

    from estimators.crosscorpus import cross_corpus_sets, parse_cross_corpus, resolve_caches
    from estimators.normalize import SpeakerNormalizer

    trains, test = resolve_caches(roots, parse_cross_corpus("cross-corpus:ravdess+emovo->urdu"))
    U = cross_corpus_sets(trains, test, "mfcc").X_train
    sp = np.asarray(U.speakers).astype(str)
    assert {"ravdess:01", "emovo:f1"} <= set(sp) and list(U.table["corpus"].unique()) == ["ravdess", "emovo"]
    held = np.flatnonzero(sp == "emovo:m2")
    rest = np.flatnonzero(sp != "emovo:m2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to global statistics
        out = SpeakerNormalizer().fit(U[rest]).transform(U[held])
    n = U.utterance_stats(0)[0][held]
    frames_mean = (pool_features(out) * n[:, None]).sum(0) / n.sum()  # mean over all of m2's frames
    np.testing.assert_allclose(frames_mean, 0.0, atol=1e-5)


def test_a_saved_svc_predicts_audio_files_with_labels_only(built_cache, ravdess_dir, tmp_path):
    """An SVC has no probabilities: ``estimators predict`` gives its labels, as the cache path does."""
    import featcache
    from estimators import Predictor, run_experiment

    res = run_experiment(cache=built_cache, features="mfcc", model="svc", cv="groupkfold:2", normalize="global", seeds=1)
    res.save(tmp_path / "run")
    cache = featcache.open(built_cache)
    X = cache.select("mfcc")
    rows = [2, 30, 51]
    files = [ravdess_dir / cache.utterances.set_index("id").loc[uid, "path"] for uid in X.ids[rows]]
    table, info = Predictor(tmp_path / "run" / "model", device="cpu").predict_files(files)
    assert not info["failed"] and not any(c.startswith("p_") for c in table.columns)
    assert list(table["label"]) == [str(c) for c in res.pipeline.predict(X[rows])]
