"""The layer mix read straight from memory-mapped shards (CPU; no copy of a batch).

A batch plan in the ``random`` access mode hands the mix one source per shard: a tuple of the
shard's ``L`` memory-mapped layers, each ``(frames, dim)`` (:class:`estimators._batch.BatchPlan`).
The utterances of a batch are scattered over the shards, so the rows are taken in pieces of
at most :data:`CHUNK_ROWS` rows of one shard: a piece of one utterance is read in place (a
slice of every layer), a piece of several is gathered layer by layer (``index_select``) into a
small reused buffer that stays in the CPU's caches, then added into the float32 output.

Nothing of the size of the batch is copied, and a piece spans several utterances, so a batch
takes a few times fewer torch operations than one piece per utterance would (each operation
wakes torch's threads: with per-utterance pieces a Dense all-layers epoch over RAVDESS took
3.6 s against 2.9 s for copied batches under ``OMP_WAIT_POLICY=PASSIVE``, with 4x the context
switches; gathered pieces took 2.3-2.7 s; 2-core EPYC, 2026-12-04). The backward pass gathers
the same pieces again for ``dL/dw_l = sum_{f, d} x[f, l, d] g[f, d]``.

Only un-normalised float16/float32 frames come here; normalised ones take the per-piece
path of :func:`estimators._ops.mix_frames`, which converts and normalises each utterance.
"""

from __future__ import annotations

import numpy as np
import torch

from ._scratch import scratch

__all__ = ["CHUNK_ROWS", "mix_mapped"]

#: rows per gathered piece: (1024 x 768) float16 + float32 buffers stay in a 32 MB L3 cache
CHUNK_ROWS = 1024


def _pieces(parts: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> list[tuple]:
    """``(shard, rows, out)`` pieces of at most CHUNK_ROWS rows of one shard.

    ``rows`` and ``out`` are ``(start, n)`` for a piece of one utterance (read as slices),
    else int64 tensors of the shard rows and output rows of the piece, in the same order.
    """
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out: list[tuple] = []
    for p in np.unique(parts).tolist():
        segs: list[tuple[int, int, int]] = []  # (shard row, output row, n) of the piece
        size = 0
        for b in np.flatnonzero(parts == p).tolist():
            s, o, c = int(starts[b]), int(offsets[b]), int(counts[b])
            while c:
                take = min(c, CHUNK_ROWS - size)
                segs.append((s, o, take))
                size += take
                s, o, c = s + take, o + take, c - take
                if size == CHUNK_ROWS:
                    out.append(_piece(p, segs))
                    segs, size = [], 0
        if segs:
            out.append(_piece(p, segs))
    return out


def _piece(p: int, segs: list[tuple[int, int, int]]) -> tuple:
    if len(segs) == 1:
        s, o, n = segs[0]
        return p, (s, n), (o, n)
    rows = np.concatenate([np.arange(s, s + n) for s, _, n in segs])
    dst = np.concatenate([np.arange(o, o + n) for _, o, n in segs])
    return p, torch.from_numpy(rows), torch.from_numpy(dst)


def _float32(x: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """``x`` as float32: itself, or converted into ``buf``. An explicit conversion into a reused
    buffer: a float16 operand of a float32 add or product is converted by torch into a fresh
    tensor every time (~0.33 s of allocations and copies per Dense all-layers epoch over
    RAVDESS; 2-core EPYC, 2026-12-04). The values are the same either way."""
    if x.dtype == torch.float32:
        return x
    return buf[: x.numel()].view(x.shape).copy_(x)


def _layer_rows(layer: torch.Tensor, rows, buf: torch.Tensor) -> torch.Tensor:
    """The piece's rows of one layer: a slice (one utterance) or gathered into ``buf``."""
    if isinstance(rows, tuple):
        s, n = rows
        return layer[s : s + n]
    t = buf[: len(rows) * layer.shape[1]].view(len(rows), layer.shape[1])
    return torch.index_select(layer, 0, rows, out=t)


class _MixMapped(torch.autograd.Function):
    """out[f] = sum_l w[l] * layer_l[row(f)] over memory-mapped layers (float32 output)."""

    @staticmethod
    def forward(ctx, weights, sources, parts, starts, counts):  # type: ignore[override]
        dim = sources[0][0].shape[1]
        out = torch.empty(int(counts.sum()), dim, dtype=torch.float32)
        pieces = _pieces(parts, starts, counts)
        wl = weights.detach().to(torch.float32).tolist()
        gather = scratch("mapped-gather", CHUNK_ROWS * dim, sources[0][0].dtype)
        acc = scratch("mapped-acc", CHUNK_ROWS * dim, torch.float32)
        conv = scratch("mapped-prod", CHUNK_ROWS * dim, torch.float32)
        with torch.autocast("cpu", enabled=False):
            for p, rows, dst in pieces:
                n = rows[1] if isinstance(rows, tuple) else len(rows)
                a = out[dst[0] : dst[0] + n] if isinstance(dst, tuple) else acc[: n * dim].view(n, dim)
                a.zero_()
                for layer, wk in zip(sources[p], wl):  # the copied path's adds, in its order
                    a.add_(_float32(_layer_rows(layer, rows, gather), conv), alpha=wk)
                if not isinstance(dst, tuple):
                    out.index_copy_(0, dst, a)
        ctx.sources, ctx.pieces = sources, pieces
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_w = None
        if ctx.needs_input_grad[0]:
            with torch.autocast("cpu", enabled=False):
                grad_w = _weight_grad(ctx.sources, ctx.pieces, grad_out.to(torch.float32).contiguous())
        ctx.sources = ctx.pieces = None
        return grad_w, None, None, None, None


def _weight_grad(sources, pieces, g: torch.Tensor) -> torch.Tensor:
    """``dL/dw_l = sum_{f, d} x[f, l, d] g[f, d]``, piece by piece (float64 accumulation)."""
    n_layers, dim = len(sources[0]), sources[0][0].shape[1]
    gather = scratch("mapped-gather", CHUNK_ROWS * dim, sources[0][0].dtype)
    gbuf = scratch("mapped-acc", CHUNK_ROWS * dim, torch.float32)
    prod = scratch("mapped-prod", CHUNK_ROWS * dim, torch.float32)
    part = torch.empty(n_layers, dtype=torch.float32)
    acc = torch.zeros(n_layers, dtype=torch.float64)
    for p, rows, dst in pieces:
        gc = _layer_rows(g, dst, gbuf)
        t = prod[: gc.numel()].view(gc.shape)
        for layer, x in enumerate(sources[p]):
            x = _layer_rows(x, rows, gather)
            if x.dtype == torch.float32:
                torch.mul(x, gc, out=t)
            else:
                t.copy_(x).mul_(gc)
            torch.sum(t, dim=(0, 1), out=part[layer])
        acc += part
    return acc.to(torch.float32)


def mix_mapped(weights: torch.Tensor, sources: tuple, parts: np.ndarray, starts: np.ndarray,
               counts: np.ndarray) -> torch.Tensor:
    """The weighted layer average of a batch's rows from memory-mapped shards.

    Parameters
    ----------
    weights : Tensor of shape (n_layers,)
    sources : tuple of tuple of Tensor
        Per shard, its ``n_layers`` layers, each of shape (frames, dim), float16/32.
    parts, starts, counts : ndarray of shape (n_utterances,)
        Shard, first row in it and number of rows of every utterance.

    Returns
    -------
    Tensor of shape (sum(counts), dim), float32
        Differentiable with respect to ``weights``.
    """
    return _MixMapped.apply(weights, sources, np.asarray(parts), np.asarray(starts), np.asarray(counts))
