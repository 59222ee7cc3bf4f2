"""The pure helpers of ``docs/make_corpora_results.py``, on synthetic report dicts (no runs)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pandas as pd
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def mcr():
    sys.path.insert(0, str(DOCS))  # docs/ is no package: its scripts import each other from there
    try:
        yield importlib.import_module("make_corpora_results")
    finally:
        sys.path.remove(str(DOCS))
        for name in ("make_corpora_results", "make_results"):
            sys.modules.pop(name, None)


def _rep(values, classes=("a", "b", "c", "d")):
    m = sum(values) / len(values)
    s = 0.0 if len(values) == 1 else (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return {"metrics": {"uar": {"mean": m, "std": s, "values": list(values)}}, "seeds": list(range(len(values))),
            "classes": list(classes), "wall_seconds": 12.0}


def _job(mcr, key, rep, classic=False):
    row = mcr.Row(key, "egemaps", "svc" if classic else "dense", "speaker", 1, 0, classic)
    return mcr.Job(key, "emovo", row, ["estimators", "fit"], rep, "estimators fit", "" if rep else "not started")


def test_best_job_is_the_highest_mean_and_skips_rows_without_report(mcr):
    jobs = [_job(mcr, "a", _rep([0.40, 0.50])), _job(mcr, "b", None), _job(mcr, "c", _rep([0.47]), classic=True)]
    assert mcr.best_job(jobs).key == "c"  # 47 > mean 45
    assert mcr.best_job([_job(mcr, "b", None)]) is None


def test_verdict_says_when_our_head_does_not_beat_the_baseline(mcr):
    lose = [_job(mcr, "head", _rep([0.40, 0.42])), _job(mcr, "base", _rep([0.44]), classic=True)]
    text = mcr.verdict(lose)
    assert "does not beat the classic baseline" in text and "3.0 points below" in text
    win = [_job(mcr, "head", _rep([0.50, 0.52])), _job(mcr, "base", _rep([0.44]), classic=True)]
    assert "beats the best classic baseline" in mcr.verdict(win) and "by 7.0 points" in mcr.verdict(win)
    assert mcr.verdict([_job(mcr, "base", _rep([0.44]), classic=True)]).startswith("No comparison: no head row")


def test_corpus_table_marks_only_the_best_row_and_states_the_seeds(mcr):
    jobs = [_job(mcr, "head", _rep([0.40, 0.42])), _job(mcr, "base", _rep([0.44]), classic=True), _job(mcr, "late", None)]
    lines = mcr.corpus_table(jobs)[2:]
    assert [ln.split("|")[1].strip() for ln in lines] == ["", "**best**", ""]
    assert "| 41.0 ± 1.4 | 2 (0,1) |" in lines[0]
    assert "| 44.0 | 1 (0) |" in lines[1]  # one seed: the mean alone
    assert "not run (not started)" in lines[2]


def test_matrix_table_cells_diagonal_and_missing(mcr):
    cells = {("ravdess", "emovo"): _rep([0.30, 0.34], classes="abcdefg"), ("ravdess+emovo", "urdu"): _rep([0.5]),
             ("emovo", "ravdess"): None}
    lines = mcr.matrix_table(cells, ["ravdess", "emovo", "ravdess+emovo"], ["ravdess", "emovo", "urdu"])
    assert lines[0] == "| train \\ test | ravdess | emovo | urdu |"
    assert lines[2] == "| ravdess | — | 32.0 ± 2.8 (7 cl.) | not run |"
    assert lines[3] == "| emovo | not run | — | not run |"
    assert lines[4] == "| ravdess+emovo | — | — | 50.0 (4 cl.) |"


def test_single_label_share(mcr):
    t = pd.DataFrame({"speaker": ["s1", "s1", "s2", "s2", "s2", "s3"], "label": ["a", "b", "a", "a", "a", "c"]})
    assert mcr.single_label_share(t) == (2, 3, pytest.approx(4 / 6))


def test_plan_covers_every_corpus_row_and_every_cross_cell_once(mcr):
    jobs = mcr.plan("ROOT", 2)
    keys = [j.key for j in jobs]
    assert len(keys) == len(set(keys)) == len(mcr.ROWS) * 3 + len(mcr.CROSS) * 9
    assert [j.row.priority for j in jobs] == sorted(j.row.priority for j in jobs)
    pair = next(j for j in jobs if j.key == "xc-ravdess+emovo-to-urdu-eg-dense-spk")
    assert pair.cmd[pair.cmd.index("--cv") + 1] == "cross-corpus:ravdess+emovo->urdu"
    assert pair.cmd[pair.cmd.index("--cache") + 1] == "ROOT"
    own = next(j for j in jobs if j.key == "urdu-eg-dense-spk")
    assert own.cmd[own.cmd.index("--cache") + 1] == "ROOT/urdu" and "--no-refit" in own.cmd


def test_below_chance_uses_the_number_of_classes(mcr):
    jobs = [_job(mcr, "low", _rep([0.20, 0.24])), _job(mcr, "at", _rep([0.25])), _job(mcr, "up", _rep([0.40])), _job(mcr, "none", None)]
    low, chance = mcr.below_chance(jobs)
    assert chance == 25.0 and [j.key for j in low] == ["low", "at"]
    assert mcr.below_chance([_job(mcr, "none", None)]) == ([], None)


def test_fold_table_counts_each_label_of_each_test_fold(mcr):
    from types import SimpleNamespace

    t = pd.DataFrame({"speaker": ["s1", "s1", "s2", "s3"], "label": ["a", "a", "b", "a"]})
    folds = [SimpleNamespace(test=[0, 1]), SimpleNamespace(test=[2, 3])]
    lines = mcr.fold_table(t, folds)
    assert lines[0] == "| test fold | a | b | speakers |"
    assert lines[2:] == ["| 0 | 2 of 3 | 0 of 1 | s1 |", "| 1 | 1 of 3 | 1 of 1 | s2, s3 |"]


def test_extra_options_reach_the_command_and_are_shown_beside_the_model(mcr):
    row = mcr.Row("fun-dense-d5-spk", "egemaps_functionals", "dense", "speaker", 5, 2, extra=("--dropout", "0.5"))
    cmd = mcr._cmd("/c/emovo", row, "emovo-loao", Path("runs/results/k"), 2)
    assert cmd[-2:] == ["--dropout", "0.5"] and cmd[:2] == ["estimators", "fit"]
    job = mcr.Job("k", "emovo", row, cmd, _rep([0.40, 0.42]), "estimators fit ...")
    line = mcr.corpus_table([job])[2]
    assert "| dense (--dropout 0.5) | speaker |" in line
    assert "egemaps_functionals dense --dropout 0.5, speaker" in mcr.verdict([job, _job(mcr, "b", _rep([0.5]), classic=True)])
    keys = [j.key for j in mcr.plan("/c", 2)]
    assert len(keys) == len(set(keys))  # every row its own report folder
    assert {"ravdess-cmp-svc-spk", "urdu-fus-eg-fun-glob", "emovo-fun-dense-avg-spk"} <= set(keys)
