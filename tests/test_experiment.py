"""``run_experiment``: the experiment of ``estimators fit`` as a Python function.

The CLI is a thin wrapper over it, so both must give the same report and files for the
same arguments. Tiny networks, 2 epochs: only equality and structure are checked, never
the level of the scores.
"""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import estimators
from cli.estimators import main
from estimators import DenseClassifier, ExperimentResult, run_experiment
from estimators.errors import ParameterError

TINY_ARGS = ["--max-epochs", "2", "--hidden", "8", "--batch-size", "16", "--device", "cpu", "-q"]
TINY = {"max_epochs": 2, "hidden": "8", "batch_size": 16, "device": "cpu"}
# keys that name where or when a run happened, not what it computed (the "auto" memory
# budget of data_access is half the memory available at that moment)
RUN_KEYS = ("command", "wall_seconds", "model_dir", "data_access")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _report(path: Path) -> dict:
    rep = json.loads((path / "report.json").read_text())
    return {k: v for k, v in rep.items() if k not in RUN_KEYS}


@pytest.fixture(scope="module")
def cli_and_python(built_cache, tmp_path_factory):
    """The same experiment through ``estimators fit`` and through ``run_experiment``."""
    root = tmp_path_factory.mktemp("experiment")
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:2", "--seeds", "2",
              "--out", root / "cli", *TINY_ARGS)
    assert res.exit_code == 0, res.output
    result = run_experiment(cache=built_cache, features="mfcc", cv="groupkfold:2", seeds=2, **TINY)
    assert isinstance(result, ExperimentResult)
    result.save(root / "py")
    return root, res, result


def test_cli_and_run_experiment_write_the_same(cli_and_python):
    root, res, result = cli_and_python
    cli, py = root / "cli", root / "py"
    rep_cli, rep_py = _report(cli), _report(py)
    assert rep_py["metrics"] == rep_cli["metrics"] and len(rep_py["metrics"]["uar"]["values"]) == 2
    assert rep_py == rep_cli  # per_fold, confusion matrix, model, cv, seeds, features... all of it
    for where in (cli, py):  # a tiny cache fits any budget: uniform random batches, read in place
        access = json.loads((where / "report.json").read_text())["data_access"]
        assert access["mode"] == "random" and access["modes"] == ["random"] and access["selection_bytes"] > 0
    assert _files(py) == _files(cli)
    assert "model/weights.safetensors" in _files(py) and "predictions.csv" in _files(py)
    for name in ("predictions.csv", "confusion.png", "layer_weights.png", "model/weights.safetensors"):
        assert (py / name).read_bytes() == (cli / name).read_bytes(), name
    extra_cli = json.loads((cli / "model" / "model.json").read_text())["extra"]
    extra_py = json.loads((py / "model" / "model.json").read_text())["extra"]
    assert extra_cli.pop("command").startswith("estimators fit") and extra_py.pop("command") is None
    assert extra_py == extra_cli
    # the report written is the result's own; the CLI prints the result's summary lines
    on_disk = json.loads((py / "report.json").read_text())
    assert on_disk["model_dir"] == str(py / "model") and on_disk["metrics"] == result.metrics
    assert result.report["model_dir"] == str(py / "model")
    for line in result.summary_lines():
        assert line in res.stdout
    assert len(result.summary_lines()) == 4 + 3  # 2 seeds x 2 folds, then uar / wa / f1_macro


def test_result_attributes(cli_and_python):
    _, _, result = cli_and_python
    assert result.classes == ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
    cm = result.confusion_matrix
    assert cm.shape == (8, 8) and cm.sum() == 2 * 64  # every utterance once per seed
    assert [(r["seed"], r["fold"]) for r in result.per_fold] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert result.layer_weights is None and result.best_params is None  # mfcc: one layer, no grid
    assert isinstance(result.model, DenseClassifier) and list(result.model.classes_) == result.classes
    assert result.pipeline.named_steps["est"] is result.model
    m = result.metrics["uar"]
    assert m["mean"] == pytest.approx(np.mean(m["values"])) and m["std"] == pytest.approx(np.std(m["values"], ddof=1))


def test_estimator_instance_and_featureset_match_names_and_paths(built_cache, tmp_path):
    """``model=`` an estimator and ``cache=`` a FeatureSet run the same experiment as the
    model name with the CLI's parameters and the cache path."""
    import featcache

    by_name = run_experiment(cache=built_cache, features="mfcc", cv="groupkfold:2", refit=False, **TINY)
    est = DenseClassifier(hidden_sizes=(8, 8), batch_size=16, max_epochs=2, device="cpu")
    by_object = run_experiment(cache=featcache.open(built_cache).select("mfcc"), model=est, cv="groupkfold:2", refit=False)
    assert by_object.report["spec"] == "mfcc" and by_object.report["model"]["kind"] == "dense"
    assert by_object.metrics == by_name.metrics and by_object.per_fold == by_name.per_fold
    assert by_object.report["model"] == by_name.report["model"]
    assert est.get_params()["random_state"] is None  # the given estimator is cloned, not changed
    # refit=False: no final model; save writes no model/ and records none
    assert by_name.pipeline is None and by_name.model is None
    by_name.save(tmp_path / "norefit")
    assert "model" not in {p.name for p in (tmp_path / "norefit").iterdir()}
    assert json.loads((tmp_path / "norefit" / "report.json").read_text())["model_dir"] is None
    # a folder that holds files is refused unless overwrite=True
    with pytest.raises(ParameterError, match="out_dir"):
        by_name.save(tmp_path / "norefit")
    by_name.save(tmp_path / "norefit", overwrite=True)


def test_run_experiment_refuses_bad_arguments_before_training(built_cache):
    with pytest.raises(TypeError, match="modle"):
        run_experiment(cache=built_cache, modle="dense")
    with pytest.raises(ParameterError, match="normalize"):
        run_experiment(cache=built_cache, features="mfcc", normalize="per-speaker")
    with pytest.raises(ParameterError, match="seeds"):
        run_experiment(cache=built_cache, features="mfcc", seeds=0)
    with pytest.raises(ParameterError, match="--model"):
        run_experiment(cache=built_cache, features="mfcc", model="transformer")


def test_readme_python_example_runs(built_cache, tmp_path, monkeypatch):
    """The README's run_experiment example, with the tiny cache and a tiny network."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"<!-- readme-example: run_experiment[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its run_experiment example (marked <!-- readme-example: run_experiment -->)"
    code = m.group(1)
    assert 'cache="cache/ravdess"' in code and '"runs/eg"' in code
    code = code.replace('"cache/ravdess"', repr(str(built_cache))).replace('"runs/eg"', repr(str(tmp_path / "eg")))
    real = estimators.run_experiment
    monkeypatch.setattr(estimators, "run_experiment", lambda **kw: real(**{**TINY, **kw}))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    result = scope["result"]
    assert len(result.metrics["uar"]["values"]) == 3 and len(scope["rows"]) == 4 * 3
    assert scope["cm"].sum() == 3 * 64 and scope["final"] is result.model
    assert {"report.json", "predictions.csv", "confusion.png", "layer_weights.png", "model/model.json"} <= set(_files(tmp_path / "eg"))
    assert json.loads((tmp_path / "eg" / "report.json").read_text())["spec"] == "egemaps"


# --------------------------------------------------------------------------- issue 18: grid keys, full disk


@pytest.mark.parametrize("grid", ["hidden=4;hidden=8", "hidden=4;hidden_sizes=8", "lr=1e-2;dropout=0.1;lr=1e-3"])
def test_duplicate_grid_key_is_an_error(built_cache, tmp_path, grid):
    """``--grid 'hidden=64;hidden=128'`` used to keep only the last item (128)."""
    out = tmp_path / "o"
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:2", "--grid", grid, "--out", out, *TINY_ARGS)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    name = grid.split(";")[-1].split("=")[0]
    assert f"{name} repeated" in lines[0] and "one item" in lines[0]
    assert not out.exists()
    from estimators.cv import parse_grid

    with pytest.raises(ParameterError, match=f"{name} repeated"):
        parse_grid(grid)


@pytest.mark.parametrize("refit", ["--refit", "--no-refit"])
def test_full_disk_on_out_is_one_error_line(built_cache, tmp_path, monkeypatch, refit):
    """A write failing with ENOSPC ends the run with one ``Error:`` line and status 1."""
    from featcache import fileio

    def full(path, data, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path) + ".tmp")

    monkeypatch.setattr(fileio, "atomic_write_bytes", full)
    out = tmp_path / "full"
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:2", refit, "--out", out, *TINY_ARGS)
    assert res.exit_code == 1
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and res.output.strip().splitlines()[-1] == errors[0], res.output
    assert "No space left on device" in errors[0] and str(out) in errors[0]
    assert "Traceback" not in res.output and "UAR" in res.output  # the scores were printed first
    assert not (out / "report.json").exists()


def test_out_that_holds_files_is_refused_before_training(built_cache, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = run("fit", "--cache", built_cache, "--features", "mfcc", "--cv", "groupkfold:2", "--out", out, *TINY_ARGS)
    assert res.exit_code == 1 and "exists and is not empty" in res.output and "--overwrite" in res.output
    assert "UAR" not in res.output and _files(out) == ["notes.txt"]


def test_fit_average_averages_the_best_epochs_and_is_refused_where_it_does_not_apply(built_cache, tmp_path):
    """``estimators fit --average N`` reaches the estimator; a model without it is an error."""
    from click.testing import CliRunner

    from cli.estimators import main

    out = tmp_path / "avg"
    args = ["fit", "--cache", str(built_cache), "--features", "mfcc", "--cv", "groupkfold:2", "--max-epochs", "4",
            "--patience", "4", "--hidden", "8", "--batch-size", "16", "--device", "cpu", "-q"]
    r = CliRunner().invoke(main, [*args, "--average", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    from estimators import load_model

    est = load_model(out / "model")
    assert est.average_checkpoints == 2 and len(est.averaged_epochs_) == 2
    bad = CliRunner().invoke(main, [*args, "--model", "svc", "--average", "2", "--no-refit", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "--average" in bad.output and "used with --model" in bad.output, bad.output
