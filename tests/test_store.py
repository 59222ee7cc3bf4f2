"""The shard store: round trips, statistics, crash leftovers, mismatches, verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featcache.errors import StoreError, StoreMismatchError
from featcache.stats import SpeakerStats, read_speaker_stats, write_speaker_stats
from featcache.stats import combine_stats
from featcache.store import StoreReader, StoreWriter, verify_store


def desc(n_layers=2, dim=3, dtype="float32", **params):
    return {
        "name": "test",
        "store_name": "test",
        "sampling_rate": 16000,
        "frame_rate": 50.0,
        "n_layers": n_layers,
        "dim": dim,
        "dtype": dtype,
        "params": {"a": 1, **params},
        "versions": {"lib": "1.0"},
    }


def fill(path, arrays, n_layers=2, dim=3, dtype="float32", shard_size=3, **kw):
    w = StoreWriter(path, desc(n_layers, dim, dtype), {"max_seconds": 15.0}, shard_size=shard_size, **kw)
    for i, a in enumerate(arrays):
        w.add(f"u{i:03d}", a, 1.0, 1.0)
    w.close()
    return w


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    n_layers=st.integers(1, 3),
    dim=st.integers(1, 5),
    shard_size=st.integers(1, 5),
    dtype=st.sampled_from(["float32", "float16"]),
)
def test_round_trip_is_exact(tmp_path_factory, lengths, n_layers, dim, shard_size, dtype):
    path = tmp_path_factory.mktemp("rt") / "store"
    rng = np.random.default_rng(len(lengths) * 31 + dim)
    arrays = [rng.standard_normal((n_layers, n, dim)).astype(dtype) for n in lengths]
    fill(path, arrays, n_layers, dim, dtype, shard_size)
    r = StoreReader(path)
    assert r.ids == [f"u{i:03d}" for i in range(len(lengths))]
    assert len(r.manifest["shards"]) == -(-len(lengths) // shard_size)
    for i, a in enumerate(arrays):
        got = r.frames(f"u{i:03d}")
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, np.transpose(a, (1, 0, 2)))
    # statistics combined from per-utterance sums equal statistics computed directly
    ids, n, s, q = r.utterance_stats()
    count, mean, std = combine_stats(n, s, q)
    allf = np.concatenate([np.transpose(a, (1, 0, 2)) for a in arrays]).astype(np.float64)
    assert count == allf.shape[0]
    np.testing.assert_allclose(mean, allf.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std, allf.std(0), rtol=1e-6, atol=1e-9)


def test_speaker_stats_match_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [(rng.standard_normal((2, n, 3)) * (1 + i % 3) + i).astype(np.float32) for i, n in enumerate([5, 1, 7, 3, 9, 2])]
    fill(tmp_path / "s", arrays)
    r = StoreReader(tmp_path / "s")
    spk = {f"u{i:03d}": "AB"[i % 2] for i in range(6)}
    st_ = write_speaker_stats(r, spk)
    again = read_speaker_stats(StoreReader(tmp_path / "s"))
    np.testing.assert_array_equal(again.mean, st_.mean)
    for s in "AB":
        frames = np.concatenate([np.transpose(a, (1, 0, 2)) for i, a in enumerate(arrays) if "AB"[i % 2] == s]).astype(np.float64)
        k = again.index(s)
        assert again.count[k] == len(frames)
        np.testing.assert_allclose(again.mean[k], frames.mean(0), rtol=1e-10)
        np.testing.assert_allclose(again.std[k], frames.std(0), rtol=1e-8)


def test_constant_features_give_zero_std_not_nan(tmp_path):
    fill(tmp_path / "s", [np.zeros((2, 4, 3)), np.zeros((2, 2, 3))])
    st_ = SpeakerStats.from_store(StoreReader(tmp_path / "s"), {"u000": "x", "u001": "x"})
    assert np.all(st_.std == 0) and np.all(np.isfinite(st_.mean))


def test_frames_are_memory_mapped_not_loaded(tmp_path):
    fill(tmp_path / "s", [np.ones((2, 4, 3))])
    r = StoreReader(tmp_path / "s")
    assert isinstance(r.shard(0).layer(1), np.memmap)


def test_orphan_shard_of_a_killed_commit_is_removed(tmp_path):
    path = tmp_path / "s"
    fill(path, [np.ones((2, 2, 3))] * 3)
    # a shard renamed into place but never named in the manifest (killed before the manifest update)
    shutil.copy(path / "shard-00000.h5", path / "shard-00001.h5")
    (path / "shard-00002.h5.tmp").write_bytes(b"half")
    w = StoreWriter(path, desc(), {"max_seconds": 15.0}, shard_size=3)
    assert not (path / "shard-00001.h5").exists() and not (path / "shard-00002.h5.tmp").exists()
    assert w.done_ids == {"u000", "u001", "u002"}


def test_other_parameters_are_refused_naming_both(tmp_path):
    fill(tmp_path / "s", [np.ones((2, 2, 3))])
    with pytest.raises(StoreMismatchError) as e:
        StoreWriter(tmp_path / "s", desc(a=2), {"max_seconds": 15.0})
    assert "params.a: 1 != 2" in str(e.value) and "--overwrite" in str(e.value)
    with pytest.raises(StoreMismatchError, match="max_seconds: 15.0 != 8.0"):
        StoreWriter(tmp_path / "s", desc(), {"max_seconds": 8.0})
    w = StoreWriter(tmp_path / "s", desc(a=2), {"max_seconds": 15.0}, overwrite=True)
    assert w.done_ids == set()
    # library versions alone do not count as other parameters
    d = desc()
    d["versions"] = {"lib": "9.9"}
    StoreWriter(tmp_path / "t", desc(), {"max_seconds": 1.0})
    StoreWriter(tmp_path / "t", d, {"max_seconds": 1.0})


def test_newer_format_version_is_refused(tmp_path):
    fill(tmp_path / "s", [np.ones((2, 2, 3))])
    info = json.loads((tmp_path / "s" / "store.json").read_text())
    info["format_version"] = "2.0"
    (tmp_path / "s" / "store.json").write_text(json.dumps(info))
    with pytest.raises(StoreMismatchError, match="version '2.0'"):
        StoreReader(tmp_path / "s")


def test_wrong_shapes_are_refused(tmp_path):
    w = StoreWriter(tmp_path / "s", desc(), {"max_seconds": None})
    with pytest.raises(StoreError, match="do not fit"):
        w.add("x", np.ones((3, 4, 3)), 1, 1)
    with pytest.raises(StoreError, match="do not fit"):
        w.add("x", np.ones((2, 0, 3)), 1, 1)


@pytest.fixture
def three_shards(tmp_path):
    path = tmp_path / "s"
    rng = np.random.default_rng(1)
    fill(path, [rng.standard_normal((2, 4, 3)) for _ in range(9)])
    assert verify_store(path) == []
    return path


def test_verify_names_a_truncated_shard(three_shards):
    p = three_shards / "shard-00001.h5"
    p.write_bytes(p.read_bytes()[:-100])
    probs = verify_store(three_shards)
    assert [x.where for x in probs] == ["shard-00001.h5"] and "truncated" in probs[0].message
    assert probs[0].ids == ["u003", "u004", "u005"]


def test_verify_names_a_flipped_byte(three_shards):
    p = three_shards / "shard-00002.h5"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))
    probs = verify_store(three_shards)
    assert [x.where for x in probs] == ["shard-00002.h5"] and "checksum" in probs[0].message


def test_verify_names_a_missing_shard_and_rerun_redoes_only_it(three_shards):
    (three_shards / "shard-00000.h5").unlink()
    probs = verify_store(three_shards)
    assert [x.where for x in probs] == ["shard-00000.h5"] and "missing" in probs[0].message
    w = StoreWriter(three_shards, desc(), {"max_seconds": 15.0}, shard_size=3)
    assert sorted(w.dropped) == ["u000", "u001", "u002"]
    assert w.done_ids == {f"u{i:03d}" for i in range(3, 9)}


def test_repair_drops_a_corrupt_shard(three_shards):
    p = three_shards / "shard-00001.h5"
    with h5py.File(p, "r+") as f:  # same size, valid HDF5, wrong data: only a deep check sees it
        f["layers/00"][0, 0] = 1e6
    w = StoreWriter(three_shards, desc(), {"max_seconds": 15.0}, shard_size=3)
    assert w.dropped == []
    w = StoreWriter(three_shards, desc(), {"max_seconds": 15.0}, shard_size=3, repair=True)
    assert sorted(w.dropped) == ["u003", "u004", "u005"]


def test_reader_never_sees_uncommitted_data(tmp_path):
    path = tmp_path / "s"
    w = StoreWriter(path, desc(), {"max_seconds": 15.0}, shard_size=3)
    w.add("a", np.ones((2, 2, 3)), 1, 1)
    w.add("b", np.ones((2, 2, 3)), 1, 1)
    assert StoreReader(path).ids == []
    w.add("c", np.ones((2, 2, 3)), 1, 1)
    assert StoreReader(path).ids == ["a", "b", "c"]
