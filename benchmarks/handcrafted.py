"""Handcrafted extraction against its core limit (issue 17, target 2).

Usage::

    python -m benchmarks.handcrafted --corpus ../shared/corpora/ravdess-speech-16k [--files N]
                                     [--repeat R] [--skip-cluster] [--workdir DIR --keep]
                                     [--out FILE] [--write-doc [PATH]]

Every part runs in a fresh process (:func:`benchmarks.worker.run_subprocess`), on the same
files (all of ``--corpus``, or ``--files N`` spread over its actors, linked into a folder).
In this order:

* the machine: CPU model and flags, library versions (:mod:`benchmarks.machine`, quick);
* **single-core rates** (:func:`rates_job`): one process pinned to one core, one thread
  (``OMP_NUM_THREADS=MKL_NUM_THREADS=1``, ``torch.set_num_threads(1)``, every BLAS / OpenMP
  pool limited to 1 with threadpoolctl). The files are read once (page cache), each extractor
  is called once to warm up, then each part is timed over all the files: FLAC decoding
  (:func:`featcache.audio.load_audio`, as the pipeline reads a file), MFCC, log-mel, eGeMAPS
  LLDs (the extractors of ``featcache extract --features mfcc,logmel,egemaps``). A rate is
  audio seconds / CPU seconds of that part (the process's CPU time; its wall time is
  recorded too). The per-file fingerprints (sha256 of the PCM, near-duplicate fingerprint)
  are timed as well and reported, but are *not* in the limit;
* the **limit** of ``cores`` cores: ``cores / sum_i (1 / rate_i)`` audio-s/s over the four
  parts, ``cores`` = the cores this benchmark may use (``os.sched_getaffinity``);
* the README's main job, ``featcache extract --corpus ravdess --data-dir D --features
  mfcc,logmel,egemaps --quiet`` (the installed console script, a fresh ``--cache-dir``):
  as it runs by default now (worker processes, one per core), with ``--workers 1`` (one
  decoding thread in the extracting process: the default before, same code path) and with
  ``--cluster local:2`` (Dask). Its audio-s/s is the command's own figure (audio seconds / the
  run's wall time, printed by the command); the process's wall time (interpreter start and
  imports included) and the CPU time of the command with all its processes are recorded too;
* the caches of the default and of ``--cluster local:2`` are compared with the ``--workers 1``
  cache, frame by frame (bit for bit) and failure by failure;
* the default once more with ``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1`` for the
  command. The extractors run one BLAS thread whatever the environment
  (:data:`featcache._procpool.BLAS_THREADS`), so this should change neither the speed nor a
  value: its cache is compared with the ``--workers 1`` cache value by value (how many differ,
  by how much).

The machine may be shared with other jobs: every part records the load other processes put on
it (``others_cores``); treat the figures of a busy machine as noisy.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = ("mfcc", "logmel", "egemaps")
PARTS = ("decode", *FEATURES)  # the limit's parts
TARGET = 0.85


def _cpu_time() -> float:
    return time.process_time()


def _limit_threads() -> dict:
    """One thread everywhere (torch, every BLAS / OpenMP pool loaded so far); the counts after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    threadpool_limits(1)
    return {i["filepath"].rsplit("/", 1)[-1]: i["num_threads"] for i in threadpool_info()}


def rates_job(audio_dir: str, core: int | None = None, features: list[str] | None = None, max_seconds: float = 15.0) -> dict:
    """Single-core, single-thread rates (audio-s per CPU-s) of decoding and of each extractor."""
    import numpy as np

    from benchmarks.data import corpus_files
    from featcache.audio import load_audio
    from featcache.fingerprint import fingerprint, pcm_sha256
    from featcache.pipeline import build_extractors
    from featcache.process import prepare_signal

    if core is not None:
        os.sched_setaffinity(0, {int(core)})
    files = corpus_files(Path(audio_dir))
    for f in files:  # into the page cache, as for the extraction runs after this part
        f.read_bytes()
    extractors = build_extractors(list(features or FEATURES))
    warm = load_audio(files[0], max_seconds=max_seconds).signal
    for ex in extractors:
        ex(prepare_signal(ex, warm, 16000), ex.sampling_rate)
    fingerprint(warm, 16000)
    threads = _limit_threads()
    parts: dict[str, dict] = {}

    def timed(name: str, fn) -> list:
        w0, c0 = time.perf_counter(), _cpu_time()
        out = fn()
        parts[name] = {"cpu_seconds": _cpu_time() - c0, "wall_seconds": time.perf_counter() - w0}
        return out

    signals = timed("decode", lambda: [load_audio(f, max_seconds=max_seconds).signal for f in files])
    audio = float(sum(len(s) for s in signals) / 16000)
    for ex in extractors:
        timed(ex.name, lambda ex=ex: [ex(prepare_signal(ex, s, 16000), ex.sampling_rate) for s in signals])
    timed("fingerprints", lambda: [(pcm_sha256(s), fingerprint(s, 16000)) for s in signals])
    for p in parts.values():
        p["rate"] = audio / p["cpu_seconds"] if p["cpu_seconds"] > 0 else None
        p["rate_wall"] = audio / p["wall_seconds"] if p["wall_seconds"] > 0 else None
    return {"files": len(files), "audio_seconds": audio, "core": core, "affinity": sorted(os.sched_getaffinity(0)),
            "threads": threads, "parts": parts, "mean_seconds": audio / len(files) if files else None,
            "signals_finite": bool(all(np.isfinite(s).all() for s in signals))}


def limit(rates: dict, cores: int, parts=PARTS) -> float | None:
    """``cores / sum_i (1 / rate_i)``: audio-s/s of ``cores`` cores doing nothing but ``parts``."""
    r = [rates.get(p, {}).get("rate") for p in parts]
    if not r or any(not x for x in r):
        return None
    return cores / sum(1.0 / x for x in r)


def _featcache_cmd() -> list[str]:
    """The installed ``featcache`` console script of this interpreter (else the same entry point via -c)."""
    script = Path(sys.executable).with_name("featcache")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from cli.featcache import main; sys.argv[0] = 'featcache'; main()"]


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy so far (``/proc/stat``)."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v[:8]) - v[3] - (v[4] if len(v) > 4 else 0)) / os.sysconf("SC_CLK_TCK")


_SUMMARY = re.compile(r"done (\d+), skipped (\d+), failed (\d+).*?wall ([\d.]+) s \(([\d.]+) audio-s/s\)", re.S)


def cli_job(audio_dir: str, cache_dir: str, args: list[str] | None = None, features: list[str] | None = None,
            env: dict[str, str] | None = None) -> dict:
    """``[env] featcache extract --corpus ravdess --data-dir D --features ... --quiet [args]`` into a fresh cache."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    cmd = [*_featcache_cmd(), "extract", "--corpus", "ravdess", "--data-dir", audio_dir, "--features",
           ",".join(features or FEATURES), "--cache-dir", cache_dir, "--quiet", *(args or [])]
    ru0, busy0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - w0
    ru1, busy1 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_seconds()
    if proc.returncode != 0:
        raise RuntimeError(f"featcache extract failed ({proc.returncode}): {proc.stderr[-1500:]}")
    m = _SUMMARY.search(proc.stdout)
    if not m:
        raise RuntimeError(f"no summary in the output of featcache extract: {proc.stdout[-500:]}")
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    run_wall, rate = float(m.group(4)), float(m.group(5))
    prefix = "".join(f"{k}={v} " for k, v in (env or {}).items())
    return {"command": prefix + "featcache " + " ".join(cmd[cmd.index("extract"):]), "args": args or [], "env": env or {},
            "done": int(m.group(1)), "skipped": int(m.group(2)), "failed": int(m.group(3)),
            "run_wall_seconds": run_wall, "audio_s_per_s": rate, "audio_seconds": rate * run_wall,
            "process_wall_seconds": wall, "cpu_seconds": cpu, "cores_used": cpu / wall if wall else None,
            "others_cores": max(0.0, (busy1 - busy0 - cpu) / wall) if busy0 is not None and busy1 is not None else None,
            "cache_path": str(Path(cache_dir) / "ravdess")}


ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
VARIANTS = {  # name -> (extra arguments, environment, what it is)
    "default": ([], {}, "as the README runs it (now: worker processes, one per core)"),
    "workers1": (["--workers", "1"], {}, "--workers 1 (one decoding thread in the extracting process: the default before)"),
    "cluster2": (["--cluster", "local:2"], {}, "--cluster local:2 (Dask, this process's thread counts per worker)"),
    "default_1thread": ([], ONE_THREAD, "with OMP_NUM_THREADS=1 (the extractors use one BLAS thread anyway: the same speed and values expected)"),
}


def diff_job(cache_a: str, cache_b: str) -> dict:
    """Per store: utterances whose frames differ between two caches, values that differ, the largest difference."""
    import numpy as np

    from featcache.store import StoreReader

    out: dict = {}
    for store in sorted(p.name for p in Path(cache_a).iterdir() if (p / "store.json").exists()):
        ra, rb = StoreReader(Path(cache_a) / store), StoreReader(Path(cache_b) / store)
        n_utt = n_val = total = 0
        worst = 0.0
        for uid in ra.ids:
            a, b = ra.frames(uid), rb.frames(uid) if uid in rb.ids else None
            if b is None or a.shape != b.shape:
                n_utt += 1
                continue
            d = a != b
            total += a.size
            if d.any():
                n_utt, n_val = n_utt + 1, n_val + int(d.sum())
                worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        out[store] = {"utterances": len(ra.ids), "differing_utterances": n_utt, "differing_values": n_val,
                      "values": total, "max_abs_diff": worst}
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.data import corpus_files, link_subset, spread
    from benchmarks.report import publish
    from benchmarks.worker import REPO, run_subprocess

    ap = argparse.ArgumentParser(prog="python -m benchmarks.handcrafted", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True, help="RAVDESS folder (Actor_XX/*.flac)")
    ap.add_argument("--files", type=int, default=None, help="only N files spread over the corpus (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each command (the fastest is compared)")
    ap.add_argument("--skip-cluster", action="store_true", help="no --cluster local:2 run")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks" / "handcrafted-latest.json")
    ap.add_argument("--write-doc", nargs="?", const=REPO / "docs" / "benchmarks.md", type=Path, default=None)
    args = ap.parse_args(argv)
    wd = (args.workdir or Path(tempfile.mkdtemp(prefix="featcache-handcrafted-"))).resolve()
    root = args.corpus.resolve()
    every = corpus_files(root)
    if args.files and args.files < len(every):
        audio = str(link_subset([every[i] for i in spread(len(every), args.files)], root, wd / "audio"))
    else:
        audio = str(root)
    cores = sorted(os.sched_getaffinity(0))

    def run(job: str, threads: int | None = None, **kw) -> dict:
        t0 = time.perf_counter()
        res = run_subprocess(job, kw, wd / "jobs", threads)
        print(f"[handcrafted] {job} {' '.join(kw.get('args') or [])} {'error: ' + res['error'] if 'error' in res else 'ok'}"
              f" ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        if "error" in res:
            print(res.get("stderr", res.get("traceback", "")), file=sys.stderr)
        return res

    R: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": "python -m benchmarks.handcrafted " + " ".join(argv or sys.argv[1:]),
               "cores": len(cores), "audio_dir": audio, "load": {"start": list(os.getloadavg())}, "runs": {}}
    t_start = time.perf_counter()
    try:
        R["machine"] = run("machine", quick=True)
        R["rates"] = run("hand_rates", threads=1, audio_dir=audio, core=cores[-1])
        names = [n for n in VARIANTS if not (args.skip_cluster and n == "cluster2")]
        for i in range(max(1, args.repeat)):
            for name in names:
                extra, env, _ = VARIANTS[name]
                R["runs"].setdefault(name, []).append(
                    run("hand_cli", audio_dir=audio, cache_dir=str(wd / f"cache-{name}"), args=extra, env=env))
        ref = wd / "cache-workers1" / "ravdess"
        R["equal"] = {n: run("dist_equal", cache_a=str(ref), cache_b=str(wd / f"cache-{n}" / "ravdess"))
                      for n in names if n != "workers1" and not VARIANTS[n][1]}
        R["diff"] = {n: run("hand_diff", cache_a=str(ref), cache_b=str(wd / f"cache-{n}" / "ravdess"))
                     for n in names if VARIANTS[n][1]}
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    R["load"]["end"] = list(os.getloadavg())
    R["wall_seconds"] = time.perf_counter() - t_start
    others = [x.get("others_cores") for rs in R["runs"].values() for x in rs if x.get("others_cores") is not None]
    others += [R.get("rates", {}).get("_proc", {}).get("others_cores")] if R.get("rates", {}).get("_proc", {}).get("others_cores") is not None else []
    if others:
        R["load"].update(others_cores_mean=sum(others) / len(others), others_cores_max=max(others))
    R["rows"] = rows(R)
    text = render(R)
    publish(R, text, args.out)
    if args.write_doc:
        print(f"doc: {write_doc(args.write_doc, text)}")
    return 0


def best(runs: list[dict]) -> dict:
    """The fastest successful run (highest audio-s/s), or the first error."""
    ok = [r for r in runs if "error" not in r]
    return max(ok, key=lambda r: r["audio_s_per_s"]) if ok else (runs[0] if runs else {})


def rows(R: dict) -> list[dict]:
    """The table: one dict per figure (see :func:`benchmarks.report.row`)."""
    from benchmarks.report import row

    out: list[dict] = []
    rt = R.get("rates", {})
    if "error" in rt or not rt.get("parts"):
        return [row("10", "single-core rates", status="failed", note=rt.get("error", "no result"))]
    parts, cores = rt["parts"], R["cores"]
    what = f"{rt['files']} RAVDESS files, {rt['audio_seconds']:.0f} audio-s (mean {rt['mean_seconds']:.2f} s)"
    for i, p in enumerate([*PARTS, "fingerprints"]):
        d = parts[p]
        note = "not in the limit (per-file work of featcache itself)" if p == "fingerprints" else ""
        out.append(row(f"10{'abcde'[i]}", f"single-core rate, one thread: {p} ({what}): audio-s per CPU-s", d["rate"], None, None,
                       None, None, "report", "info", note=f"{d['cpu_seconds']:.2f} CPU s, {d['wall_seconds']:.2f} wall s"
                       f" ({d['rate_wall']:.0f} audio-s per wall s){'; ' + note if note else ''}"))
    lim = limit(parts, cores)
    one = limit(parts, 1)
    out.append(row("10f", f"limit of {cores} cores = {cores} / sum_i(1 / rate_i) over {', '.join(PARTS)}: audio-s/s", lim, None,
                   None, None, None, "report", "info", note=f"one core {one:.1f} audio-s/s; with the fingerprints too "
                   f"{limit(parts, cores, (*PARTS, 'fingerprints')):.1f}"))
    runs = R.get("runs", {})
    base = best(runs.get("workers1", []))
    for i, (name, (_, _, label)) in enumerate(VARIANTS.items()):
        r = best(runs.get(name, []))
        if not r:
            continue
        num = f"10{'ghik'[i]}"
        if "error" in r:
            out.append(row(num, f"featcache extract, {label}", status="failed", note=r["error"][:300]))
            continue
        frac = r["audio_s_per_s"] / lim
        target = f">= {TARGET:.0%} of the limit" if name == "default" else "report"
        status = ("met" if frac >= TARGET else "NOT MET") if name == "default" else "info"
        speed = base.get("audio_s_per_s") if name != "workers1" and "error" not in base else None
        all_rates = ", ".join(f"{x['audio_s_per_s']:.1f}" for x in runs[name] if "error" not in x)
        env = "".join(f"{k}={v} " for k, v in (r.get("env") or {}).items() if k != "MKL_NUM_THREADS")
        cmd = f"{env}featcache extract --corpus ravdess --data-dir D --features {','.join(FEATURES)} --quiet {' '.join(r['args'])}".strip()
        out.append(row(num, f"`{cmd}`, {label}: audio-s/s", r["audio_s_per_s"], speed,
                       r["audio_s_per_s"] / speed if speed else None, lim, frac, target, status,
                       note=f"run wall {r['run_wall_seconds']:.1f} s (process {r['process_wall_seconds']:.1f} s with start-up);"
                       f" CPU {r['cpu_seconds']:.1f} s = {r['cores_used']:.2f} cores; others kept {r['others_cores'] or 0:.2f} cores busy;"
                       f" runs: {all_rates}; baseline = --workers 1"))
    for name, d in R.get("diff", {}).items():
        if "error" in d:
            out.append(row("10l", f"cache of {name} vs --workers 1", status="failed", note=d["error"][:300]))
            continue
        note = "; ".join(f"{k}: {v['differing_values']} of {v['values']} values in {v['differing_utterances']} of {v['utterances']}"
                         f" utterances, max |diff| {v['max_abs_diff']:.3g}" for k, v in d.items() if k != "_proc")
        same = all(v["differing_values"] == 0 and v["differing_utterances"] == 0 for k, v in d.items() if k != "_proc")
        out.append(row("10l", f"cache of {name} vs --workers 1 (value by value)", "identical" if same else "differs",
                       None, None, None, None, "report", "info", note=note))
    for name, eq in R.get("equal", {}).items():
        ok = bool(eq.get("equal"))
        out.append(row("10j", f"cache of {name} = cache of --workers 1, bit for bit (frames, ids, failures)", "yes" if ok else "NO",
                       None, None, None, None, "identical", "met" if ok else "NOT MET",
                       note=eq.get("error") or eq.get("why") or f"{eq.get('utterances_x_stores')} utterance x store frames compared"))
    return out


def render(R: dict) -> str:
    from benchmarks.report import machine_lines, markdown_table

    head = (f"## Handcrafted extraction vs its {R['cores']}-core limit (issue 17), {R['date']}\n\n"
            f"- audio (D): {R.get('audio_dir')}; each command into a fresh --cache-dir\n")
    return f"{head}{machine_lines(R)}\n\n{markdown_table(R['rows'])}\n"


BEGIN, END = "<!-- handcrafted:begin (python -m benchmarks.handcrafted --write-doc) -->", "<!-- handcrafted:end -->"


def write_doc(path: Path, text: str) -> Path:
    """Replace the handcrafted section of ``path`` (appended when absent)."""
    from benchmarks.report import write_section

    return write_section(path, BEGIN, END, text)


if __name__ == "__main__":
    sys.exit(main())
