"""Run one benchmark job, in a fresh subprocess (or inline), and measure what it costs.

``python -m benchmarks.worker JOB IN.json OUT.json`` runs the job function named ``JOB``
(see :data:`JOBS`) with the keyword arguments of ``IN.json`` and writes its result, plus a
``_proc`` record, to ``OUT.json``:

* ``peak_rss_bytes`` -- the process's peak resident set size (``VmHWM`` of
  ``/proc/self/status``: anonymous memory plus file pages it maps, e.g. memory-mapped
  shards), ``peak_anon_bytes`` -- the highest ``RssAnon`` seen by a sampler thread every
  20 ms (the memory the process allocated itself);
* ``wall_seconds``, ``cpu_seconds`` (user + system of this process) and
  ``others_cores`` -- the average number of cores that *other* processes kept busy while the
  job ran (from ``/proc/stat``): how shared the machine was.

Running every measured part in its own process gives each its own peak RSS and a cold
process-level state (nothing loaded by an earlier part).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: job name -> "module:function"
JOBS = {
    "machine": "benchmarks.machine:measure",
    "extract_probe": "benchmarks.extraction:probe_job",
    "extract_ours": "benchmarks.extraction:ours_job",
    "extract_naive": "benchmarks.extraction:naive_job",
    "extract_equality": "benchmarks.extraction:equality_job",
    "train_build": "benchmarks.training:build_job",
    "train_ours": "benchmarks.training:ours_job",
    "train_write_npy": "benchmarks.training:write_npy_job",
    "train_naive": "benchmarks.training:naive_job",
    "train_equivalence": "benchmarks.training:equivalence_job",
    "grid": "benchmarks.grid:grid_job",
    "read_prepare_joblib": "benchmarks.reading:prepare_joblib_job",
    "read_epoch": "benchmarks.reading:read_job",
    "bounded_build": "benchmarks.bounded:build_job",
    "bounded_seq_read": "benchmarks.bounded:seq_read_job",
    "bounded_epoch": "benchmarks.bounded:epoch_job",
    "bounded_grid": "benchmarks.bounded:grid_job",
    "bounded_runtime": "benchmarks.bounded:runtime_job",
    "dist_extract": "benchmarks.distributed:extract_job",
    "dist_equal": "benchmarks.distributed:equal_job",
    "dist_grid": "benchmarks.distributed:grid_job",
    "gpu_limits": "benchmarks.gpu:limits_job",
    "gpu_extract": "benchmarks.gpu:extract_job",
    "gpu_dense": "benchmarks.gpu:dense_job",
    "gpu_finetune": "benchmarks.gpu:finetune_job",
    "heads_build": "benchmarks.heads:build_job",
    "heads_epoch": "benchmarks.heads:epoch_job",
    "heads_fit": "benchmarks.heads:fit_job",
    "heads_lstm_kernel": "benchmarks.heads:lstm_kernel_job",
    "hand_rates": "benchmarks.handcrafted:rates_job",
    "hand_cli": "benchmarks.handcrafted:cli_job",
    "hand_diff": "benchmarks.handcrafted:diff_job",
}


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _busy_jiffies() -> int | None:
    """Busy CPU time of the whole machine (all processes), in clock ticks."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            parts = f.readline().split()[1:]
        v = [int(x) for x in parts]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v[:8]) - idle
    except (OSError, ValueError):
        return None


class Monitor:
    """Samples RssAnon every ``interval`` seconds; measures wall, CPU and others' load."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            a = _status("RssAnon")
            if a is not None and a > self.peak_anon:
                self.peak_anon = a
            self._stop.wait(self.interval)

    def start(self) -> "Monitor":
        self.t0 = time.perf_counter()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu0 = ru.ru_utime + ru.ru_stime
        self.busy0 = _busy_jiffies()
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self.t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime - self.cpu0
        busy1 = _busy_jiffies()
        others = None
        if self.busy0 is not None and busy1 is not None and wall > 0:
            hz = os.sysconf("SC_CLK_TCK")
            others = max(0.0, ((busy1 - self.busy0) / hz - cpu) / wall)
        return {
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "others_cores": others,
            "peak_rss_bytes": _status("VmHWM"),
            "peak_anon_bytes": max(self.peak_anon, _status("RssAnon") or 0),
            "loadavg_end": list(os.getloadavg()),
        }


def _function(job: str):
    mod, _, fn = JOBS[job].partition(":")
    return getattr(importlib.import_module(mod), fn)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def run_inline(job: str, params: dict, threads: int | None = None) -> dict:
    """Run a job in this process (the tests; peak RSS is then this process's)."""
    _set_threads(threads)
    mon = Monitor().start()
    try:
        res = _function(job)(**params)
    except Exception as e:  # noqa: BLE001 - a failed part is reported, the others go on
        res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    res["_proc"] = mon.stop()
    return json.loads(json.dumps(res, default=_json_default))


def run_subprocess(
    job: str, params: dict, workdir: Path, threads: int | None = None, timeout: float = 7200, omp_wait_policy: str | None = None
) -> dict:
    """Run a job in a fresh ``python -m benchmarks.worker`` process and return its result.

    ``omp_wait_policy`` (``"PASSIVE"``/``"ACTIVE"``) sets ``OMP_WAIT_POLICY`` for the job:
    with libgomp's default (threads spin after every parallel region) a machine shared with
    other busy processes makes every small torch op wait for a descheduled thread; PASSIVE
    threads sleep instead (see the docs).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = f"{job}-{time.time_ns()}"
    inp, out = workdir / f"{stamp}.in.json", workdir / f"{stamp}.out.json"
    inp.write_text(json.dumps(params, default=str))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
    if omp_wait_policy:
        env["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
    cmd = [sys.executable, "-m", "benchmarks.worker", job, str(inp), str(out)]
    if threads:
        cmd += ["--threads", str(int(threads))]
    try:
        proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or "")[-2000:]
        return {"error": f"exit status {proc.returncode}", "stderr": tail}
    res = json.loads(out.read_text())
    inp.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    return res


def main(argv: list[str]) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    job, inp, out = argv[:3]
    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else None
    params = json.loads(Path(inp).read_text())
    res = run_inline(job, params, threads)
    Path(out).write_text(json.dumps(res, default=_json_default))
    return 0


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
