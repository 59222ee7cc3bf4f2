"""Epoch time of the ECAPA-TDNN head (default and paper size) and of early vs late fusion.

Usage::

    python -m benchmarks.ecapa [--scale 1.0] [--epochs 2] [--paper] [--quick] [--out FILE]

What is measured, in this order, in one process:

* the fp32 matmul rate of this machine (:func:`benchmarks.machine.matmul_rate`, best
  round), the compute limit;
* RAVDESS-sized all-layers data held in memory: ``round(1440 * scale)`` utterances of
  RAVDESS-like durations (:func:`benchmarks.data.synthetic_durations`, wav2vec2 frame
  counts at 50 frames/s), 13 layers x 768 of random float16 (what an all-layers cache
  holds); a second stream of the same shape stands for a second upstream (HuBERT);
* per configuration, ``fit`` with ``max_epochs=EPOCHS, validation_fraction=None``: the
  epoch time is the fastest epoch after the first (``min(history_[1:]["dur"])``; the first
  warms up, and on a machine shared with other busy processes the fastest is the least
  disturbed; the median is recorded too):

  - ``ECAPAClassifier()`` (the defaults: C = 64, scale 4, embedding 64),
  - ``ECAPAClassifier(channels=512, scale=8, embedding_size=192)`` (the paper; ``--paper``,
    it is about 25x the work of the default),
  - ``ECAPAClassifier(fusion="early")`` and ``(fusion="late")`` on the two streams,
  - ``FusionClassifier(fusion="early")`` and ``(fusion="late")`` (dense heads) on the two streams;

* the compute limit of an ECAPA epoch: ``3 x`` the forward FLOPs of the per-frame
  convolutions (and of the layer average) over the real frames / the matmul rate; the
  fraction is that limit over the measured epoch (1.0 = the epoch runs at the matmul rate;
  padding, batch normalisation, the attention softmax and the data reads are overhead).

fp32 on the CPU, 8 emotion classes drawn at random (the weights, not the accuracy, are timed).
ECAPA runs many small operations: on a machine whose cores are shared, run it with
``OMP_WAIT_POLICY=passive`` (as ``python -m benchmarks`` does) and compare ``--threads 1``,
since busy-waiting OpenMP threads make its epochs up to 10x slower and erratic there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

N_RAVDESS = 1440
N_LAYERS, DIM = 13, 768


def frames_per_utterance(n: int, seed: int = 0) -> np.ndarray:
    """wav2vec2 frame counts (50 frames/s) of ``n`` RAVDESS-like utterances."""
    from benchmarks.data import RandomStates, synthetic_durations

    return np.array([RandomStates.n_frames(int(s * 16000)) for s in synthetic_durations(n, seed)], dtype=np.int64)


def make_packed(n: int, n_streams: int, seed: int = 0):
    """A Packed of ``n_streams`` streams of (frames, 13, 768) float16 random states, and labels."""
    from featcache.packed import Packed, Stream

    lengths = frames_per_utterance(n, seed)
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    streams = []
    for k in range(n_streams):
        data = rng.standard_normal((int(lengths.sum()), N_LAYERS, DIM), dtype=np.float32).astype(np.float16)
        streams.append(Stream(data, starts, lengths, name=f"upstream{k}", frame_rate=50.0))
    return Packed(streams), rng.integers(0, 8, n)


def ecapa_flops_per_frame(config: dict) -> float:
    """Forward FLOPs per frame of an ECAPA module config (per-frame convolutions + layer mix)."""
    import torch

    from estimators._modules import build_module

    with torch.device("meta"):
        module = build_module(config)
    macs = 0
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Conv1d) and ".se." not in f".{name}.":  # SE runs once per utterance
            macs += m.out_channels * m.in_channels // m.groups * m.kernel_size[0]
    mix = sum(2 * n_layers * dim for n_layers, dim in config["streams"])
    return 2.0 * macs + mix


def _time_fit(est, X, y) -> dict:
    t0 = time.perf_counter()
    est.fit(X, y)
    return {
        "fit_seconds": time.perf_counter() - t0,
        "epoch_seconds": [float(h["dur"]) for h in est.history_],
        "module_config": est.module_config_,
        "parameters": int(sum(p.numel() for p in est.module_.parameters())),
    }


def run(scale: float, epochs: int, paper: bool, threads: int | None) -> dict:
    import torch

    from benchmarks.machine import matmul_rate
    from estimators import ECAPAClassifier, FusionClassifier

    if threads:
        torch.set_num_threads(threads)
    rate = matmul_rate("fp32", rounds=3)["gflops_best"]
    n = max(16, int(round(N_RAVDESS * scale)))
    one, y = make_packed(n, 1)
    two, _ = make_packed(n, 2)
    frames = int(one.streams[0].lengths.sum())
    common = dict(max_epochs=epochs, validation_fraction=None, random_state=0, device="cpu")
    configs = [("ecapa default", ECAPAClassifier(**common), one)]
    if paper:
        configs.append(("ecapa paper (C=512, scale 8, emb 192)", ECAPAClassifier(channels=512, scale=8, embedding_size=192, **common), one))
    configs += [
        ("ecapa early fusion, 2 upstreams", ECAPAClassifier(fusion="early", **common), two),
        ("ecapa late fusion, 2 upstreams", ECAPAClassifier(fusion="late", **common), two),
        ("dense early fusion, 2 upstreams", FusionClassifier(fusion="early", **common), two),
        ("dense late fusion, 2 upstreams", FusionClassifier(fusion="late", **common), two),
    ]
    rows = []
    for label, est, X in configs:
        r = _time_fit(est, X, y)
        r["label"] = label
        later = r["epoch_seconds"][1:] or r["epoch_seconds"]
        r["epoch_s"] = min(later)
        r["epoch_median_s"] = float(np.median(later))
        cfg = r["module_config"]
        heads = cfg["heads"] if cfg["kind"] == "late" else [cfg]
        if all(h["kind"] == "ecapa" for h in heads):
            flops = 3 * frames * sum(ecapa_flops_per_frame(h) for h in heads)
            r["limit_s"] = flops / (rate * 1e9)
            r["fraction_of_limit"] = r["limit_s"] / r["epoch_s"]
            r["train_gflop"] = flops / 1e9
        rows.append(r)
        print(f"{label}: {r['epoch_s']:.2f} s/epoch" + (f", limit {r['limit_s']:.2f} s ({r['fraction_of_limit']:.2f} of it)" if "limit_s" in r else ""), flush=True)
    return {"n_utterances": n, "frames": frames, "scale": scale, "epochs": epochs, "threads": torch.get_num_threads(),
            "matmul_gflops_fp32": rate, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ecapa", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="share of the 1440 RAVDESS utterances (default 1; --quick 0.05)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per fit; the fastest after the first is reported (default 3)")
    ap.add_argument("--paper", action="store_true", help="also the paper-size ECAPA (C=512, scale 8, embedding 192)")
    ap.add_argument("--quick", action="store_true", help="scale 0.05 (72 utterances) unless --scale is given")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    a = ap.parse_args(argv)
    scale = 0.05 if a.quick and a.scale == 1.0 else a.scale
    res = run(scale, a.epochs, a.paper, a.threads)
    print(f"{res['n_utterances']} utterances, {res['frames']} frames x {N_LAYERS} x {DIM}, {res['threads']} threads, "
          f"matmul {res['matmul_gflops_fp32']:.0f} GFLOP/s fp32")
    print("| configuration | s/epoch (fastest) | median | compute limit s | fraction | parameters |")
    print("|---|---|---|---|---|---|")
    for r in res["rows"]:
        lim = f"{r['limit_s']:.2f}" if "limit_s" in r else "-"
        frac = f"{r['fraction_of_limit']:.2f}" if "limit_s" in r else "-"
        print(f"| {r['label']} | {r['epoch_s']:.2f} | {r['epoch_median_s']:.2f} | {lim} | {frac} | {r['parameters']:,} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
