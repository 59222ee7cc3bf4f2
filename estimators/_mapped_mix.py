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

Normalised frames (``Stream.norm_*``) are converted and normalised first, a piece of at most
:data:`estimators._ops.CHUNK_FRAMES` rows at a time, by the same
:func:`featcache.packed.apply_normalization` and in the same order as a copied batch, so the
mix equals the copied path's exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from featcache.packed import apply_normalization

from ._scratch import scratch

__all__ = ["CHUNK_ROWS", "mix_mapped"]

#: rows per gathered piece: (1024 x 768) float16 + float32 buffers stay in a 32 MB L3 cache
CHUNK_ROWS = 1024
#: rows per piece of normalised frames, converted whole (L x rows x dim float32, as the copied
#: path's chunks of ``estimators._ops.CHUNK_FRAMES``)
NORM_ROWS = 512


def _pieces(parts: np.ndarray, starts: np.ndarray, counts: np.ndarray, limit: int) -> list[tuple]:
    """``(shard, rows, out, segments)`` pieces of at most ``limit`` rows of one shard.

    ``rows`` and ``out`` are ``(start, n)`` for a piece of one utterance (read as slices),
    else int64 tensors of the shard rows and output rows of the piece, in the same order;
    ``segments`` are ``(row in the piece, n_rows, utterance)``.
    """
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out: list[tuple] = []
    for p in np.unique(parts).tolist():
        segs: list[tuple[int, int, int, int]] = []  # (shard row, output row, n, utterance)
        size = 0
        for b in np.flatnonzero(parts == p).tolist():
            s, o, c = int(starts[b]), int(offsets[b]), int(counts[b])
            while c:
                take = min(c, limit - size)
                segs.append((s, o, take, b))
                size += take
                s, o, c = s + take, o + take, c - take
                if size == limit:
                    out.append(_piece(p, segs))
                    segs, size = [], 0
        if segs:
            out.append(_piece(p, segs))
    return out


def _piece(p: int, segs: list[tuple[int, int, int, int]]) -> tuple:
    local = np.cumsum([0] + [n for _, _, n, _ in segs[:-1]]).tolist()
    where = [(r, n, b) for r, (_, _, n, b) in zip(local, segs)]
    if len(segs) == 1:
        s, o, n, _ = segs[0]
        return p, (s, n), (o, n), where
    rows = np.concatenate([np.arange(s, s + n) for s, _, n, _ in segs])
    dst = np.concatenate([np.arange(o, o + n) for _, o, n, _ in segs])
    return p, torch.from_numpy(rows), torch.from_numpy(dst), where


def _n(rows) -> int:
    return rows[1] if isinstance(rows, tuple) else len(rows)


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


def _normalized(layers: tuple, rows, where, norm, groups: list, gather: torch.Tensor) -> torch.Tensor:
    """The piece's rows of every layer as float32 (L, n, D), each utterance normalised."""
    n, dim = _n(rows), layers[0].shape[1]
    x = scratch("mapped-norm", len(layers) * n * dim, torch.float32).view(len(layers), n, dim)
    for k, layer in enumerate(layers):
        x[k].copy_(_layer_rows(layer, rows, gather))
    for r, c, b in where:
        g = groups[b]
        apply_normalization(x[:, r : r + c], norm.shift[g].unsqueeze(1), norm.inv[g].unsqueeze(1))
    return x


class _MixMapped(torch.autograd.Function):
    """out[f] = sum_l w[l] * norm(layer_l[row(f)]) over memory-mapped layers (float32 output)."""

    @staticmethod
    def forward(ctx, weights, sources, parts, starts, counts, norm, groups):  # type: ignore[override]
        dim = sources[0][0].shape[1]
        out = torch.empty(int(counts.sum()), dim, dtype=torch.float32)
        grp = None if norm is None else np.asarray(groups).tolist()
        pieces = _pieces(parts, starts, counts, CHUNK_ROWS if norm is None else NORM_ROWS)
        wl = weights.detach().to(torch.float32).tolist()
        gather = scratch("mapped-gather", CHUNK_ROWS * dim, sources[0][0].dtype)
        acc = scratch("mapped-acc", CHUNK_ROWS * dim, torch.float32)
        conv = scratch("mapped-prod", CHUNK_ROWS * dim, torch.float32)
        with torch.autocast("cpu", enabled=False):
            for p, rows, dst, where in pieces:
                n = _n(rows)
                a = out[dst[0] : dst[0] + n] if isinstance(dst, tuple) else acc[: n * dim].view(n, dim)
                a.zero_()
                if norm is None:
                    layers = (_float32(_layer_rows(x, rows, gather), conv) for x in sources[p])
                else:
                    layers = _normalized(sources[p], rows, where, norm, grp, gather).unbind(0)
                for x, wk in zip(layers, wl):  # the copied path's adds, in its order
                    a.add_(x, alpha=wk)
                if not isinstance(dst, tuple):
                    out.index_copy_(0, dst, a)
        ctx.sources, ctx.pieces, ctx.norm, ctx.groups = sources, pieces, norm, grp
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_w = None
        if ctx.needs_input_grad[0]:
            with torch.autocast("cpu", enabled=False):
                grad_w = _weight_grad(ctx, grad_out.to(torch.float32).contiguous())
        ctx.sources = ctx.pieces = ctx.norm = None
        return grad_w, None, None, None, None, None, None


def _weight_grad(ctx, g: torch.Tensor) -> torch.Tensor:
    """``dL/dw_l = sum_{f, d} x'[f, l, d] g[f, d]``, piece by piece (float64 accumulation)."""
    sources = ctx.sources
    n_layers, dim = len(sources[0]), sources[0][0].shape[1]
    gather = scratch("mapped-gather", CHUNK_ROWS * dim, sources[0][0].dtype)
    gbuf = scratch("mapped-acc", CHUNK_ROWS * dim, torch.float32)
    prod = scratch("mapped-prod", CHUNK_ROWS * dim, torch.float32)
    part = torch.empty(n_layers, dtype=torch.float32)
    acc = torch.zeros(n_layers, dtype=torch.float64)
    for p, rows, dst, where in ctx.pieces:
        gc = _layer_rows(g, dst, gbuf)
        if ctx.norm is not None:  # all layers converted and normalised: one product, one sum
            x = _normalized(sources[p], rows, where, ctx.norm, ctx.groups, gather).view(n_layers, -1)
            x.mul_(gc.reshape(1, -1))
            torch.sum(x, dim=1, out=part)
            acc += part
            continue
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
               counts: np.ndarray, norm=None, groups: np.ndarray | None = None) -> torch.Tensor:
    """The weighted layer average of a batch's rows from memory-mapped shards.

    Parameters
    ----------
    weights : Tensor of shape (n_layers,)
    sources : tuple of tuple of Tensor
        Per shard, its ``n_layers`` layers, each of shape (frames, dim), float16/32/64.
    parts, starts, counts : ndarray of shape (n_utterances,)
        Shard, first row in it and number of rows of every utterance.
    norm : estimators._ops.Norm or None
        Lazy normalisation of the stream.
    groups : ndarray of shape (n_utterances,) or None
        Normalisation group of every utterance (with ``norm``).

    Returns
    -------
    Tensor of shape (sum(counts), dim), float32
        Differentiable with respect to ``weights``.
    """
    return _MixMapped.apply(weights, sources, np.asarray(parts), np.asarray(starts), np.asarray(counts), norm, groups)
