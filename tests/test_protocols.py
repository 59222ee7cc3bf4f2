"""Named protocols: folds, labels, validation speakers, and the CLI's --cv NAME."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from estimators.errors import ParameterError
from estimators.protocols import get_protocol, list_protocols


def ravdess_table(actors=range(1, 25), channels=("speech", "song")):
    rows = [
        {"id": f"{c}-{a}-{k}", "speaker": f"{a:02d}", "actor": a, "vocal_channel": c}
        for a in actors for c in channels for k in range(3)
    ]
    return pd.DataFrame(rows)


def test_ravdess_pepino_speakers():
    t = ravdess_table()
    p = get_protocol("ravdess-pepino")
    assert p.label_map == "ravdess7" and p.keep(t).all()
    (f,) = p.folds(t)
    assert set(t.actor[f.train]) == set(range(1, 21))
    assert set(t.actor[f.valid]) == {21, 22} and set(t.actor[f.test]) == {23, 24}
    assert len(f.train) + len(f.valid) + len(f.test) == len(t)


def test_ravdess_6fold_speech_only_each_actor_tested_once():
    t = ravdess_table()
    p = get_protocol("ravdess-6fold")
    kept = t[p.keep(t)].reset_index(drop=True)
    assert set(kept.vocal_channel) == {"speech"}
    folds = p.folds(kept)
    assert len(folds) == 6 and all(f.valid is None for f in folds)
    tested = np.concatenate([kept.actor.to_numpy()[f.test] for f in folds])
    assert sorted(set(tested)) == list(range(1, 25)) and len(tested) == len(kept)
    for f in folds:
        assert len(set(kept.actor[f.test])) == 4 and set(kept.actor[f.test]).isdisjoint(kept.actor[f.train])


def test_iemocap_loso_validates_on_a_training_session_never_the_test_one():
    t = pd.DataFrame({"speaker": [f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"], "session": [s for s in range(1, 6) for _ in "FM"]})
    folds = get_protocol("iemocap-loso").folds(t)
    assert len(folds) == 5
    for s, f in zip(range(1, 6), folds):
        assert set(t.session[f.test]) == {s}
        assert len(set(t.session[f.valid])) == 1 and s not in set(t.session[f.valid])
        assert set(t.session[f.train]).isdisjoint(set(t.session[f.valid]) | {s})


def test_emodb_loso_ten_folds():
    t = pd.DataFrame({"speaker": [f"{s:02d}" for s in (3, 8, 9, 10, 11, 12, 13, 14, 15, 16) for _ in range(2)]})
    assert len(get_protocol("emodb-loso").folds(t)) == 10


def test_unknown_protocol_and_missing_column():
    with pytest.raises(ParameterError, match="ravdess-pepino"):
        get_protocol("nope")
    with pytest.raises(ParameterError, match="actor"):
        get_protocol("ravdess-pepino").folds(pd.DataFrame({"speaker": ["a"]}))
    assert "ravdess-6fold" in list_protocols()


def test_cli_fit_with_a_protocol_uses_its_validation_and_labels(built_cache, tmp_path):
    """The synthetic cache has actors 1-4 only: the Pepino split has no test actors there."""
    from cli.estimators import main

    r = CliRunner().invoke(main, ["fit", "--cache", str(built_cache), "--features", "mfcc", "--cv", "ravdess-pepino",
                                   "--out", str(tmp_path / "o"), "--max-epochs", "1", "-q"])
    assert r.exit_code == 1 and "empty train or test" in r.output
    r = CliRunner().invoke(main, ["fit", "--cache", str(built_cache), "--features", "mfcc", "--cv", "iemocap-loso",
                                   "--out", str(tmp_path / "o2"), "-q"])
    assert r.exit_code == 1 and "iemocap" in r.output


def test_fixed_validation_set_reaches_the_estimator(built_cache):
    import featcache
    from estimators import DenseClassifier
    from estimators.cv import run_folds
    from estimators.normalize import GlobalNormalizer
    from sklearn.pipeline import Pipeline

    X = featcache.open(built_cache).select("mfcc", label_map="ravdess7")
    y, sp = np.asarray(X.labels), np.asarray(X.speakers)
    tr, va, te = (np.flatnonzero(np.isin(sp, s)) for s in (["01", "02"], ["03"], ["04"]))

    def make(seed):
        return Pipeline([("norm", GlobalNormalizer()), ("est", DenseClassifier(max_epochs=2, hidden_sizes=(8, 8), random_state=seed))])

    (res,) = run_folds(make, X, y, sp, [(tr, te, va)], [0], progress=False, keep_pipeline=True)
    est = res.pipeline.named_steps["est"]
    assert est.validation_index_ is None or len(est.validation_index_) == 0
    assert len(est.history_) == 2 and "valid_loss" in est.history_[0] and np.isfinite(est.history_[0]["valid_loss"])
    assert set(np.unique(res.y_pred)) <= set(y)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_grid_with_a_fixed_validation_set_is_refused_before_any_fit(n_jobs):
    from estimators.cv import run_folds

    built = []

    def make_pipeline(seed):
        built.append(seed)
        raise AssertionError("no pipeline may be built")

    X, y, groups = np.zeros((12, 2)), np.arange(12) % 2, np.repeat(np.arange(6), 2)
    splits = [(np.arange(8), np.arange(10, 12), np.arange(8, 10))]  # train, test, a protocol's validation
    with pytest.raises(ParameterError, match=r"grid must be a protocol without a fixed validation set"):
        run_folds(make_pipeline, X, y, groups, splits, [0, 1], param_grid={"lr": [1e-3, 1e-4]}, n_jobs=n_jobs)
    assert built == []
