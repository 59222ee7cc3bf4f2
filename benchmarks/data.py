"""Benchmark inputs: the model, the audio (real RAVDESS or synthetic) and the training cache.

* :func:`make_model` -- a randomly initialised wav2vec2 (full-size ``Wav2Vec2Config()``, the
  wav2vec2-base shape; a tiny one for ``--quick``) saved with ``save_pretrained`` next to a
  ``Wav2Vec2FeatureExtractor``: loaded by path through the same code as a real checkpoint.
  Speed does not depend on the weights.
* :func:`corpus_files` / :func:`synthetic_corpus` -- the audio files: a RAVDESS folder
  (``Actor_XX/03-01-EE-II-SS-RR-AA.flac``) or, without one, synthetic RAVDESS-named files
  whose durations follow RAVDESS speech (2.9-5.3 s, mean 3.7 s).
* :func:`link_subset` -- a folder of symlinks with the same ``Actor_XX`` layout (a subset
  of the corpus, read by featcache's RAVDESS loader like the real thing).
* :func:`build_training_cache` -- a real featcache cache of random float16 "hidden states"
  (13 layers x 768, 50 frames per audio second of each file), written by
  :func:`featcache.pipeline.extract` with :class:`RandomStates`, a cheap stand-in for the
  model; ``featcache.open(path).select("all_layers")`` works on it like on a real one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from featcache.extractors.base import Extractor

SR = 16000
#: RAVDESS speech: 24 actors x 60 files (neutral: 1 intensity; 7 others: 2) x 2 statements x 2 repetitions.
ACTORS = range(1, 25)

#: The tiny model used by ``--quick`` (the tests' sizes, real CNN kernels and strides).
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16, 16, 16, 16, 16, 16),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def make_model(out: Path, quick: bool = False, seed: int = 0) -> Path:
    """Save a randomly initialised wav2vec2 (base shape, or tiny with ``quick``) to ``out``."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    out = Path(out)
    if (out / "config.json").is_file():
        return out
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)
    config = Wav2Vec2Config(**TINY) if quick else Wav2Vec2Config()
    Wav2Vec2Model(config).eval().save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(out)
    return out


def ravdess_names() -> list[str]:
    """The 1440 relative paths of RAVDESS speech (``Actor_XX/03-01-EE-II-SS-RR-AA``, no suffix)."""
    out = []
    for a in ACTORS:
        for e in range(1, 9):
            for i in (1,) if e == 1 else (1, 2):
                for s in (1, 2):
                    for r in (1, 2):
                        out.append(f"Actor_{a:02d}/03-01-{e:02d}-{i:02d}-{s:02d}-{r:02d}-{a:02d}")
    return out


def corpus_files(root: Path) -> list[Path]:
    """Audio files (``.wav``/``.flac``) under a corpus folder, sorted by relative path."""
    root = Path(root)
    files = [p for p in root.rglob("*") if p.suffix.lower() in (".wav", ".flac") and p.is_file()]
    if not files:
        raise FileNotFoundError(f"{root}: no .wav or .flac files")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def synthetic_durations(n: int, seed: int = 0) -> np.ndarray:
    """RAVDESS-like durations in seconds: clipped normal, mean 3.7 s, within 2.9-5.3 s."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(3.68, 0.42, n), 2.94, 5.31)


def synth_signal(seconds: float, seed: int) -> np.ndarray:
    """A speech-like float32 test signal: harmonics of a gliding pitch, an envelope, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * (1 + 2 * rng.random()) * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum((0.5 / k) * np.sin(k * phase) for k in range(1, 6))
    env = np.clip(np.minimum(t, t[-1] - t) * 8, 0, 1) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (0.3 * env * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def synthetic_corpus(root: Path, n_files: int | None = None, seed: int = 0) -> list[Path]:
    """Write RAVDESS-named synthetic FLAC files (the first ``n_files`` of the 1440) under ``root``."""
    import soundfile as sf

    root = Path(root)
    names = ravdess_names()
    n = len(names) if n_files is None else min(int(n_files), len(names))
    # spread a subset over actors and emotions: every k-th name
    picked = [names[i] for i in spread(len(names), n)]
    durs = synthetic_durations(len(names), seed)
    out = []
    for k, rel in enumerate(picked):
        p = root / (rel + ".flac")
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            i = names.index(rel)
            sf.write(p, synth_signal(float(durs[i]), seed * 100003 + i), SR, subtype="PCM_16")
        out.append(p)
    return out


def spread(n_total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (all when ``n >= n_total``)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(math.floor(i * n_total / n)) for i in range(n)})


def link_subset(files: list[Path], root: Path, out: Path) -> Path:
    """A folder of symlinks to ``files`` keeping their paths relative to ``root``."""
    out = Path(out)
    for f in files:
        rel = Path(f).relative_to(root)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.symlink(Path(f).resolve(), dst)
    return out


def audio_lengths(files: list[Path]) -> list[int]:
    """Samples at 16 kHz of each file (from the headers)."""
    import soundfile as sf

    out = []
    for f in files:
        info = sf.info(str(f))
        out.append(int(round(info.frames * SR / info.samplerate)))
    return out


class RandomStates(Extractor):
    """A stand-in for a wav2vec2 model: random float16 "hidden states" of the right shape.

    ``(n_layers, n_frames, dim)`` per utterance, with wav2vec2's frame count for the
    signal's length (50 frames per second). The values are N(0, 1) samples, taken as
    slices of one pool so that building a 5 GB cache costs seconds, not minutes.
    """

    name = "ssl"
    dtype = np.dtype("float16")
    sampling_rate = SR
    frame_rate = 50.0

    def __init__(self, n_layers: int = 13, dim: int = 768, seed: int = 0, store_name: str = "wav2vec2_random") -> None:
        self.n_layers = int(n_layers)
        self.dim = int(dim)
        self.seed = int(seed)
        self.store_name = store_name
        self._rng = np.random.default_rng(seed)
        pool = 1 << 24
        self._pool = self._rng.standard_normal(pool, dtype=np.float32).astype(np.float16)

    def params(self) -> dict[str, Any]:
        return {"model": "random-float16-states", "seed": self.seed, "layers": "hidden_states"}

    def min_samples(self) -> int:
        return 400

    @staticmethod
    def n_frames(n_samples: int) -> int:
        n = int(n_samples)
        for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
            n = (n - k) // s + 1
        return max(n, 0)

    def _states(self, n: int) -> np.ndarray:
        size = self.n_layers * n * self.dim
        if size > len(self._pool):
            return self._rng.standard_normal(size, dtype=np.float32).astype(np.float16).reshape(self.n_layers, n, self.dim)
        off = int(self._rng.integers(0, len(self._pool) - size + 1))
        return self._pool[off : off + size].reshape(self.n_layers, n, self.dim)

    def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
        self._check_rate(sampling_rate)
        return self._states(self.n_frames(len(signal)))

    def batch(self, signals: list[np.ndarray], sampling_rate: int) -> list[np.ndarray]:
        return [self(s, sampling_rate) for s in signals]


def training_files(corpus: Path | None, scale: float, workdir: Path, seed: int = 0) -> tuple[Path, list[Path]]:
    """The audio folder and files a training cache of ``scale`` x 1440 utterances is built from.

    With a corpus, a symlink subset of it (every k-th file, all actors) unless all of it is
    used; without one, synthetic RAVDESS-named files (written once under
    ``workdir/synthetic-audio``), in a symlink folder of their own when that folder holds
    other files too.
    """
    if corpus is not None:
        root = Path(corpus)
        every = corpus_files(root)
        n = max(1, int(round(len(every) * float(scale))))
        picked = [every[i] for i in spread(len(every), n)]
    else:
        root = Path(workdir) / "synthetic-audio"
        n = max(1, int(round(len(ravdess_names()) * float(scale))))
        picked = synthetic_corpus(root, n, seed)
    if {p.resolve() for p in picked} == {p.resolve() for p in corpus_files(root)}:
        return root, picked
    sub = link_subset(picked, root, Path(workdir) / f"train-audio-{n}")
    return sub, corpus_files(sub)


def build_training_cache(
    audio_dir: Path, cache_dir: Path, *, n_layers: int = 13, dim: int = 768, seed: int = 0, shard_size: int = 256
) -> dict[str, Any]:
    """Write a featcache cache of random float16 states for every file of ``audio_dir``.

    Returns the cache path, its number of utterances, frames and bytes of frame data.
    """
    import time

    import featcache
    from featcache.pipeline import extract

    t0 = time.perf_counter()
    summary = extract(
        "ravdess",
        Path(audio_dir),
        Path(cache_dir),
        [RandomStates(n_layers, dim, seed)],
        max_seconds=None,
        shard_size=shard_size,
        progress=False,
    )
    cache = featcache.open(summary.cache_path)
    store = next(r for r in cache.stores.values() if r.n_layers == n_layers)
    frames = sum(store.lengths().values())
    return {
        "path": summary.cache_path,
        "store": store.name,
        "n_utterances": len(store.ids),
        "n_frames": int(frames),
        "n_layers": n_layers,
        "dim": dim,
        "data_bytes": int(frames) * n_layers * dim * 2,
        "build_seconds": time.perf_counter() - t0,
        "audio_seconds": summary.audio_seconds,
    }
