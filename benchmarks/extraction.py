"""Target 1 -- extraction: our featcache pipeline vs the naive per-file loop, and the limit.

Jobs (each run in its own process by :mod:`benchmarks.worker`):

* :func:`probe_job` -- FLOPs per audio second of the model over the files (counted from the
  config, :mod:`benchmarks.flops`) and a short timing of the model in every precision asked
  for (fp32, bf16), to run ours in the fastest one on this machine;
* :func:`ours_job` -- ``featcache.pipeline.extract`` over a symlinked subset of the corpus
  (the real pipeline: decoding and handcrafted features in a thread pool ahead of the
  model, length-sorted batches, shards, speaker statistics); the model is loaded before
  the clock starts;
* :func:`naive_job` -- :func:`benchmarks.naive.naive_extract` over the same files;
* :func:`equality_job` -- our stored states vs one-at-a-time extraction: vs the naive fp32
  per-file outputs, and vs featcache's own one-utterance path in the same precision.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def probe_job(model_dir: str, files: list[str], precisions: list[str], probe_files: int = 3, repeats: int = 2, device: str = "cpu") -> dict:
    """FLOPs per audio second over ``files``, and audio-s/s of the model per precision."""
    from transformers import AutoConfig

    from benchmarks.data import audio_lengths
    from benchmarks.flops import wav2vec2_flops_per_audio_second
    from benchmarks.machine import onednn_native_bf16
    from featcache.audio import load_audio
    from featcache.extractors.ssl import SSLExtractor

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    lengths = audio_lengths([Path(f) for f in files])
    flops = wav2vec2_flops_per_audio_second(config, lengths)
    sigs = [load_audio(f, sampling_rate=16000).signal for f in files[:probe_files]]
    seconds = sum(len(s) for s in sigs) / 16000
    extractors, emulated = {}, []
    for p in precisions:
        extractors[p] = SSLExtractor(model_dir, precision=p, device=device).load()
        if p != "fp32" and device == "cpu" and onednn_native_bf16() is False:
            emulated.append(p)  # the model ~40x slower than fp32 (AVX2 only): 1 s of audio, once
            continue
        extractors[p].batch(sigs[:1], 16000)  # warm-up: kernel selection, allocations
    rates: dict[str, float] = {}
    for p in emulated:
        clip = [sigs[0][:16000]]
        t0 = time.perf_counter()
        extractors.pop(p).batch(clip, 16000)
        rates[p] = len(clip[0]) / 16000 / (time.perf_counter() - t0)
    for _ in range(repeats):  # interleaved, best of ``repeats``: a shared machine is noisy
        for p, ex in extractors.items():
            t0 = time.perf_counter()
            ex.batch(sigs, 16000)
            rates[p] = max(rates.get(p, 0.0), seconds / (time.perf_counter() - t0))
    return {
        "probe_emulated": emulated,
        "flops_per_audio_second": flops,
        "model": {"n_layers": int(config.num_hidden_layers) + 1, "hidden_size": int(config.hidden_size)},
        "n_files": len(files),
        "audio_seconds": sum(lengths) / 16000,
        "probe_audio_seconds": seconds,
        "probe_rates": rates,
        "fastest": max(rates, key=rates.get) if rates else None,
    }


def ours_job(
    audio_dir: str,
    cache_dir: str,
    model_dir: str,
    features: list[str],
    precision: str = "fp32",
    device: str = "cpu",
    workers: int = 1,
) -> dict:
    """Our pipeline: ``featcache.pipeline.extract`` of ``features`` into a fresh cache."""
    from featcache.pipeline import build_extractors, extract

    extractors = build_extractors(features, model=model_dir, precision=precision, device=device)
    for ex in extractors:
        if hasattr(ex, "load"):
            ex.load()  # weights loaded before the clock starts (as for the naive loop)
    t0 = time.perf_counter()
    summary = extract("ravdess", Path(audio_dir), Path(cache_dir), extractors, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    return {
        "wall_seconds": wall,
        "audio_seconds": summary.audio_seconds,
        "audio_s_per_s": summary.audio_seconds / wall,
        "done": summary.done,
        "failed": summary.failed,
        "stores": summary.stores,
        "cache_path": summary.cache_path,
        "cache_bytes": summary.cache_bytes,
        "precision": precision,
        "device": device,
        "features": features,
        "workers": workers,
    }


def naive_job(files: list[str], model_dir: str, out_dir: str) -> dict:
    """The naive per-file loop (see :mod:`benchmarks.naive`)."""
    from benchmarks.naive import naive_extract

    res = naive_extract([Path(f) for f in files], Path(model_dir), Path(out_dir))
    res["audio_s_per_s"] = res["audio_seconds"] / res["wall_seconds"]
    res["n_files"] = len(res.pop("files"))
    return res


def _rel_diff(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max, mean) over layers of |got - ref| / max|ref of that layer|; arrays (frames, layers, dim)."""
    scale = np.abs(ref).max(axis=(0, 2))
    diff = np.abs(got.astype(np.float32) - ref.astype(np.float32))
    return float((diff.max(axis=(0, 2)) / scale).max()), float((diff.mean(axis=(0, 2)) / scale).mean())


def equality_job(cache_path: str, store: str, naive_dir: str, model_dir: str, audio_dir: str, precision: str, n_single: int = 3) -> dict:
    """How far our stored states are from one-at-a-time extraction.

    * ``vs_naive_fp32``: every utterance against the naive loop's fp32 per-file output
      (transformers, batch of 1): batching, storage in float16 and, when ours ran in bf16,
      bf16 rounding;
    * ``vs_single_same_precision``: the first ``n_single`` utterances against featcache's
      one-utterance path (``SSLExtractor.__call__``) in the precision ours ran in: what
      batching alone changes.

    Each figure is ``max |ours - reference| / max |reference|`` per layer, max over layers
    and utterances (``max_rel``), and the mean over utterances and layers of the mean
    absolute difference relative to the layer's largest value (``mean_rel``).
    """
    import featcache
    from featcache.audio import load_audio
    from featcache.corpora import get_corpus
    from featcache.extractors.ssl import SSLExtractor

    cache = featcache.open(cache_path)
    r = cache.stores[store]
    paths = dict(zip(cache.utterances["id"], cache.utterances["path"]))
    worst, means, shapes_ok = 0.0, [], True
    for uid in r.ids:
        p = Path(naive_dir) / f"{uid}.npy"
        if not p.exists():
            continue
        ref = np.load(p)
        got = r.frames(uid)
        if got.shape != ref.shape:
            shapes_ok = False
            continue
        mx, mn = _rel_diff(got, ref)
        worst, means = max(worst, mx), means + [mn]
    out = {
        "vs_naive_fp32": {"max_rel": worst, "mean_rel": float(np.mean(means)) if means else None, "n": len(means), "shapes_equal": shapes_ok}
    }
    ex = SSLExtractor(model_dir, precision=precision, device="cpu").load()
    corpus = get_corpus(cache.corpus)
    worst, means = 0.0, []
    for uid in r.ids[:n_single]:
        sig = load_audio(corpus.resolve(Path(audio_dir), paths[uid]), sampling_rate=16000).signal
        ref = ex(sig, 16000).transpose(1, 0, 2)  # (frames, layers, dim)
        mx, mn = _rel_diff(r.frames(uid), ref)
        worst, means = max(worst, mx), means + [mn]
    out["vs_single_same_precision"] = {"precision": precision, "max_rel": worst, "mean_rel": float(np.mean(means)) if means else None, "n": len(means)}
    return out
