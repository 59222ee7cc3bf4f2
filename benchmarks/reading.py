"""Target 4 -- one shuffled epoch of all-layer features: ours vs per-utterance files.

Every format yields, in one shuffled order, every utterance's frames as a float32 array
``(frames, 13, 768)``:

* ``ours`` -- ``FeatureSet.to_packed()`` (since issue 11 it loads nothing: its streams read
  the shards in place, :mod:`featcache.frames`) then the utterances in shuffled order, each
  copied out of the memory-mapped shards and converted to float32 with numpy (the
  estimators read whole batches and convert chunk by chunk inside the model instead); the
  two steps are also timed apart (``read_seconds``: making the packed view,
  ``convert_seconds``: reading and converting);
* ``ours_lazy`` -- ``X[i]`` in shuffled order (memory-mapped shard slices, stacked);
* ``npy`` -- NAIVE: ``np.load`` of one float32 ``.npy`` per utterance
  (:func:`benchmarks.naive.read_npy_epoch`);
* ``joblib`` -- NAIVE: ``joblib.load`` of one pickled float32 array per utterance.

``cold``: every file involved is flushed (``os.sync``) and evicted from the page cache
with ``os.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`` first; ``warm``: one untimed pass
first. Each measurement runs in a fresh process, so nothing is cached in memory by an
earlier one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np


def evict(paths: list[str]) -> int:
    """Drop the files from the page cache; returns how many were evicted."""
    os.sync()
    n = 0
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def cache_files(cache_path: str) -> list[str]:
    return [str(p) for p in Path(cache_path).rglob("*") if p.is_file()]


def prepare_joblib_job(npy_dir: str, out_dir: str) -> dict:
    """Write one joblib pickle per utterance (the same float32 arrays as the ``.npy`` files)."""
    import joblib

    info = json.loads((Path(npy_dir) / "index.json").read_text())
    out = Path(out_dir)
    index = out / "index.json"
    if index.exists() and json.loads(index.read_text()).get("n") == info["n"]:
        return json.loads(index.read_text()) | {"reused": True}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = []
    for p in info["paths"]:
        q = out / (Path(p).stem + ".pkl")
        joblib.dump(np.load(p), q)
        paths.append(str(q))
    res = {"n": info["n"], "paths": paths, "write_seconds": time.perf_counter() - t0}
    index.write_text(json.dumps(res))
    return res


def _ours_epoch(cache_path: str, seed: int) -> dict:
    import featcache
    import featcache.reader

    featcache.reader.clear_memory()
    t0 = time.perf_counter()
    X = featcache.open(cache_path).select("all_layers")
    stream = X.to_packed().streams[0]
    read = time.perf_counter() - t0
    order = np.random.default_rng(seed).permutation(len(X))
    n_bytes = 0
    for i in order:
        x = stream.utterance(int(i)).astype(np.float32)
        n_bytes += x.nbytes
    total = time.perf_counter() - t0
    return {
        "seconds": total,
        "read_seconds": read,  # to_packed: opening the shards (no frame is loaded)
        "convert_seconds": total - read,  # every utterance, shuffled, read in place and made float32
        "bytes": n_bytes,
        "stored_bytes": int(stream.data.nbytes),
    }


def _ours_lazy_epoch(cache_path: str, seed: int) -> dict:
    import featcache

    t0 = time.perf_counter()
    X = featcache.open(cache_path).select("all_layers")
    order = np.random.default_rng(seed).permutation(len(X))
    n_bytes = 0
    for i in order:
        x = X[int(i)]
        n_bytes += x.nbytes
    return {"seconds": time.perf_counter() - t0, "bytes": n_bytes}


def read_job(fmt: str, mode: str, cache_path: str | None = None, index_dir: str | None = None, seed: int = 0) -> dict:
    """One shuffled epoch of ``fmt`` (ours, ours_lazy, npy, joblib) in ``mode`` (warm, cold)."""
    from benchmarks.naive import read_joblib_epoch, read_npy_epoch

    if fmt in ("ours", "ours_lazy"):
        files = cache_files(cache_path)
        fn = (lambda: _ours_epoch(cache_path, seed)) if fmt == "ours" else (lambda: _ours_lazy_epoch(cache_path, seed))
    else:
        files = json.loads((Path(index_dir) / "index.json").read_text())["paths"]
        reader = read_npy_epoch if fmt == "npy" else read_joblib_epoch
        fn = lambda: reader(files, seed)  # noqa: E731
    if mode == "cold":
        evicted = evict(files)
    else:
        evicted = 0
        from benchmarks.training import warm_files

        warm_files(files)
    res = fn()
    res.update({"format": fmt, "mode": mode, "files": len(files), "evicted": evicted})
    res["gb_per_s"] = res["bytes"] / res["seconds"] / 1e9
    return res
