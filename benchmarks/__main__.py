"""``python -m benchmarks``: run the benchmark suite, print one markdown table, write JSON.

See ``docs/benchmarks.md`` (written by ``--write-doc``) and :mod:`benchmarks` for what is
measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.worker import REPO, run_inline, run_subprocess

PARTS = ("machine", "extraction", "training", "grid", "reading", "memory", "gpu", "distributed")
DEFAULT_PARTS = PARTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None, help="RAVDESS folder (Actor_XX/*.flac); synthetic audio without it")
    ap.add_argument("--only", default=",".join(DEFAULT_PARTS), help=f"comma-separated parts among {', '.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (tests, smoke runs)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks", help="folder for the JSON results")
    ap.add_argument("--extract-files", type=int, default=None, help="files extracted, spread over actors and emotions (default 60; quick 4)")
    ap.add_argument("--train-scale", type=float, default=None, help="share of the 1440 utterances in the training cache (default 1; quick 0.02)")
    ap.add_argument("--memory-scale", type=float, default=None, help="second, smaller training cache for the memory check (default half of --train-scale)")
    ap.add_argument("--train-epochs", type=int, default=None, help="epochs of our standalone fit (default 2: the first warms up)")
    ap.add_argument("--grid-epochs", type=int, default=None, help="epochs of every grid fit (default 1: 20 fits of the full-size data)")
    ap.add_argument("--dist-files", type=int, default=None, help="files of the distributed extraction part (default 240; quick 12)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    ap.add_argument("--precision", choices=("fastest", "fp32", "bf16"), default="fastest", help="precision of our extraction")
    ap.add_argument("--omp-wait-policy", choices=("passive", "active", "default"), default="passive",
                    help="OMP_WAIT_POLICY of every measured process, ours and naive alike (default passive: on a machine shared with "
                    "other busy processes, libgomp's spinning threads make torch many times slower)")
    ap.add_argument("--workers", type=int, default=1, help="featcache decoding / handcrafted threads")
    ap.add_argument("--naive-workers", type=int, default=0, help="DataLoader workers of the naive training loop")
    ap.add_argument("--workdir", type=Path, default=None, help="generated data (default: a temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (and reuse it with --workdir)")
    ap.add_argument("--write-doc", nargs="?", const=REPO / "docs" / "benchmarks.md", type=Path, default=None, help="write the table into this markdown file (default docs/benchmarks.md)")
    ap.add_argument("--from-json", type=Path, default=None, help="do not measure: print (and --write-doc) the table of a saved results file")
    ap.add_argument("--inline", action="store_true", help="run every part in this process (faster start; peak RSS is then shared)")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in args.parts if p not in PARTS]
    if bad:
        ap.error(f"unknown parts {bad}; choose among {', '.join(PARTS)}")
    if "machine" not in args.parts:
        args.parts.insert(0, "machine")
    q = args.quick
    args.extract_files = args.extract_files or (4 if q else 60)
    args.train_scale = args.train_scale or (0.02 if q else 1.0)
    args.memory_scale = args.memory_scale or args.train_scale / 2
    args.train_epochs = args.train_epochs or 2
    args.grid_epochs = args.grid_epochs or 1
    if args.threads is None:
        try:
            args.threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            args.threads = os.cpu_count() or 1
    return args


class Runner:
    """Runs jobs (subprocesses or inline) and keeps the load records."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.procs: list[dict] = []

    def __call__(self, job: str, _timeout: float | None = None, **params) -> dict:
        """Run ``job``; ``_timeout``: seconds after which its subprocess is killed (not inline)."""
        t0 = time.perf_counter()
        print(f"[benchmarks] {job} ...", file=sys.stderr, flush=True)
        if self.args.inline:
            res = run_inline(job, params, self.args.threads)
        else:
            policy = None if self.args.omp_wait_policy == "default" else self.args.omp_wait_policy
            limit = {} if _timeout is None else {"timeout": _timeout}
            res = run_subprocess(job, params, self.workdir / "jobs", self.args.threads, omp_wait_policy=policy, **limit)
        if "_proc" in res:
            self.procs.append(res["_proc"])
        msg = f"error: {res['error']}" if "error" in res else "ok"
        print(f"[benchmarks] {job} {msg} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        if "error" in res and res.get("stderr"):
            print(res["stderr"], file=sys.stderr)
        return res


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def _enough_disk(path: Path, need: int, what: str) -> str | None:
    free = shutil.disk_usage(path).free
    if free < need * 1.2:
        return f"not enough disk space for {what}: {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free"
    return None


def run_extraction(args, run: Runner, wd: Path, model_dir: Path) -> dict:
    from benchmarks.data import corpus_files, link_subset, spread, synthetic_corpus

    if args.corpus:
        root = args.corpus.resolve()
        every = corpus_files(root)
        files = [every[i] for i in spread(len(every), args.extract_files)]
    else:
        root = wd / "synthetic-audio"
        files = synthetic_corpus(root, args.extract_files)
    sub = link_subset(files, root, _fresh(wd / "extract-audio"))
    fl = [str(f) for f in files]
    out: dict = {"files": len(files)}
    precisions = ["fp32", "bf16"] if args.precision == "fastest" else [args.precision]
    out["probe"] = run("extract_probe", model_dir=str(model_dir), files=fl, precisions=precisions, probe_files=2 if args.quick else 3)
    prec = out["probe"].get("fastest") or "fp32" if args.precision == "fastest" else args.precision
    out["naive"] = run("extract_naive", files=fl, model_dir=str(model_dir), out_dir=str(_fresh(wd / "naive-extract")))
    common = dict(audio_dir=str(sub), model_dir=str(model_dir), precision=prec, device="cpu", workers=args.workers)
    out["ours_ssl"] = run("extract_ours", cache_dir=str(_fresh(wd / "cache-ssl")), features=["wav2vec2"], **common)
    out["ours_handcrafted"] = run("extract_ours", cache_dir=str(_fresh(wd / "cache-hc")), features=["mfcc", "egemaps"], **common)
    out["ours_all"] = run("extract_ours", cache_dir=str(_fresh(wd / "cache-all")), features=["wav2vec2", "mfcc", "egemaps"], **common)
    if "error" not in out["ours_ssl"]:
        out["equality"] = run(
            "extract_equality", cache_path=out["ours_ssl"]["cache_path"], store=out["ours_ssl"]["stores"][0],
            naive_dir=str(wd / "naive-extract"), model_dir=str(model_dir), audio_dir=str(sub), precision=prec,
            n_single=2 if args.quick else 3,
        )
    shutil.rmtree(wd / "naive-extract", ignore_errors=True)
    return out


def training_limit(machine: dict, ours: dict, n_layers: int, dim: int) -> dict:
    from benchmarks.flops import dense_flops_per_frame

    rate = report.limits(machine).get("fp32")
    bw = machine.get("memory", {}).get("read_gbps_best")
    if not rate or not bw or "frames" not in ours:
        return {}
    per_frame = dense_flops_per_frame(n_layers, dim, (128, 128), 8)["total"]
    flops = per_frame * ours["frames"]
    t_compute = flops / (rate * 1e9)
    t_memory = 2 * ours["data_bytes"] / (bw * 1e9)
    return {
        "flops_per_frame": per_frame,
        "flops": flops,
        "compute_seconds": t_compute,
        "memory_seconds": t_memory,
        "seconds": t_compute + t_memory,
        "model": f"limit = {per_frame / 1e6:.2f} MFLOP/frame x {ours['frames'] / 1e3:.0f}k frames ({flops / 1e9:.0f} GFLOP) / "
        f"{rate:.0f} GFLOP/s fp32 = {t_compute:.2f} s, + 2 passes over {ours['data_bytes'] / 1e9:.2f} GB / {bw:.1f} GB/s = {t_memory:.2f} s",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        R = json.loads(args.from_json.read_text())
        rows = report.build_rows(R)
        print(report.render(R, rows))
        if args.write_doc:
            print(f"doc: {report.write_doc(args.write_doc, R, rows)}")
        return 0
    t_start = time.perf_counter()
    tmp = args.workdir is None
    wd = Path(tempfile.mkdtemp(prefix="featcache-bench-")) if tmp else args.workdir.resolve()
    wd.mkdir(parents=True, exist_ok=True)
    run = Runner(args, wd)
    n_layers, dim = (13, 32) if args.quick else (13, 768)
    R: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m benchmarks " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "parts": args.parts,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load": {"start": list(os.getloadavg())},
    }
    try:
        R["machine"] = run("machine", quick=args.quick)
        from benchmarks.data import make_model

        gpu_used = "gpu" in args.parts and bool(R["machine"].get("gpu", {}).get("available"))
        model_dir = None
        if "extraction" in args.parts or gpu_used:  # without a GPU the gpu part needs no model
            model_dir = make_model(wd / ("wav2vec2-tiny-random" if args.quick else "wav2vec2-base-random"), quick=args.quick)
        if "extraction" in args.parts:
            R["extraction"] = run_extraction(args, run, wd, model_dir)
        if "gpu" in args.parts:
            from benchmarks import gpu

            # --only gpu: the budget counts from the start of the run (the 8-minute target)
            t0 = t_start if set(args.parts) <= {"machine", "gpu"} else time.perf_counter()
            R["gpu"] = gpu.run_part(args, run, wd, model_dir, R["machine"], n_layers=n_layers, dim=dim, deadline=t0 + gpu.BUDGET_S)
        corpus = str(args.corpus.resolve()) if args.corpus else None
        needs_cache = any(p in args.parts for p in ("training", "grid", "reading", "memory", "distributed"))
        cache = None
        if needs_cache:
            tag = f"{args.train_scale:g}-{dim}"
            build = run("train_build", corpus=corpus, scale=args.train_scale, workdir=str(wd), cache_dir=str(wd / f"train-cache-{tag}"), n_layers=n_layers, dim=dim)
            R["training_data"] = build
            cache = build.get("path")
        npy_dir = wd / "naive-npy"
        if cache and any(p in args.parts for p in ("training", "reading")):
            problem = _enough_disk(wd, 2 * R["training_data"]["data_bytes"], "the float32 .npy copy")
            R["npy"] = {"error": problem} if problem else run("train_write_npy", cache_path=cache, out_dir=str(npy_dir))
            R["npy"].pop("paths", None)
            R["npy"].pop("labels", None)
        if cache and "training" in args.parts:
            tr = {"n_layers": n_layers, "dim": dim}
            tr["equivalence"] = run("train_equivalence", cache_path=cache)
            tr["ours"] = run("train_ours", cache_path=cache, epochs=args.train_epochs)
            tr["ours_copied"] = run("train_ours", cache_path=cache, epochs=args.train_epochs, map_frames=False)
            if "error" not in R["npy"]:
                tr["naive"] = run("train_naive", npy_dir=str(npy_dir), epochs=1, num_workers=args.naive_workers)
            else:
                tr["naive"] = {"error": R["npy"]["error"]}
            tr["limit"] = training_limit(R["machine"], tr["ours"], n_layers, dim)
            R["training"] = tr
        if cache and "reading" in args.parts and "error" not in R["npy"]:
            rd: dict = {}
            pkl_dir = wd / "naive-joblib"
            problem = _enough_disk(wd, 2 * R["training_data"]["data_bytes"], "the joblib copy")
            prep = {"error": problem} if problem else run("read_prepare_joblib", npy_dir=str(npy_dir), out_dir=str(pkl_dir))
            rd["prepare_joblib"] = {k: v for k, v in prep.items() if k != "paths"}
            for mode in ("warm", "cold"):
                rd[f"ours-{mode}"] = run("read_epoch", fmt="ours", mode=mode, cache_path=cache)
                rd[f"ours_lazy-{mode}"] = run("read_epoch", fmt="ours_lazy", mode=mode, cache_path=cache)
                rd[f"npy-{mode}"] = run("read_epoch", fmt="npy", mode=mode, index_dir=str(npy_dir))
                if "error" not in prep:
                    rd[f"joblib-{mode}"] = run("read_epoch", fmt="joblib", mode=mode, index_dir=str(pkl_dir))
            shutil.rmtree(pkl_dir, ignore_errors=True)
            R["reading"] = rd
        shutil.rmtree(npy_dir, ignore_errors=True)
        if "distributed" in args.parts:
            from benchmarks.distributed import run_part

            R["distributed"] = run_part(args, run, wd, cache)
        if cache and "grid" in args.parts:
            R["grid"] = run("grid", cache_path=cache, epochs=args.grid_epochs, folds=5)
        if cache and "memory" in args.parts:
            tag = f"{args.memory_scale:g}-{dim}"
            half = run("train_build", corpus=corpus, scale=args.memory_scale, workdir=str(wd), cache_dir=str(wd / f"train-cache-{tag}"), n_layers=n_layers, dim=dim)
            R["memory"] = {"build": half}
            if "error" not in half:
                R["memory"]["ours"] = run("train_ours", cache_path=half["path"], epochs=1)
            if "training" not in args.parts:  # the full-size figure is needed too
                R.setdefault("training", {})["ours"] = run("train_ours", cache_path=cache, epochs=1)
    finally:
        if tmp and not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
        elif not args.keep:
            for name in ("naive-npy", "naive-joblib", "naive-extract"):
                shutil.rmtree(wd / name, ignore_errors=True)
    others = [(p.get("others_cores"), p.get("wall_seconds", 0)) for p in run.procs if p.get("others_cores") is not None]
    tot = sum(w for _, w in others)
    walls = sum(p.get("wall_seconds") or 0 for p in run.procs)
    R["load"].update(
        own_cores_mean=sum(p.get("cpu_seconds") or 0 for p in run.procs) / walls if walls else None,
        end=list(os.getloadavg()),
        others_cores_mean=sum(o * w for o, w in others) / tot if tot else None,
        others_cores_max=max((o for o, _ in others), default=None),
    )
    R["wall_seconds"] = time.perf_counter() - t_start
    rows = report.build_rows(R)
    R["rows"] = rows
    text = report.render(R, rows)
    print(text)
    path = report.write_json(R, args.out)
    print(f"JSON: {path}")
    if args.write_doc:
        print(f"doc: {report.write_doc(args.write_doc, R, rows)}")
    if tmp and args.keep:
        print(f"work folder kept: {wd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
