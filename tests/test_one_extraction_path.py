"""``estimators predict`` and corpus extraction share one extraction path (issue 10).

Predicting an audio file with a saved model equals extracting that file into a cache and
predicting from the cache with the same fitted pipeline: for a handcrafted feature (MFCC)
and for all layers of a tiny random wav2vec2.
"""

from __future__ import annotations

import numpy as np
import pytest

import featcache
from estimators import Predictor, run_experiment


@pytest.mark.parametrize("features, atol", [("mfcc", 1e-5), ("all_layers", 2e-3)])
def test_predicting_a_file_equals_predicting_it_from_the_cache(built_cache, ravdess_dir, tiny_model, tmp_path, features, atol):
    res = run_experiment(cache=built_cache, features=features, model="dense", cv="groupkfold:2", normalize="global",
                         hidden="32", lr=1e-2, max_epochs=15, patience=15, batch_size=16, device="cpu", seeds=1)
    res.save(tmp_path / "run")
    cache = featcache.open(built_cache)
    X = cache.select(features)
    rows = [3, 17, 40]
    files = [ravdess_dir / cache.utterances.set_index("id").loc[uid, "path"] for uid in X.ids[rows]]
    from_cache = res.pipeline.predict_proba(X[rows])
    table, info = Predictor(tmp_path / "run" / "model", device="cpu", ssl_model=str(tiny_model)).predict_files(files)
    assert info["normalization"] == "global" and not info["failed"]
    from_files = table[[f"p_{c}" for c in res.classes]].to_numpy()
    # the file path re-decodes and re-extracts; only the batching of the model differs (fp32)
    np.testing.assert_allclose(from_files, from_cache, atol=atol)
    # and that tolerance is far below what telling utterances apart takes
    others = res.pipeline.predict_proba(X[[r + 1 for r in rows]])
    assert np.abs(from_files - from_cache).max() < 0.05 * np.abs(others - from_cache).max()
    assert list(table["label"]) == list(res.pipeline.predict(X[rows]))
