"""Guarantee 9 (property tests of the store), beyond tests/test_store.py::test_round_trip_is_exact:
shards cut by bytes as well as by count, values cast to the store's dtype, and statistics of
any subset of utterances and of each speaker, combined from the stored per-utterance sums,
equal those computed directly from the stored frames."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featcache.stats import SpeakerStats
from featcache.stats import combine_stats
from featcache.store import StoreReader, StoreWriter


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=10),
    n_layers=st.integers(1, 3),
    dim=st.integers(1, 4),
    shard_size=st.integers(1, 6),
    shard_kib=st.sampled_from([0, 1, 4, 1 << 20]),
    dtype=st.sampled_from(["float32", "float16"]),
    offset=st.sampled_from([0.0, 30.0]),
    data=st.data(),
)
def test_round_trip_and_combined_statistics(tmp_path_factory, lengths, n_layers, dim, shard_size, shard_kib, dtype, offset, data):
    path = tmp_path_factory.mktemp("props") / "store"
    rng = np.random.default_rng(sum(lengths) * 7 + dim)
    # float64 in, as extractors hand over float32: the store casts to its dtype
    arrays = [offset + rng.standard_normal((n_layers, n, dim)) for n in lengths]
    desc = {"name": "t", "store_name": "t", "sampling_rate": 16000, "frame_rate": 100.0, "n_layers": n_layers,
            "dim": dim, "dtype": dtype, "params": {}, "versions": {}}
    w = StoreWriter(path, desc, {"max_seconds": None}, shard_size=shard_size, shard_bytes=shard_kib * 1024)
    ids = [f"u{i}" for i in range(len(arrays))]
    for uid, a in zip(ids, arrays):
        w.add(uid, a, 1.0, 1.0)
    w.close()
    r = StoreReader(path)
    per_shard = [s["n_utterances"] for s in r.manifest["shards"]]
    assert r.ids == ids and sum(per_shard) == len(ids) and max(per_shard) <= shard_size
    if shard_kib == 0:
        assert per_shard == [1] * len(ids)  # every utterance exceeds a 0-byte limit: one per shard
    for uid, a in zip(ids, arrays):
        got = r.frames(uid)
        assert got.dtype == np.dtype(dtype) and got.shape[0] == a.shape[1]
        np.testing.assert_array_equal(got, np.transpose(a, (1, 0, 2)).astype(dtype))

    # statistics are those of the values as stored (after the cast)
    frames = [r.frames(uid).astype(np.float64) for uid in ids]
    _, n, s, q = r.utterance_stats()
    subset = data.draw(st.lists(st.integers(0, len(ids) - 1), min_size=1, unique=True))
    count, mean, std = combine_stats(n[subset], s[subset], q[subset])
    direct = np.concatenate([frames[i] for i in subset])
    assert count == len(direct)
    np.testing.assert_allclose(mean, direct.mean(0), rtol=1e-12, atol=1e-12 * (1 + offset))
    np.testing.assert_allclose(std, direct.std(0), rtol=1e-7, atol=1e-9 * (1 + offset) ** 2)

    speakers = data.draw(st.lists(st.sampled_from("ABC"), min_size=len(ids), max_size=len(ids)))
    spk = SpeakerStats.from_store(r, dict(zip(ids, speakers)))
    for name in set(speakers):
        k = spk.index(name)
        direct = np.concatenate([f for f, sp in zip(frames, speakers) if sp == name])
        assert spk.count[k] == len(direct) and spk.n_utterances[k] == speakers.count(name)
        np.testing.assert_allclose(spk.mean[k], direct.mean(0), rtol=1e-12, atol=1e-12 * (1 + offset))
        np.testing.assert_allclose(spk.std[k], direct.std(0), rtol=1e-7, atol=1e-9 * (1 + offset) ** 2)
