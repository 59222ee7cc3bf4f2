"""Shard statistics: per-utterance float64 sums of the values as stored."""

import numpy as np
import pytest

from featcache.store import Shard
from featcache.store._shard import write_shard


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_shard_sums_equal_float64_reduceat_of_stored_values(tmp_path, dtype):
    rng = np.random.default_rng(3)
    lengths = [5, 1, 17, 9]
    arrays = [(rng.standard_normal((2, n, 6)) * 40).astype(np.float32) for n in lengths]
    path = tmp_path / "s.h5"
    write_shard(path, ids=[f"u{i}" for i in range(4)], arrays=arrays, original_seconds=[1.0] * 4,
                used_seconds=[1.0] * 4, dtype=np.dtype(dtype), attrs={"store": "x", "n_layers": 2, "dim": 6})
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sums, sumsq = Shard(path).stats()
    for layer in range(2):
        stored = np.concatenate([a[layer] for a in arrays]).astype(dtype).astype(np.float64)
        # float64 sums of the stored values (the format's definition), to float64 rounding:
        # squares formed in float32 for float32 data would be off by ~1e-7
        np.testing.assert_allclose(sums[:, layer], np.add.reduceat(stored, offsets[:-1], axis=0), rtol=1e-13)
        np.testing.assert_allclose(sumsq[:, layer], np.add.reduceat(stored * stored, offsets[:-1], axis=0), rtol=1e-13)
    assert Shard(path).check_data() == []
