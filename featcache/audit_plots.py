"""The plots of ``featcache audit``: a label x speaker counts heat map, durations per label.

matplotlib with the Agg backend (no display needed), imported only when plotting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_counts", "plot_durations"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_counts(counts: dict, path: Path, *, title: str = "") -> Path:
    """Heat map of utterances per speaker (rows) and label (columns), numbers in the cells.

    Parameters
    ----------
    counts : dict
        ``speakers``, ``labels`` and ``matrix`` (n_speakers x n_labels) of the audit summary.
    """
    plt = _pyplot()
    m = np.asarray(counts["matrix"], dtype=float).reshape(len(counts["speakers"]), len(counts["labels"]))
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * max(m.shape[1], 1), 1.2 + 0.28 * max(m.shape[0], 1)))
    im = ax.imshow(m, aspect="auto", cmap="viridis")
    ax.set_xticks(range(m.shape[1]), [str(v) or "(none)" for v in counts["labels"]], rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), counts["speakers"])
    if m.size <= 1200:
        top = m.max() if m.size else 0
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7, color="black" if v > 0.6 * top else "white")
    ax.set_xlabel("label")
    ax.set_ylabel("speaker")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="utterances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_durations(table: pd.DataFrame, path: Path, *, title: str = "") -> Path:
    """Histograms of the utterance durations (``duration`` column), one panel per label."""
    plt = _pyplot()
    dur = pd.to_numeric(table.get("duration", pd.Series(np.nan, index=table.index)), errors="coerce")
    labels = sorted(set(table["label"].astype(str)))
    n = max(len(labels), 1)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), squeeze=False, sharex=True)
    finite = dur[np.isfinite(dur)]
    bins = np.linspace(float(finite.min()), float(finite.max()) + 1e-6, 25) if len(finite) else 10
    for k, ax in enumerate(axes.ravel()):
        if k >= len(labels):
            ax.axis("off")
            continue
        v = dur[(table["label"].astype(str) == labels[k]).to_numpy()]
        v = v[np.isfinite(v)]
        ax.hist(v, bins=bins, color="tab:blue")
        ax.set_title(f"{labels[k] or '(none)'} (n={len(v)}, mean {v.mean():.2f} s)" if len(v) else f"{labels[k]} (no duration)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
