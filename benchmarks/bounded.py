"""Bounded memory (issue 11): training from caches larger than RAM, frames read in place.

Usage::

    python -m benchmarks.bounded [--iemocap-scales 0.5,1] [--ravdess-scale 1] [--workdir DIR --keep]
                                 [--quick] [--out FILE] [--write-doc]

Every job runs in a fresh process (:func:`benchmarks.worker.run_subprocess`), which samples its
anonymous memory (``RssAnon``) every 20 ms; memory-mapped shard pages are page cache (``RssFile``),
reclaimable and shared between processes, and reported apart. Jobs, in this order:

* the machine: CPU flags, fp32 matmul rate (the compute limit of an epoch);
* a **RAVDESS-sized** cache (1440 utterances of RAVDESS-like durations, 13 x 768 float16, ~5.3 GB)
  and a **synthetic IEMOCAP 4-class** cache (5531 utterances x scale, IEMOCAP-like durations:
  log-normal, mean ~4.5 s, cropped at 15 s; 10 speakers), both of random float16 states written
  straight into a featcache store (:func:`build_job`, the store writer of ``featcache extract``;
  no audio is decoded, the values do not change the cost);
* RAVDESS-sized, two Dense all-layers epochs each (the fastest after the first is compared):
  ``inplace`` (today's path: a FeatureSet, frames read batch by batch from the shards) vs
  ``memory`` (the path before this change, measured in the same run: every frame of the selection
  copied first into one anonymous array, then the same estimator on it);
* ``GridSearchCV`` (2 points x GroupKFold(2), 1 epoch per fit) on the RAVDESS-sized cache with
  ``n_jobs=1`` and ``n_jobs=2`` (loky worker processes): the scores must be equal and the workers'
  anonymous memory together (sampled over the job's process tree) stays near one fit's;
* per IEMOCAP scale: one **cold** sequential read of the store's files (page cache dropped with
  ``posix_fadvise(DONTNEED)``) and one **cold** Dense epoch with the default ``"auto"`` budget; where
  the cache fits in half the memory, also two warm epochs with a budget that holds it (random batches).

The epoch target is ``wall <= 1.3 x max(cold sequential read, compute limit)``; the compute limit is
the Dense training FLOPs per frame (:func:`benchmarks.flops.dense_flops_per_frame`) x frames / the fp32
matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

IEMOCAP4 = 5531
LABELS4 = ("neu", "hap", "ang", "sad")


def iemocap_durations(n: int, seed: int = 0) -> np.ndarray:
    """IEMOCAP-like utterance lengths in seconds: log-normal (mean ~4.5 s), 0.6-15 s."""
    rng = np.random.default_rng(seed)
    sigma = 0.7
    return np.clip(rng.lognormal(np.log(4.6) - sigma**2 / 2, sigma, n), 0.6, 15.0)


def build_job(out_dir: str, kind: str = "iemocap", scale: float = 1.0, seed: int = 0, n_layers: int = 13, dim: int = 768) -> dict:
    """Write a cache of random float16 states (reused when its ``bench.json`` matches)."""
    import pandas as pd

    from benchmarks.data import RandomStates, synthetic_durations
    from featcache.fileio import atomic_write_json
    from featcache.store import FORMAT_VERSION, StoreWriter

    n = IEMOCAP4 if kind == "iemocap" else 1440
    n = max(8, int(round(n * float(scale))))
    want = {"kind": kind, "n": n, "seed": seed, "n_layers": n_layers, "dim": dim}
    cache = Path(out_dir)
    stamp = cache / "bench.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("want") == want:
        return json.loads(stamp.read_text())["info"] | {"reused": True}
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    t0 = time.perf_counter()
    durations = iemocap_durations(n, seed) if kind == "iemocap" else synthetic_durations(n, seed)
    rng = np.random.default_rng(seed + 1)
    speakers = [f"Ses0{1 + i // 2}{'FM'[i % 2]}" for i in range(10)] if kind == "iemocap" else [f"{a:02d}" for a in range(1, 25)]
    ids = [f"utt{i:06d}" for i in range(n)]
    table = pd.DataFrame({"id": ids, "path": [f"{u}.wav" for u in ids], "speaker": [speakers[i % len(speakers)] for i in range(n)],
                          "label": rng.choice(LABELS4, n)})
    (cache / "utterances.csv").write_text(table.to_csv(index=False))
    atomic_write_json(cache / "corpus.json", {"format": "featcache.corpus", "format_version": FORMAT_VERSION, "corpus": f"{kind}_like",
                                              "data_dir": str(cache), "n_utterances": n, "problems": [], "dropped": []})
    ex = RandomStates(n_layers, dim, seed)
    writer = StoreWriter(cache / ex.store_name, ex.describe(), {"max_seconds": 15.0})
    frames = 0
    for uid, d in zip(ids, durations):
        x = ex._states(ex.n_frames(int(d * 16000)))
        frames += x.shape[1]
        writer.add(uid, x, float(d), float(d))
    writer.close()
    info = {"path": str(cache), "kind": kind, "n_utterances": n, "n_frames": int(frames), "n_layers": n_layers, "dim": dim,
            "data_bytes": int(frames) * n_layers * dim * 2, "mean_seconds": float(np.mean(durations)),
            "n_shards": len(list((cache / ex.store_name).glob("shard-*.h5"))), "build_seconds": time.perf_counter() - t0}
    stamp.write_text(json.dumps({"want": want, "info": info}))
    return info


def _files(cache: str) -> list[str]:
    return sorted(str(p) for p in Path(cache).rglob("shard-*.h5"))


def seq_read_job(cache: str, chunk_mib: int = 16) -> dict:
    """Read every shard file once, sequentially, after dropping it from the page cache."""
    from benchmarks.reading import evict

    files = _files(cache)
    evict(files)
    buf = bytearray(chunk_mib << 20)
    view = memoryview(buf)
    t0 = time.perf_counter()
    n = 0
    for p in files:
        with open(p, "rb", buffering=0) as fh:
            while True:
                k = fh.readinto(view)
                if not k:
                    break
                n += k
    sec = time.perf_counter() - t0
    return {"seconds": sec, "bytes": n, "gb_per_s": n / sec / 1e9, "files": len(files)}


def epoch_job(cache: str, mode: str = "inplace", epochs: int = 1, budget: str = "auto", cold: bool = True, seed: int = 0) -> dict:
    """Dense all-layers epochs on the cache: ``inplace`` (a FeatureSet) or ``memory`` (the
    selection copied into one anonymous array first: the path before issue 11)."""
    import featcache
    from benchmarks.reading import evict
    from estimators import DenseClassifier
    from featcache.packed import Packed, Stream

    if cold:
        evict(_files(cache))
    X = featcache.open(cache).select("all_layers")
    load = 0.0
    data = X
    if mode == "memory":
        t0 = time.perf_counter()
        st = X.to_packed().streams[0]
        src = st.data  # what featcache.reader._load_store did before: every shard into one array
        frames = np.empty(src.shape, src.dtype)
        for p, (sh, layers) in enumerate(src.parts):
            for li, k in enumerate(layers):
                frames[src.base[p] : src.base[p + 1], li, :] = sh.layer(k)
        data = Packed([Stream(frames, st.starts, st.lengths, st.name, st.frame_rate)], ids=X.ids, speakers=X.speakers)
        load = time.perf_counter() - t0
    est = DenseClassifier(max_epochs=int(epochs), validation_fraction=None, random_state=seed, device="cpu", memory_budget=budget)
    t0 = time.perf_counter()
    est.fit(data, X.labels)
    fit = time.perf_counter() - t0
    lengths = X.to_packed().streams[0].lengths
    return {"mode": mode, "cold": cold, "load_seconds": load, "fit_seconds": fit, "epoch_seconds": [float(h["dur"]) for h in est.history_],
            "data_access": est.data_access_, "frames": int(lengths.sum()), "n_utterances": len(X)}


def _tree_anon(root: int) -> dict[int, int]:
    """RssAnon of ``root`` and each of its descendants, by pid, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        out[pid] = int(line.split()[1]) * 1024
        except OSError:
            pass
    return out


def runtime_job(cache: str) -> dict:
    """Anonymous memory of a process that imported everything and opened the FeatureSet,
    before any fit: the per-process runtime every worker carries whatever the data."""
    import featcache
    import estimators  # noqa: F401
    from estimators import DenseClassifier  # noqa: F401  (imports torch)

    X = featcache.open(cache).select("all_layers")
    X.to_packed()
    with open("/proc/self/status", encoding="ascii") as fh:
        anon = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("RssAnon:"))
    return {"anon_bytes": anon}


def grid_job(cache: str, n_jobs: int = 1, folds: int = 2, seed: int = 0) -> dict:
    """GridSearchCV(Dense, lr x 2, GroupKFold(folds), 1 epoch) with the process tree's
    anonymous memory sampled every 50 ms (the workers of ``n_jobs=2`` included)."""
    from sklearn.model_selection import GridSearchCV, GroupKFold

    import featcache
    from estimators import DenseClassifier

    X = featcache.open(cache).select("all_layers")
    peak = {"tree": 0, "procs": 0}
    per_pid: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = _tree_anon(os.getpid())
            for pid, a in now.items():
                per_pid[pid] = max(per_pid.get(pid, 0), a)
            if sum(now.values()) > peak["tree"]:
                peak["tree"], peak["procs"] = sum(now.values()), len(now)
            stop.wait(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    est = DenseClassifier(max_epochs=1, validation_fraction=None, random_state=seed, device="cpu")
    search = GridSearchCV(est, {"lr": [1e-3, 3e-4]}, cv=GroupKFold(n_splits=int(folds)), scoring="balanced_accuracy",
                          n_jobs=int(n_jobs), refit=False, error_score="raise")
    t0 = time.perf_counter()
    search.fit(X, X.labels, groups=X.speakers)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    return {"n_jobs": int(n_jobs), "wall_seconds": wall, "scores": [float(s) for s in search.cv_results_["mean_test_score"]],
            "split_scores": [float(search.cv_results_[f"split{k}_test_score"][i]) for i in range(2) for k in range(int(folds))],
            "tree_peak_anon_bytes": peak["tree"], "tree_processes_at_peak": peak["procs"],
            "parent_peak_anon_bytes": per_pid.get(os.getpid(), 0),
            "worker_peak_anon_bytes": sorted((a for pid, a in per_pid.items() if pid != os.getpid()), reverse=True)}


# --------------------------------------------------------------------------- the driver


def _limit(machine: dict, frames: int, n_layers: int, dim: int) -> float | None:
    from benchmarks.flops import dense_flops_per_frame

    rate = (machine.get("matmul", {}).get("fp32") or {}).get("gflops_best")
    if not rate:
        return None
    return dense_flops_per_frame(n_layers, dim, (128, 128), 4)["total"] * frames / (rate * 1e9)


def _gb(x) -> str:
    return "-" if x is None else f"{x / 1e9:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import publish
    from benchmarks.worker import run_subprocess

    ap = argparse.ArgumentParser(prog="python -m benchmarks.bounded", description=__doc__.splitlines()[0])
    ap.add_argument("--iemocap-scales", default="0.5,1", help="multiples of IEMOCAP 4-class (5531 utterances, ~25 GB)")
    ap.add_argument("--ravdess-scale", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="tiny caches (13 x 32): checks that it runs")
    ap.add_argument("--skip-grid", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/bounded-latest.json"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    wd = (args.workdir or Path(tempfile.mkdtemp(prefix="featcache-bounded-"))).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    dim = 32 if args.quick else 768
    threads = args.threads or len(os.sched_getaffinity(0))
    jobs = wd / "jobs"

    def run(job: str, **kw) -> dict:
        t0 = time.perf_counter()
        print(f"[bounded] {job} {kw.get('mode', '')} ...", file=sys.stderr, flush=True)
        res = run_subprocess(job, kw, jobs, threads, omp_wait_policy="passive")
        print(f"[bounded] {job} {'error: ' + res['error'] if 'error' in res else 'ok'} ({time.perf_counter() - t0:.1f} s)",
              file=sys.stderr, flush=True)
        if "error" in res:
            print(res.get("stderr", ""), file=sys.stderr)
        return res

    R: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": "python -m benchmarks.bounded " + " ".join(argv or sys.argv[1:])}
    try:
        R["machine"] = run("machine", quick=args.quick)
        rv = run("bounded_build", out_dir=str(wd / "ravdess-like"), kind="ravdess", scale=args.ravdess_scale, dim=dim)
        R["ravdess"] = {"build": rv}
        if "error" not in rv:
            for mode in ("inplace", "memory"):
                R["ravdess"][mode] = run("bounded_epoch", cache=rv["path"], mode=mode, epochs=2, cold=False)
            if not args.skip_grid:
                R["ravdess"]["runtime"] = run("bounded_runtime", cache=rv["path"])
                for nj in (1, 2):
                    R["ravdess"][f"grid{nj}"] = run("bounded_grid", cache=rv["path"], n_jobs=nj)
        R["iemocap"] = []
        for scale in [float(s) for s in args.iemocap_scales.split(",") if s.strip()]:
            need = IEMOCAP4 * scale * 4.5 * 50 * 13 * dim * 2 * 1.1
            if shutil.disk_usage(wd).free < need:
                R["iemocap"].append({"scale": scale, "error": f"not enough disk: {need / 1e9:.0f} GB needed"})
                continue
            b = run("bounded_build", out_dir=str(wd / f"iemocap-{scale:g}"), kind="iemocap", scale=scale, dim=dim)
            entry = {"scale": scale, "build": b}
            if "error" not in b:
                entry["seq_read"] = run("bounded_seq_read", cache=b["path"])
                entry["stream"] = run("bounded_epoch", cache=b["path"], mode="inplace", epochs=1, cold=True)
                from featcache.memory import available_memory

                avail = available_memory()
                if b["data_bytes"] < 0.45 * avail:
                    entry["random_warm"] = run("bounded_epoch", cache=b["path"], mode="inplace", epochs=2, cold=False,
                                               budget=str(int(b["data_bytes"] * 1.5)))
            R["iemocap"].append(entry)
            if not args.keep:
                shutil.rmtree(wd / f"iemocap-{scale:g}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    R["rows"] = rows(R)
    text = render(R)
    publish(R, text, args.out)
    return 0


def rows(R: dict) -> list[dict]:
    """The table: one dict per figure (what, ours, baseline, ratio, target, status)."""
    from benchmarks.report import fmt, row

    out: list[dict] = []
    m = R.get("machine", {})
    rv = R.get("ravdess", {})
    ip, mem = rv.get("inplace", {}), rv.get("memory", {})
    b = rv.get("build", {})
    if ip.get("epoch_seconds") and mem.get("epoch_seconds"):
        e_ip, e_mem = min(ip["epoch_seconds"][1:] or ip["epoch_seconds"]), min(mem["epoch_seconds"][1:] or mem["epoch_seconds"])
        a_ip, a_mem = ip["_proc"]["peak_anon_bytes"], mem["_proc"]["peak_anon_bytes"]
        size = f"{b['n_utterances']} utt., {b['n_frames'] / 1e3:.0f}k frames x {b['n_layers']} x {b['dim']} float16 = {_gb(b['data_bytes'])}"
        out.append(row("8a", f"RAVDESS-sized Dense all-layers epoch ({size}), warm: s, in place vs copied into memory first (before)",
                       e_ip, e_mem, e_mem / e_ip, None, None, "ratio >= 1 (no slower)", "met" if e_ip <= e_mem * 1.03 else "not met",
                       note=f"access {ip['data_access']['mode']}; the copy itself took {mem['load_seconds']:.1f} s (not in the epoch)"))
        out.append(row("8b", "RAVDESS-sized training: peak anonymous memory, in place vs copied first",
                       _gb(a_ip), _gb(a_mem), a_mem / a_ip, None, None, "in place <= 1.5 GB", "met" if a_ip <= 1.5e9 else "not met",
                       note=f"VmHWM {_gb(ip['_proc']['peak_rss_bytes'])} vs {_gb(mem['_proc']['peak_rss_bytes'])} (VmHWM counts mapped shard pages)"))
    g1, g2, rt = rv.get("grid1", {}), rv.get("grid2", {}), rv.get("runtime", {}).get("anon_bytes")
    if g1.get("scores") and g2.get("scores"):
        same = g1["split_scores"] == g2["split_scores"]
        one = g1["parent_peak_anon_bytes"]  # n_jobs=1: the fits run in the parent
        workers = [a for a in g2["worker_peak_anon_bytes"] if a > 0.1 * one][:2]  # the two loky workers
        both = sum(workers)
        beyond = (both - len(workers) * rt) / (one - rt) if rt and one > rt else None
        out.append(row("8c", "GridSearchCV(n_jobs=2) vs n_jobs=1 (2 points x GroupKFold(2), RAVDESS-sized): the two workers' anonymous memory together vs one fit's",
                       _gb(both), _gb(one), both / one, None, None, "<= 1.3x one fit's, same scores",
                       "met" if same and both <= 1.3 * one else "not met",
                       note=f"scores equal: {same}; each worker {', '.join(_gb(a) for a in workers)}; an idle process that imported torch and opened "
                            f"the set holds {_gb(rt)}: beyond that runtime, the two workers hold {fmt(beyond)}x one fit's; "
                            f"wall {g2['wall_seconds']:.0f} s vs {g1['wall_seconds']:.0f} s"))
    for e in R.get("iemocap", []):
        bb, sq, st = e.get("build", {}), e.get("seq_read", {}), e.get("stream", {})
        if not st.get("epoch_seconds"):
            out.append(row("8d", f"IEMOCAP x{e['scale']:g}", status="failed", note=e.get("error") or st.get("error") or bb.get("error", "")))
            continue
        lim = _limit(m, bb["n_frames"], bb["n_layers"], bb["dim"])
        bound = max(sq["seconds"], lim or 0)
        wall = st["fit_seconds"]
        anon = st["_proc"]["peak_anon_bytes"]
        acc = st["data_access"]
        size = f"{bb['n_utterances']} utt. (mean {bb['mean_seconds']:.1f} s), {bb['n_frames'] / 1e6:.2f} M frames = {_gb(bb['data_bytes'])}"
        out.append(row("8d", f"IEMOCAP-4-class x{e['scale']:g} ({size}), one cold Dense epoch: wall s vs one cold sequential read",
                       wall, sq["seconds"], wall / bound, lim, None, "<= 1.3x max(read, compute limit)",
                       "met" if wall <= 1.3 * bound else "not met",
                       note=f"access {acc['mode']} (budget {_gb(acc['budget_bytes'])} {acc.get('budget_from')}, windows {_gb(acc.get('window_bytes'))}, "
                            f"{acc['shards']} shards); read {sq['gb_per_s']:.2f} GB/s; compute limit {lim or 0:.1f} s"))
        out.append(row("8e", f"IEMOCAP-4-class x{e['scale']:g}, that epoch: peak anonymous memory", _gb(anon), None, None, None, None,
                       "<= 3 GB", "met" if anon <= 3e9 else "not met", note=f"VmHWM {_gb(st['_proc']['peak_rss_bytes'])} (mapped pages)"))
        rw = e.get("random_warm", {})
        if rw.get("epoch_seconds"):
            out.append(row("8f", f"IEMOCAP-4-class x{e['scale']:g}, warm epoch with a budget that holds it (random batches)",
                           min(rw["epoch_seconds"][1:] or rw["epoch_seconds"]), None, None, lim, None, "report", "info",
                           note=f"peak anonymous {_gb(rw['_proc']['peak_anon_bytes'])}; epochs {', '.join(f'{x:.1f}' for x in rw['epoch_seconds'])} s"))
    return out


def render(R: dict) -> str:
    from benchmarks.report import machine_lines, markdown_table

    return f"{machine_lines(R)}\n\n{markdown_table(R['rows'])}\n"


if __name__ == "__main__":
    sys.exit(main())
