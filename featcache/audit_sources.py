"""The source audio files of a corpus cache: formats, rates, channels, clipping and silence.

Used by :func:`featcache.audit.audit` while the corpus folder (``corpus.json``'s
``data_dir``) is still there. Headers are read with :func:`soundfile.info`; levels
(clipping, silence) by decoding each file once at its own rate, in a few threads (libsndfile
releases the GIL while decoding).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from featcache.audio import not_regular_reason

__all__ = ["source_info", "source_levels", "CLIP_LEVEL", "SILENCE_DBFS", "SILENCE_BELOW_PEAK_DB"]

#: A sample at or above this fraction of full scale, next to another one, counts as clipped.
CLIP_LEVEL = 0.999
#: A 20 ms frame is silent below this level (dBFS) or this far below the file's loudest frame.
SILENCE_DBFS, SILENCE_BELOW_PEAK_DB = -60.0, 40.0
_FRAME_S = 0.02


def _regular(path: Path) -> str | None:
    try:
        return not_regular_reason(os.stat(path).st_mode)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"


def source_info(paths: dict[str, Path]) -> dict:
    """Sample rates, channels and formats of the files (headers only).

    Parameters
    ----------
    paths : dict
        Utterance id -> file path.

    Returns
    -------
    dict
        ``rates``, ``channels``, ``formats`` (value -> number of files) and ``unreadable``
        (id -> reason).
    """
    rates, channels, formats = Counter(), Counter(), Counter()
    unreadable: dict[str, str] = {}
    for uid, p in paths.items():
        why = _regular(p)
        if why is None:
            try:
                info = sf.info(str(p))
            except (sf.SoundFileError, RuntimeError, OSError) as e:
                why = f"not readable as audio ({e})"
        if why is not None:
            unreadable[uid] = why
            continue
        rates[int(info.samplerate)] += 1
        channels[int(info.channels)] += 1
        formats[f"{info.format}/{info.subtype}"] += 1
    return {
        "rates": {str(k): v for k, v in sorted(rates.items())},
        "channels": {str(k): v for k, v in sorted(channels.items())},
        "formats": dict(sorted(formats.items())),
        "unreadable": unreadable,
    }


def _levels(path: Path) -> tuple[float, float, float] | None:
    """(clipped fraction, silent-frame fraction, peak dBFS) of one file; None if unreadable."""
    if _regular(path) is not None:
        return None
    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError):
        return None
    if x.size == 0 or not np.isfinite(x).all():
        return None
    full = np.abs(x) >= CLIP_LEVEL
    clipped = full[1:] & full[:-1]  # two neighbours at full scale: a flattened peak
    n_clipped = int(np.count_nonzero(clipped.any(axis=1))) if len(x) > 1 else 0
    mono = x.mean(axis=1, dtype=np.float64)
    hop = max(1, int(rate * _FRAME_S))
    n = max(1, len(mono) // hop)
    frames = mono[: n * hop].reshape(n, -1) if len(mono) >= hop else mono[None]
    db = 10.0 * np.log10(np.maximum((frames * frames).mean(axis=1), 1e-20))
    silent = db < max(SILENCE_DBFS, float(db.max()) - SILENCE_BELOW_PEAK_DB)
    peak = float(np.abs(x).max())
    return n_clipped / len(x), float(silent.mean()), 20.0 * np.log10(max(peak, 1e-10))


def source_levels(paths: dict[str, Path], *, workers: int = 4) -> dict:
    """Clipping and silence of every readable file.

    Returns
    -------
    dict
        ``n_files``; ``clipped_files`` (files with clipped samples: id -> fraction of
        samples), ``mean_clipped_fraction``; ``mean_silent_fraction`` (20 ms frames below
        -60 dBFS or 40 dB under the file's loudest frame), ``mostly_silent`` (id -> silent
        fraction, for files over 90 %), ``digital_silence`` (ids whose peak is under
        -90 dBFS); ``peak_dbfs`` (median and minimum over files); ``unreadable`` (ids).
    """
    ids = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        got = list(pool.map(_levels, [paths[u] for u in ids]))
    ok = [(u, g) for u, g in zip(ids, got) if g is not None]
    if not ok:
        return {"n_files": 0, "unreadable": ids}
    clip = np.array([g[0] for _, g in ok])
    silent = np.array([g[1] for _, g in ok])
    peak = np.array([g[2] for _, g in ok])
    return {
        "n_files": len(ok),
        "clipped_files": {u: round(g[0], 6) for u, g in ok if g[0] > 0},
        "mean_clipped_fraction": float(clip.mean()),
        "mean_silent_fraction": float(silent.mean()),
        "mostly_silent": {u: round(g[1], 3) for u, g in ok if g[1] > 0.9},
        "digital_silence": [u for u, g in ok if g[2] < -90.0],
        "peak_dbfs": {"median": float(np.median(peak)), "min": float(peak.min()), "max": float(peak.max())},
        "unreadable": [u for u, g in zip(ids, got) if g is None],
    }
