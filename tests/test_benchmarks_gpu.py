"""The GPU part of the benchmarks (``python -m benchmarks --only gpu``), without a GPU.

Its job functions take ``device``: here they run on ``"cpu"`` at tiny sizes (the tiny model
of ``--quick``, a 13 x 16 training cache) through the part's own orchestration. The tests
check the results' structure, that every limit ratio in the rows is formed from the rates
measured in the run (scaling a measured rate scales the limits), the time guard, and that
without a GPU the part runs nothing and its rows say "not measured (no GPU)".
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import gpu, report  # noqa: E402
from benchmarks.__main__ import Runner, parse_args  # noqa: E402
from benchmarks.data import make_model  # noqa: E402
from benchmarks.gpu_rows import FIGURES, NOT_MEASURED  # noqa: E402

CPU = {"gpu": {"available": False}}


def _args(*extra: str):
    return parse_args(["--quick", "--inline", "--train-scale", "0.01", "--threads", "1", *extra])


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> dict:
    """The whole part run on the CPU at tiny sizes (what an H200 runs at full size)."""
    wd = tmp_path_factory.mktemp("gpu-part")
    args = _args()
    model = make_model(wd / "tiny-model", quick=True)
    G = gpu.run_part(args, Runner(args, wd), wd, model, CPU, n_layers=13, dim=16, device="cpu")
    return json.loads(json.dumps(G))  # what the JSON file keeps


def _by_id(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["id"], []).append(r)
    return out


def test_jobs_run_on_cpu_and_return_their_figures(part):
    assert part["measured"] and part["device"] == "cpu" and not part["skipped"]
    errors = {k: v["error"] for k, v in part.items() if isinstance(v, dict) and "error" in v}
    assert not errors, errors
    mm = part["limits"]["matmul"]
    assert mm["bf16"]["gflops_best"] > 0 and mm["fp32"]["gflops_best"] >= mm["fp32"]["gflops_median"] > 0
    assert mm["tf32"]["gflops_best"] is None and "skipped" in mm["tf32"]  # TF32 is CUDA only
    assert part["limits"]["copy"]["pinned_gbps_best"] is None and part["limits"]["device"]["name"].startswith("CPU")
    ex = part["extraction"]
    assert ex["done"] == ex["n_files"] == 4 and ex["failed"] == 0 and ex["precision"] == "bf16"
    assert ex["audio_s_per_s"] > 0 and len(ex["model_audio_s_per_s"]) == 2 and ex["flops_per_audio_second"]["total"] > 0
    (ft,) = part["finetune"]["runs"]
    assert ft["n_files"] >= 2 and ft["audio_seconds"] >= 4.0 and len(ft["step_seconds"]) == 3 and ft["limit"] == "fp32"
    assert ft["train_flops_3x"] == pytest.approx(3 * ft["forward_flops"]) and ft["cnn_flops"] < ft["forward_flops"]
    d = part["dense"]
    assert d["n_utterances"] == 14 and (d["n_layers"], d["dim"]) == (13, 16) and set(d["runs"]) == {"fp32", "bf16"}
    assert all(len(r["epoch_seconds"]) == 2 and r["limit"] == p for p, r in d["runs"].items())
    assert part["wall_seconds"] < part["budget_s"]


def test_rows_are_ratios_to_the_limits_measured_in_the_run(part):
    rows = _by_id(gpu.report_rows(part, report.row))
    assert {"6", "6a", "6b", "6c", "6d", "6e", "6f"} <= set(rows)
    assert all(r["status"] == "info" for rs in rows.values() for r in rs)
    ex, bf16 = part["extraction"], part["limits"]["matmul"]["bf16"]["gflops_best"]
    limit = bf16 * 1e9 / ex["flops_per_audio_second"]["total"]
    (b,) = rows["6b"]
    assert b["limit"] == pytest.approx(limit) and b["fraction_of_limit"] == pytest.approx(ex["audio_s_per_s"] / limit)
    ft = part["finetune"]["runs"][0]
    lim_s = ft["train_flops_3x"] / (part["limits"]["matmul"]["fp32"]["gflops_best"] * 1e9)
    (f,) = rows["6f"]
    assert f["fraction_of_limit"] == pytest.approx(lim_s / ft["step_seconds_median"])

    # the same results with every measured rate doubled: every limit doubles, no constant hides anywhere
    faster = copy.deepcopy(part)
    for m in faster["limits"]["matmul"].values():
        if m["gflops_best"]:
            m["gflops_best"] *= 2
    rows2 = _by_id(gpu.report_rows(faster, report.row))
    for k in ("6b", "6c", "6e", "6f"):
        for r1, r2 in zip(rows[k], rows2[k]):
            assert r2["limit"] == pytest.approx(2 * r1["limit"]) and r2["fraction_of_limit"] == pytest.approx(r1["fraction_of_limit"] / 2), k
    for r1, r2 in zip(rows["6d"], rows2["6d"]):  # seconds: compute halves (no copy term on a CPU)
        assert r2["limit"] == pytest.approx(r1["limit"] / 2)
    assert "bf16" in gpu.machine_line(part) and "GFLOP/s" in gpu.machine_line(part)


def test_time_guard_skips_the_jobs_with_a_reason(tmp_path):
    calls = []

    def run(job, _timeout=None, **params):
        calls.append((job, _timeout))
        return {}

    args = _args()
    G = gpu.run_part(args, run, tmp_path, tmp_path / "model", CPU, n_layers=13, dim=16, device="cpu",
                     deadline=time.perf_counter() + 30.0)
    # 30 s left: the limits start (with a kill timeout at the deadline), the extraction needs 45 s
    assert calls and calls[0][0] == "gpu_limits" and 30.0 < calls[0][1] <= 30.0 + gpu.GRACE_S
    assert "gpu_extract" not in [c[0] for c in calls] and "needs at least 45 s" in G["skipped"]["extraction"]
    G = gpu.run_part(args, run, tmp_path, tmp_path / "model", CPU, n_layers=13, dim=16, device="cpu", deadline=time.perf_counter())
    assert set(G["skipped"]) == {"limits", "extraction", "finetune", "dense_data"} and "skipped" in G["dense"]
    rows = gpu.report_rows(G, report.row)
    assert [r for r in rows if r["id"] != "6" and r["status"] != "not measured"] == []
    assert all("skipped" in r["note"] for r in rows if r["id"] != "6")


def test_no_gpu_runs_nothing(tmp_path):
    def run(job, **params):  # pragma: no cover - must not be called
        raise AssertionError(job)

    G = gpu.run_part(_args(), run, tmp_path, None, CPU, n_layers=13, dim=16)
    assert G == {"measured": False, "reason": G["reason"]} and "no GPU" in G["reason"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the machine without a GPU")
def test_only_gpu_without_a_gpu_gives_not_measured_rows(tmp_path):
    from benchmarks.__main__ import main

    out, doc = tmp_path / "out", tmp_path / "gpu.md"
    assert main(["--quick", "--inline", "--only", "gpu", "--workdir", str(tmp_path / "wd"), "--out", str(out), "--write-doc", str(doc)]) == 0
    R = json.loads((out / "latest.json").read_text())
    assert R["gpu"]["measured"] is False and "extraction" not in R and "training_data" not in R
    assert not (tmp_path / "wd" / "wav2vec2-tiny-random").exists()  # no model made for nothing
    ids = [r["id"] for r in R["rows"]]
    assert ids == ["6"] + [i for i, _ in FIGURES]
    assert all(r["ours"] == NOT_MEASURED and r["status"] == "not measured" for r in R["rows"])
    assert doc.read_text().count(NOT_MEASURED) == len(ids)  # and no job ran: test_no_gpu_runs_nothing
