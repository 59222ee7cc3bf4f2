"""Synthetic corpora for the audit and leakage tests: speech-like files and planted problems.

Every file is a distinct "recording" (random syllable envelope and pitch contour per seed),
so a clean corpus has no near-duplicate; the planted problems are made from those files
exactly as they arise in real corpora: the same decoded audio under another name, a copy
resampled and gain-changed, one speaker per label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16000


def speechlike(seed: int, seconds: float = 1.3) -> np.ndarray:
    """Voiced syllables with their own timing and pitch contour (float32, peak 0.5)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    n = max(2, int(seconds * 4))
    centres = np.sort(rng.uniform(0.1, seconds - 0.1, n))
    env = sum(rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((t - c) / rng.uniform(0.03, 0.08)) ** 2) for c in centres)
    f0 = rng.uniform(100, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    tilt = rng.uniform(0.6, 1.2)
    x = env * sum(np.sin(k * phase) / k**tilt for k in range(1, 8)) + 0.002 * rng.standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def ravdess_name(emotion: int, statement: int, actor: int, intensity: int = 1, repetition: int = 1) -> str:
    return f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"


def write_clean(root: Path, actors=(1, 2, 3, 4), emotions=(1, 3, 4, 5), statements=(1, 2)) -> Path:
    """A RAVDESS-named corpus of distinct recordings (FLAC), every sentence spoken by every actor."""
    for a in actors:
        (root / f"Actor_{a:02d}").mkdir(parents=True, exist_ok=True)
        for e in emotions:
            for s in statements:
                x = speechlike(1000 * a + 10 * e + s, 1.0 + 0.1 * ((a + e + s) % 4))
                sf.write(root / f"Actor_{a:02d}" / f"{ravdess_name(e, s, a)}.flac", x, SR, subtype="PCM_16")
    return root


def plant_duplicates(root: Path) -> dict[str, str]:
    """Add an exact copy and a resampled, gain-changed copy of files of other speakers.

    Returns
    -------
    dict
        ``exact_source``, ``exact_copy``, ``near_source``, ``near_copy``: utterance ids.
    """
    src = ravdess_name(3, 1, 1)
    data, rate = sf.read(root / "Actor_01" / f"{src}.flac", dtype="int16")
    copy = ravdess_name(3, 1, 2, intensity=2)  # speaker 02: the same decoded audio, as WAV
    sf.write(root / "Actor_02" / f"{copy}.wav", data, rate, subtype="PCM_16")
    near_src = ravdess_name(4, 2, 3)
    x, rate = sf.read(root / "Actor_03" / f"{near_src}.flac", dtype="float32")
    near = ravdess_name(4, 2, 4, intensity=2)  # speaker 04: 22.05 kHz, -8 dB
    sf.write(root / "Actor_04" / f"{near}.wav", soxr.resample(x * 0.4, rate, 22050), 22050, subtype="PCM_16")
    return {"exact_source": src, "exact_copy": copy, "near_source": near_src, "near_copy": near}


def write_confounded(root: Path, n_actors: int = 4, per_actor: int = 6) -> Path:
    """Every actor records a single emotion (actor a: emotion a), as in corpora of one speaker per class."""
    for a in range(1, n_actors + 1):
        (root / f"Actor_{a:02d}").mkdir(parents=True, exist_ok=True)
        for k in range(per_actor):
            name = ravdess_name(a, 1 + k % 2, a, intensity=1 + (k // 2) % 2, repetition=1 + k // 4)
            sf.write(root / f"Actor_{a:02d}" / f"{name}.flac", speechlike(5000 + 100 * a + k), SR, subtype="PCM_16")
    return root


def extract_mfcc(corpus: str, data: Path, cache_dir: Path) -> Path:
    """``featcache extract --features mfcc`` of a corpus; the corpus cache folder."""
    from featcache.pipeline import build_extractors, extract

    summary = extract(corpus, data, cache_dir, build_extractors(["mfcc"]), progress=False)
    assert not summary.failed, summary.failed
    return cache_dir / corpus
