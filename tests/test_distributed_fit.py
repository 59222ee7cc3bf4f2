"""Experiments under joblib's Dask backend (estimators.distributed), on a loopback LocalCluster.

A FeatureSet travels to the workers as a path plus rows: GridSearchCV and the experiment
runner give the scores of a local n_jobs=1 run; ``estimators fit --scheduler`` does the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install -e '.[dask]')")

import joblib  # noqa: E402

from conftest import write_ravdess_like  # noqa: E402
from featcache import distributed  # noqa: E402
from test_distributed_extract import _hide, _unhide  # noqa: E402  (run on a worker: a path it does not see)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """MFCC of 48 synthetic utterances, 6 speakers."""
    from featcache.pipeline import build_extractors, extract

    root = tmp_path_factory.mktemp("fitcache")
    data = write_ravdess_like(root / "ravdess", actors=range(1, 7), statements=(1,))
    extract("ravdess", data, root / "cache", build_extractors(["mfcc"]), progress=False)
    return root / "cache" / "ravdess"


@pytest.fixture(scope="module")
def client():
    with distributed.connect(cluster="local:2") as c:  # LocalCluster(2 processes, 1 thread each, no dashboard)
        yield c


def _search(X, n_jobs: int):
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline

    from estimators import DenseClassifier, SpeakerNormalizer

    pipe = make_pipeline(SpeakerNormalizer(), DenseClassifier(hidden_sizes=(16, 16), max_epochs=2, validation_fraction=None,
                                                                random_state=0, device="cpu"))
    grid = {"denseclassifier__lr": [1e-3, 1e-2]}
    return GridSearchCV(pipe, grid, cv=GroupKFold(2), scoring="balanced_accuracy", n_jobs=n_jobs).fit(
        X, X.labels, groups=X.speakers)


def test_gridsearch_under_dask_backend_equals_n_jobs_1(client, cache):
    import featcache

    X = featcache.open(cache).select("mfcc")
    local = _search(X, 1)
    with joblib.parallel_config(backend="dask"):
        remote = _search(X, -1)
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        assert np.array_equal(local.cv_results_[key], remote.cv_results_[key]), key
    assert local.best_params_ == remote.best_params_


def test_experiment_runner_under_dask_equals_local(client, cache):
    from estimators import run_experiment
    from estimators.distributed import dask_backend

    args = dict(cache=cache, features="mfcc", cv="groupkfold:2", seeds=1, grid="lr=1e-3,1e-2", hidden="16",
                max_epochs=2, device="cpu", refit=False)
    local = run_experiment(**args, n_jobs=1)
    with dask_backend(client=client, caches=(cache,)):  # folds x seeds tasks, each grid point a task too
        remote = run_experiment(**args, n_jobs=-1)
    assert local.metrics["uar"]["values"] == remote.metrics["uar"]["values"]
    assert local.report["per_fold"] == remote.report["per_fold"]


def test_cli_fit_on_scheduler(client, cache, tmp_path):
    from click.testing import CliRunner

    from cli.estimators import main

    args = ["fit", "--cache", str(cache), "--features", "mfcc", "--cv", "groupkfold:2", "--hidden", "16", "--max-epochs", "2",
            "--device", "cpu", "--no-refit", "--quiet"]
    a = CliRunner().invoke(main, args + ["--out", str(tmp_path / "local")])
    b = CliRunner().invoke(main, args + ["--out", str(tmp_path / "dask"), "--scheduler", client.scheduler.address])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    ra, rb = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("local", "dask"))
    assert ra["metrics"] == rb["metrics"]


def test_worker_that_cannot_see_the_cache_is_named(client, tmp_path):
    from estimators.distributed import dask_backend

    elsewhere = tmp_path / "only-here"
    elsewhere.mkdir()
    (elsewhere / "corpus.json").write_text("{}")
    workers = sorted(client.scheduler_info()["workers"])
    client.run(_hide, str(elsewhere), workers=[workers[0]])
    try:
        with pytest.raises(distributed.ClusterError) as e, dask_backend(client=client, caches=(elsewhere,)):
            pass
    finally:
        client.run(_unhide, workers=[workers[0]])
    assert workers[0] in str(e.value) and workers[1] not in str(e.value) and str(elsewhere) in str(e.value)



def test_cli_finetune_on_scheduler_equals_local(client, cache, tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    from cli.estimators import main

    args = ["finetune", "--cache", str(cache), "--model", str(tiny_model_dir("wav2vec2")), "--cv", "groupkfold:2",
            "--max-epochs", "1", "--batch-seconds", "4", "--no-spec-augment", "--device", "cpu", "--no-refit", "-q"]
    a = CliRunner().invoke(main, args + ["--out", str(tmp_path / "local")])
    b = CliRunner().invoke(main, args + ["--out", str(tmp_path / "dask"), "--scheduler", client.scheduler.address])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    ra, rb = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("local", "dask"))
    assert ra["metrics"] == rb["metrics"] and ra["per_fold"] == rb["per_fold"]
    assert rb["model"]["class"] == "FineTuneClassifier"


def test_spread_gpus_only_for_unindexed_cuda_with_several(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert distributed.spread_gpus(["cuda"]) == ["4", "6", "7"]
    assert distributed.spread_gpus(["auto", None]) == ["4", "6", "7"]
    assert distributed.spread_gpus(["cuda:1"]) is None and distributed.spread_gpus(["cpu"]) is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert distributed.spread_gpus(["cuda"]) == ["0", "1", "2"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed.spread_gpus(["cuda"]) is None
