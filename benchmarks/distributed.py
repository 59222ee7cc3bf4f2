"""Part ``distributed`` -- scale-out on Dask (``featcache.distributed``, ``estimators.distributed``).

* **Handcrafted extraction** (MFCC + log-mel + eGeMAPS, the files of ``--corpus`` spread
  over actors, or synthetic RAVDESS-like audio): a plain local run, then ``--cluster local:1``
  and ``--cluster local:2`` (single-threaded worker processes). eGeMAPS runs single-threaded,
  so two workers on two cores should approach 2x one (target >= 1.6x). Shards of
  ``shard_size`` utterances (default 16, so that 240 files make 15 work units). The cluster
  start and a warm-up extraction on every worker are timed apart from the run. The
  distributed caches are compared with the local one frame by frame (bit for bit).
* **Grid** (Dense, 4 points x GroupKFold(5), the training cache of the ``training`` part):
  joblib's Dask backend on ``local:2`` against loky ``n_jobs=2`` (target: within 10 %), both
  with one torch thread per worker; overhead per task = (workers x wall - the fits' own
  fit + score time) / tasks; plus the round trip of an empty Dask task.
* **Scaling figures**: seconds per work unit and client commit time per shard (the one
  serial step: rename, manifest rewrite), from which tasks per hour per worker follow.

The machine is shared with other sessions: every job records the load other processes put on
it (``others_cores``); treat the figures of a busy machine as noisy.
"""

from __future__ import annotations

import time
from pathlib import Path

HANDCRAFTED = ["mfcc", "logmel", "egemaps"]


def _warm(features: list[str]) -> bool:
    """On a worker: import and run the extractors once (their libraries' set-up is not the run's)."""
    import numpy as np

    from featcache.pipeline import build_extractors

    x = (0.1 * np.sin(np.arange(16000) / 10.0)).astype(np.float32)
    for ex in build_extractors(features):
        ex(x, 16000)
    return True


def extract_job(audio_dir: str, cache_dir: str, mode: str, workers: int = 2, features: list[str] | None = None,
                shard_size: int = 16, threads: int | None = None) -> dict:
    """One handcrafted extraction: ``mode`` "local" (plain run) or "cluster" (``local:workers``, ``threads`` each)."""
    from featcache import distributed
    from featcache.pipeline import build_extractors, extract
    from featcache.store import StoreWriter

    features = features or HANDCRAFTED
    extractors = build_extractors(features)
    out: dict = {"mode": mode, "workers": workers if mode == "cluster" else None, "shard_size": shard_size, "threads": threads}
    commits: list[float] = []
    original = StoreWriter.commit_file

    def timed(self, path, entry):
        t = time.perf_counter()
        original(self, path, entry)
        commits.append(time.perf_counter() - t)

    StoreWriter.commit_file = timed
    try:
        if mode == "local":
            _warm(features)
            t0 = time.perf_counter()
            s = extract("ravdess", Path(audio_dir), Path(cache_dir), extractors, shard_size=shard_size, progress=False)
            wall = time.perf_counter() - t0
        else:
            from distributed import Client

            t0 = time.perf_counter()
            with distributed.local_cluster(workers, threads=threads) as lc, Client(lc) as client:
                out["cluster_start_seconds"] = time.perf_counter() - t0
                t1 = time.perf_counter()
                client.run(_warm, features)
                out["warm_seconds"] = time.perf_counter() - t1
                t0 = time.perf_counter()
                s = distributed.extract("ravdess", Path(audio_dir), Path(cache_dir), extractors, client=client,
                                        shard_size=shard_size, progress=False)
                wall = time.perf_counter() - t0
                out["empty_task_seconds"] = _empty_task_seconds(client)
    finally:
        StoreWriter.commit_file = original
    n_units = -(-s.done // shard_size) if s.done else 0
    out.update(wall_seconds=wall, audio_seconds=s.audio_seconds, audio_s_per_s=s.audio_seconds / wall, done=s.done,
               failed=len(s.failed), cache_path=s.cache_path, stores=s.stores, units=n_units,
               commit_seconds_mean=(sum(commits) / len(commits)) if commits else None, commits=len(commits))
    if mode == "cluster" and n_units:
        out["unit_seconds"] = wall * workers / n_units  # worker-seconds per unit, overheads included
    return out


def _empty_task_seconds(client, n: int = 200) -> float:
    """Wall time per empty task, ``n`` submitted at once and gathered (scheduler round trips)."""
    t0 = time.perf_counter()
    client.gather(client.map(_noop, range(n), pure=False))
    return (time.perf_counter() - t0) / n


def _noop(i: int) -> int:
    return i


def equal_job(cache_a: str, cache_b: str) -> dict:
    """Whether two corpus caches hold the same frames bit for bit (every store, every utterance)."""
    import numpy as np

    from featcache.store import StoreReader

    stores = sorted(p.name for p in Path(cache_a).iterdir() if (p / "store.json").exists())
    n, same = 0, True
    for store in stores:
        ra, rb = StoreReader(Path(cache_a) / store), StoreReader(Path(cache_b) / store)
        if ra.ids != rb.ids or ra.failed != rb.failed:
            return {"equal": False, "why": f"{store}: other utterances or failures", "utterances_x_stores": n}
        for uid in ra.ids:
            same = same and np.array_equal(ra.frames(uid), rb.frames(uid))
            n += 1
    return {"equal": bool(same), "utterances_x_stores": n, "stores": stores}


def grid_job(cache_path: str, mode: str, workers: int = 2, epochs: int = 1, folds: int = 5, seed: int = 0) -> dict:
    """GridSearchCV of DenseClassifier (lr x dropout) on all layers: loky ``n_jobs=workers`` or Dask ``local:workers``."""
    import joblib
    import numpy as np
    from sklearn.model_selection import GridSearchCV, GroupKFold

    import featcache
    from estimators import DenseClassifier

    X = featcache.open(cache_path).select("all_layers")
    grid = {"lr": [1e-3, 3e-4], "dropout": [0.1, 0.2]}
    search = GridSearchCV(DenseClassifier(max_epochs=int(epochs), validation_fraction=None, random_state=seed, device="cpu"),
                          grid, cv=GroupKFold(n_splits=int(folds)), scoring="balanced_accuracy", refit=False, n_jobs=workers)
    out: dict = {"mode": mode, "workers": workers}
    if mode == "dask":
        from distributed import Client

        from featcache import distributed

        t0 = time.perf_counter()
        with distributed.local_cluster(workers, threads=1) as lc, Client(lc) as client:
            out["cluster_start_seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            with joblib.parallel_config(backend="dask"):
                search.fit(X, X.labels, groups=X.speakers)
            out["wall_seconds"] = time.perf_counter() - t0
            out["empty_task_seconds"] = _empty_task_seconds(client)
    else:
        t0 = time.perf_counter()
        search.fit(X, X.labels, groups=X.speakers)  # loky: one torch thread per worker process
        out["wall_seconds"] = time.perf_counter() - t0
    r = search.cv_results_
    n_tasks = len(r["params"]) * int(folds)
    busy = float(np.sum((r["mean_fit_time"] + r["mean_score_time"]) * int(folds)))
    out.update(tasks=n_tasks, task_seconds_total=busy,
               overhead_per_task_seconds=(workers * out["wall_seconds"] - busy) / n_tasks,
               scores=[float(v) for v in r["mean_test_score"]])
    return out


def run_part(args, run, wd: Path, cache: str | None) -> dict:
    """The jobs of this part (``run`` is the suite's job runner: one subprocess each)."""
    import shutil

    from benchmarks.data import corpus_files, link_subset, spread, synthetic_corpus

    n = args.dist_files or (12 if args.quick else 240)
    if args.corpus:
        root = args.corpus.resolve()
        every = corpus_files(root)
        files = [every[i] for i in spread(len(every), n)]
    else:
        root = wd / "dist-synthetic-audio"
        files = synthetic_corpus(root, n)
    sub = link_subset(files, root, wd / "dist-audio")
    shard = 4 if args.quick else 16
    out: dict = {"files": len(files), "real_audio": bool(args.corpus)}

    def fresh(name: str) -> str:
        shutil.rmtree(wd / name, ignore_errors=True)
        return str(wd / name)

    out["local"] = run("dist_extract", audio_dir=str(sub), cache_dir=fresh("dist-local"), mode="local", shard_size=shard)
    for k in (1, 2):  # single-threaded workers: the scaling
        out[f"cluster{k}"] = run("dist_extract", audio_dir=str(sub), cache_dir=fresh(f"dist-c{k}"), mode="cluster",
                                 workers=k, shard_size=shard, threads=1)
    # the default: the workers get this process's thread counts, and the local run's features bit for bit
    out["cluster2_default"] = run("dist_extract", audio_dir=str(sub), cache_dir=fresh("dist-c2d"), mode="cluster",
                                  workers=2, shard_size=shard)
    if "error" not in out["local"] and "error" not in out["cluster2_default"]:
        out["equal"] = run("dist_equal", cache_a=out["local"]["cache_path"], cache_b=out["cluster2_default"]["cache_path"])
    if cache:
        folds = 2 if args.quick else 5
        out["grid_loky"] = run("dist_grid", cache_path=cache, mode="loky", epochs=args.grid_epochs, folds=folds)
        out["grid_dask"] = run("dist_grid", cache_path=cache, mode="dask", epochs=args.grid_epochs, folds=folds)
    for name in ("dist-local", "dist-c1", "dist-c2", "dist-c2d", "dist-audio"):
        shutil.rmtree(wd / name, ignore_errors=True)
    return out


def report_rows(d: dict, row) -> list[dict]:
    """The table rows of this part (``row`` is :func:`benchmarks.report.row`)."""
    def status(ok):
        return "met" if ok else "NOT MET"

    rows: list[dict] = []
    loc, c1, c2 = d.get("local", {}), d.get("cluster1", {}), d.get("cluster2", {})
    err = next((x["error"] for x in (loc, c1, c2) if "error" in x), None)
    what = f"{d.get('files')} {'RAVDESS' if d.get('real_audio') else 'synthetic'} files, MFCC + log-mel + eGeMAPS"
    if err or not c2:
        rows.append(row("7", "distributed extraction", status="failed", note=err or "no result"))
    else:
        ratio = c2["audio_s_per_s"] / c1["audio_s_per_s"]
        rows.append(row("7a", f"handcrafted extraction ({what}): audio-s/s, local:2 vs local:1 (single-threaded workers)",
                        c2["audio_s_per_s"], c1["audio_s_per_s"], ratio, None, None, ">= 1.6x", status(ratio >= 1.6),
                        note=f"{c2['units']} units of {c2['shard_size']}; cluster start {c2['cluster_start_seconds']:.1f} s and"
                        f" worker warm-up {c2['warm_seconds']:.1f} s not included"))
        rows.append(row("7b", "handcrafted extraction: audio-s/s, local:2 (single-threaded workers) vs the plain local run",
                        c2["audio_s_per_s"], loc["audio_s_per_s"], c2["audio_s_per_s"] / loc["audio_s_per_s"],
                        None, None, "report", "info",
                        note=f"the plain run uses {_cores(loc):.1f} cores (decoding thread + main thread, BLAS threads)"))
        cd = d.get("cluster2_default", {})
        if cd and "error" not in cd:
            rows.append(row("7b", "handcrafted extraction: audio-s/s, --cluster local:2 as by default (this process's"
                            " thread counts in each worker) vs the plain local run", cd["audio_s_per_s"], loc["audio_s_per_s"],
                            cd["audio_s_per_s"] / loc["audio_s_per_s"], None, None, "report", "info"))
        eq = d.get("equal", {})
        rows.append(row("7c", "--cluster local:2 cache = plain local cache, bit for bit", "yes" if eq.get("equal") else "NO", None, None, None,
                        None, "identical", status(bool(eq.get("equal"))),
                        note=f"{eq.get('utterances_x_stores')} utterance x store frames compared"))
        rows.append(row("7d", "seconds per work unit (worker time) / client commit per shard / empty task",
                        c2.get("unit_seconds"), c2.get("commit_seconds_mean"), None, None, None, "report", "info",
                        note=f"about {3600 / c2['unit_seconds']:.0f} units per hour per worker at this rate; an empty task"
                        f" {1e3 * c2['empty_task_seconds']:.1f} ms" if c2.get("unit_seconds") else ""))
    gl, gd = d.get("grid_loky", {}), d.get("grid_dask", {})
    if gl or gd:
        err = gl.get("error") or gd.get("error")
        if err:
            rows.append(row("7e", "distributed grid", status="failed", note=err))
        else:
            r = gd["wall_seconds"] / gl["wall_seconds"]
            rows.append(row("7e", f"Dense grid 4 points x GroupKFold: wall s, Dask local:2 vs loky n_jobs=2",
                            gd["wall_seconds"], gl["wall_seconds"], r, None, None, "<= 1.10x", status(r <= 1.10),
                            note=f"same scores: {'yes' if gd['scores'] == gl['scores'] else 'NO'}; cluster start"
                            f" {gd['cluster_start_seconds']:.1f} s not included"))
            rows.append(row("7f", "overhead per task, Dask vs loky (workers x wall - fit + score time) / tasks, s",
                            gd["overhead_per_task_seconds"], gl["overhead_per_task_seconds"], None, None, None, "report", "info",
                            note=f"{gd['tasks']} tasks; an empty Dask task {1e3 * gd['empty_task_seconds']:.1f} ms"))
    return rows


def _cores(res: dict) -> float:
    p = res.get("_proc", {})
    return (p.get("cpu_seconds") or 0.0) / p["wall_seconds"] if p.get("wall_seconds") else 0.0
