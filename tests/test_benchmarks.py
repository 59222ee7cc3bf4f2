"""Smoke tests of the benchmark suite (``python -m benchmarks``) at tiny sizes.

They check what the suite's figures rest on: the FLOP count agrees with torch's counter,
the naive baselines compute the same things as ours (same model outputs with the same
weights; same hidden states for extraction), every reading path yields the same frames,
and one run writes a table with every row, parseable JSON and the doc.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import flops, machine, report  # noqa: E402
from benchmarks.data import TINY, build_training_cache, make_model, ravdess_names, synthetic_corpus, training_files  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def tiny_cache(work) -> dict:
    """A featcache cache of random float16 states: 14 utterances over 14 actors, 13 x 16."""
    audio_dir, files = training_files(None, 0.01, work)
    info = build_training_cache(audio_dir, work / "cache", n_layers=13, dim=16)
    info["audio_dir"] = str(audio_dir)
    return info


def test_flops_match_torch_counter_and_the_issue():
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(**TINY)
    model = Wav2Vec2Model(config).eval()
    counted = flops.count_with_torch(model, 16000)
    ours = flops.wav2vec2_flops(config, 16000)
    # torch's counter does not see the attention products inside CPU flash attention
    assert ours["total"] - ours["attention"] == pytest.approx(counted, rel=0.01)
    base = flops.wav2vec2_flops_per_audio_second(Wav2Vec2Config(), [int(3.7 * 16000)])
    assert 4.5e9 < base["cnn"] < 5.5e9  # "CNN encoder about 5"
    assert 8e9 < base["transformer"] < 10e9  # "transformer about 9"
    assert 13e9 < base["total"] < 15.5e9  # "about 14 GFLOP per second of audio"
    d = flops.dense_flops_per_frame(13, 768, (128, 128), 8)
    assert d["total"] == pytest.approx(3 * (2 * 768 * 128 + 2 * 128 * 128) + 2 * 2 * 13 * 768)


def test_machine_measures():
    cpu = machine.cpu_info()
    assert cpu["usable_cores"] >= 1 and set(machine.RELEVANT_FLAGS) <= set(cpu["flags"])
    r = machine.matmul_rate("fp32", n=128, rounds=1, min_seconds=0.01)
    assert r["gflops_best"] > 0 and r["threads"] >= 1
    assert machine.memory_bandwidth(8, rounds=1)["read_gbps_best"] > 0
    assert {"python", "torch", "transformers", "numpy", "h5py"} <= set(machine.versions())


def test_synthetic_corpus_is_ravdess_like(work):
    names = ravdess_names()
    assert len(names) == 1440 and len(set(names)) == 1440
    files = synthetic_corpus(work / "syn", 6)
    import soundfile as sf

    durs = [sf.info(str(f)).duration for f in files]
    assert len(files) == 6 and all(2.9 <= d <= 5.4 for d in durs)
    assert all(f.parent.name.startswith("Actor_") for f in files)


def test_training_cache_is_a_real_cache(tiny_cache):
    import featcache

    X = featcache.open(tiny_cache["path"]).select("all_layers")
    assert len(X) == tiny_cache["n_utterances"] == 14
    x = X[0]
    assert x.shape[1:] == (13, 16) and 140 <= x.shape[0] <= 270  # 50 frames per second of 2.9-5.3 s
    assert len(set(X.speakers)) == 14


def test_naive_dense_is_our_model(tiny_cache):
    from benchmarks.training import equivalence_job

    res = equivalence_job(tiny_cache["path"], n=14)
    assert res["shape_ours"] == res["shape_naive"] and res["shape_ours"][0] == 14
    assert res["max_abs_diff"] < 1e-5


def test_naive_training_loop_runs(tiny_cache, work):
    from benchmarks.training import naive_job, write_npy_job

    info = write_npy_job(tiny_cache["path"], str(work / "npy"))
    assert info["n"] == 14 and info["bytes"] == tiny_cache["data_bytes"] * 2  # float32 copy
    res = naive_job(str(work / "npy"), epochs=1)
    assert len(res["epoch_seconds"]) == 1 and res["frames"] == tiny_cache["n_frames"]
    assert np.isfinite(res["train_loss"][0])


def test_reading_paths_yield_the_same_bytes(tiny_cache, work):
    from benchmarks.reading import prepare_joblib_job, read_job
    from benchmarks.training import write_npy_job

    write_npy_job(tiny_cache["path"], str(work / "npy"))
    prepare_joblib_job(str(work / "npy"), str(work / "pkl"))
    got = {}
    for fmt, kw in (("ours", {"cache_path": tiny_cache["path"]}), ("ours_lazy", {"cache_path": tiny_cache["path"]}),
                    ("npy", {"index_dir": str(work / "npy")}), ("joblib", {"index_dir": str(work / "pkl")})):
        for mode in ("warm", "cold"):
            r = read_job(fmt, mode, **kw)
            assert r["seconds"] > 0 and (mode == "warm" or r["evicted"] > 0)
            got[fmt, mode] = r["bytes"]
    assert len(set(got.values())) == 1 and tiny_cache["data_bytes"] * 2 in got.values()


def test_naive_extraction_equals_featcache(work):
    from benchmarks.data import link_subset
    from benchmarks.extraction import equality_job, naive_job, ours_job, probe_job

    model = make_model(work / "tiny-model", quick=True)
    files = synthetic_corpus(work / "ext-audio", 3)
    sub = link_subset(files, work / "ext-audio", work / "ext-sub")
    naive = naive_job([str(f) for f in files], str(model), str(work / "naive-ext"))
    ours = ours_job(str(sub), str(work / "ext-cache"), str(model), ["wav2vec2"], precision="fp32")
    assert naive["n_files"] == ours["done"] == 3
    assert ours["audio_seconds"] == pytest.approx(naive["audio_seconds"])
    eq = equality_job(ours["cache_path"], ours["stores"][0], str(work / "naive-ext"), str(model), str(sub), "fp32", n_single=1)
    assert eq["vs_naive_fp32"]["n"] == 3 and eq["vs_naive_fp32"]["shapes_equal"]
    assert eq["vs_naive_fp32"]["max_rel"] < report.EQUALITY_TOL["fp32"]
    assert eq["vs_single_same_precision"]["max_rel"] < report.EQUALITY_TOL["fp32"]
    probe = probe_job(str(model), [str(f) for f in files], ["fp32"], probe_files=1, repeats=1)
    assert probe["fastest"] == "fp32" and probe["flops_per_audio_second"]["total"] > 0


def test_probe_times_emulated_bf16_on_one_second_once(work, monkeypatch):
    # Without native bf16 the model runs ~40x slower in bf16: the probe must not spend minutes
    from benchmarks import extraction
    from featcache.extractors.ssl import SSLExtractor

    model = make_model(work / "tiny-model-emu", quick=True)
    files = synthetic_corpus(work / "emu-audio", 2)
    monkeypatch.setattr(machine, "onednn_native_bf16", lambda: False)
    calls = []
    real = SSLExtractor.batch

    def batch(self, sigs, sr):
        calls.append((self.precision, [len(x) for x in sigs]))
        return real(self, sigs, sr)

    monkeypatch.setattr(SSLExtractor, "batch", batch)
    probe = extraction.probe_job(str(model), [str(f) for f in files], ["fp32", "bf16"], probe_files=2, repeats=2)
    assert probe["probe_emulated"] == ["bf16"] and set(probe["probe_rates"]) == {"fp32", "bf16"}
    bf16 = [n for p, n in calls if p == "bf16"]
    assert bf16 == [[16000]]  # one second of audio, once, no warm-up
    assert sum(p == "fp32" for p, _ in calls) == 3  # warm-up + 2 repeats


def test_machine_times_emulated_bf16_on_small_matrices(monkeypatch):
    sizes = []
    monkeypatch.setattr(machine, "onednn_native_bf16", lambda: False)
    monkeypatch.setattr(machine, "memory_bandwidth", lambda *a, **k: {"read_gbps_best": 1.0})
    monkeypatch.setattr(machine, "matmul_rate", lambda p, n, **k: sizes.append((p, n)) or {"gflops_best": 1.0})
    machine.measure(quick=False)
    assert sorted(set(sizes)) == [("bf16", 512), ("fp32", 2048)]
    sizes.clear()
    monkeypatch.setattr(machine, "onednn_native_bf16", lambda: True)
    machine.measure(quick=False)
    assert sorted(set(sizes)) == [("bf16", 2048), ("fp32", 2048)]


@pytest.mark.parametrize("native, prec, need, limit_row", [(True, "bf16", 1.5, "1b"), (False, "fp32", 1.0, "1c")])
def test_extraction_targets_follow_the_precision_the_machine_should_use(native, prec, need, limit_row):
    R = _fake_results()
    R["parts"] = ["extraction"]
    R["machine"]["onednn_native_bf16"] = native
    R["extraction"]["ours_ssl"]["precision"] = prec
    rows = {r["id"]: r for r in report.build_rows(R)}
    assert rows["1a"]["target"] == f">= {need:g}x naive fp32"
    assert rows[limit_row]["target"].startswith(">= 80 %")
    other = "1c" if limit_row == "1b" else "1b"
    assert rows[other]["target"] == "" and rows[other]["status"] == "info"


def _fake_results() -> dict:
    """A results dict with every part, as __main__ writes it (numbers made up)."""
    proc = {"peak_rss_bytes": 2e9, "peak_anon_bytes": 1.5e9, "others_cores": 0.0, "wall_seconds": 1.0}
    return {
        "date": "2026-01-01 00:00:00 UTC",
        "parts": ["machine", "extraction", "training", "grid", "reading", "memory", "gpu"],
        "machine": {"matmul": {"fp32": {"gflops_best": 120.0}, "bf16": {"gflops_best": 550.0}}, "memory": {"read_gbps_best": 10.0},
                    "cpu": {"flags": {"avx2": True}}, "gpu": {"available": False}},
        "extraction": {
            "probe": {"flops_per_audio_second": {"total": 14e9}, "n_files": 4, "audio_seconds": 15, "probe_rates": {"fp32": 5.0, "bf16": 20.0}},
            "naive": {"audio_s_per_s": 4.0, "_proc": proc},
            "ours_ssl": {"audio_s_per_s": 25.0, "wall_seconds": 0.5, "precision": "bf16"},
            "ours_handcrafted": {"audio_s_per_s": 60.0, "wall_seconds": 0.25},
            "ours_all": {"audio_s_per_s": 24.0, "wall_seconds": 0.52, "_proc": proc},
            "equality": {"vs_naive_fp32": {"max_rel": 0.02, "mean_rel": 0.002, "n": 4, "shapes_equal": True},
                         "vs_single_same_precision": {"max_rel": 0.01, "mean_rel": 0.001, "n": 3}},
        },
        "training": {
            "n_layers": 13, "dim": 768,
            "ours": {"epoch_seconds": [3.0, 2.0], "frames": 265000, "n_utterances": 1440, "data_bytes": 5.3e9, "data_dtype": "float16", "load_seconds": 4.0, "_proc": proc},
            "naive": {"epoch_seconds": [20.0], "frames": 265000, "_proc": proc},
            "equivalence": {"max_abs_diff": 1e-7, "shape_ours": [8, 8], "shape_naive": [8, 8], "n": 8, "max_abs_output": 1.0},
            "limit": {"seconds": 1.5, "model": "..."},
        },
        "grid": {"n_points": 4, "folds": 5, "epochs_per_fit": 3, "wall_seconds": 100.0, "epochs_run": 60, "fits": 20, "epoch_seconds_total": 90.0,
                 "outside_epochs_seconds": 10.0, "per_frame_epoch_grid": 8e-6, "per_frame_epoch_standalone": 7.8e-6,
                 "epoch_ratio_grid_vs_standalone": 8 / 7.8, "cache_loads": 1, "cache_load_seconds": 4.0},
        "reading": {f"{f}-{m}": {"seconds": 2.0, "bytes": 10.6e9, "stored_bytes": 5.3e9} for f in ("ours", "ours_lazy", "npy", "joblib") for m in ("warm", "cold")},
        "memory": {"ours": {"data_bytes": 2.65e9, "n_utterances": 720, "_proc": {"peak_anon_bytes": 0.85e9 + 2.65e9 - 1.0e9 + 0.0}}},
        "gpu": {"measured": False},
        "load": {"start": [0.1, 0.1, 0.1], "end": [0.1, 0.1, 0.1], "others_cores_mean": 0.0},
    }


EXPECTED_ROWS = ["1a", "1b", "1c", "1d", "1e", "1f", "1g", "2a", "2b", "2c", "3a", "3b", "3c", "4a", "4b", "5a", "5b", "5c", "6"]


def test_table_has_every_row_and_doc_keeps_notes(tmp_path):
    R = _fake_results()
    R["training"]["ours"]["_proc"] = {"peak_anon_bytes": 5.3e9 + 0.9e9, "peak_rss_bytes": 11e9}
    R["memory"]["ours"]["_proc"] = {"peak_anon_bytes": 2.65e9 + 0.85e9}
    rows = report.build_rows(R)
    ids = [r["id"] for r in rows]
    assert all(i in ids for i in EXPECTED_ROWS), set(EXPECTED_ROWS) - set(ids)
    by = {r["id"]: r for r in rows}
    assert by["1a"]["ratio"] == pytest.approx(6.25) and by["1a"]["status"] == "met"
    assert by["1b"]["limit"] == pytest.approx(550e9 / 14e9) and by["1b"]["status"] == "NOT MET"  # 64 %
    assert by["1e"]["status"] == "met" and by["3b"]["status"] == "met" and by["3c"]["status"] == "met"
    assert by["2a"]["ratio"] == pytest.approx(10.0) and by["2a"]["status"] == "met"  # 2 s, 10x
    assert by["5c"]["status"] == "met" and by["6"]["status"] == "not measured"
    table = report.markdown_table(rows)
    assert table.count("\n") == len(rows) + 2 and "not measured (no GPU)" in table
    json.loads(json.dumps(R | {"rows": rows}))
    doc = tmp_path / "bench.md"
    doc.write_text("# My notes\n\nkept\n")
    report.write_doc(doc, R, rows)
    report.write_doc(doc, R, rows)  # replaced, not appended twice
    text = doc.read_text()
    assert text.startswith("# My notes") and text.count(report.BEGIN) == 1 and "| 2a |" in text


def test_command_runs_end_to_end(tmp_path):
    from benchmarks.__main__ import main

    out, doc = tmp_path / "out", tmp_path / "doc.md"
    rc = main(["--quick", "--inline", "--only", "training,memory", "--train-scale", "0.01", "--memory-scale", "0.006",
               "--workdir", str(tmp_path / "wd"), "--out", str(out), "--write-doc", str(doc)])
    assert rc == 0
    R = json.loads((out / "latest.json").read_text())
    ids = [r["id"] for r in R["rows"]]
    assert {"2a", "2b", "2c", "5b", "5c"} <= set(ids) and not [r for r in R["rows"] if r["status"] == "failed"]
    assert R["training"]["ours"]["n_utterances"] == 14 and R["memory"]["ours"]["n_utterances"] == 9
    text = doc.read_text()
    assert "| 2a |" in text and "- machine:" in text and "CPU flags" in text
    assert not (tmp_path / "wd" / "naive-npy").exists()  # the float32 copy is deleted
