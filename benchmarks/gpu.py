"""Item 5 -- one GPU: its measured limits, extraction, a Dense epoch and a fine-tuning step.

``python -m benchmarks --only gpu`` runs these jobs, each in its own process
(:mod:`benchmarks.worker`), within :data:`BUDGET_S` seconds of the start of the run:

* :func:`limits_job` -- the device (name, memory, compute capability, CUDA / cuDNN / torch /
  driver versions) and its limits: ``n x n`` ``torch.matmul`` GFLOP/s in bf16, tf32 and fp32
  (TF32 off), best of several rounds each closed by ``torch.cuda.synchronize``, and the
  host-to-device copy rate (pinned and pageable memory);
* :func:`extract_job` -- wav2vec2 extraction by featcache's own path
  (``featcache.pipeline.extract``, ``precision="bf16"``: length-sorted batches, decoding
  ahead in threads, shards) into a fresh cache after a warm-up, and the model alone
  (``SSLExtractor.batch`` over the same signals in memory). Limit = bf16 matmul rate / FLOPs
  per audio second (:func:`benchmarks.flops.wav2vec2_flops_per_audio_second`);
* :func:`dense_job` -- ``DenseClassifier(device=...)`` all-layers epochs over the training
  cache of :func:`benchmarks.data.build_training_cache`, in fp32 (the estimator's default;
  TF32 as torch has it, off unless switched on) and bf16 autocast. Limits: training FLOPs
  per frame (:func:`benchmarks.flops.dense_flops_per_frame`) / the matmul rate of that
  precision; for the epoch also one host-to-device pass of the float16 frames (they stay
  in host memory: every batch is gathered, pinned and copied);
* :func:`finetune_job` -- ``FineTuneClassifier`` (bf16 autocast on CUDA) over files
  totalling about ``S`` seconds put in one batch, so that every epoch is one optimisation
  step of the estimator's own code; the step time is the median epoch after the first.
  Limit = 3 x the forward FLOPs of the batch (:func:`benchmarks.flops.wav2vec2_flops`,
  utterances one at a time) / the bf16 rate; the CNN is frozen, so
  ``forward + 2 x (forward - CNN)`` is given too.

Figures and limits come from the same run; the ratios are formed in :func:`report_rows`.
Without a GPU the part runs nothing and its rows say "not measured (no GPU)". Every job
takes ``device``: the tests run the same functions on ``"cpu"`` at tiny sizes.

Time guard: a job starts only when the time left before the deadline covers
:data:`MIN_JOB_S` (else it is recorded as skipped, with the reason), and its process is
killed when it runs past the deadline; the fine-tuning and Dense jobs also stop their own
loops at it.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_rows import machine_line, report_rows  # noqa: F401 - the part's table rows

SR = 16000
#: Seconds from the start of ``--only gpu`` to the last job's deadline (the run must end within 8 minutes).
BUDGET_S = 450.0
#: Seconds a job needs at least to start (on an H200 each takes well under these).
MIN_JOB_S = {"gpu_limits": 20.0, "gpu_extract": 45.0, "gpu_finetune": 40.0, "train_build": 30.0, "gpu_dense": 25.0}
#: Extra seconds a running job gets past the deadline before its process is killed.
GRACE_S = 10.0
#: Files extracted (synthetic ones are 2.9-5.3 s long: ~590 s of audio); ``--quick``: 4.
EXTRACT_FILES = 160


def _device(device: str):
    import torch

    return torch.device(device)


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.init()  # the peak counters exist once CUDA is initialised
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(dev) -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None


def _fp32_kind(dev) -> str:
    """The limit of fp32 matmuls as torch runs them now: ``"tf32"`` when TF32 is allowed.

    The per-backend flag (``torch.backends.cuda.matmul.fp32_precision``, torch >= 2.9) wins
    when set; else the global ``torch.get_float32_matmul_precision()`` (never the legacy
    ``allow_tf32`` getter, which raises once the two APIs were mixed).
    """
    import torch

    if dev.type != "cuda":
        return "fp32"
    new = getattr(torch.backends.cuda.matmul, "fp32_precision", "none")
    if new in ("tf32", "ieee"):
        return "fp32" if new == "ieee" else "tf32"
    return "tf32" if torch.get_float32_matmul_precision() != "highest" else "fp32"


# ---------------------------------------------------------------------------------- limits
def device_info(device: str = "cuda") -> dict[str, Any]:
    """Name, memory, compute capability and the CUDA, cuDNN, torch and driver versions."""
    import torch

    dev = _device(device)
    out: dict[str, Any] = {"device": str(dev), "torch": torch.__version__, "cuda": torch.version.cuda}
    if dev.type != "cuda":
        from benchmarks.machine import cpu_info

        return out | {"name": f"CPU ({cpu_info()['model']})"}
    p = torch.cuda.get_device_properties(dev)
    out.update(name=p.name, memory_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}",
               multiprocessors=p.multi_processor_count, count=torch.cuda.device_count(),
               cudnn=torch.backends.cudnn.version(), bf16_supported=bool(torch.cuda.is_bf16_supported()))
    try:
        q = "--query-gpu=driver_version,clocks.max.sm,power.limit"
        done = subprocess.run(["nvidia-smi", q, "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        out["nvidia_smi"] = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        out["nvidia_smi"] = None
    return out


def matmul_rate(kind: str, n: int = 8192, device: str = "cuda", rounds: int = 5, min_seconds: float = 0.2) -> dict[str, Any]:
    """GFLOP/s of ``n x n`` ``torch.matmul`` on ``device``: best and median of ``rounds``.

    ``kind``: ``"bf16"``, ``"fp32"`` (TF32 off) or ``"tf32"`` (fp32 tensors, TF32 allowed;
    CUDA only). Each round runs as many products as fit in ``min_seconds`` (at least 2) and
    ends with a synchronisation.
    """
    import torch

    dev = _device(device)
    if kind == "tf32" and dev.type != "cuda":
        return {"dtype": kind, "n": n, "gflops_best": None, "gflops_median": None, "skipped": "TF32 is a CUDA mode"}
    dtype = torch.bfloat16 if kind == "bf16" else torch.float32
    prev = torch.get_float32_matmul_precision()
    if dev.type == "cuda":  # the global setter updates the per-backend flag too: no mix of the two APIs
        torch.set_float32_matmul_precision("high" if kind == "tf32" else "highest")
    try:
        g = torch.Generator(device=dev).manual_seed(0)
        a = torch.randn(n, n, generator=g, device=dev).to(dtype)
        b = torch.randn(n, n, generator=g, device=dev).to(dtype)
        out = torch.empty(n, n, dtype=dtype, device=dev)
        torch.matmul(a, b, out=out)  # warm-up: kernel choice, allocations
        _sync(dev)
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        _sync(dev)
        reps = max(2, int(min_seconds / max(time.perf_counter() - t0, 1e-6)))
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b, out=out)
            _sync(dev)
            rates.append(2.0 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    finally:
        torch.set_float32_matmul_precision(prev)
    rates.sort()
    return {"dtype": kind, "n": n, "rounds": rounds, "reps": reps, "gflops_best": rates[-1], "gflops_median": rates[len(rates) // 2]}


def copy_rate(device: str = "cuda", mib: int = 1024, rounds: int = 5) -> dict[str, Any]:
    """GB/s of host-to-device copies of ``mib`` MiB from pinned and from pageable memory (best round)."""
    import torch

    dev = _device(device)
    if dev.type != "cuda":
        return {"mib": mib, "pinned_gbps_best": None, "pageable_gbps_best": None, "skipped": "no host-to-device copy on a CPU"}
    host = torch.ones(mib * 2**20, dtype=torch.uint8)
    dst = torch.empty_like(host, device=dev)
    out: dict[str, Any] = {"mib": mib}
    for name, src in (("pinned", host.pin_memory()), ("pageable", host)):
        dst.copy_(src, non_blocking=name == "pinned")
        _sync(dev)
        best = 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            dst.copy_(src, non_blocking=name == "pinned")
            _sync(dev)
            best = max(best, host.numel() / (time.perf_counter() - t0) / 1e9)
        out[f"{name}_gbps_best"] = best
    return out


def limits_job(device: str = "cuda", n: int = 8192, rounds: int = 5, min_seconds: float = 0.2, copy_mib: int = 1024) -> dict:
    """The device and its measured limits (matmul GFLOP/s per precision, copy GB/s)."""
    matmul = {k: matmul_rate(k, n, device, rounds, min_seconds) for k in ("bf16", "tf32", "fp32")}
    return {"device": device_info(device), "matmul": matmul, "copy": copy_rate(device, copy_mib, rounds)}


# ---------------------------------------------------------------------------------- extraction
def extract_job(audio_dir: str, cache_dir: str, model_dir: str, device: str = "cuda", precision: str = "bf16",
                workers: int = 1, repeats: int = 2) -> dict:
    """featcache's extraction on ``device``: the pipeline into a fresh cache, and the model alone."""
    from transformers import AutoConfig

    from benchmarks.data import audio_lengths, corpus_files
    from benchmarks.flops import wav2vec2_flops_per_audio_second
    from featcache.audio import load_audio
    from featcache.pipeline import build_extractors, extract

    dev = _device(device)
    files = corpus_files(Path(audio_dir))
    config = AutoConfig.from_pretrained(model_dir)
    (ex,) = build_extractors(["wav2vec2"], model=model_dir, precision=precision, device=device)
    t0 = time.perf_counter()
    ex.load()
    load = time.perf_counter() - t0
    sigs = [load_audio(f, sampling_rate=SR).signal for f in files]
    seconds = sum(len(s) for s in sigs) / SR
    _reset_peak(dev)
    t0 = time.perf_counter()
    ex.batch(sigs[:8], SR)  # warm-up (kernels, allocator); results come back to the host: synchronised
    warm = time.perf_counter() - t0
    model_rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ex.batch(sigs, SR)
        model_rates.append(seconds / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    summary = extract("ravdess", Path(audio_dir), Path(cache_dir), [ex], workers=workers, progress=False)
    wall = time.perf_counter() - t0
    return {
        "flops_per_audio_second": wav2vec2_flops_per_audio_second(config, audio_lengths(files)),
        "model": {"n_layers": int(config.num_hidden_layers) + 1, "hidden_size": int(config.hidden_size)},
        "n_files": len(files), "audio_seconds": seconds, "precision": ex.precision, "device": device,
        "max_batch_frames": ex.max_batch_frames, "workers": workers, "load_seconds": load, "warm_up_seconds": warm,
        "model_audio_s_per_s": model_rates, "wall_seconds": wall, "audio_s_per_s": summary.audio_seconds / wall,
        "done": summary.done, "failed": len(summary.failed), "failed_examples": dict(list(summary.failed.items())[:3]), "cache_bytes": summary.cache_bytes, "peak_device_bytes": _peak(dev),
    }


# ---------------------------------------------------------------------------------- Dense
def dense_job(cache_path: str, device: str = "cuda", precisions: list[str] | tuple[str, ...] = ("fp32", "bf16"),
              epochs: int = 2, batch_size: int = 32, budget_s: float | None = None, seed: int = 0) -> dict:
    """``DenseClassifier`` all-layers epochs on ``device``, per precision (the first epoch warms up)."""
    import featcache
    from estimators import DenseClassifier

    dev = _device(device)
    deadline = None if budget_s is None else time.perf_counter() + float(budget_s)
    X = featcache.open(cache_path).select("all_layers")
    packed = X.to_packed()
    data = packed.streams[0].data
    out: dict[str, Any] = {"n_utterances": len(X), "frames": int(packed.streams[0].lengths.sum()), "n_layers": int(data.shape[1]),
                           "dim": int(data.shape[2]), "data_bytes": int(data.nbytes), "data_dtype": str(data.dtype), "runs": {}}
    for p in precisions:
        if deadline is not None and time.perf_counter() > deadline:
            out["runs"][p] = {"skipped": "time budget spent"}
            continue
        est = DenseClassifier(max_epochs=int(epochs), validation_fraction=None, batch_size=int(batch_size), random_state=seed,
                              device=device, precision=p)
        limit = p if p == "bf16" else _fp32_kind(dev)
        _reset_peak(dev)
        t0 = time.perf_counter()
        est.fit(X, X.labels)
        out["runs"][p] = {"epoch_seconds": [float(h["dur"]) for h in est.history_], "fit_seconds": time.perf_counter() - t0,
                          "limit": limit, "hidden_sizes": [int(h) for h in est.hidden_sizes], "n_classes": len(est.classes_),
                          "access": getattr(est, "data_access_", {}).get("mode"), "peak_device_bytes": _peak(dev)}
    return out


# ---------------------------------------------------------------------------------- fine-tuning
def _pick(lengths: list[int], seconds: float) -> int:
    """How many of the first files reach ``seconds`` of audio (at least 2, at most all)."""
    total, k = 0, 0
    while k < len(lengths) and (total < seconds * SR or k < 2):
        total += lengths[k]
        k += 1
    return k


def finetune_job(model_dir: str, files: list[str], device: str = "cuda", precision: str = "bf16",
                 step_seconds: list[float] | tuple[float, ...] = (16.0, 64.0), epochs: int = 5,
                 budget_s: float | None = None, seed: int = 0) -> dict:
    """``FineTuneClassifier`` steps of about ``step_seconds`` of audio each (one step per epoch)."""
    import numpy as np

    from benchmarks.data import audio_lengths
    from benchmarks.flops import wav2vec2_flops
    from estimators import FineTuneClassifier
    from transformers import AutoConfig

    dev = _device(device)
    deadline = None if budget_s is None else time.perf_counter() + float(budget_s)
    config = AutoConfig.from_pretrained(model_dir)
    lengths = audio_lengths([Path(f) for f in files])
    runs = []
    for s in step_seconds:
        if deadline is not None and time.perf_counter() > deadline:
            runs.append({"target_seconds": s, "skipped": "time budget spent"})
            continue
        k = _pick(lengths, s)
        audio = sum(lengths[:k]) / SR
        y = np.array(["a", "b"] * k)[:k]
        est = FineTuneClassifier(model=model_dir, head="mean", max_epochs=int(epochs), validation_fraction=None, batch_seconds=audio + 1.0,
                                 spec_augment=False, max_seconds=None, device=device, precision=precision, random_state=seed,
                                 callbacks=[lambda e, r: deadline is not None and time.perf_counter() > deadline])
        _reset_peak(dev)
        t0 = time.perf_counter()
        est.fit(list(files[:k]), y)
        fit = time.perf_counter() - t0
        durs = [float(h["dur"]) for h in est.history_]
        step = statistics.median(durs[1:] or durs)
        parts = [wav2vec2_flops(config, n) for n in lengths[:k]]
        fwd, cnn = sum(p["total"] for p in parts), sum(p["cnn"] for p in parts)
        runs.append({"target_seconds": s, "n_files": k, "audio_seconds": audio, "step_seconds": durs, "step_seconds_median": step,
                     "warm_up_only": len(durs) < 2, "steps_per_second": 1.0 / step, "audio_s_per_s": audio / step, "fit_seconds": fit,
                     "forward_flops": fwd, "cnn_flops": cnn, "train_flops_3x": 3.0 * fwd, "train_flops_frozen_cnn": fwd + 2.0 * (fwd - cnn),
                     "precision": precision, "limit": precision if precision != "fp32" else _fp32_kind(dev), "peak_device_bytes": _peak(dev),
                     "trainable_params": int(sum(p.numel() for p in est.module_.parameters() if p.requires_grad))})
    return {"device": device, "hidden_size": int(config.hidden_size), "runs": runs}


# ---------------------------------------------------------------------------------- the part
def _audio(args, wd: Path, n: int) -> tuple[Path, list[Path]]:
    from benchmarks.data import corpus_files, spread, synthetic_corpus

    if args.corpus:
        root = Path(args.corpus).resolve()
        every = corpus_files(root)
        return root, [every[i] for i in spread(len(every), n)]
    root = wd / "synthetic-audio"
    return root, synthetic_corpus(root, n)


def run_part(args, run, wd: Path, model_dir: Path | None, machine: dict, *, n_layers: int, dim: int,
             device: str = "cuda", deadline: float | None = None) -> dict:
    """The jobs of this part (``run``: the suite's job runner); ``deadline``: ``time.perf_counter()`` value.

    Returns ``{"measured": False, "reason": ...}`` at once when ``device`` is CUDA and the
    machine job found no GPU.
    """
    from benchmarks.data import link_subset

    if _device(device).type == "cuda" and not (machine.get("gpu") or {}).get("available"):
        why = f"the machine job failed ({machine['error']})" if "error" in machine else "torch.cuda.is_available() is False"
        return {"measured": False, "reason": f"no GPU: {why}"}
    t_start = time.perf_counter()
    deadline = t_start + BUDGET_S if deadline is None else float(deadline)
    cuda, q = _device(device).type == "cuda", bool(args.quick)
    out: dict[str, Any] = {"measured": True, "device": device, "quick": q, "budget_s": deadline - t_start,
                           "audio": str(args.corpus) if args.corpus else "synthetic", "skipped": {}}

    def job(key: str, name: str, **params) -> dict:
        left = deadline - time.perf_counter()
        if left < MIN_JOB_S[name]:
            out["skipped"][key] = f"{left:.0f} s left before the deadline, {name} needs at least {MIN_JOB_S[name]:.0f} s"
            out[key] = {"skipped": out["skipped"][key]}
        else:
            out[key] = run(name, _timeout=left + GRACE_S, **params)
        return out[key]

    job("limits", "gpu_limits", device=device, **(dict(n=256, rounds=2, min_seconds=0.02, copy_mib=16) if q else {}))
    root, files = _audio(args, wd, 4 if q else EXTRACT_FILES)
    sub = link_subset(files, root, _fresh(wd / "gpu-audio"))
    workers = args.workers if args.workers > 1 else max(1, min(4, int(args.threads or 1)))
    job("extraction", "gpu_extract", audio_dir=str(sub), cache_dir=str(_fresh(wd / "gpu-cache")), model_dir=str(model_dir),
        device=device, precision="bf16", workers=workers)
    shutil.rmtree(wd / "gpu-cache", ignore_errors=True)
    job("finetune", "gpu_finetune", model_dir=str(model_dir), files=[str(f) for f in files], device=device,
        precision="bf16" if cuda else "fp32", step_seconds=[4.0] if q else [16.0, 64.0], epochs=3 if q else 5,
        budget_s=max(deadline - time.perf_counter() - 20.0, 1.0))
    corpus = str(Path(args.corpus).resolve()) if args.corpus else None
    build = job("dense_data", "train_build", corpus=corpus, scale=args.train_scale, workdir=str(wd),
                cache_dir=str(wd / f"train-cache-{args.train_scale:g}-{dim}"), n_layers=n_layers, dim=dim)
    if "path" in build:
        job("dense", "gpu_dense", cache_path=build["path"], device=device, epochs=2,
            budget_s=max(deadline - time.perf_counter() - 15.0, 1.0))
    else:
        out["dense"] = {"skipped": "no training cache (" + (build.get("error") or build.get("skipped") or "?") + ")"}
    shutil.rmtree(wd / "gpu-audio", ignore_errors=True)
    out["wall_seconds"] = time.perf_counter() - t_start
    return out


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path
