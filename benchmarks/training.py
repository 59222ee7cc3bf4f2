"""Targets 2 and 5 -- one Dense all-layers epoch: ours vs the naive loop, memory.

Jobs:

* :func:`build_job` -- the RAVDESS-sized cache of random float16 states
  (:func:`benchmarks.data.build_training_cache`), reused when it is already there;
* :func:`ours_job` -- ``DenseClassifier(max_epochs=E, validation_fraction=None)`` fitted on
  ``featcache.open(cache).select("all_layers")``; the epoch time is the estimator's own
  ``history_[k]["dur"]`` (measured by :mod:`estimators._training` around the batches of one
  epoch: the cache is loaded into memory before, by ``to_packed``, and timed separately);
* :func:`write_npy_job` -- the naive baseline's data: one float32 ``.npy`` per utterance
  (all layers), written once from the cache;
* :func:`naive_job` -- :func:`benchmarks.naive.naive_train_epoch` on those files;
* :func:`equivalence_job` -- the naive model given our fitted weights returns our outputs
  (it is the same model).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def build_job(corpus: str | None, scale: float, workdir: str, cache_dir: str, n_layers: int = 13, dim: int = 768, seed: int = 0) -> dict:
    from benchmarks.data import build_training_cache, training_files

    audio_dir, files = training_files(Path(corpus) if corpus else None, scale, Path(workdir), seed)
    info = build_training_cache(audio_dir, Path(cache_dir), n_layers=n_layers, dim=dim, seed=seed)
    info["audio_dir"] = str(audio_dir)
    return info


def _labels(X) -> tuple[np.ndarray, list[str]]:
    classes, y = np.unique(np.asarray(X.labels, dtype=str), return_inverse=True)
    return y.astype(np.int64), classes.tolist()


def ours_job(cache_path: str, epochs: int = 2, batch_size: int = 32, seed: int = 0, precision: str = "fp32",
             map_frames: bool = True) -> dict:
    """Fit our DenseClassifier for ``epochs`` epochs; per-epoch times from ``history_``.

    ``map_frames=False`` copies every batch out of the shards instead of mixing straight from
    their memory maps (``estimators._batch.MAP_FRAMES``; this worker process only): the A/B of
    the two read paths in one run.
    """
    import estimators._batch
    import featcache
    from estimators import DenseClassifier

    estimators._batch.MAP_FRAMES = bool(map_frames)

    X = featcache.open(cache_path).select("all_layers")
    t0 = time.perf_counter()
    packed = X.to_packed()  # the one load of the cache; fit() reuses it
    load = time.perf_counter() - t0
    data = packed.streams[0].data
    est = DenseClassifier(
        max_epochs=int(epochs), validation_fraction=None, batch_size=int(batch_size), random_state=seed, device="cpu", precision=precision
    )
    t0 = time.perf_counter()
    est.fit(X, X.labels)
    fit = time.perf_counter() - t0
    durs = [float(h["dur"]) for h in est.history_]
    frames = int(packed.streams[0].lengths.sum())
    return {
        "load_seconds": load,
        "fit_seconds": fit,
        "epoch_seconds": durs,
        "train_loss": [float(h["train_loss"]) for h in est.history_],
        "n_utterances": len(X),
        "frames": frames,
        "data_bytes": int(data.nbytes),
        "data_dtype": str(data.dtype),
        "precision": precision,
        "data_access": {k: v for k, v in est.data_access_.items() if isinstance(v, (str, int, float, bool))},
    }


def write_npy_job(cache_path: str, out_dir: str) -> dict:
    """Write one float32 ``.npy`` (frames, layers, dim) per utterance, plus ``index.json``."""
    import featcache

    out = Path(out_dir)
    index = out / "index.json"
    X = featcache.open(cache_path).select("all_layers")
    y, classes = _labels(X)
    if index.exists():
        info = json.loads(index.read_text())
        if info.get("n") == len(X):
            return info | {"reused": True}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths, n_bytes = [], 0
    for i, uid in enumerate(X.ids):
        x = X[i]  # float32 (frames, layers, dim)
        p = out / f"{uid}.npy"
        np.save(p, x)
        paths.append(str(p))
        n_bytes += x.nbytes
    info = {"n": len(X), "paths": paths, "labels": y.tolist(), "classes": classes, "bytes": n_bytes, "write_seconds": time.perf_counter() - t0}
    index.write_text(json.dumps(info))
    return info


def warm_files(paths: list[str]) -> float:
    """Read every file once (page cache warm-up); returns the seconds it took."""
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass
    return time.perf_counter() - t0


def naive_job(npy_dir: str, epochs: int = 1, batch_size: int = 32, num_workers: int = 0, warm: bool = True) -> dict:
    from benchmarks.naive import naive_train_epoch

    info = json.loads((Path(npy_dir) / "index.json").read_text())
    warm_s = warm_files(info["paths"]) if warm else None
    res = naive_train_epoch(
        info["paths"], np.asarray(info["labels"]), len(info["classes"]), batch_size=batch_size, epochs=epochs, num_workers=num_workers
    )
    res["warm_read_seconds"] = warm_s
    res["bytes"] = info["bytes"]
    res["n_utterances"] = info["n"]
    return res


def equivalence_job(cache_path: str, n: int = 48, seed: int = 0) -> dict:
    """Our fitted DenseClassifier and the naive model with the same weights: same outputs?"""
    import torch

    import featcache
    from benchmarks.naive import NaiveDense, pad_collate
    from estimators import DenseClassifier

    X = featcache.open(cache_path).select("all_layers")
    idx = np.linspace(0, len(X) - 1, min(n, len(X))).astype(int)
    Xs = X[idx]
    labels = np.asarray(Xs.labels)
    if len(np.unique(labels)) < 2:  # a tiny cache: make two classes
        labels = np.array(["a", "b"] * len(labels))[: len(labels)]
    est = DenseClassifier(max_epochs=1, validation_fraction=None, random_state=seed, device="cpu").fit(Xs, labels)
    ours = est._outputs(Xs)
    m = est.module_
    naive = NaiveDense(est.n_layers_in_, est.n_features_in_, len(est.classes_))
    with torch.no_grad():
        naive.alpha.copy_(m.mixers[0].alpha)
        lin = [mod for mod in m.branches[0] if isinstance(mod, torch.nn.Linear)]
        for dst, src in zip((naive.fc1, naive.fc2), lin):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        naive.out.weight.copy_(m.output.weight)
        naive.out.bias.copy_(m.output.bias)
    naive.eval()
    outs = []
    with torch.no_grad():
        for a in range(0, len(Xs), 16):
            batch = [(torch.from_numpy(Xs[i]), 0) for i in range(a, min(a + 16, len(Xs)))]
            x, lengths, _ = pad_collate(batch)
            outs.append(naive(x, lengths).numpy())
    theirs = np.concatenate(outs).astype(np.float64)
    return {
        "n": len(Xs),
        "shape_ours": list(ours.shape),
        "shape_naive": list(theirs.shape),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "max_abs_output": float(np.abs(ours).max()),
    }

