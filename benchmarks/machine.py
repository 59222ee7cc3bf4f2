"""The machine: cores, CPU model and flags, library versions, and its measured limits.

Limits are measured in the same run as the figures they bound:

* :func:`matmul_rate` -- torch matmul GFLOP/s of square matrices (default 2048 x 2048) in
  fp32 and bf16 on ``torch.get_num_threads()`` threads; best of several rounds (the rate
  the cores can reach; a machine shared with other jobs lowers the median, not the best);
* :func:`memory_bandwidth` -- GB/s of one multi-threaded read pass over a large float32
  tensor (``torch.sum``), the cost model of streaming the training data.
"""

from __future__ import annotations

import os
import platform
import re
import time
from typing import Any

#: CPU flags that decide how fast fp32 / bf16 matmuls can be on a CPU.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_info() -> dict[str, Any]:
    """CPU model, logical cores (and the cores this process may use) and relevant flags."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            model = m.group(1).strip()
        m = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        if m:
            flags = set(m.group(1).split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "flags": {f: f in flags for f in RELEVANT_FLAGS},
        "mem_total_gib": _meminfo("MemTotal") / 2**20 if _meminfo("MemTotal") else None,
    }


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return None


def versions() -> dict[str, str]:
    """Versions of python and of the libraries the figures depend on."""
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "numpy", "h5py", "sklearn", "joblib", "soundfile", "opensmile", "librosa"):
        try:
            mod = __import__(name)
            out[name] = str(getattr(mod, "__version__", "?"))
        except Exception:  # noqa: BLE001 - report what is there
            out[name] = "not installed"
    return out


def gpu_info() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"available": False}
    return {"available": True, "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}


def matmul_rate(dtype: str = "fp32", n: int = 2048, rounds: int = 5, min_seconds: float = 0.3) -> dict[str, Any]:
    """GFLOP/s of ``n x n`` torch matmuls on this process's torch threads.

    Each round runs as many matmuls as fit in ``min_seconds`` (at least 2); returns the best
    and the median round. ``dtype``: ``"fp32"`` or ``"bf16"`` (native bf16 tensors, which is
    what ``torch.autocast`` uses for linear layers and convolutions).
    """
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dt)
    b = torch.randn(n, n, generator=g).to(dt)
    out = torch.empty(n, n, dtype=dt)
    torch.matmul(a, b, out=out)  # warm-up (kernel selection, page faults)
    t0 = time.perf_counter()
    torch.matmul(a, b, out=out)
    one = max(time.perf_counter() - t0, 1e-6)
    reps = max(2, int(min_seconds / one))
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        rates.append(2.0 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    return {
        "dtype": dtype,
        "n": n,
        "threads": torch.get_num_threads(),
        "gflops_best": rates[-1],
        "gflops_median": rates[len(rates) // 2],
    }


def memory_bandwidth(mib: int = 1024, rounds: int = 5) -> dict[str, Any]:
    """GB/s of a read pass (``torch.sum``) over a ``mib`` MiB float32 tensor; best round."""
    import torch

    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    x.sum()
    best, times = 0.0, []
    for _ in range(rounds):
        t0 = time.perf_counter()
        x.sum()
        dt = time.perf_counter() - t0
        times.append(dt)
        best = max(best, x.numel() * 4 / dt / 1e9)
    times.sort()
    return {"mib": mib, "read_gbps_best": best, "read_gbps_median": x.numel() * 4 / times[len(times) // 2] / 1e9}


def onednn_native_bf16() -> bool | None:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 / AMX); None when torch cannot say."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001
        return None


def measure(quick: bool = False) -> dict[str, Any]:
    """Everything about the machine, its measured matmul rates and memory bandwidth."""
    import torch

    n = 512 if quick else 2048
    rounds = 2 if quick else 5
    secs = 0.05 if quick else 0.3
    native_bf16 = onednn_native_bf16()
    # Without native bf16 (AVX2 only) a bf16 2048^2 matmul takes ~10 s here (1.5 GFLOP/s):
    # 512^2 gives the same rate (measured: 1.47 vs 1.55 at 256) in a fraction of the time.
    sizes = {"fp32": n, "bf16": n if native_bf16 is not False else min(n, 512)}
    rates = {p: matmul_rate(p, n=sizes[p], rounds=rounds, min_seconds=secs) for p in ("fp32", "bf16")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # one thread: a shared machine lowers multi-thread rates much more (barrier waits)
        one = {p: matmul_rate(p, n=sizes[p], rounds=max(2, rounds // 2), min_seconds=secs) for p in ("fp32", "bf16")}
    finally:
        torch.set_num_threads(threads)
    return {
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "onednn_native_bf16": native_bf16,
        "matmul": rates,
        "matmul_1thread": one,
        "memory": memory_bandwidth(64 if quick else 1024, rounds=2 if quick else 5),
        "gpu": gpu_info(),
        "versions": versions(),
        "loadavg": list(os.getloadavg()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
    }
