"""Floating-point operations of the models, counted analytically from their shapes.

One multiply-add counts as 2 FLOPs; only matmul-like work is counted (convolutions, linear
layers, attention products). Normalisations, activations, softmax and the elementwise
residual additions are left out: they are memory-bound and small against the matmuls
(under 1 % of the wav2vec2-base count). :func:`count_with_torch` counts the same forward
pass with ``torch.utils.flop_counter.FlopCounterMode`` as a cross-check (the tests compare
both).
"""

from __future__ import annotations

from typing import Any


def conv_lengths(n_samples: int, kernels, strides) -> list[int]:
    """Output length of every CNN layer for an input of ``n_samples``."""
    out, n = [], int(n_samples)
    for k, s in zip(kernels, strides):
        n = (n - int(k)) // int(s) + 1
        out.append(max(n, 0))
    return out


def wav2vec2_flops(config: Any, n_samples: int) -> dict[str, float]:
    """FLOPs of one forward pass of a wav2vec2-style model over ``n_samples`` samples.

    Parts: ``cnn`` (the 7 conv layers of the feature encoder), ``projection`` (feature
    projection), ``pos_conv`` (grouped positional convolution), ``transformer`` (per block
    Q, K, V, output projections, the two attention products and the feed-forward), and
    ``total``.
    """
    kernels, strides = list(config.conv_kernel), list(config.conv_stride)
    dims = list(config.conv_dim)
    lengths = conv_lengths(n_samples, kernels, strides)
    cnn, c_in = 0.0, 1
    for k, c_out, t in zip(kernels, dims, lengths):
        cnn += 2.0 * t * c_out * c_in * k
        c_in = c_out
    t = lengths[-1]
    d = int(config.hidden_size)
    projection = 2.0 * t * dims[-1] * d
    groups = int(config.num_conv_pos_embedding_groups)
    pos_conv = 2.0 * t * d * (d // groups) * int(config.num_conv_pos_embeddings)
    ff = int(config.intermediate_size)
    n_blocks = int(config.num_hidden_layers)
    attention = 2.0 * 2.0 * t * t * d * n_blocks  # Q K^T and softmax(.) V
    transformer = 2.0 * t * (4 * d * d + 2 * d * ff) * n_blocks + attention
    total = cnn + projection + pos_conv + transformer
    return {
        "cnn": cnn,
        "projection": projection,
        "pos_conv": pos_conv,
        "transformer": transformer,
        "attention": attention,
        "total": total,
        "frames": float(t),
    }


def wav2vec2_flops_per_audio_second(config: Any, lengths_samples, sampling_rate: int = 16000) -> dict[str, float]:
    """Summed FLOPs of one-at-a-time forward passes over the given lengths, per audio second."""
    total: dict[str, float] = {}
    for n in lengths_samples:
        for k, v in wav2vec2_flops(config, int(n)).items():
            total[k] = total.get(k, 0.0) + v
    seconds = sum(int(n) for n in lengths_samples) / float(sampling_rate)
    return {k: v / seconds for k, v in total.items() if k != "frames"} | {"audio_seconds": seconds}


def count_with_torch(model: Any, n_samples: int) -> float:
    """FLOPs of ``model(x)`` for a random input of ``n_samples`` counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, int(n_samples))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def dense_flops_per_frame(n_layers: int, dim: int, hidden: tuple[int, ...], n_classes: int) -> dict[str, float]:
    """Training FLOPs per frame of the Dense head (weighted layer average, dense layers).

    Forward: the layer average (``2 L D``) and the per-frame dense layers (``2 D H1 +
    2 H1 H2``). Backward: gradients of the dense weights and of their inputs (2x the forward
    dense work) and the gradient of the layer weights (``2 L D``, re-reading the frames).
    Pooling and the output layer work per utterance, not per frame (left out).
    """
    dense, d_in = 0.0, dim
    for h in hidden:
        dense += 2.0 * d_in * h
        d_in = h
    mix = 2.0 * n_layers * dim
    forward = mix + dense
    backward = 2.0 * dense + mix
    return {"forward": forward, "backward": backward, "total": forward + backward}


def lstm_flops_per_frame(dim: int, hidden: tuple[int, ...], bidirectional: bool = False) -> dict[str, float]:
    """Training FLOPs per frame of the LSTM head: dense layers ``hidden[:-1]``, then an LSTM of ``hidden[-1]``.

    The LSTM does ``2 x 4 H (I + H)`` per frame and direction (four gates, input and recurrent
    products); the backward pass is counted as twice the forward work, as for the dense layers.
    """
    dense, d_in = 0.0, dim
    for h in hidden[:-1]:
        dense += 2.0 * d_in * h
        d_in = h
    size = hidden[-1]
    lstm = 2.0 * 4 * size * (d_in + size) * (2 if bidirectional else 1)
    forward = dense + lstm
    return {"forward": forward, "backward": 2.0 * forward, "total": 3.0 * forward}
