"""Heads on handcrafted features (issue 17, target 1): epochs against their compute limit, and a whole fit.

Usage::

    python -m benchmarks.heads --corpus ../shared/corpora/ravdess-speech-16k [--cache DIR]
                               [--features egemaps,mfcc] [--epochs 4] [--seeds 5] [--skip-fit]
                               [--quick] [--out FILE] [--write-doc [PATH]]

Every job runs in a fresh process (:func:`benchmarks.worker.run_subprocess`, ``OMP_WAIT_POLICY``
passive). In this order:

* the machine: CPU flags and the fp32 matmul rate of 2048 x 2048 matrices on the torch threads
  used (best of 5; the compute limit of every figure below);
* a RAVDESS cache of eGeMAPS LLDs (25 dims) and MFCC (40 dims) at 100 frames/s, extracted from
  ``--corpus`` with ``featcache extract`` (or an existing ``--cache``; without either, synthetic
  RAVDESS-like audio);
* per feature, ``DenseClassifier`` epochs on the ``ravdess-pepino`` training actors (1-20, the
  speech files; actors 21-22 validate, as in the protocol), as shipped and with the fused CPU
  dense blocks switched off (``plain``: the ``nn.Sequential`` the heads ran before); then
  ``LSTMClassifier`` epochs. The first epoch warms up; the fastest of the others is compared.
* the user's command, ``estimators fit --features egemaps --model dense --cv ravdess-pepino
  --seeds N`` (N fits and the refit), wall time.

Limits: training FLOPs of the training frames (forward, weight and input gradients:
:func:`benchmarks.flops.dense_flops_per_frame`, :func:`benchmarks.flops.lstm_flops_per_frame`)
plus the forward FLOPs of the validation frames, divided by the fp32 matmul rate. Pooling,
the output layer and the optimiser work per utterance or per step and are left out. The
padding of LSTM batches is not counted (it is work the limit does not need).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN_ACTORS = tuple(f"{a:02d}" for a in range(1, 21))
VALID_ACTORS = ("21", "22")


def _cli(name: str) -> list[str]:
    """The console script ``name`` run by this interpreter (``featcache`` / ``estimators``)."""
    return [sys.executable, "-c", f"import sys; from cli.{name} import main; sys.argv[0] = {name!r}; main()"]


def build_job(out_dir: str, corpus: str | None, features: str, quick: bool = False) -> dict:
    """Extract ``features`` of RAVDESS (or synthetic RAVDESS-like audio) into ``out_dir``."""
    from benchmarks.data import synthetic_corpus

    out = Path(out_dir)
    data = corpus
    if data is None:
        synthetic_corpus(out / "audio", n_files=48 if quick else 1440)
        data = str(out / "audio")
    cmd = _cli("featcache") + ["extract", "--corpus", "ravdess", "--data-dir", data,
           "--features", features, "--cache-dir", str(out / "cache"), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"featcache extract failed: {proc.stderr[-1500:]}")
    return {"cache": str(out / "cache" / "ravdess"), "seconds": time.perf_counter() - t0, "synthetic": corpus is None}


def _split(fs) -> tuple[np.ndarray, np.ndarray]:
    spk = np.asarray(fs.speakers).astype(str)
    return np.flatnonzero(np.isin(spk, TRAIN_ACTORS)), np.flatnonzero(np.isin(spk, VALID_ACTORS))


def _frames(fs, idx: np.ndarray) -> int:
    return int(np.asarray(fs[idx].to_packed().streams[0].lengths).sum())


def _padded_frames(fs, idx: np.ndarray, batch_size: int, seed: int) -> int:
    """Frames of an epoch's zero-padded batches (each batch padded to its longest), shuffled order."""
    lengths = np.asarray(fs[idx].to_packed().streams[0].lengths)
    order = np.random.default_rng(seed).permutation(len(lengths))
    return int(sum(len(b) * lengths[b].max() for b in np.array_split(order, max(1, len(order) // batch_size))))


def epoch_job(cache: str, features: str, model: str = "dense", epochs: int = 4, fused: bool = True, seed: int = 0) -> dict:
    """Time ``epochs`` epochs of one head (no early stopping) on the training actors."""
    import torch

    import featcache
    from estimators import DenseClassifier, LSTMClassifier
    from estimators import _fused

    fs = featcache.open(cache).select(features, label_map="ravdess7")  # the protocol's 7 classes
    tr, va = _split(fs)
    if len(va) == 0:  # a quick synthetic corpus may lack actors 21-22
        tr, va = tr[: -max(1, len(tr) // 10)], tr[-max(1, len(tr) // 10):]
    rec: list[tuple[float, float]] = []

    def record(est, r) -> None:
        t = os.times()
        rec.append((r["dur"], t.user + t.system))

    cls = {"dense": DenseClassifier, "lstm": LSTMClassifier}[model]
    est = cls(max_epochs=epochs, patience=epochs + 1, random_state=seed, callbacks=[record])
    plain = _fused.DenseStack._fusable
    if not fused:
        _fused.DenseStack._fusable = lambda self, x: False
    try:
        est.fit(fs[tr], fs.labels[tr], X_val=fs[va], y_val=fs.labels[va])
    finally:
        _fused.DenseStack._fusable = plain
    t0 = os.times()
    return {
        "features": features, "model": model, "fused": fused, "threads": torch.get_num_threads(),
        "epoch_seconds": [d for d, _ in rec], "epoch_cpu_seconds": [b - a for (_, a), (_, b) in zip(rec, rec[1:])],
        "n_train": len(tr), "n_valid": len(va), "train_frames": _frames(fs, tr), "valid_frames": _frames(fs, va),
        "dim": int(fs.shape[-1]), "n_classes": len(est.classes_), "hidden": list(est.hidden_sizes),
        "padded_frames": _padded_frames(fs, tr, int(est.batch_size), seed) if model == "lstm" else None,
        "cpu_total": t0.user + t0.system,
    }


def lstm_kernel_job(batch: int = 32, steps: int = 400, size: int = 128, rounds: int = 3) -> dict:
    """GFLOP/s of torch's CPU LSTM alone (forward + backward) on one zero-padded batch.

    The recurrent products of a batch of 32 are small matrices (32 x 128 times 128 x 512 per
    step): this rate, not the large-matrix rate, bounds an LSTM epoch (see the LSTM rows).
    """
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(size, size, batch_first=True)
    x = torch.randn(batch, steps, size, requires_grad=True)

    def step() -> None:
        out, _ = lstm(x)
        out.sum().backward()

    step()
    best_s = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        best_s = min(best_s, time.perf_counter() - t0)
    flops = 3 * 2.0 * 4 * size * (2 * size) * batch * steps
    return {"gflops": flops / best_s / 1e9, "shape": [batch, steps, size], "seconds": best_s,
            "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)}


def fit_job(cache: str, features: str = "egemaps", seeds: int = 5, out_dir: str = "") -> dict:
    """``estimators fit --features F --model dense --cv ravdess-pepino --seeds N``: wall time."""
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = _cli("estimators") + ["fit", "--cache", cache, "--features", features, "--model", "dense",
           "--cv", "ravdess-pepino", "--seeds", str(seeds), "--out", out_dir, "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"estimators fit failed: {proc.stderr[-1500:]}")
    report = json.loads((Path(out_dir) / "report.json").read_text())
    return {"command": " ".join(["estimators"] + cmd[3:]).replace(cache, "CACHE").replace(out_dir, "OUT"), "wall_seconds": wall, "report": _fit_summary(report)}


def _fit_summary(report: dict) -> dict:
    """Epochs of every fit and the UAR of a ``report.json`` (its ``per_fold`` and ``metrics``)."""
    folds = report.get("per_fold") or []
    uar = (report.get("metrics") or {}).get("uar") or {}
    return {"epochs": [f["n_epochs"] for f in folds if f.get("n_epochs") is not None],
            "uar_mean": uar.get("mean"), "uar_std": uar.get("std")}


def limits(machine: dict, res: dict) -> dict | None:
    """Compute limit in seconds of one epoch of ``res`` (an :func:`epoch_job` result)."""
    from benchmarks.flops import dense_flops_per_frame, lstm_flops_per_frame

    rate = (machine.get("matmul", {}).get("fp32") or {}).get("gflops_best")
    if not rate or "train_frames" not in res:
        return None
    d, h = res["dim"], tuple(res["hidden"])
    if res["model"] == "dense":
        f = dense_flops_per_frame(1, d, h, res["n_classes"])
    else:
        f = lstm_flops_per_frame(d, h, bidirectional=False)
    flops = f["total"] * res["train_frames"] + f["forward"] * res["valid_frames"]
    return {"seconds": flops / (rate * 1e9), "flops": flops, "rate": rate, "per_frame": f["total"]}


def best(res: dict) -> float | None:
    e = res.get("epoch_seconds") or []
    return min(e[1:] or e) if e else None


def rows(R: dict) -> list[dict]:
    """The table: one dict per figure (see :func:`benchmarks.report.row`)."""
    from benchmarks.report import row

    out: list[dict] = []
    m = R.get("machine", {})
    for k, feat in enumerate(R.get("features", [])):
        part = R.get("epochs", {}).get(feat, {})
        for model, target in (("dense", 2.0), ("lstm", 3.0)):
            res = part.get(model, {})
            t = best(res)
            lim = limits(m, res) if t else None
            num = f"9{'abcdefgh'[2 * k + (model == 'lstm')]}"
            if not t or not lim:
                out.append(row(num, f"{model} epoch on {feat}", status="failed", note=res.get("error", "")[:300]))
                continue
            size = (f"{res['n_train']} training utt. ({res['train_frames'] / 1e3:.0f}k frames x {res['dim']}) + "
                    f"{res['n_valid']} validation ({res['valid_frames'] / 1e3:.0f}k)")
            note = (f"limit = {lim['per_frame'] / 1e6:.3f} MFLOP/frame x training frames + forward of the validation frames "
                    f"= {lim['flops'] / 1e9:.1f} GFLOP / {lim['rate']:.0f} GFLOP/s fp32; epochs "
                    f"{', '.join(f'{x:.2f}' for x in res['epoch_seconds'])} s")
            plain = best(part.get("dense_plain", {})) if model == "dense" else None
            kern = R.get("lstm_kernel", {})
            if model == "lstm" and kern.get("gflops"):
                padded = res.get("padded_frames")
                note += (f"; torch's LSTM alone (forward + backward, batch {kern['shape'][0]} x {kern['shape'][1]} steps) runs at "
                         f"{kern['gflops']:.0f} GFLOP/s, {kern['gflops'] / lim['rate']:.0%} of the matmul rate")
                if padded:
                    note += f"; batches are zero-padded to their longest utterance: {padded / res['train_frames']:.2f}x the real frames"
            if plain:
                note += f"; with the fused CPU blocks off (plain nn.Sequential) {plain:.2f} s in the same run ({plain / t:.2f}x ours)"
            ratio = t / lim["seconds"]
            out.append(row(num, f"{model.upper() if model == 'lstm' else 'Dense'} epoch on {feat} ({size}): s vs the compute limit",
                           t, None, ratio, lim["seconds"], lim["seconds"] / t, f"<= {target:g}x the limit",
                           "met" if ratio <= target else "NOT MET", note=note))
    fit = R.get("fit", {})
    if fit.get("wall_seconds"):
        w = fit["wall_seconds"]
        ep = fit.get("report", {}).get("epochs") or []
        rep = fit.get("report", {})
        note = f"epochs per fit: {ep}" if ep else ""
        if rep.get("uar_mean") is not None:
            note += f"; UAR {100 * rep['uar_mean']:.1f} ± {100 * (rep.get('uar_std') or 0):.1f} % over the seeds"
        out.append(row("9g", f"`{fit['command']}` (fits + refit): wall s", w, None, None, None, None, "<= 180 s",
                       "met" if w <= 180 else "NOT MET", note=note))
    elif fit:
        out.append(row("9g", "estimators fit ... --seeds N", status="failed", note=fit.get("error", "")[:300]))
    return out


def render(R: dict) -> str:
    from benchmarks.report import machine_lines, markdown_table

    head = f"## Heads on handcrafted features (issue 17), {R['date']}\n\n"
    if R.get("build", {}).get("synthetic"):
        head += "- audio: synthetic RAVDESS-like (no --corpus)\n"
    return f"{head}{machine_lines(R)}\n\n{markdown_table(R['rows'])}\n"


BEGIN, END = "<!-- heads:begin (python -m benchmarks.heads --write-doc) -->", "<!-- heads:end -->"


def write_doc(path: Path, text: str) -> Path:
    """Replace the heads section of ``path`` (appended when absent)."""
    from benchmarks.report import write_section

    return write_section(path, BEGIN, END, text)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import publish
    from benchmarks.worker import REPO, run_subprocess

    ap = argparse.ArgumentParser(prog="python -m benchmarks.heads", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None, help="RAVDESS folder (Actor_XX/*.flac); synthetic audio without it")
    ap.add_argument("--cache", type=Path, default=None, help="an existing RAVDESS cache with the features (skips extraction)")
    ap.add_argument("--features", default="egemaps,mfcc")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per timing fit (the first warms up)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the whole-fit command")
    ap.add_argument("--skip-fit", action="store_true", help="do not run the whole-fit command")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic corpus: checks that it runs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks" / "heads-latest.json")
    ap.add_argument("--write-doc", nargs="?", const=REPO / "docs" / "benchmarks.md", type=Path, default=None)
    args = ap.parse_args(argv)
    feats = [f.strip() for f in args.features.split(",") if f.strip()]
    threads = args.threads or len(os.sched_getaffinity(0))
    wd = Path(tempfile.mkdtemp(prefix="featcache-heads-"))

    def run(job: str, **kw) -> dict:
        t0 = time.perf_counter()
        res = run_subprocess(job, kw, wd / "jobs", threads, omp_wait_policy="passive")
        print(f"[heads] {job} {kw.get('features', '')} {kw.get('model', '')} "
              f"{'error: ' + res['error'] if 'error' in res else 'ok'} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        return res

    R: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": "python -m benchmarks.heads " + " ".join(argv or sys.argv[1:]),
               "features": feats, "epochs": {}, "load": {"start": list(os.getloadavg())}}
    t_start = time.perf_counter()
    try:
        R["machine"] = run("machine", quick=args.quick)
        if args.cache:
            R["build"] = {"cache": str(args.cache.resolve()), "synthetic": False}
        else:
            corpus = str(args.corpus.resolve()) if args.corpus else None
            R["build"] = run("heads_build", out_dir=str(wd), corpus=corpus, features=",".join(feats), quick=args.quick)
        cache = R["build"].get("cache")
        epochs = 2 if args.quick else args.epochs
        for feat in feats if cache else []:
            R["epochs"][feat] = {
                "dense": run("heads_epoch", cache=cache, features=feat, model="dense", epochs=epochs),
                "dense_plain": run("heads_epoch", cache=cache, features=feat, model="dense", epochs=epochs, fused=False),
                "lstm": run("heads_epoch", cache=cache, features=feat, model="lstm", epochs=epochs),
            }
        R["lstm_kernel"] = run("heads_lstm_kernel", steps=50 if args.quick else 400)
        if cache and not (args.skip_fit or args.quick):  # a quick corpus has no test actors
            R["fit"] = run("heads_fit", cache=cache, features=feats[0], seeds=1 if args.quick else args.seeds, out_dir=str(wd / "fit"))
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    R["load"]["end"] = list(os.getloadavg())
    R["wall_seconds"] = time.perf_counter() - t_start
    R["rows"] = rows(R)
    text = render(R)
    publish(R, text, args.out)
    if args.write_doc:
        print(f"doc: {write_doc(args.write_doc, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
