"""Extraction over a corpus: completeness, equality with per-file runs, resume, bad files, locks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import featcache
from featcache.errors import StoreLockedError, StoreMismatchError
from featcache.lock import CacheLock
from featcache.pipeline import build_extractors, extract
from featcache.store import StoreReader

REPO = Path(__file__).resolve().parents[1]


def test_every_utterance_in_every_store(built_cache, tiny_model):
    cfg = json.loads((tiny_model / "config.json").read_text())
    cache = featcache.open(built_cache)
    assert set(cache.stores) == {"tiny_wav2vec2_0", "mfcc", "egemaps"}
    for name, r in cache.stores.items():
        assert sorted(r.ids) == sorted(cache.utterances["id"]), name
        assert r.failed == {}
    ssl = cache.stores["tiny_wav2vec2_0"]
    assert ssl.n_layers == cfg["num_hidden_layers"] + 1 and ssl.dim == cfg["hidden_size"]
    assert ssl.dtype == np.float16 and ssl.frame_rate == 50.0
    assert cache.stores["egemaps"].dim == 25 and cache.stores["egemaps"].frame_rate == 100.0
    assert cache.utterances["speaker"].nunique() == 4


def test_cached_states_equal_transformers_on_each_file_alone(built_cache, ravdess_dir, tiny_model):
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    model = AutoModel.from_pretrained(tiny_model).eval()
    fe = Wav2Vec2FeatureExtractor.from_pretrained(tiny_model)
    r = StoreReader(built_cache / "tiny_wav2vec2_0")
    table = featcache.open(built_cache).utterances
    for uid, rel in list(zip(table["id"], table["path"]))[::9]:
        x, sr = sf.read(ravdess_dir / rel, dtype="float32")
        inp = fe(x, sampling_rate=sr, return_tensors="pt").input_values
        with torch.no_grad():
            hs = model(inp, output_hidden_states=True).hidden_states
        ref = torch.stack(hs, 2)[0].numpy()  # (frames, layers, dim)
        got = r.frames(uid).astype(np.float32)
        assert got.shape == ref.shape
        # float16 storage: relative rounding 2**-11
        np.testing.assert_allclose(got, ref, atol=2e-3 * np.abs(ref).max(), rtol=1e-3)


def test_rerun_skips_everything(built_cache, ravdess_dir, tiny_model):
    ex = build_extractors(["wav2vec2", "mfcc", "egemaps"], model=str(tiny_model), precision="fp32", device="cpu")
    before = {p.name: p.stat().st_mtime_ns for p in (built_cache / "mfcc").glob("shard-*")}
    s = extract("ravdess", ravdess_dir, built_cache.parent, ex, progress=False)
    assert (s.done, s.skipped, s.failed) == (0, 64, {})
    assert before == {p.name: p.stat().st_mtime_ns for p in (built_cache / "mfcc").glob("shard-*")}


def test_other_parameters_into_the_same_store_are_refused(built_cache, ravdess_dir):
    ex = build_extractors(["mfcc"])
    with pytest.raises(StoreMismatchError, match="max_seconds"):
        extract("ravdess", ravdess_dir, built_cache.parent, ex, max_seconds=2.0, progress=False)


def test_second_writer_is_refused_while_one_runs(tmp_path, ravdess_dir):
    with CacheLock(tmp_path / "ravdess"):
        with pytest.raises(StoreLockedError, match="another featcache process"):
            extract("ravdess", ravdess_dir, tmp_path, build_extractors(["mfcc"]), progress=False)


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory, ravdess_dir):
    d = tmp_path_factory.mktemp("bad") / "ravdess"
    shutil.copytree(ravdess_dir / "Actor_01", d / "Actor_01")
    a = d / "Actor_01"
    (a / "03-01-01-01-01-02-01.wav").write_bytes(b"")
    (a / "03-01-02-01-01-02-01.wav").write_text("this is not audio")
    sf.write(a / "03-01-03-01-01-02-01.wav", np.zeros(160, np.float32), 16000)  # 10 ms
    sf.write(a / "03-01-04-01-01-02-01.wav", np.zeros(32000, np.float32), 16000)  # 2 s of silence
    x = np.full(16000, np.nan, np.float32)
    sf.write(a / "03-01-05-01-01-02-01.wav", x, 16000, subtype="FLOAT")
    st = np.stack([np.sin(np.arange(24000) / 9), np.zeros(24000)], 1).astype(np.float32) * 0.3
    sf.write(a / "03-01-06-01-01-02-01.wav", st, 48000)  # stereo 48 kHz
    return d


def test_bad_files_are_listed_with_reasons_and_the_rest_extracts(tmp_path, bad_corpus, tiny_model):
    ex = build_extractors(["wav2vec2", "mfcc"], model=str(tiny_model), precision="fp32", device="cpu")
    s = extract("ravdess", bad_corpus, tmp_path, ex, progress=False)
    failed = s.failed
    assert set(failed) == {
        "03-01-01-01-01-02-01",
        "03-01-02-01-01-02-01",
        "03-01-03-01-01-02-01",
        "03-01-05-01-01-02-01",
    }
    assert "empty" in failed["03-01-01-01-01-02-01"].lower() or "zero" in failed["03-01-01-01-01-02-01"].lower()
    assert "nan" in failed["03-01-05-01-01-02-01"].lower()
    assert "receptive field" in failed["03-01-03-01-01-02-01"]
    cache = featcache.open(tmp_path / "ravdess")
    ssl = cache.stores["tiny_wav2vec2_0"]
    assert "03-01-04-01-01-02-01" in ssl and "03-01-06-01-01-02-01" in ssl  # silence, stereo
    assert set(ssl.failed) == set(failed)
    # 10 ms is enough for MFCC: only the model refuses it
    assert "03-01-03-01-01-02-01" in cache.stores["mfcc"]
    n_ok = 16 + 6 - 4  # Actor_01 copied, six files added, four of them unusable
    assert len(ssl.ids) == n_ok
    st = featcache.open(tmp_path / "ravdess").select("mfcc").utterance_stats()
    assert np.all(np.isfinite(st[1]))
    # a re-run does not retry recorded failures and loses nothing
    s2 = extract("ravdess", bad_corpus, tmp_path, ex, progress=False)
    assert s2.done == 0 and len(StoreReader(tmp_path / "ravdess" / "tiny_wav2vec2_0").ids) == n_ok


def _extract_cmd(data, cache, shard_size=4):
    return [
        sys.executable, "-c", "from cli.featcache import main; main()", "extract",
        "--corpus", "ravdess", "--data-dir", str(data), "--cache-dir", str(cache),
        "--features", "mfcc,spectrogram", "--shard-size", str(shard_size), "--quiet",
    ]


@pytest.mark.slow
def test_resume_after_sigkill_gives_every_utterance_once_and_identical(tmp_path, ravdess_dir):
    ref_dir, cache = tmp_path / "ref", tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(_extract_cmd(ravdess_dir, ref_dir), check=True, env=env, cwd=REPO, capture_output=True)
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(3):
        p = subprocess.Popen(_extract_cmd(ravdess_dir, cache), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        m = cache / "ravdess" / "mfcc" / "manifest.json"
        t0 = time.time()
        while time.time() - t0 < 60 and p.poll() is None and not m.exists():
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0, 0.5)))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1
    done = subprocess.run(_extract_cmd(ravdess_dir, cache), env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for store in ("mfcc", "spectrogram"):
        a, b = StoreReader(ref_dir / "ravdess" / store), StoreReader(cache / "ravdess" / store)
        ids = [i for s in b.manifest["shards"] for i in s["ids"]]
        assert len(ids) == len(set(ids)) == 64
        for uid in a.ids:
            np.testing.assert_array_equal(a.frames(uid), b.frames(uid))
    verify = subprocess.run(
        [sys.executable, "-c", "from cli.featcache import main; main()", "verify", str(cache / "ravdess")],
        env=env, cwd=REPO, capture_output=True, text=True,
    )
    assert verify.returncode == 0, verify.stdout
