"""ECAPA-TDNN (Desplanques, Thienpondt & Demuynck, Interspeech 2020) over packed batches.

Layers (``C`` = ``channels``, ``s`` = ``scale``, ``B`` = ``bottleneck``):

1. the input frames (the trainable weighted average of the layers of every stream,
   :class:`estimators._modules.LayerMix`; several streams are concatenated per frame:
   early fusion), then Conv1D(C, kernel 5) + ReLU + BN;
2. three SE-Res2Blocks with dilations 2, 3 and 4: Conv1D(C, 1) + ReLU + BN, a Res2Net
   convolution (``s`` groups of ``C / s`` channels, kernel 3, hierarchical residual
   connections), Conv1D(C, 1) + ReLU + BN, squeeze-excitation (bottleneck ``B``), residual
   connection;
3. multi-layer feature aggregation: the outputs of the three blocks concatenated, then
   Conv1D(3C, 1) + ReLU + BN;
4. channel- and context-dependent attentive statistics pooling: every frame is scored per
   channel from ``[h_t, mean(h), std(h)]`` (the utterance's global context) by
   Conv1D(B, 1) + ReLU + BN, tanh, Conv1D(3C, 1); softmax over the frames, weighted mean
   and standard deviation (width 6C), BN;
5. a linear embedding (``embedding_size``) + BN, dropout, the linear classifier / regressor.

The paper's speaker-verification setting is ``C = 512`` (or 1024), ``s = 8``, ``B = 128``,
``embedding_size = 192``.

Convolution over time needs padded batches: the packed frames are scattered into a
zero-padded ``(batch, features, max_frames)`` tensor with a mask of the real frames. The
padding never counts: every batch normalisation takes its statistics over real frames only
(:class:`MaskedBatchNorm1d`), every layer's output is zeroed again on the padding, and the
squeeze-excitation means, the global context and the attention softmax run over real frames
only. So in evaluation mode an utterance's output does not depend on the other utterances
of its batch. As in any zero-padded convolution, the first and last frames of an utterance
see zeros beyond its ends (the same zeros whatever the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._batch import Batch
from ._modules import FastDropout, LayerMix, check_outputs, module_device, pad_frames
from ._pooling import STD_EPS

__all__ = ["DILATIONS", "MaskedBatchNorm1d", "ECAPANet", "default_bottleneck"]

#: Dilations of the three SE-Res2Blocks.
DILATIONS = (2, 3, 4)


def default_bottleneck(channels: int) -> int:
    """Bottleneck of the SE blocks and of the attention: ``C / 4`` within [8, 128] (128 for C=512)."""
    return int(min(128, max(8, int(channels) // 4)))


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over ``(batch, channels, time)`` whose statistics use real frames only.

    Training mode normalises with the mean and (biased) variance over the frames where
    ``mask`` is 1 and updates the running statistics as :class:`torch.nn.BatchNorm1d` does
    (unbiased variance, ``momentum``); evaluation mode uses the running statistics. The
    output is zero on the padding. Same parameters and buffers as ``BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor, n_frames: int) -> torch.Tensor:  # type: ignore[override]
        m = mask.to(torch.float32)
        if not self.training:
            y = F.batch_norm(x.float(), self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
            return (y * m).to(x.dtype)
        xf = x.float()
        mean = (xf * m).sum((0, 2)) / n_frames
        centred = (xf - mean[None, :, None]) * m
        var = (centred * centred).sum((0, 2)) / n_frames
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            mom = 0.1 if self.momentum is None else float(self.momentum)
            unbiased = var * (n_frames / max(n_frames - 1, 1))
            self.running_mean.mul_(1 - mom).add_(mom * mean)
            self.running_var.mul_(1 - mom).add_(mom * unbiased)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None]
        y = y * self.weight[None, :, None] + self.bias[None, :, None]
        return (y * m).to(x.dtype)


class _Masked:
    """What every block gets with its input: the mask (B, 1, T), real frames per utterance (B, 1, 1), their total."""

    def __init__(self, lengths: torch.Tensor, n_steps: int) -> None:
        steps = torch.arange(n_steps, device=lengths.device)
        self.mask = (steps[None, :] < lengths[:, None]).unsqueeze(1).to(torch.float32)
        self.counts = lengths.to(torch.float32).view(-1, 1, 1)
        self.n_frames = int(lengths.sum())

    def mean_std(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-utterance mean and std over real frames, (B, C, 1) each, float32."""
        hf = h.float()
        mean = (hf * self.mask).sum(2, keepdim=True) / self.counts
        dev = (hf - mean) * self.mask
        var = (dev * dev).sum(2, keepdim=True) / self.counts
        return mean, torch.sqrt(var.clamp(min=STD_EPS))


class ConvBlock(nn.Module):
    """Conv1D ("same" padding) + ReLU + masked BN (a TDNN layer)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.bn = MaskedBatchNorm1d(c_out)

    def forward(self, x: torch.Tensor, m: _Masked) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)), m.mask, m.n_frames)


class Res2Conv(nn.Module):
    """Res2Net convolution: ``scale`` groups, ``y_1 = x_1``, ``y_i = K_i(x_i + y_{i-1})``."""

    def __init__(self, channels: int, scale: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.scale = int(scale)
        width = int(channels) // self.scale if self.scale > 1 else int(channels)
        self.convs = nn.ModuleList([ConvBlock(width, width, kernel, dilation) for _ in range(max(self.scale - 1, 1))])

    def forward(self, x: torch.Tensor, m: _Masked) -> torch.Tensor:
        if self.scale == 1:
            return self.convs[0](x, m)
        parts = torch.chunk(x, self.scale, dim=1)
        out, y = [parts[0]], None
        for conv, part in zip(self.convs, parts[1:]):
            y = conv(part if y is None else part + y, m)
            out.append(y)
        return torch.cat(out, dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation: channel gates from the mean over real frames."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv1d(channels, bottleneck, 1)
        self.excite = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x: torch.Tensor, m: _Masked) -> torch.Tensor:
        s = (x * m.mask.to(x.dtype)).sum(2, keepdim=True) / m.counts.to(x.dtype)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(s))))


class SERes2Block(nn.Module):
    """Conv1D(1) -> Res2Net conv (kernel 3, ``dilation``) -> Conv1D(1) -> SE, plus the input."""

    def __init__(self, channels: int, scale: int, dilation: int, bottleneck: int) -> None:
        super().__init__()
        self.tdnn1 = ConvBlock(channels, channels, 1)
        self.res2 = Res2Conv(channels, scale, 3, dilation)
        self.tdnn2 = ConvBlock(channels, channels, 1)
        self.se = SEBlock(channels, bottleneck)

    def forward(self, x: torch.Tensor, m: _Masked) -> torch.Tensor:
        return self.se(self.tdnn2(self.res2(self.tdnn1(x, m), m), m), m) + x


class ContextAttentivePool(nn.Module):
    """Channel- and context-dependent attentive statistics pooling (ECAPA-TDNN, section 3.3)."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.tdnn = ConvBlock(3 * channels, bottleneck, 1)
        self.score = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, h: torch.Tensor, m: _Masked) -> torch.Tensor:
        """(B, C, T) -> (B, 2C) float32: attention-weighted mean and std per channel."""
        mean, std = m.mean_std(h)
        steps = h.shape[2]
        context = torch.cat([h.float(), mean.expand(-1, -1, steps), std.expand(-1, -1, steps)], dim=1) * m.mask
        scores = self.score(torch.tanh(self.tdnn(context.to(h.dtype), m))).float()
        w = torch.softmax(scores.masked_fill(m.mask == 0, float("-inf")), dim=2)
        hf = h.float()
        mu = (w * hf).sum(2)
        dev = hf - mu.unsqueeze(2)
        sigma = torch.sqrt((w * dev * dev).sum(2).clamp(min=STD_EPS))
        return torch.cat([mu, sigma], dim=1)


class ECAPANet(nn.Module):
    """ECAPA-TDNN head (see the module docstring).

    Parameters
    ----------
    streams : list of (n_layers, dim)
        Input streams; their (layer-averaged) frames are concatenated (early fusion).
    weighting : {"sum", "softmax"} or None
        Layer weighting of every multi-layer stream.
    channels : int
        ``C``, the width of the convolutional layers (divisible by ``scale``).
    scale : int
        Res2Net groups.
    embedding_size : int
    bottleneck : int
        Hidden units of the squeeze-excitation blocks and of the attention.
    dropout : float
        Dropout on the embedding, before the output layer.
    n_outputs : int or None
        None: no output layer; :meth:`forward` returns the embeddings (late fusion).
    """

    def __init__(
        self,
        streams: list[tuple[int, int]],
        weighting: str | None,
        channels: int,
        scale: int,
        embedding_size: int,
        bottleneck: int,
        dropout: float,
        n_outputs: int | None,
    ) -> None:
        super().__init__()
        c, b = int(channels), int(bottleneck)
        if scale < 1 or c % int(scale):
            raise ValueError(f"channels ({c}) must be a multiple of scale ({scale})")
        self.mixers = nn.ModuleList([LayerMix(n_layers, weighting) for n_layers, _ in streams])
        self.layer1 = ConvBlock(sum(int(d) for _, d in streams), c, 5)
        self.blocks = nn.ModuleList([SERes2Block(c, int(scale), d, b) for d in DILATIONS])
        self.mfa = ConvBlock(3 * c, 3 * c, 1)
        self.pool = ContextAttentivePool(3 * c, b)
        self.pool_bn = nn.BatchNorm1d(6 * c)
        self.embedding = nn.Linear(6 * c, int(embedding_size))
        self.embedding_bn = nn.BatchNorm1d(int(embedding_size))
        self.dropout = FastDropout(dropout)
        self.out_width = int(embedding_size)
        self.output = None if n_outputs is None else nn.Linear(int(embedding_size), int(n_outputs))

    def embed(self, batch: Batch) -> torch.Tensor:
        """Utterance embeddings of shape (batch_size, embedding_size)."""
        device = module_device(self)
        xs = [mixer(sl, device) for mixer, sl in zip(self.mixers, batch.streams)]
        x = xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)
        n_steps = int(batch.lengths.max())
        padded, _ = pad_frames(x, batch, n_steps)
        m = _Masked(batch.lengths.to(device), n_steps)
        h = self.layer1(padded.transpose(1, 2), m)
        outs = []
        for block in self.blocks:
            h = block(h, m)
            outs.append(h)
        h = self.mfa(torch.cat(outs, dim=1), m)
        return self.embedding_bn(self.embedding(self.pool_bn(self.pool(h, m))))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Outputs of shape (batch_size, n_outputs); without an output layer the embeddings
        (batch_size, embedding_size) after dropout, as the output layer would see them."""
        e = self.dropout(self.embed(batch))
        if self.output is None:
            return e
        return check_outputs(self.output(e), batch)
