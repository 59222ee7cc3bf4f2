"""bf16 on the CPU: the CNN feature encoder as time-major matmuls, the rest in bf16 weights.

Why (measured with ``python -m benchmarks --only extraction`` and ``torch.profiler`` on a
2-core Xeon with AMX, torch 2.13, wav2vec2-base, RAVDESS files):

* under ``torch.autocast`` the CNN's ``conv1d`` layers ran at ~0.3 TFLOP/s (a seventh of
  the bf16 matmul rate), oneDNN re-created its convolution primitives for every new input
  length (~3 ms each, seven layers per utterance), and casts between fp32 and bf16 (the
  GroupNorm in fp32, the weights on every call) took ~25-40 % of the time;
* the same convolutions as matrix products of time-major windows (row ``t`` of the
  ``(frames, channels)`` input, ``kernel`` rows together, are contiguous, so a window
  matrix is an ``as_strided`` view) run at ~1.5-2 TFLOP/s; splitting the rows into chunks
  of :data:`CHUNK_ROWS` padded to multiples of :data:`ROW_BUCKET` bounds the number of
  matmul shapes, so oneDNN's primitive cache serves every utterance after the first few.

The first layer's GroupNorm (one group per channel, statistics over time) is folded into
that layer's weights: with ``X`` the ``(frames, kernel)`` window matrix, the mean of channel
``c`` is ``mean(X) @ w_c`` and its variance ``w_c' Cov(X) w_c``, both from the 10 x 10
covariance of the windows (float64), so the layer is one ``addmm`` with per-utterance
scaled weights. LayerNorm layers (large models) normalise each frame's channels, the last
axis of the time-major output.

In fp32 (:meth:`ConvEncoder.first_layer`) only that folded first layer runs here; the rest
of the CNN stays the model's own ``conv1d`` layers, which oneDNN runs faster in fp32 than
window copies + matmuls (measured on a 2-core AVX2-only EPYC, 60 RAVDESS files, 222 s of
audio: layers 2-7 6.5-6.7 s as convolutions vs 8.4 s as matmuls; the first layer with its
GroupNorm 0.83-1.5 s as conv + GroupNorm vs 0.52-0.63 s folded, the higher figures on
first-seen input lengths).

The transformer runs with its weights cast to bf16 once (no autocast): LayerNorm, softmax
and GELU accumulate in fp32 inside torch's bf16 kernels. Against fp32 the hidden states
differ by about what autocast gives (max |diff| / layer max ~2.5 % on a random
wav2vec2-base, RAVDESS audio; see :mod:`featcache.extractors.ssl`).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["CHUNK_ROWS", "ROW_BUCKET", "ConvEncoder"]

#: rows of one window matrix per matmul call
CHUNK_ROWS = 4096
#: the last chunk's rows are padded up to a multiple of this (bounded set of matmul shapes)
ROW_BUCKET = 64
#: a GroupNorm is folded into the weights only for windows this small (the first layer: 10)
_FOLD_MAX_WINDOW = 64


def _layer_parts(layer: Any) -> tuple[Any, Any, Any] | None:
    """(conv, norm or None, activation) of one HF conv layer, or None when it is not plain."""
    import torch

    conv = getattr(layer, "conv", None)
    act = getattr(layer, "activation", None)
    if not isinstance(conv, torch.nn.Conv1d) or act is None:
        return None
    if conv.groups != 1 or conv.dilation[0] != 1 or conv.padding_mode != "zeros" or conv.padding not in ((0,), 0):
        return None
    norm = getattr(layer, "layer_norm", None)
    if norm is None:
        return conv, None, act
    if isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == norm.num_channels == conv.out_channels and norm.affine:
        return conv, norm, act
    if isinstance(norm, torch.nn.LayerNorm) and tuple(norm.normalized_shape) == (conv.out_channels,):
        return conv, norm, act
    return None


class ConvEncoder:
    """The CNN feature encoder of a wav2vec2-family model, as matmuls on time-major windows.

    Parameters
    ----------
    feature_extractor : transformers ``Wav2Vec2FeatureEncoder`` (or HuBERT's / WavLM's)
        Its ``conv_layers`` are read once (weights copied to ``dtype``); with all layers here
        the module itself is not used afterwards, so the model may be cast to bf16 as a whole.

    dtype : torch dtype, optional
        Of the weights and outputs (default bf16).
    matmul_layers : int, optional
        Run only the first ``matmul_layers`` layers here and the rest through the model's own
        conv layers (channel-first, in the model's dtype); default: all.

    Calling it on a prepared waveform of shape ``(1, n_samples)`` returns the features of
    shape ``(1, n_frames, conv_dim)``, time-major (what the HF encoder gives after its
    ``transpose(1, 2)``).
    """

    def __init__(self, feature_extractor: Any, dtype: Any = None, matmul_layers: int | None = None) -> None:
        import torch

        self.dtype = torch.bfloat16 if dtype is None else dtype
        self._local = threading.local()  # workspaces: an extractor may serve several threads
        conv_layers = list(feature_extractor.conv_layers)
        n = len(conv_layers) if matmul_layers is None else int(matmul_layers)
        self._rest = conv_layers[n:]  # the model's own modules, run as they are
        self.layers = []
        for layer in conv_layers[:n]:
            conv, norm, act = _layer_parts(layer)  # type: ignore[misc]  # checked by supports()
            w = conv.weight.detach().float()  # (out, in, k) -> window layout (k * in, out)
            w2 = w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous()
            b = None if conv.bias is None else conv.bias.detach().float()
            fold = isinstance(norm, torch.nn.GroupNorm) and w2.shape[0] <= _FOLD_MAX_WINDOW
            self.layers.append({
                "k": int(conv.kernel_size[0]), "s": int(conv.stride[0]), "act": act,
                "w64": w2.double() if fold else None,
                "w": w2.to(self.dtype), "b": None if b is None else b.to(self.dtype),
                "b64": None if b is None else b.double(),
                "norm": norm, "fold": fold,
            })

    @staticmethod
    def supports(feature_extractor: Any) -> bool:
        """Whether every conv layer is one this class runs exactly (else: autocast)."""
        layers = getattr(feature_extractor, "conv_layers", None)
        return bool(layers) and all(_layer_parts(layer) is not None for layer in layers)

    @classmethod
    def first_layer(cls, feature_extractor: Any) -> "ConvEncoder | None":
        """The fp32 form: the first layer folded with its GroupNorm, the rest the model's own.

        None when the first layer has no GroupNorm to fold (LayerNorm conv stacks of large
        models): then nothing is gained over the model's own layers.
        """
        import torch

        layers = getattr(feature_extractor, "conv_layers", None)
        if not layers or _layer_parts(layers[0]) is None:
            return None
        enc = cls(feature_extractor, torch.float32, matmul_layers=1)
        return enc if enc.layers[0]["fold"] else None

    def __call__(self, x: Any) -> Any:
        import torch

        h = x.reshape(-1, 1).float()  # (samples, 1): time-major, one channel
        for spec in self.layers:
            k, s, cin = spec["k"], spec["s"], h.shape[1]
            n_out = (h.shape[0] - k) // s + 1
            windows = h.as_strided((n_out, k * cin), (s * cin, 1))
            if spec["fold"]:
                w, b = self._folded(windows, spec)
                h = self._matmul(windows, w, b)
            else:
                h = self._matmul(windows, spec["w"], spec["b"])
                if spec["norm"] is not None:
                    h = self._normalise(h, spec["norm"])
            h = _activate(spec["act"], h)
        if self._rest:  # channel-first for the model's own layers (a copy: out of the workspace)
            c = h.T.contiguous()[None]
            for layer in self._rest:
                c = layer(c)
            return c.transpose(1, 2)
        return h.clone()[None]  # out of the workspace, which the next call overwrites

    def _workspace(self, name: str, numel: int) -> Any:
        """A reused buffer (of :attr:`dtype`) of at least ``numel`` elements (per thread).

        Fresh multi-MB tensors per layer and utterance cost page faults (measured: a third of
        the copies' and GELU's time in the pipeline); the buffers grow to the longest
        utterance seen and stay.
        """
        import torch

        ws = self._local.__dict__
        buf = ws.get(name)
        if buf is None or buf.numel() < numel:
            buf = ws[name] = torch.empty(int(numel * 1.25) + 1, dtype=self.dtype)
        return buf[:numel]

    def _matmul(self, a: Any, w: Any, b: Any) -> Any:
        """``a @ w (+ b)`` in row chunks of bounded shapes; ``a`` (rows, K) may be strided."""
        import torch

        rows, depth = a.shape
        padded = -(-rows // ROW_BUCKET) * ROW_BUCKET
        cols = self._workspace("cols", padded * depth).view(padded, depth)
        cols[:rows].copy_(a)
        cols[rows:].zero_()
        out = self._workspace("out", padded * w.shape[1]).view(padded, w.shape[1])
        for i in range(0, padded, CHUNK_ROWS):
            j = min(i + CHUNK_ROWS, padded)
            if b is None:
                torch.mm(cols[i:j], w, out=out[i:j])
            else:
                torch.addmm(b, cols[i:j], w, out=out[i:j])
        return out[:rows]

    @staticmethod
    def _folded(windows: Any, spec: dict) -> tuple[Any, Any]:
        """Weights and bias of conv + GroupNorm(one group per channel) for these windows."""
        import torch

        norm = spec["norm"]
        x = windows.double()
        n = x.shape[0]
        mean = x.mean(0)
        cov = x.T @ x / n - torch.outer(mean, mean)
        w64 = spec["w64"]
        mu = mean @ w64 + (0.0 if spec["b64"] is None else spec["b64"])
        var = ((cov @ w64) * w64).sum(0).clamp_min(0.0)
        scale = norm.weight.detach().double() / torch.sqrt(var + norm.eps)
        bias = norm.bias.detach().double() - mu * scale
        if spec["b64"] is not None:
            bias = bias + spec["b64"] * scale
        return (w64 * scale).to(spec["w"].dtype), bias.to(spec["w"].dtype)

    @staticmethod
    def _normalise(h: Any, norm: Any) -> Any:
        import torch
        import torch.nn.functional as F

        if isinstance(norm, torch.nn.LayerNorm):  # over channels: the last axis here
            return F.layer_norm(h, norm.normalized_shape, norm.weight.to(h.dtype), norm.bias.to(h.dtype), norm.eps)
        hf = h.float()  # GroupNorm, one group per channel: statistics over time
        mean = hf.mean(0)
        var = hf.square().mean(0) - mean * mean
        scale = norm.weight.detach().float() * torch.rsqrt(var.clamp_min(0.0) + norm.eps)
        return torch.addcmul(norm.bias.detach().float() - mean * scale, hf, scale).to(h.dtype)


def _activate(act: Any, h: Any) -> Any:
    """The layer's activation; transformers' GELU in place (no fresh output per layer)."""
    import torch

    if getattr(act, "act", None) is torch.nn.functional.gelu:  # transformers.activations.GELUActivation
        return torch.ops.aten.gelu_(h)
    return act(h)
