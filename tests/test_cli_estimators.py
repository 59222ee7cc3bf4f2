"""The ``estimators`` command (fit / predict) through click's CliRunner, on the tiny cache.

Fits use tiny networks and 1-2 epochs: the scores are near chance and only their
structure and consistency are checked, not their level.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.estimators import main
from conftest import SR, synth_utterance

EMOTIONS = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
TINY = ["--max-epochs", "2", "--hidden", "8", "--batch-size", "16", "--device", "cpu", "-q"]


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _copy_cache(built_cache: Path, root: Path, names=("ravdess",)) -> Path:
    for n in names:
        shutil.copytree(built_cache, root / "cache" / n)
    return root / "cache"


# --------------------------------------------------------------------------- fitted runs (module-wide)


@pytest.fixture(scope="module")
def mfcc_run(built_cache, tmp_path_factory):
    """fit on mfcc: dense, groupkfold:2, 2 seeds, speaker normalisation (default)."""
    out = tmp_path_factory.mktemp("runs") / "mfcc"
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:2", "--seeds", "2", "--out", out, *TINY)
    assert res.exit_code == 0, res.output
    return out, res


@pytest.fixture(scope="module")
def layers_run(built_cache, tmp_path_factory):
    """fit --features all_layers with no --cache and no --out, from a folder whose ./cache
    holds the one corpus cache."""
    root = tmp_path_factory.mktemp("cwd")
    _copy_cache(built_cache, root)
    here = os.getcwd()
    os.chdir(root)
    try:
        res = run("fit", "--features", "all_layers", "--cv", "groupkfold:2", *TINY)
    finally:
        os.chdir(here)
    runs = sorted(root.glob("runs/*/report.json"))
    assert res.exit_code == 0, res.output
    assert len(runs) == 1, "the default --out is runs/<timestamp>"
    return runs[0].parent, res


# --------------------------------------------------------------------------- fit


def test_fit_mfcc_report(mfcc_run, built_cache):
    out, res = mfcc_run
    rep = json.loads((out / "report.json").read_text())
    for key in ("metrics", "per_fold", "confusion_matrix", "classes", "best_params", "layer_weights", "command",
                "versions", "features", "n_utterances", "n_speakers", "wall_seconds"):
        assert key in rep, key
    assert rep["n_utterances"] == 64 and rep["n_speakers"] == 4
    assert rep["classes"] == EMOTIONS
    assert rep["features"]["streams"][0]["store"] == "mfcc"
    assert rep["features"]["streams"][0]["pipeline"]["max_seconds"] == 15.0
    assert rep["best_params"] is None and rep["layer_weights"] is None
    assert rep["wall_seconds"] > 0 and "--features mfcc" in rep["command"]
    # mean ± std over the 2 seeds of the per-seed pooled score
    for name in ("uar", "wa", "f1_macro"):
        m = rep["metrics"][name]
        assert len(m["values"]) == 2
        assert all(0.0 <= v <= 1.0 for v in m["values"])
        assert m["mean"] == pytest.approx(np.mean(m["values"]))
        assert m["std"] == pytest.approx(np.std(m["values"], ddof=1))
    # one entry per seed x fold; each speaker tested exactly once per seed
    assert [(r["seed"], r["fold"]) for r in rep["per_fold"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for seed in (0, 1):
        rows = [r for r in rep["per_fold"] if r["seed"] == seed]
        assert sorted(sum((r["test_speakers"] for r in rows), [])) == ["01", "02", "03", "04"]
        assert sum(r["n_test"] for r in rows) == 64
    for r in rep["per_fold"]:
        assert all(0.0 <= r[k] <= 1.0 for k in ("uar", "wa", "f1_macro"))
        assert 1 <= r["n_epochs"] <= 2
    # confusion matrix: counts over all test folds, summed over the seeds
    cm = np.array(rep["confusion_matrix"])
    assert cm.shape == (8, 8) and cm.sum() == 2 * 64
    assert (cm.sum(axis=1) == 2 * 8).all()  # 8 utterances per emotion
    # the pooled scores are those of the written predictions
    pred = pd.read_csv(out / "predictions.csv", dtype={"speaker": str})
    assert len(pred) == 2 * 64
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    for seed in (0, 1):
        p = pred[pred.seed == seed]
        assert balanced_accuracy_score(p.label, p.predicted) == pytest.approx(rep["metrics"]["uar"]["values"][seed])
        assert accuracy_score(p.label, p.predicted) == pytest.approx(rep["metrics"]["wa"]["values"][seed])
    # per-fold lines and the summary are printed
    assert "seed 1 fold 1:" in res.stdout and "UAR" in res.stdout and "±" in res.stdout
    # plots: confusion; layer weights as a flat figure that says why (one layer)
    assert _png(out / "confusion.png") and _png(out / "layer_weights.png")
    assert "single layer" in res.stdout and rep["layer_weights"] is None


def test_fit_mfcc_model_dir(mfcc_run):
    out, _ = mfcc_run
    model = out / "model"
    for f in ("model.json", "weights.safetensors", "preprocessing.json", "normalizer.safetensors"):
        assert (model / f).is_file(), f
    from estimators.persist import load_model
    from estimators.predict import load_preprocessing

    est = load_model(model)
    assert type(est).__name__ == "DenseClassifier" and list(est.classes_) == EMOTIONS
    prep = load_preprocessing(model)
    assert prep.normalization == "speaker" and prep.spec == "mfcc"
    assert prep.features["streams"][0]["params"]["n_mfcc"] == 40
    # global statistics of all the training data
    import featcache

    X = featcache.open(json.loads((out / "report.json").read_text())["cache"]).select("mfcc")
    n, s, _ = X.utterance_stats(0)
    assert prep.mean[0].shape == (1, 40)
    np.testing.assert_allclose(prep.mean[0], s.sum(0) / n.sum(), rtol=1e-10)


def test_fit_all_layers_from_cwd_cache(layers_run):
    out, res = layers_run
    rep = json.loads((out / "report.json").read_text())
    assert rep["features"]["streams"][0]["store"] == "tiny_wav2vec2_0"
    lw = rep["layer_weights"]
    assert len(lw) == 2  # 2 folds x 1 seed
    for w in lw:
        assert len(w) == 3 and sum(w) == pytest.approx(1.0, abs=1e-5) and min(w) > 0
    assert _png(out / "layer_weights.png") and _png(out / "confusion.png")
    assert (out / "model" / "model.json").is_file()


def test_fit_two_caches_needs_cache_option(built_cache, tmp_path, monkeypatch):
    _copy_cache(built_cache, tmp_path, names=("ravdess", "other"))
    monkeypatch.chdir(tmp_path)
    res = run("fit", "--features", "mfcc")
    assert not (tmp_path / "runs").exists()
    assert res.exit_code == 1
    assert "--cache" in res.output
    assert str(Path("cache") / "ravdess") in res.output and str(Path("cache") / "other") in res.output


def test_fit_unknown_cv(built_cache, tmp_path):
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "kfold:3", "--out", tmp_path / "o", *TINY)
    assert res.exit_code == 1
    line = res.output.strip()
    assert line.startswith("Error:") and len(line.splitlines()) == 1
    assert "groupkfold:K" in line and "logo" in line and "kfold:3" in line
    assert "protocol (" in line and "ravdess-pepino" in line and "iemocap-loso" in line


def test_fit_parameter_errors(built_cache, tmp_path):
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--model", "fusion", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "all_layers+egemaps" in res.output and "mfcc" in res.output
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:9", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "4" in res.output and "groupkfold:9" in res.output
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:2", "--grid", "widht=3", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "widht" in res.output and "hidden" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.filterwarnings("ignore:X has speakers but only one:UserWarning")  # inner folds of 1 speaker
def test_fit_grid(built_cache, tmp_path):
    out = tmp_path / "grid"
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:2", "--grid", "hidden=4,8;lr=1e-2",
              "--out", out, "--max-epochs", "1", "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    bp = rep["best_params"]
    assert bp["final"]["hidden_sizes"] in ([4, 4], [8, 8]) and bp["final"]["lr"] == pytest.approx(1e-2)
    assert [(p["seed"], p["fold"]) for p in bp["per_fold"]] == [(0, 0), (0, 1)]
    assert all(p["params"]["hidden_sizes"] in ([4, 4], [8, 8]) for p in bp["per_fold"])
    est = json.loads((out / "model" / "model.json").read_text())
    assert est["params"]["hidden_sizes"] == bp["final"]["hidden_sizes"]


def test_make_cv_forms_and_protocols(monkeypatch):
    from estimators import cv

    groups = np.repeat(["a", "b", "c"], 4)
    splits = cv.make_cv("logo", groups)
    assert len(splits) == 3 and all(len(set(groups[te])) == 1 for _, te in splits)
    for tr, te in cv.make_cv("groupkfold:3", groups):
        assert not set(groups[tr]) & set(groups[te])
    monkeypatch.setitem(cv.PROTOCOLS, "fixed", lambda g, y: [(np.flatnonzero(g != "c"), np.flatnonzero(g == "c"))])
    monkeypatch.setitem(cv.PROTOCOLS, "two", "groupkfold:2")
    (tr, te), = cv.make_cv("fixed", groups)
    assert set(groups[te]) == {"c"} and len(tr) == 8
    assert len(cv.make_cv("two", groups)) == 2
    with pytest.raises(ValueError, match="nope") as err:
        cv.make_cv("nope", groups)
    assert all(name in str(err.value) for name in ("fixed", "two", "ravdess-pepino", "emodb-loso"))
    assert cv.parse_grid("hidden=64,128x32;lr=1e-3;layer_weighting=sum,none", prefix="est__") == {
        "est__hidden_sizes": [(64, 64), (128, 32)], "est__lr": [1e-3], "est__layer_weighting": ["sum", None]}


# --------------------------------------------------------------------------- predict


def _write(path: Path, seconds: float, emotion: int = 3) -> Path:
    sf.write(path, synth_utterance(1, emotion, 1, seconds, seed=7), SR)
    return path


def test_predict_files(layers_run, tiny_model, tmp_path):
    out, _ = layers_run
    files = [_write(tmp_path / "a.wav", 1.2, 2), _write(tmp_path / "b.wav", 0.9, 5)]
    res = run("predict", out / "model", *files, "--ssl-model", tiny_model)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(io.StringIO(res.stdout))
    assert list(table.file) == [str(f) for f in files]
    assert set(table.label) <= set(EMOTIONS)
    probs = table[[f"p_{c}" for c in EMOTIONS]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (table.label == np.array(EMOTIONS)[probs.argmax(1)]).all()
    assert (table.normalization == "training-global").all()
    assert "global mean and standard deviation of the training data" in res.stderr

    res2 = run("predict", out / "model", *files, "--ssl-model", tiny_model, "--enrol", "--format", "json")
    assert res2.exit_code == 0, res2.output
    doc = json.loads(res2.stdout)
    assert doc["normalization"]["mode"] == "enrol" and doc["classes"] == EMOTIONS
    assert [p["file"] for p in doc["predictions"]] == [str(f) for f in files]
    assert all(p["normalization"] == "enrol" for p in doc["predictions"])
    assert "as one speaker" in res2.stderr


def test_predict_normalisation(layers_run, tiny_model, tmp_path):
    """Without enrolment: (x - training mean) / training scale; with it: the files' own
    statistics (all frames of all files: mean 0, std 1)."""
    from estimators.predict import build_extractors, extract_packed, load_preprocessing, normalize_packed

    out, _ = layers_run
    prep = load_preprocessing(out / "model")
    files = [_write(tmp_path / "a.wav", 1.2, 2), _write(tmp_path / "b.wav", 0.9, 5)]
    packed, _, _ = extract_packed(files, prep.features, build_extractors(prep.features, device="cpu", ssl_model=str(tiny_model)))
    raw, _ = packed.streams[0].gather(np.arange(2))
    glob, mode, _ = normalize_packed(packed, prep)
    assert mode == "training-global"
    np.testing.assert_allclose(glob.streams[0].gather(np.arange(2))[0], (raw - prep.mean[0]) / prep.scale[0], rtol=1e-4, atol=1e-4)
    enr, mode, _ = normalize_packed(packed, prep, enrol=True)
    assert mode == "enrol"
    x = enr.streams[0].gather(np.arange(2))[0].astype(np.float64)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(0), 1.0, atol=1e-3)


def test_predict_local_ssl_model_needs_option(layers_run, tmp_path):
    out, _ = layers_run
    res = run("predict", out / "model", _write(tmp_path / "a.wav", 1.0))
    assert res.exit_code == 1
    assert "--ssl-model" in res.output and "tiny_wav2vec2_0" in res.output


def test_predict_segments(mfcc_run, tmp_path):
    out, _ = mfcc_run
    long = _write(tmp_path / "long.wav", 4.0)
    res = run("predict", out / "model", long, "--segment", "1.0", "--hop", "0.5")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(io.StringIO(res.stdout))
    assert len(table) == 7  # windows starting at 0, 0.5, ..., 3.0 s
    np.testing.assert_allclose(table.start, np.arange(7) * 0.5)
    np.testing.assert_allclose(table.end - table.start, 1.0)
    assert set(table.label) <= set(EMOTIONS)
    np.testing.assert_allclose(table[[f"p_{c}" for c in EMOTIONS]].sum(axis=1), 1.0, atol=1e-4)
    whole = pd.read_csv(io.StringIO(run("predict", out / "model", long).stdout))
    assert len(whole) == 1 and whole.end[0] == pytest.approx(4.0)


def test_predict_features_match_cache(mfcc_run, layers_run, built_cache, ravdess_dir, tiny_model):
    """Features rebuilt from the saved description equal the cache's for a corpus file."""
    import featcache
    from estimators.predict import build_extractors, extract_packed, load_preprocessing

    cache = featcache.open(built_cache)
    uid, rel = cache.utterances[["id", "path"]].iloc[5]
    for run_dir, spec, atol in ((mfcc_run[0], "mfcc", 1e-5), (layers_run[0], "all_layers", 2e-3)):
        prep = load_preprocessing(run_dir / "model")
        ex = build_extractors(prep.features, device="cpu", ssl_model=str(tiny_model))
        packed, rows, failed = extract_packed([ravdess_dir / rel], prep.features, ex)
        assert not failed and len(rows) == 1
        got = packed.streams[0].utterance(0).astype(np.float32)
        want = cache.select(spec)[int(np.flatnonzero(cache.select(spec).ids == uid)[0])]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=atol)


def test_predict_not_a_model_dir(tmp_path):
    res = run("predict", tmp_path, _write(tmp_path / "a.wav", 1.0))
    assert res.exit_code == 1 and "preprocessing.json" in res.output


def test_fit_no_refit_writes_report_without_model(built_cache, tmp_path):
    out = tmp_path / "norefit"
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:2", "--no-refit", "--out", out, *TINY)
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["model_dir"] is None and not (out / "model").exists()
    assert "--no-refit" in rep["command"] and len(rep["metrics"]["uar"]["values"]) == 1
    assert (out / "predictions.csv").exists() and "no final model" in res.output
