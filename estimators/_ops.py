"""Low-level torch operations on packed frames (no padding anywhere).

The expensive step of an all-layers model is reading the frames: a batch of 32 utterances
x ~185 frames x 13 layers x 768 dims is ~120 MB of float16. :func:`mix_frames` computes
the layer-weighted average ``f = sum_l w_l x_l`` straight from the (float16 or float32)
stored array, in chunks of at most :data:`CHUNK_FRAMES` frames (consecutive utterances together):
un-normalised float16/32 frames are added layer by layer into the float32 output (converted on
the fly), normalised ones converted and normalised first in one reused buffer (converting a whole
batch into fresh tensors is several times slower on CPU because of page faults). The backward
pass re-reads the chunks to get
``dL/dw_l = sum_{frames, d} x[f, l, d] * g[f, d]``; nothing of the size of the input is
kept between forward and backward.

Lazy normalisation (``Stream.norm_shift/norm_scale/norm_group``, see
:mod:`featcache.packed`) is applied to every chunk after conversion by
:func:`featcache.packed.apply_normalization` (``x' = (x - shift[g]) * inv[g]``, the same
function and float32 terms as :meth:`featcache.packed.Stream.gather`); see
:class:`_MixLayersCPU` for the two memory layouts and their backward passes.

On CUDA devices the frames are gathered on the host, moved, converted and normalised on
the device and combined with plain differentiable torch operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from featcache.packed import apply_normalization, normalization_terms

from ._mapped_mix import mix_mapped
from ._scratch import scratch

__all__ = ["CHUNK_FRAMES", "Norm", "mix_frames", "segment_pool"]

CHUNK_FRAMES = 512


@dataclass
class Norm:
    """Per-group normalisation of a stream, as float32 tensors of shape (n_groups, n_layers, dim).

    ``shift`` and ``inv`` are the terms of :func:`featcache.packed.apply_normalization`
    (``x' = (x - shift[g]) * inv[g]``); ``neg_shift_inv = -shift * inv`` is used by the
    backward pass only.
    """

    shift: torch.Tensor
    inv: torch.Tensor
    neg_shift_inv: torch.Tensor

    @classmethod
    def from_arrays(cls, shift: np.ndarray, scale: np.ndarray) -> "Norm":
        shift32, inv32 = normalization_terms(shift, scale, np.float32)
        shift64 = np.asarray(shift, dtype=np.float64)
        inv64 = 1.0 / np.asarray(scale, dtype=np.float64)
        return cls(
            torch.from_numpy(np.ascontiguousarray(shift32)),
            torch.from_numpy(np.ascontiguousarray(inv32)),
            torch.from_numpy((-shift64 * inv64).astype(np.float32)),
        )


def _chunks(starts: np.ndarray, counts: np.ndarray, parts: np.ndarray | None = None) -> list[tuple]:
    """Pieces ``(source, source row, output row, n_rows, segments)`` of at most CHUNK_FRAMES rows.

    A piece spans consecutive utterances whose rows follow each other in one source (the
    frames of a batch read into one buffer do); ``source`` is the utterances' entry of
    ``parts`` (0 without), ``segments`` their parts of the piece as ``(row in the piece,
    n_rows, utterance)``, for the per-utterance normalisation. Fewer, larger pieces: per
    264k frames, 128-row pieces took 1.25 s forward and 1.35 s backward, 512-row pieces 0.84
    and 0.85 s (a one-off timing, 2-core Xeon).
    """
    out: list[tuple] = []
    o = 0
    where = [0] * len(starts) if parts is None else parts.tolist()
    for b, (p, s, c) in enumerate(zip(where, starts.tolist(), counts.tolist())):
        k = 0
        while k < c:
            last = out[-1] if out else None
            if (last is not None and last[0] == p and last[1] + last[3] == s + k and last[2] + last[3] == o + k
                    and last[3] < CHUNK_FRAMES):
                take = min(CHUNK_FRAMES - last[3], c - k)
                last[4].append((last[3], take, b))
                out[-1] = (p, last[1], last[2], last[3] + take, last[4])
            else:
                take = min(CHUNK_FRAMES, c - k)
                out.append((p, s + k, o + k, take, [(0, take, b)]))
            k += take
        o += c
    return out


class _MixLayersCPU(torch.autograd.Function):
    """out[f] = sum_l w[l] * norm(source[row(f), l])  (CPU, chunked, float32 output).

    Mixing is :func:`_weighted_sum` for every chunk: straight from the stored frames when
    they are float16/32 and not normalised (:func:`_direct`), else from the chunk converted
    (and normalised) into a small reused float32 buffer. Two layouts of ``source`` (T, L, D):

    * frame-major (a C-contiguous array, frames given in memory): the backward pass uses
      ``sum_fd x' g = sum_d inv (sum_f x g) - sum_d (shift inv) (sum_f g)``;
    * layer-major (a transposed view of an ``(L, T, D)`` buffer: the batches of frames copied
      out of the shards, :class:`estimators._batch.BatchPlan`): the chunk is ``(L, rows * D)``
      and the weight gradient is a product with ``g`` and a sum per layer.

    ``sources`` is a one-tensor tuple here (``parts`` None); memory-mapped shards, one source
    per shard, go to :func:`estimators._mapped_mix.mix_mapped` instead.
    """

    @staticmethod
    def forward(ctx, weights, sources, parts, starts, counts, norm, groups):  # type: ignore[override]
        _, n_layers, dim = _shape(sources[0])
        out = torch.empty(int(counts.sum()), dim, dtype=torch.float32)
        pieces = _chunks(starts, counts, parts)
        wl = weights.detach().to(torch.float32).tolist()
        grp = None if norm is None else groups.tolist()
        buf = None
        major = _layer_major_source(sources[0])
        direct = _direct(sources[0], norm)
        with torch.autocast("cpu", enabled=False):
            for p, s, o, m, segs in pieces:
                source = sources[p]
                if direct:
                    x = _rows(source, s, m)  # the stored frames of every layer, read in place
                else:
                    if buf is None:
                        buf = scratch("mix", CHUNK_FRAMES * n_layers * dim, torch.float32)
                    if major:
                        x = _layer_major(source, s, m, buf, norm, grp, segs).view(n_layers, m, dim).unbind(0)
                    else:
                        x = _frame_major(source, s, m, buf, norm, grp, segs).unbind(1)
                _weighted_sum(out[o : o + m], x, wl)
        ctx.sources, ctx.pieces, ctx.norm, ctx.groups, ctx.major = sources, pieces, norm, grp, major
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_w = None
        if ctx.needs_input_grad[0]:
            g = grad_out.to(torch.float32).contiguous()
            with torch.autocast("cpu", enabled=False):
                grad_w = (_grad_layer_major if ctx.major else _grad_frame_major)(ctx, g)
        ctx.sources = ctx.norm = None
        return grad_w, None, None, None, None, None, None


def _shape(source) -> tuple[int, int, int]:
    """``(T, L, D)`` of a source: a (T, L, D) tensor or a tuple of L (T, D) layer tensors."""
    if isinstance(source, tuple):
        return source[0].shape[0], len(source), source[0].shape[1]
    return tuple(source.shape)


def _rows(source: torch.Tensor, s: int, m: int) -> list[torch.Tensor]:
    """Rows ``s:s+m`` of every layer of a (T, L, D) source, as (m, D) views."""
    x = source[s : s + m]
    return [x[:, layer] for layer in range(x.shape[1])]


def _direct(source: torch.Tensor, norm: Norm | None) -> bool:
    """Whether the stored frames enter the sums as they are (float16/32, no normalisation):
    an in-place float32 add converts each float16 value on the fly."""
    return norm is None and source.dtype in (torch.float16, torch.float32)


def _weighted_sum(dst: torch.Tensor, layers, wl: list[float]) -> None:
    """``dst = sum_l wl[l] * layers[l]`` (dst float32 (m, D); every layer (m, D) float16/32, any strides).

    Elementwise adds, not a BLAS product: on a 2-core EPYC a (1 x L) @ (L x m*D) sgemm after
    each chunk's conversion ran single-threaded and made the next conversion ~4x slower
    (0.23 -> 0.9 ms per 512-frame chunk of 13 x 768; measured 2026-12-04); the adds read the
    frames once, in float32, in the order of the layers.
    """
    dst.zero_()
    for x, wk in zip(layers, wl):
        dst.add_(x, alpha=wk)


def _layer_major_source(source: torch.Tensor) -> bool:
    """True for a (T, L, D) view of an (L, T, D) buffer (layers outermost in memory)."""
    st = source.stride()
    return source.shape[1] > 1 and st[2] == 1 and st[0] == source.shape[2] and st[1] >= source.shape[0] * source.shape[2]


def _frame_major(source, s, m, buf, norm, grp, segs) -> torch.Tensor:
    """Rows ``s:s+m`` of a frame-major source as float32 (m, L, D), each utterance normalised."""
    x = source[s : s + m]
    if source.dtype == torch.float32 and norm is None:
        return x
    t = buf[: x.numel()].view(x.shape)
    t.copy_(x)
    if norm is not None:
        for r, c, b in segs:
            apply_normalization(t[r : r + c], norm.shift[grp[b]], norm.inv[grp[b]])
    return t


def _layer_major(source, s, m, buf, norm, grp, segs) -> torch.Tensor:
    """Rows ``s:s+m`` of a layer-major source as float32 (L, m * D), each utterance normalised."""
    _, n_layers, dim = _shape(source)
    x = source[s : s + m].permute(1, 0, 2)
    if source.dtype == torch.float32 and norm is None:
        return x.reshape(n_layers, m * dim)  # a view: rows of one layer are contiguous
    t = buf[: n_layers * m * dim].view(n_layers, m, dim)
    t.copy_(x)
    if norm is not None:
        for r, c, b in segs:
            apply_normalization(t[:, r : r + c], norm.shift[grp[b]].unsqueeze(1), norm.inv[grp[b]].unsqueeze(1))
    return t.view(n_layers, m * dim)


def _grad_layer_major(ctx, g: torch.Tensor) -> torch.Tensor:
    """``dL/dw_l = sum_{f, d} x'[f, l, d] g[f, d]``: per chunk an elementwise product into one
    float32 buffer (float16 frames converted on the fly) and a sum per layer (no BLAS gemv: see
    :func:`_weighted_sum`)."""
    _, n_layers, dim = _shape(ctx.sources[0])
    buf = scratch("mix", CHUNK_FRAMES * n_layers * dim, torch.float32)
    part = torch.empty(n_layers, dtype=torch.float32)
    acc = torch.zeros(n_layers, dtype=torch.float64)
    direct = _direct(ctx.sources[0], ctx.norm)
    for p, s, o, m, segs in ctx.pieces:
        source = ctx.sources[p]
        gm = g[o : o + m]
        t = buf[: n_layers * m * dim].view(n_layers, m * dim)
        if direct:
            x = source[s : s + m].permute(1, 0, 2).reshape(n_layers, -1)  # a view: layer rows are contiguous
        else:
            x = _layer_major(source, s, m, buf, ctx.norm, ctx.groups, segs)
        torch.mul(x, gm.reshape(1, -1), out=t)
        torch.sum(t, dim=1, out=part)
        acc += part
    return acc.to(torch.float32)


def _grad_frame_major(ctx, g: torch.Tensor) -> torch.Tensor:
    norm, grp = ctx.norm, ctx.groups
    _, n_layers, dim = _shape(ctx.sources[0])
    tmp = scratch("mix", CHUNK_FRAMES * n_layers * dim, torch.float32)
    part = torch.empty(n_layers, dim, dtype=torch.float32)
    acc = torch.zeros(n_layers, dim, dtype=torch.float64)
    for p, s, o, m, segs in ctx.pieces:
        t = tmp[: m * n_layers * dim].view(m, n_layers, dim)
        x = ctx.sources[p][s : s + m]
        if x.dtype == torch.float64:
            x = x.to(torch.float32)
        gc = g[o : o + m]
        torch.mul(x, gc.unsqueeze(1), out=t)
        # reducing over the leading axis streams; sum((0, 2)) is much slower
        if norm is None:
            torch.sum(t, dim=0, out=part)
            acc += part
            continue
        for r, c, b in segs:  # each utterance with its own normalisation terms
            torch.sum(t[r : r + c], dim=0, out=part)
            k = grp[b]
            acc += part * norm.inv[k] + gc[r : r + c].sum(0) * norm.neg_shift_inv[k]
    return acc.sum(dim=1).to(torch.float32)


def _gather_rows(sources: tuple[torch.Tensor, ...], parts: np.ndarray | None, starts: np.ndarray,
                 counts: np.ndarray) -> torch.Tensor:
    """Rows of the sources (see :func:`_shape`) for the segments, concatenated: (sum counts, L, D)."""
    if parts is not None:  # one source per shard
        return torch.cat([_part_rows(sources[int(p)], int(s), int(c)) for p, s, c in zip(parts, starts, counts)])
    source = sources[0]
    if len(starts) == 1:
        s = int(starts[0])
        return source[s : s + int(counts[0])]
    rows = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(
        int(counts.sum())
    )
    return source[torch.from_numpy(rows)]


def _part_rows(source, s: int, c: int) -> torch.Tensor:
    """Rows ``s:s+c`` of one source as one (c, L, D) tensor (a view, or a copy of mapped layers)."""
    if isinstance(source, tuple):
        return torch.stack([layer[s : s + c] for layer in source], dim=1)
    return source[s : s + c]


def _normalize(x: torch.Tensor, norm: Norm, groups: np.ndarray, counts: np.ndarray) -> torch.Tensor:
    """Normalise gathered frames x (F, L, D) float32 (any device); ``x`` must be a copy."""
    frame_groups = torch.from_numpy(np.repeat(groups, counts)).to(x.device)
    shift = norm.shift.to(x.device)[frame_groups]
    inv = norm.inv.to(x.device)[frame_groups]
    return apply_normalization(x, shift, inv)


def mix_frames(
    weights: torch.Tensor | None,
    source: torch.Tensor | tuple[torch.Tensor, ...],
    starts: np.ndarray,
    counts: np.ndarray,
    device: torch.device,
    norm: Norm | None = None,
    groups: np.ndarray | None = None,
    chunked: bool | None = None,
    parts: np.ndarray | None = None,
) -> torch.Tensor:
    """Combine the (normalised) layers of the selected frames.

    Parameters
    ----------
    weights : Tensor of shape (n_layers,) or None
        Normalised layer weights (None: ``source`` must have one layer, which is taken).
    source : Tensor of shape (total_frames, n_layers, dim), or a tuple of sources
        The whole stored stream (CPU, float16/32/64), shared with the numpy array; or, with
        ``parts``, one source per shard: a tuple of its ``n_layers`` memory-mapped layers of
        shape (frames, dim) (:class:`estimators._batch.BatchPlan`).
    starts, counts : ndarray of shape (n_utterances,)
        First row and number of rows of every utterance of the batch (rows of its shard
        with ``parts``).
    device : torch.device
        Where the result goes.
    norm : Norm or None
        Lazy normalisation of the stream.
    groups : ndarray of shape (n_utterances,) or None
        Normalisation group of every utterance (with ``norm``).
    chunked : bool or None
        Use the chunked CPU kernel (None: on CPU); False gathers the frames and uses
        plain torch operations (what CUDA devices do).
    parts : ndarray of shape (n_utterances,) or None
        With a tuple ``source``: the tensor (shard) of every utterance.

    Returns
    -------
    Tensor of shape (sum(counts), dim), float32, on ``device``
        Differentiable with respect to ``weights``.
    """
    sources = tuple(source) if isinstance(source, (tuple, list)) else (source,)
    if len(sources) > 1 and parts is None:
        raise ValueError("mix_frames over several sources needs parts (the source of every utterance)")
    if chunked is None:
        chunked = device.type == "cpu"
    if weights is not None and chunked:
        if parts is not None and isinstance(sources[0], tuple):  # memory-mapped shards
            return mix_mapped(weights, sources, parts, starts, counts, norm, groups)
        return _MixLayersCPU.apply(weights, sources, parts, starts, counts, norm, groups)
    if weights is None and _shape(sources[0])[1] != 1:
        raise ValueError("mix_frames without weights needs a single-layer source")
    x = _gather_rows(sources, parts, starts, counts)
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device=device, non_blocking=True).to(torch.float32)
    if norm is not None:
        if any(isinstance(s, torch.Tensor) and x.untyped_storage().data_ptr() == s.untyped_storage().data_ptr()
               for s in sources):
            x = x.clone()  # a view of the stored frames (float32 on the CPU): normalise a copy
        x = _normalize(x, norm, groups, counts)
    if weights is None:
        return x[:, 0]
    return torch.matmul(weights.to(torch.float32), x)


def segment_pool(
    h: torch.Tensor,
    seg_ids: torch.Tensor,
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Pool packed frames per utterance.

    Parameters
    ----------
    h : Tensor of shape (total_frames, n_features)
    seg_ids : Tensor of shape (total_frames,)
        Utterance (0..n_utterances-1) of every frame, non-decreasing.
    offsets : Tensor of shape (n_utterances + 1,)
        First frame of every utterance, then ``total_frames``.
    lengths : Tensor of shape (n_utterances,)
    mode : {"mean", "max", "first", "last"}

    Returns
    -------
    Tensor of shape (n_utterances, n_features)
    """
    n = len(lengths)
    if mode == "mean":
        out = h.new_zeros(n, h.shape[1]).index_add_(0, seg_ids, h)
        return out / lengths.to(h.dtype).unsqueeze(1)
    if mode == "max":
        idx = seg_ids.unsqueeze(1).expand(-1, h.shape[1])
        return h.new_zeros(n, h.shape[1]).scatter_reduce(0, idx, h, reduce="amax", include_self=False)
    if mode == "first":
        return h[offsets[:-1]]
    if mode == "last":
        return h[offsets[1:] - 1]
    raise ValueError(f"unknown pooling {mode!r}")
