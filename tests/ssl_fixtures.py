"""Helpers that build tiny randomly initialised self-supervised models for the tests.

``tests/conftest.py`` may import :func:`make_tiny_model` (and the ``tiny_model_dir``
fixture factory) from here. Nothing is downloaded: the models are built from a config,
saved with ``save_pretrained`` next to a ``Wav2Vec2FeatureExtractor`` and loaded by path
through the same code as real checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

KINDS = ("wav2vec2", "wav2vec2_stable", "hubert", "wavlm")

#: Shared tiny sizes: real CNN kernels/strides (so 1 s -> 49 frames, 400-sample receptive
#: field) with narrow channels, 2 transformer blocks of width 32.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16, 16, 16, 16, 16, 16),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    layerdrop=0.0,
)


def tiny_config(kind: str = "wav2vec2"):
    """The transformers config of a tiny model of ``kind`` (one of :data:`KINDS`)."""
    from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig

    if kind == "wav2vec2":
        return Wav2Vec2Config(**TINY, feat_extract_norm="group", do_stable_layer_norm=False)
    if kind == "wav2vec2_stable":
        return Wav2Vec2Config(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True)
    if kind == "hubert":
        return HubertConfig(**TINY, feat_extract_norm="group", do_stable_layer_norm=False)
    if kind == "wavlm":
        return WavLMConfig(**TINY, feat_extract_norm="group", do_stable_layer_norm=False)
    raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")


def make_tiny_model(tmp_dir, kind: str = "wav2vec2", seed: int = 0) -> Path:
    """Build, save and return the directory of a tiny random model of ``kind``.

    The directory (``tmp_dir / f"tiny_{kind}_{seed}"``) holds ``config.json``, the weights
    and ``preprocessor_config.json`` (16 kHz, ``do_normalize=True``). Built once per
    directory: an existing one is returned as is.
    """
    import torch
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    out = Path(tmp_dir) / f"tiny_{kind}_{seed}"
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(kind)).eval()
    model.save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
        return_attention_mask=False,
    ).save_pretrained(out)
    return out


def speechlike(n_samples: int, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """A deterministic float32 test signal: a few harmonics with vibrato plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sr
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 3.0 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * t))
    x = 0.3 * x + 0.02 * rng.standard_normal(n_samples)
    return x.astype(np.float32)


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory) -> Path:
    """A session-wide folder the tiny models are saved into (each built once)."""
    return tmp_path_factory.mktemp("tiny_ssl_models")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_models_root):
    """Factory fixture: ``tiny_model_dir(kind="wav2vec2", seed=0) -> Path``."""

    def _make(kind: str = "wav2vec2", seed: int = 0) -> Path:
        return make_tiny_model(tiny_models_root, kind=kind, seed=seed)

    return _make
