"""Time ``LSTMClassifier`` epochs on a cache, with and without flushing denormals.

Usage::

    python benchmarks/lstm_epoch.py CACHE [--features egemaps] [--n 1200] [--epochs 2]

Fits ``LSTMClassifier(max_epochs=EPOCHS, random_state=0)`` on the first ``N`` utterances
(10 % of them held out for early stopping, as by default) twice: as shipped (denormals
flushed during ``fit``) and with the flush disabled, and prints the seconds per epoch of
each. The training losses of both runs are printed too: flushing values below ~1e-38 must
not change them.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

import estimators._base as base
import featcache
from estimators import LSTMClassifier


def epoch_seconds(X, y, epochs: int) -> tuple[float, list[float]]:
    est = LSTMClassifier(max_epochs=epochs, patience=epochs + 1, random_state=0)
    t0 = time.perf_counter()
    est.fit(X, y)
    return (time.perf_counter() - t0) / est.n_epochs_, [round(r["train_loss"], 5) for r in est.history_]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache")
    ap.add_argument("--features", default="egemaps")
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    fs = featcache.open(a.cache).select(a.features)
    idx = np.arange(min(a.n, len(fs)))
    X, y = fs[idx], fs.labels[idx]
    shipped = epoch_seconds(X, y, a.epochs)
    flush = base._flush_denormals
    base._flush_denormals = lambda device: contextlib.nullcontext()
    try:
        plain = epoch_seconds(X, y, a.epochs)
    finally:
        base._flush_denormals = flush
    print(f"{a.features}, {len(idx)} utterances: {shipped[0]:.1f} s/epoch (denormals flushed), "
          f"{plain[0]:.1f} s/epoch (not flushed), {plain[0] / shipped[0]:.1f}x")
    print(f"train losses: flushed {shipped[1]}, not flushed {plain[1]}")


if __name__ == "__main__":
    main()
