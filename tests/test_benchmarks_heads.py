"""benchmarks.heads: limits come from the measured rate and the counted frames; rows say met / not met."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import flops, heads  # noqa: E402


def _epoch(model: str, seconds: list[float]) -> dict:
    return {"model": model, "features": "egemaps", "epoch_seconds": seconds, "train_frames": 400_000, "valid_frames": 40_000,
            "n_train": 1080, "n_valid": 120, "dim": 25, "n_classes": 7, "hidden": [128, 128], "padded_frames": 560_000}


def test_lstm_flops_count_the_gates():
    f = flops.lstm_flops_per_frame(25, (128, 128))
    assert f["forward"] == 2 * 25 * 128 + 2 * 4 * 128 * (128 + 128)
    assert f["total"] == 3 * f["forward"]
    assert flops.lstm_flops_per_frame(25, (64,), bidirectional=True)["forward"] == 2 * 2 * 4 * 64 * (25 + 64)


def test_limits_scale_with_the_measured_rate():
    machine = {"matmul": {"fp32": {"gflops_best": 100.0}}}
    res = _epoch("dense", [1.0, 0.5])
    lim = heads.limits(machine, res)
    per = flops.dense_flops_per_frame(1, 25, (128, 128), 7)
    assert lim["flops"] == pytest.approx(per["total"] * 400_000 + per["forward"] * 40_000)
    assert lim["seconds"] == pytest.approx(lim["flops"] / 100e9)
    faster = heads.limits({"matmul": {"fp32": {"gflops_best": 200.0}}}, res)
    assert faster["seconds"] == pytest.approx(lim["seconds"] / 2)
    assert heads.limits({}, res) is None


def test_rows_compare_the_best_epoch_after_the_first():
    machine = {"matmul": {"fp32": {"gflops_best": 100.0}}}
    dense = _epoch("dense", [9.0, 0.9, 1.0])
    lim = heads.limits(machine, dense)["seconds"]
    R = {"machine": machine, "features": ["egemaps"], "lstm_kernel": {"gflops": 40.0, "shape": [32, 400, 128]},
         "epochs": {"egemaps": {"dense": dense, "dense_plain": _epoch("dense", [2.0, 1.8]), "lstm": _epoch("lstm", [30.0, 20.0])}},
         "fit": {"wall_seconds": 170.0, "command": "estimators fit ...", "report": {"epochs": [20, 30]}}}
    rows = {r["id"]: r for r in heads.rows(R)}
    assert rows["9a"]["ours"] == 0.9 and rows["9a"]["ratio"] == pytest.approx(0.9 / lim)
    assert rows["9a"]["status"] == ("met" if 0.9 <= 2 * lim else "NOT MET")
    assert "2.00x ours" in rows["9a"]["note"]  # the plain path, 1.8 s vs 0.9 s
    assert rows["9b"]["status"] == "NOT MET" and "1.40x the real frames" in rows["9b"]["note"]
    assert rows["9g"]["status"] == "met" and "[20, 30]" in rows["9g"]["note"]
    R["fit"]["wall_seconds"] = 200.0
    assert {r["id"]: r for r in heads.rows(R)}["9g"]["status"] == "NOT MET"


def test_write_doc_replaces_its_own_section(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text("# Benchmarks\n\nother text\n")
    heads.write_doc(doc, "first table\n")
    heads.write_doc(doc, "second table\n")
    text = doc.read_text()
    assert text.count(heads.BEGIN) == 1 and "second table" in text and "first table" not in text
    assert text.startswith("# Benchmarks\n\nother text\n")


def test_fit_summary_reads_the_report_json_keys():
    report = {"per_fold": [{"seed": 0, "n_epochs": 28}, {"seed": 1, "n_epochs": 19}],
              "metrics": {"uar": {"mean": 0.5827, "std": 0.0244, "values": [0.62, 0.56]}}}
    got = heads._fit_summary(report)
    assert got == {"epochs": [28, 19], "uar_mean": 0.5827, "uar_std": 0.0244}
    R = {"machine": {}, "features": [], "fit": {"wall_seconds": 150.0, "command": "c", "report": got}}
    note = {r["id"]: r for r in heads.rows(R)}["9g"]["note"]
    assert "[28, 19]" in note and "UAR 58.3 ± 2.4 %" in note
