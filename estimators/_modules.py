"""Torch ``nn.Module`` heads trained by the estimators.

All heads take a :class:`estimators._batch.Batch` (packed frames, no padding) and return
raw outputs of shape ``(batch_size, n_outputs)`` (logits or standardised regression
values). A module is fully described by a JSON-able config dict (``module_config_`` of a
fitted estimator) and rebuilt with :func:`build_module`; this is what persistence relies on.

* :class:`LayerMix` -- trainable weighted average of layers (Pepino et al. 2021, eq. 1).
* :class:`FrameNet` -- per-stream layer mix + per-frame dense branch, concatenation,
  per-frame dense trunk, optional LSTM, pooling over time, linear output. Dense, LSTM and
  Fusion models are configurations of it.
* :class:`CNNNet` -- Dholariya et al.: 2-D CNN over a (max_frames x dim) map.
* ``kind="ecapa"`` -- :class:`estimators._ecapa.ECAPANet` (ECAPA-TDNN);
  ``kind="late"`` -- :class:`estimators._fusion.LateFusionNet` (one head per stream).

Every module has ``mixers``: the :class:`LayerMix` of every input stream, in stream order.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._batch import Batch, StreamSlice
from ._fused import DenseStack, FastDropout
from ._ops import mix_frames, segment_pool
from ._pooling import AttentivePool
from .errors import EstimatorsError, InputError

__all__ = ["LayerMix", "FastDropout", "FrameNet", "CNNNet", "build_module", "check_outputs", "module_device", "pad_frames"]


class LayerMix(nn.Module):
    """Combine the layers of a stream.

    Parameters
    ----------
    n_layers : int
        Layers of the stream.
    weighting : {"sum", "softmax"} or None
        ``"sum"``: weights ``alpha`` initialised to 1.0, ``f = sum(alpha_l f_l) / sum(alpha)``
        (Pepino et al.); ``"softmax"``: weights initialised to 0, ``f = sum(softmax(alpha)_l
        f_l)`` (s3prl). Ignored for one layer. None is only allowed for one layer.
    """

    def __init__(self, n_layers: int, weighting: str | None) -> None:
        super().__init__()
        self.n_layers = int(n_layers)
        self.weighting = weighting if self.n_layers > 1 else None
        if self.n_layers > 1:
            if weighting == "sum":
                self.alpha = nn.Parameter(torch.ones(self.n_layers))
            elif weighting == "softmax":
                self.alpha = nn.Parameter(torch.zeros(self.n_layers))
            else:
                raise ValueError(f"{n_layers} layers need layer weighting 'sum' or 'softmax'; got {weighting!r}")

    def normalized_weights(self) -> torch.Tensor | None:
        """The weights applied to the layers, shape (n_layers,), or None for one layer."""
        if self.weighting is None:
            return None
        if self.weighting == "sum":
            return self.alpha / self.alpha.sum()
        return torch.softmax(self.alpha, dim=0)

    def forward(self, sl: StreamSlice, device: torch.device) -> torch.Tensor:
        """Frames of the batch, shape (n_output_frames, dim), float32, on ``device``."""
        x = mix_frames(self.normalized_weights(), sl.source, sl.starts, sl.counts, device, sl.norm, sl.groups,
                       parts=sl.parts)
        if sl.ratio > 1:
            x = x.new_zeros(len(sl.out_counts), x.shape[1]).index_add_(0, sl.raw_to_out, x)
            x = x / sl.out_counts.unsqueeze(1)
        if sl.broadcast is not None:  # one vector per utterance, repeated over its frames
            x = x[sl.broadcast]
        return x


def _mlp(in_dim: int, sizes: tuple[int, ...] | list[int], dropout: float) -> tuple[nn.Sequential, int]:
    stack = DenseStack(in_dim, sizes, dropout)
    return stack, stack.out_features


def check_outputs(out: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Raise when outputs are not finite: InputError if the batch's frames hold NaN/inf.

    Checking the (batch_size, n_outputs) outputs is free; NaN/inf frames always reach them
    (through the weighted average, dense layers and pooling), and the frames are only
    scanned to tell bad input from a diverged model.
    """
    if bool(torch.isfinite(out.detach()).all()):
        return out
    bad = []
    for k, sl in enumerate(batch.streams):
        for i in range(len(sl.starts)):
            if not bool(torch.isfinite(sl.rows(i)).all()):
                bad.append((k, batch.ids[i] if batch.ids is not None else int(batch.index[i])))
    if bad:
        shown = ", ".join(f"{u!r} (stream {k})" for k, u in bad[:5])
        raise InputError(f"Input X contains NaN or infinity: utterance(s) {shown}{' ...' if len(bad) > 5 else ''}")
    raise EstimatorsError(
        "the model produced non-finite outputs on finite input (training diverged? try a "
        "lower lr)"
    )


def module_device(module: nn.Module) -> torch.device:
    """Where the parameters (else the buffers) of ``module`` are; CPU when it has none."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _positions(batch: Batch) -> torch.Tensor:
    """Position of every packed frame inside its utterance, shape (total_frames,)."""
    return torch.arange(len(batch.seg_ids), device=batch.seg_ids.device) - batch.offsets[batch.seg_ids]


def pad_frames(x: torch.Tensor, batch: Batch, n_steps: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed frames (F, H) -> zero-padded (B, n_steps, H), and the flat positions used.

    ``left=True`` puts the padding before the frames (each utterance ends at step
    ``n_steps - 1``) instead of after them.
    """
    pos = batch.seg_ids * n_steps + _positions(batch)
    if left:
        pos = pos + (n_steps - batch.lengths.to(pos.device))[batch.seg_ids]
    padded = x.new_zeros(len(batch) * n_steps, x.shape[1]).index_copy(0, pos, x)
    return padded.view(len(batch), n_steps, x.shape[1]), pos


class FrameNet(nn.Module):
    """Per-frame network with pooling over time (Dense, LSTM and Fusion heads).

    Parameters
    ----------
    streams : list of (n_layers, dim)
        Shape of the frames of every input stream.
    weighting : {"sum", "softmax"} or None
        Layer weighting of every multi-layer stream (see :class:`LayerMix`).
    branch_sizes : sequence of int
        Per-frame dense layers (ReLU, dropout) applied to every stream separately.
    trunk_sizes : sequence of int
        Per-frame dense layers after concatenating the branches.
    lstm_size : int or None
        Hidden size of an LSTM after the trunk (per direction).
    bidirectional : bool
    dropout : float
    pooling : {"mean", "max", "first", "last", "attentive"}
        ``"attentive"``: attentive statistics pooling (:class:`estimators._pooling.AttentivePool`
        with ``attention_size`` = the frame width), which doubles the pooled width.
    n_outputs : int or None
        None: no output layer; :meth:`forward` returns the pooled utterance embeddings of
        width ``out_width`` (a head of late fusion).
    """

    def __init__(
        self,
        streams: list[tuple[int, int]],
        weighting: str | None,
        branch_sizes: tuple[int, ...],
        trunk_sizes: tuple[int, ...],
        lstm_size: int | None,
        bidirectional: bool,
        dropout: float,
        pooling: str,
        n_outputs: int | None,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.mixers = nn.ModuleList([LayerMix(n_layers, weighting) for n_layers, _ in streams])
        branches, width = [], 0
        for _, dim in streams:
            mlp, out = _mlp(dim, branch_sizes, dropout)
            branches.append(mlp)
            width += out
        self.branches = nn.ModuleList(branches)
        self.trunk, width = _mlp(width, trunk_sizes, dropout)
        self.lstm: nn.LSTM | None = None
        if lstm_size:
            self.lstm = nn.LSTM(width, int(lstm_size), batch_first=True, bidirectional=bool(bidirectional))
            self.lstm_dropout = FastDropout(dropout)
            width = int(lstm_size) * (2 if bidirectional else 1)
        self.attention: AttentivePool | None = None
        if pooling == "attentive":
            self.attention = AttentivePool(width, width)
            width *= 2
        self.out_width = width
        self.output = None if n_outputs is None else nn.Linear(width, int(n_outputs))

    def _run_lstm(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """LSTM outputs at every real frame, (F, H) -> (F, lstm_size * directions).

        Runs on zero-padded batches rather than ``PackedSequence`` (about 10x faster on a
        CPU; not measured on a GPU, where a bidirectional LSTM pays for its second pass).
        The result is exact: the forward direction sees the padding
        only after an utterance's last frame (padding on the right), and the backward
        direction, in a second pass, only before its first frame (padding on the left).
        """
        lstm = self.lstm
        n_steps = int(batch.lengths.max())
        padded, pos = pad_frames(h, batch, n_steps)
        out, _ = lstm(padded)
        out = out.reshape(len(batch) * n_steps, -1)[pos]
        if not lstm.bidirectional:
            return out
        size = lstm.hidden_size
        padded, pos_left = pad_frames(h, batch, n_steps, left=True)
        back, _ = lstm(padded)
        back = back.reshape(len(batch) * n_steps, -1)[pos_left]
        return torch.cat([out[:, :size], back[:, size:]], dim=1)

    def _pool(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Trunk outputs (F, H) -> (LSTM, then) pooled utterances (batch_size, out_width)."""
        if self.lstm is not None:
            h = self.lstm_dropout(self._run_lstm(h, batch))
        if self.attention is not None:
            return self.attention(h, batch.seg_ids, len(batch))
        return segment_pool(h, batch.seg_ids, batch.offsets, batch.lengths, self.pooling)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Outputs of shape (batch_size, n_outputs) (embeddings (batch_size, out_width) without output layer)."""
        device = module_device(self)
        hs = []
        for mixer, branch, sl in zip(self.mixers, self.branches, batch.streams):
            hs.append(branch(mixer(sl, device)))
        h = hs[0] if len(hs) == 1 else torch.cat(hs, dim=1)
        pooled = self._pool(self.trunk(h), batch)
        if self.output is None:
            return pooled
        return check_outputs(self.output(pooled), batch)


class CNNNet(nn.Module):
    """2-D CNN over a (max_frames x dim) map (Dholariya et al.).

    ``n_blocks`` x [Conv2d(n_filters, kernel_size, same padding), BatchNorm2d, ReLU,
    MaxPool2d(2, 2), Dropout], flatten, Linear(dense_size), Dropout, BatchNorm1d, ReLU,
    Linear(n_outputs). Utterances are zero-padded / cropped to ``max_frames`` frames. Max
    pooling uses ``ceil_mode=True`` so that maps smaller than 2**n_blocks keep one cell.

    Parameters
    ----------
    streams : list of one (n_layers, dim)
    weighting : {"sum", "softmax"} or None
    max_frames : int
    n_filters : int
    kernel_size : (int, int)
        (frames, features).
    n_blocks : int
    dense_size : int
    dropout : float
    n_outputs : int
    """

    def __init__(
        self,
        streams: list[tuple[int, int]],
        weighting: str | None,
        max_frames: int,
        n_filters: int,
        kernel_size: tuple[int, int],
        n_blocks: int,
        dense_size: int,
        dropout: float,
        n_outputs: int,
    ) -> None:
        super().__init__()
        if len(streams) != 1:
            raise ValueError("CNNNet takes one stream")
        n_layers, dim = streams[0]
        self.max_frames = int(max_frames)
        self.mixers = nn.ModuleList([LayerMix(n_layers, weighting)])
        blocks: list[nn.Module] = []
        channels, t, d = 1, self.max_frames, int(dim)
        for _ in range(int(n_blocks)):
            kh, kw = (int(k) for k in kernel_size)
            blocks += [
                # "same" padding, the extra row/column of even kernels at the end (as Keras)
                nn.ZeroPad2d(((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)),
                nn.Conv2d(channels, int(n_filters), (kh, kw)),
                nn.BatchNorm2d(int(n_filters)),
                nn.ReLU(),
                nn.MaxPool2d(2, 2, ceil_mode=True),
                FastDropout(dropout),
            ]
            channels, t, d = int(n_filters), math.ceil(t / 2), math.ceil(d / 2)
        self.blocks = nn.Sequential(*blocks)
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * t * d, int(dense_size)),
            FastDropout(dropout),
            nn.BatchNorm1d(int(dense_size)),
            nn.ReLU(),
        )
        self.output = nn.Linear(int(dense_size), int(n_outputs))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Outputs of shape (batch_size, n_outputs)."""
        device = self.output.weight.device
        x = self.mixers[0](batch.streams[0], device)
        padded, _ = pad_frames(x, batch, self.max_frames)
        return check_outputs(self.output(self.dense(self.blocks(padded.unsqueeze(1)))), batch)


def build_module(config: dict[str, Any]) -> nn.Module:
    """Build the (untrained) module described by a ``module_config_`` dict."""
    cfg = dict(config)
    kind = cfg.pop("kind")
    streams = [tuple(int(v) for v in s) for s in cfg.pop("streams")]
    if kind == "frame":
        return FrameNet(
            streams,
            cfg["weighting"],
            tuple(cfg["branch_sizes"]),
            tuple(cfg["trunk_sizes"]),
            cfg["lstm_size"],
            cfg["bidirectional"],
            cfg["dropout"],
            cfg["pooling"],
            cfg["n_outputs"],
        )
    if kind == "cnn":
        return CNNNet(
            streams,
            cfg["weighting"],
            cfg["max_frames"],
            cfg["n_filters"],
            tuple(cfg["kernel_size"]),
            cfg["n_blocks"],
            cfg["dense_size"],
            cfg["dropout"],
            cfg["n_outputs"],
        )
    if kind == "ecapa":
        from ._ecapa import ECAPANet  # imports this module

        return ECAPANet(
            streams,
            cfg["weighting"],
            cfg["channels"],
            cfg["scale"],
            cfg["embedding_size"],
            cfg["bottleneck"],
            cfg["dropout"],
            cfg["n_outputs"],
        )
    if kind == "late":
        from ._fusion import LateFusionNet

        heads = cfg["heads"]
        if len(heads) != len(streams) or any([tuple(int(v) for v in s) for s in h["streams"]] != [st] for h, st in zip(heads, streams)):
            raise ValueError("a late-fusion module needs one head per stream, each on its stream")
        return LateFusionNet([build_module(h) for h in heads], cfg["n_outputs"])
    raise ValueError(f"unknown module kind {kind!r}")
