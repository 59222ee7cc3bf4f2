"""Fine-tuning step time of a full-size wav2vec2 (random ``Wav2Vec2Config()``) on ~16 s of audio.

``python -m benchmarks.finetune [--corpus RAVDESS_DIR] [--seconds 16] [--out FILE]``

What is measured, in this order, in one run:

* the fp32 matmul rate of this machine (:func:`benchmarks.machine.matmul_rate`, best round);
* per configuration (without and with gradient checkpointing), in a fresh subprocess:
  ``FineTuneClassifier(head="mean", max_epochs=2, validation_fraction=None)`` fitted on
  files totalling about ``--seconds`` of audio with ``batch_seconds`` covering them all, so
  each epoch is exactly one optimisation step (forward, backward, AdamW) of the
  estimator's own code; the step time is the second epoch's ``history_[1]["dur"]`` (the
  first warms up), and the peak memory the subprocess's peak resident set size
  (``ru_maxrss``: the model, its gradients, AdamW's state and the activations);
* the training compute limit: ``3 x`` the forward FLOPs of the batch
  (:func:`benchmarks.flops.wav2vec2_flops`, utterances one at a time) / the matmul rate;
  the fraction is that limit over the measured step (1.0 = the step runs at the matmul
  rate). The CNN feature encoder is frozen (no backward through it), so the real work is
  below ``3 x forward``; ``limit_frozen_cnn_s`` counts ``forward + 2 x (forward - CNN)``.

fp32 on the CPU only; nothing runs on a GPU here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SR = 16000


def _files(corpus: Path | None, seconds: float, workdir: Path) -> list[str]:
    """Audio files totalling at least ``seconds`` (RAVDESS files, or synthetic ones)."""
    import soundfile as sf

    out, total = [], 0.0
    if corpus is not None:
        for p in sorted(corpus.rglob("*.wav")) + sorted(corpus.rglob("*.flac")):
            out.append(str(p))
            total += sf.info(str(p)).duration
            if total >= seconds:
                return out
    import numpy as np

    rng = np.random.default_rng(0)
    k = 0
    while total < seconds:
        n = int(SR * 3.5)
        t = np.arange(n) / SR
        x = (0.3 * np.sin(2 * np.pi * (120 + 20 * k) * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)
        p = workdir / f"synthetic_{k}.wav"
        sf.write(p, x, SR)
        out.append(str(p))
        total += n / SR
        k += 1
    return out


def _child(model_dir: str, files: list[str], checkpointing: bool, seconds: float) -> dict:
    import numpy as np
    import torch

    from estimators import FineTuneClassifier

    y = np.array(["a", "b"] * (len(files) // 2 + 1))[: len(files)]
    est = FineTuneClassifier(model=model_dir, head="mean", max_epochs=2, validation_fraction=None, batch_seconds=seconds * 4,
                             gradient_checkpointing=checkpointing, spec_augment=False, device="cpu", random_state=0, max_seconds=None)
    t0 = time.perf_counter()
    est.fit(files, y)
    return {
        "gradient_checkpointing": checkpointing,
        "threads": torch.get_num_threads(),
        "step_seconds": [float(h["dur"]) for h in est.history_],
        "fit_seconds": time.perf_counter() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        # CPU seconds of the whole fit: far below threads x fit_seconds means other jobs had the cores
        "cpu_seconds": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
        "trainable_params": int(sum(p.numel() for p in est.module_.parameters() if p.requires_grad)),
        "params": int(sum(p.numel() for p in est.module_.parameters())),
    }


def _flops(files: list[str]) -> dict:
    import soundfile as sf
    from transformers import Wav2Vec2Config

    from benchmarks.flops import wav2vec2_flops

    cfg = Wav2Vec2Config()
    lengths = [int(round(sf.info(f).duration * SR)) for f in files]
    parts = [wav2vec2_flops(cfg, n) for n in lengths]
    fwd = sum(p["total"] for p in parts)
    cnn = sum(p["cnn"] for p in parts)
    return {"audio_seconds": sum(lengths) / SR, "forward_gflop": fwd / 1e9, "cnn_gflop": cnn / 1e9,
            "train_gflop_3x": 3 * fwd / 1e9, "train_gflop_frozen_cnn": (fwd + 2 * (fwd - cnn)) / 1e9}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.finetune", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None, help="RAVDESS folder (16 kHz files); synthetic audio without it")
    ap.add_argument("--seconds", type=float, default=16.0, help="audio per optimisation step")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(_child(job["model_dir"], job["files"], job["checkpointing"], job["seconds"])))
        return {}
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from benchmarks.machine import matmul_rate

    with tempfile.TemporaryDirectory() as tmp:
        files = _files(args.corpus, args.seconds, Path(tmp))
        model_dir = Path(tmp) / "wav2vec2_base_random"
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(model_dir)
        Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(model_dir)
        rate = matmul_rate("fp32")
        runs = []
        for ckpt in (False, True):
            job = json.dumps({"model_dir": str(model_dir), "files": files, "checkpointing": ckpt, "seconds": args.seconds})
            env = dict(os.environ, TQDM_DISABLE="1")
            done = subprocess.run([sys.executable, "-m", "benchmarks.finetune", "--child", job], capture_output=True, text=True, env=env, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    flops = _flops(files)
    gflops = rate["gflops_best"]
    for r in runs:
        step = r["step_seconds"][-1]
        r["limit_3x_s"] = flops["train_gflop_3x"] / gflops
        r["limit_frozen_cnn_s"] = flops["train_gflop_frozen_cnn"] / gflops
        r["fraction_of_limit_3x"] = r["limit_3x_s"] / step
        r["audio_seconds_per_second"] = flops["audio_seconds"] / step
    result = {"files": [Path(f).name for f in files], "flops": flops, "matmul_fp32": rate, "runs": runs, "device": "cpu", "gpu": "not measured"}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
