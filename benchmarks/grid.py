"""Target 3 -- GridSearchCV: a 4-point grid x GroupKFold(5) of DenseClassifier on all layers.

The grid varies parameters that do not change the cost of an epoch (``lr`` x ``dropout``),
so the time per training frame of an epoch inside the grid can be compared with a
standalone fit on the same data: they should match, every fit reading the same shards in
place (:mod:`featcache.frames`; the page cache holds them once for every fit). Epoch times
come from a callback (the estimator's own ``record["dur"]``); the frame rows copied out of
the shards are counted by the frame source (``ShardFrames.rows_read``: training epochs plus
the predictions of every fit).
"""

from __future__ import annotations

import time

import numpy as np

_EPOCHS: list[dict] = []


def _record_epoch(estimator, record) -> None:
    _EPOCHS.append({"epoch": int(record["epoch"]), "dur": float(record["dur"])})


def grid_job(
    cache_path: str,
    epochs: int = 3,
    folds: int = 5,
    grid: dict | None = None,
    standalone_epochs: int = 2,
    seed: int = 0,
) -> dict:
    from sklearn.model_selection import GridSearchCV, GroupKFold

    import featcache
    import featcache.reader as reader
    from estimators import DenseClassifier

    grid = grid or {"lr": [1e-3, 3e-4], "dropout": [0.1, 0.2]}
    reader.clear_memory()  # no frame source left by an earlier part of this process
    X = featcache.open(cache_path).select("all_layers")
    y, groups = X.labels, X.speakers
    lengths = X.to_packed().streams[0].lengths
    total_frames = int(lengths.sum())
    base = dict(validation_fraction=None, random_state=seed, device="cpu", callbacks=[_record_epoch])

    # standalone: the same model on all the data
    _EPOCHS.clear()
    t0 = time.perf_counter()
    DenseClassifier(max_epochs=int(standalone_epochs), **base).fit(X, y)
    standalone_wall = time.perf_counter() - t0
    standalone = list(_EPOCHS)
    per_frame_standalone = float(np.mean([e["dur"] for e in standalone])) / total_frames

    cv = GroupKFold(n_splits=int(folds))
    train_frames = [int(lengths[tr].sum()) for tr, _ in cv.split(np.zeros(len(X)), y, groups)]
    n_points = int(np.prod([len(v) for v in grid.values()]))
    _EPOCHS.clear()
    search = GridSearchCV(
        DenseClassifier(max_epochs=int(epochs), **base), grid, cv=cv, scoring="balanced_accuracy", refit=False, n_jobs=1
    )
    t0 = time.perf_counter()
    search.fit(X, y, groups=groups)
    wall = time.perf_counter() - t0
    in_grid = list(_EPOCHS)
    rows_read = int(X.to_packed().streams[0].data.rows_read)  # one frame source per store and process
    epoch_sum = float(sum(e["dur"] for e in in_grid))
    frames_trained = int(epochs) * n_points * sum(train_frames)
    per_frame_grid = epoch_sum / frames_trained
    return {
        "grid": grid,
        "n_points": n_points,
        "folds": int(folds),
        "fits": n_points * int(folds),
        "epochs_per_fit": int(epochs),
        "epochs_run": len(in_grid),
        "wall_seconds": wall,
        "epoch_seconds_total": epoch_sum,
        "outside_epochs_seconds": wall - epoch_sum,
        "per_frame_epoch_grid": per_frame_grid,
        "per_frame_epoch_standalone": per_frame_standalone,
        "epoch_ratio_grid_vs_standalone": per_frame_grid / per_frame_standalone,
        "epoch_seconds_full_data_equiv": per_frame_grid * total_frames,
        "standalone_epoch_seconds": [e["dur"] for e in standalone],
        "standalone_wall_seconds": standalone_wall,
        "cache_loads": 0,  # the store is never loaded whole: frames are read in place, batch by batch
        "frames_read": rows_read,
        "frames_read_per_trained_frame": rows_read / max(1, frames_trained + int(standalone_epochs) * total_frames),
        "total_frames": total_frames,
        "best_params": search.cv_results_["params"][int(np.argmax(search.cv_results_["mean_test_score"]))],
        "best_score": float(np.max(search.cv_results_["mean_test_score"])),
    }
