"""Session fixtures: a tiny synthetic RAVDESS-named corpus, a tiny random wav2vec2, a cache.

Everything is built once per session from synthesized audio and a randomly initialised
model; nothing needs the network or ../shared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_fixtures import make_tiny_model, tiny_model_dir, tiny_models_root  # noqa: F401

SR = 16000
ACTORS = (1, 2, 3, 4)
EMOTIONS = range(1, 9)


def synth_utterance(actor: int, emotion: int, statement: int, seconds: float, seed: int) -> np.ndarray:
    """A harmonic tone whose pitch and brightness depend on the emotion, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 90 + 25 * emotion + 10 * (actor % 2) + 5 * statement
    vib = 1 + 0.02 * np.sin(2 * np.pi * (2 + emotion) * t)
    x = sum((0.6 / k ** (0.5 + 0.15 * emotion)) * np.sin(2 * np.pi * k * f0 * vib * t) for k in range(1, 6))
    env = np.minimum(1, np.minimum(t, t[-1] - t) * 20)
    x = 0.3 * (0.6 + 0.1 * actor) * env * x + 0.01 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def write_ravdess_like(root: Path, actors=ACTORS, emotions=EMOTIONS, statements=(1, 2)) -> Path:
    """RAVDESS speech file names (03-01-EE-01-SS-01-AA) in Actor_XX folders; wav and flac mixed."""
    root.mkdir(parents=True, exist_ok=True)
    for a in actors:
        d = root / f"Actor_{a:02d}"
        d.mkdir(exist_ok=True)
        for e in emotions:
            for s in statements:
                seed = a * 100 + e * 10 + s
                secs = 0.6 + 0.5 * ((seed * 7919) % 10) / 10
                x = synth_utterance(a, e, s, secs, seed)
                ext = "flac" if (a + e + s) % 2 else "wav"
                sf.write(d / f"03-01-{e:02d}-01-{s:02d}-01-{a:02d}.{ext}", x, SR)
    return root


@pytest.fixture(scope="session")
def ravdess_dir(tmp_path_factory) -> Path:
    """64 synthetic RAVDESS-named files: 4 actors x 8 emotions x 2 statements."""
    return write_ravdess_like(tmp_path_factory.mktemp("corpus") / "ravdess")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random wav2vec2 saved with save_pretrained (loaded by path like a real one)."""
    return make_tiny_model(tmp_path_factory.mktemp("models"), "wav2vec2", seed=0)


@pytest.fixture(scope="session")
def built_cache(tmp_path_factory, ravdess_dir, tiny_model) -> Path:
    """The synthetic corpus extracted with the tiny model, MFCC and eGeMAPS (fp32)."""
    from featcache.pipeline import build_extractors, extract

    cache_dir = tmp_path_factory.mktemp("cache")
    ex = build_extractors(["wav2vec2", "mfcc", "egemaps"], model=str(tiny_model), precision="fp32", device="cpu")
    extract("ravdess", ravdess_dir, cache_dir, ex, shard_size=24, progress=False)
    return cache_dir / "ravdess"
