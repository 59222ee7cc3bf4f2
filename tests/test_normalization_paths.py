"""One normalisation formula and one statistics formula behind every read path.

Lazy normalisation reaches frames by four roads: ``Stream.gather`` (numpy), ``FeatureSet[i]``,
the chunked CPU torch kernel and the gather-based torch path (CUDA). All of them go through
:func:`featcache.packed.apply_normalization`, so they must agree bit for bit.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import featcache
from estimators._batch import BatchPlan, stream_ratios
from estimators._ops import mix_frames
from estimators.normalize import GlobalNormalizer, SpeakerNormalizer
from featcache.packed import Packed, Stream, apply_normalization, normalization_terms
from featcache.stats import SpeakerStats, combine_groups, combine_stats, write_speaker_stats
from featcache.store import StoreReader, StoreWriter


def _reference(x: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The documented formula written out: float32 ``(x - shift) * (1 / scale)``."""
    inv = (1.0 / scale.astype(np.float64)).astype(np.float32)
    return (x.astype(np.float32) - shift.astype(np.float32)) * inv


def _torch_paths(packed: Packed, k: int = 0) -> dict[str, np.ndarray]:
    """Normalised frames of stream ``k`` of every utterance by both torch paths (layer by layer,
    with one-hot layer weights, which makes the layer mix exact)."""
    plan = BatchPlan(packed, stream_ratios(packed), None, torch.device("cpu"))
    sl = plan.batch(np.arange(len(packed))).streams[k]
    # memory-mapped shards (a tuple of layer tensors per shard) or one array
    tensors = [t for part in sl.source for t in part] if sl.parts is not None else [sl.source]
    before = [t.clone() for t in tensors]
    n_layers = packed.streams[k].n_layers
    out = {}
    for chunked in (True, False):
        layers = []
        for layer in range(n_layers):
            w = torch.zeros(n_layers)
            w[layer] = 1.0
            layers.append(mix_frames(w, sl.source, sl.starts, sl.counts, torch.device("cpu"), sl.norm, sl.groups,
                                     chunked=chunked, parts=sl.parts))
        out["chunked" if chunked else "gather"] = torch.stack(layers, dim=1).numpy()
    assert all(torch.equal(t, b) for t, b in zip(tensors, before)), "a torch path wrote into the stored frames"
    return out


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_every_path_gives_the_same_normalised_frames(dtype):
    rng = np.random.default_rng(3)
    arrays = [(rng.normal(size=(n, 3, 4)) * 5 + 40).astype(dtype) for n in (140, 1, 7, 30)]
    shift = rng.normal(size=(2, 3, 4)) + 40
    scale = rng.uniform(0.5, 8.0, size=(2, 3, 4))
    group = np.array([1, 0, 1, 0])
    plain = Stream.from_list(arrays)
    st = plain.with_normalization(shift, scale, group)
    assert st.data is plain.data and plain.norm_group is None  # a lazy copy; the original is untouched
    frames, lengths = st.gather(np.arange(4))
    want = np.concatenate([_reference(a, shift[g], scale[g]) for a, g in zip(arrays, group)])
    np.testing.assert_array_equal(frames, want)
    for name, got in _torch_paths(Packed([st])).items():
        np.testing.assert_array_equal(got, want, err_msg=name)
    # gathering a single, non-contiguous utterance leaves the stored frames alone
    raw = st.data.copy()
    one, _ = st.gather(np.array([2]))
    np.testing.assert_array_equal(one, _reference(arrays[2], shift[1], scale[1]))
    np.testing.assert_array_equal(st.data, raw)


def test_single_layer_path_without_weights_matches_and_copies():
    """weights=None (one layer, float32): the frames read are a view of the stored array."""
    rng = np.random.default_rng(4)
    arrays = [rng.normal(size=(n, 1, 5)).astype(np.float32) for n in (9, 4)]
    shift, scale = rng.normal(size=(1, 1, 5)), rng.uniform(0.5, 2.0, size=(1, 1, 5))
    st = Stream.from_list(arrays).with_normalization(shift, scale, np.zeros(2, np.int64))
    plan = BatchPlan(Packed([st]), [1], None, torch.device("cpu"))
    raw = st.data.copy()
    for idx in (np.array([0]), np.array([1, 0])):
        sl = plan.batch(idx).streams[0]
        got = mix_frames(None, sl.source, sl.starts, sl.counts, torch.device("cpu"), sl.norm, sl.groups)
        np.testing.assert_array_equal(got.numpy(), st.gather(idx)[0][:, 0])
    np.testing.assert_array_equal(st.data, raw)


def test_featureset_indexing_packing_and_batches_agree(built_cache):
    fs = featcache.open(built_cache).select("layers:1-2")
    out = SpeakerNormalizer(stats="cache").fit(fs).transform(fs)
    st = out.to_packed().streams[0]
    frames, lengths = st.gather(np.arange(len(out)))
    ends = np.cumsum(lengths)
    for i in (0, 5, len(out) - 1):
        np.testing.assert_array_equal(out[i], frames[ends[i] - lengths[i] : ends[i]])
    for name, got in _torch_paths(out.to_packed()).items():
        np.testing.assert_array_equal(got, frames, err_msg=name)
    # and the frames are normalised with the documented formula and the speaker's statistics
    stats = fs.speaker_stats(0)
    k = stats.index(str(fs.speakers[0]))
    scale = np.where(stats.std[k] > 1e-8, stats.std[k], 1.0)
    np.testing.assert_array_equal(out[0], _reference(fs[0], stats.mean[k], scale))


def test_apply_normalization_works_in_place_on_numpy_and_torch():
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    shift, inv = normalization_terms(np.full((1, 3, 2), 2.0), np.full((1, 3, 2), 4.0))
    assert shift.dtype == inv.dtype == np.float32
    want = (x - 2.0) * 0.25
    t = torch.from_numpy(x.copy())
    assert apply_normalization(x, shift[0], inv[0]) is x
    np.testing.assert_array_equal(x, want)
    apply_normalization(t, torch.from_numpy(shift[0]), torch.from_numpy(inv[0]))
    np.testing.assert_array_equal(t.numpy(), want)


def test_combine_groups_matches_combine_stats_per_group():
    rng = np.random.default_rng(5)
    n = rng.integers(1, 50, size=12)
    s = rng.normal(size=(12, 2, 3)) * n[:, None, None]
    q = s**2 / n[:, None, None] + rng.uniform(0, 5, size=(12, 2, 3)) * n[:, None, None]
    groups = np.array(list("abcab" "cabcaa" "d"))
    g = combine_groups(n, s, q, groups)
    assert list(g.names) == ["a", "b", "c", "d"]
    for k, name in enumerate(g.names):
        m = groups == name
        count, mean, std = combine_stats(n[m], s[m], q[m])
        assert g.count[k] == count and g.n_utterances[k] == m.sum()
        np.testing.assert_allclose(g.mean[k], mean, rtol=1e-13)
        np.testing.assert_allclose(g.std[k], std, rtol=1e-12)
    # SpeakerStats built from the group sums computes the same mean/std
    sp = SpeakerStats(g.names, g.n_utterances, g.count, g.sum, g.sumsq)
    np.testing.assert_array_equal(sp.mean, g.mean)
    np.testing.assert_array_equal(sp.std, g.std)


def test_featureset_speaker_stats_cover_every_cached_utterance(built_cache):
    fs = featcache.open(built_cache).select("layers:1-2")
    sub = fs[fs.speakers == fs.speakers[0]][:2]  # a part of one speaker's utterances
    st = sub.speaker_stats(0)
    n, s, q = fs.utterance_stats(0)
    m = fs.speakers == fs.speakers[0]
    _, mean, std = combine_stats(n[m], s[m], q[m])
    k = st.index(str(fs.speakers[0]))
    assert st.mean.shape[1:] == (2, fs.shape[3])
    np.testing.assert_allclose(st.mean[k], mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st.std[k], std, rtol=1e-10, atol=1e-12)
    assert st.n_utterances[k] == m.sum() > len(sub)


def test_global_normalizer_statistics_equal_combine_stats(built_cache):
    fs = featcache.open(built_cache).select("layers:1-2")
    norm = GlobalNormalizer().fit(fs)
    _, mean, _ = combine_stats(*fs.utterance_stats(0))
    np.testing.assert_array_equal(norm.mean_[0], mean)


def test_speaker_stats_file_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    desc = {"name": "t", "store_name": "t", "sampling_rate": 16000, "frame_rate": 50.0, "n_layers": 2, "dim": 3,
            "dtype": "float32", "params": {}, "versions": {}}
    w = StoreWriter(tmp_path / "s", desc, {"max_seconds": 15.0}, shard_size=3)
    w.add("u0", np.ones((2, 4, 3), np.float32), 1.0, 1.0)
    w.add("u1", np.zeros((2, 2, 3), np.float32), 1.0, 1.0)
    w.close()
    reader = StoreReader(tmp_path / "s")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace", str(a)))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_speaker_stats(reader, {"u0": "x", "u1": "y"})
    tmp = str(tmp_path / "s" / "speakers.h5.tmp")
    assert ("replace", tmp) in events
    assert ("fsync", tmp) in events[: events.index(("replace", tmp))], events
    assert events[-1] == ("fsync", str(tmp_path / "s")), events
