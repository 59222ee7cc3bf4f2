"""Batches of utterances taken from a :class:`~featcache.packed.Packed` by index.

Nothing is copied when a plan is made: the stored arrays are wrapped as torch tensors
sharing their memory, and a batch only carries per-utterance row ranges. The frames are
read (and converted to float32) by :func:`estimators._ops.mix_frames` inside the model.

Frame alignment rules (computed once per plan):

* every stream is brought to the frame rate of the coarsest stream: stream ``k`` may have an
  integer multiple ``r_k`` of that rate (eGeMAPS LLDs at 100 frames/s next to wav2vec2 at
  50 frames/s: ``r = 2``, in either order); its frames are then averaged in consecutive
  groups of ``r`` (a last incomplete group is averaged over the frames it has). Two
  upstreams at the same rate (wav2vec2 and HuBERT, 50 frames/s) have ``r = 1``;
* every stream of an utterance is trimmed to the shortest (after that averaging);
* ``max_frames`` keeps the first ``max_frames`` frames.

A stream's lazy normalisation (``norm_shift``, ``norm_scale``, ``norm_group``; see
:class:`featcache.packed.Stream`) travels with the batch and is applied as frames are read.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from featcache.frames import ShardFrames, shard_buffered_order
from featcache.packed import Packed

from ._ops import Norm
from ._streams import Batch, StreamSlice, as_tensor, stream_ratios, utterance_level

__all__ = ["StreamSlice", "Batch", "BatchPlan", "stream_ratios", "utterance_level", "as_tensor"]

#: batches read ahead (in a thread) while the current one trains, when frames come from shards
PREFETCH = 2
#: whether batch plans read stored frames from memory maps of the shards where they can
#: (:meth:`BatchPlan._map_sources`); False copies every batch (the benchmarks' A/B switch)
MAP_FRAMES = True
#: one thread per process that passes read-ahead hints to the kernel
_ADVISOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featcache-advise")


def read_ahead(mode: str, threads: int | None = None) -> bool:
    """Whether batches of stored frames are read ahead in a thread while one trains.

    Always when streaming (``stream``: the thread waits on the disk). With the selection in
    the page cache (``random``) a read is a memory copy that needs a core of its own: only
    when one is left beside torch's ``threads``. On 2 cores with 2 torch threads, reading
    ahead made a Dense all-layers epoch ~6 % slower (2.64-2.70 s vs 2.42-2.58 s, and the
    layer mix twice as slow; 2-core EPYC, 2026-12-04).
    """
    if mode == "stream":
        return True
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return cores > (torch.get_num_threads() if threads is None else int(threads))


class BatchPlan:
    """Index-based batches over a Packed for one model's frame rules.

    Parameters
    ----------
    packed : Packed
        The utterances (shared, never copied).
    ratios : list of int
        Per-stream frame-rate ratios to the coarsest stream (see :func:`stream_ratios`).
    max_frames : int or None
        Keep at most the first ``max_frames`` output frames of every utterance.
    device : torch.device
        Where the index tensors of the batches are put.
    memory_budget : int or None
        Bytes of stored frames that may stay in the page cache (None: unlimited); decides
        :attr:`access` (see :meth:`_choose_access`).
    map_frames : bool or None
        In the ``random`` mode on the CPU, read the frames straight from memory maps of the
        shards (:meth:`_map_sources`) instead of copying every batch; False copies; None:
        :data:`MAP_FRAMES`.
    """

    def __init__(
        self,
        packed: Packed,
        ratios: list[int],
        max_frames: int | None,
        device: torch.device,
        memory_budget: int | None = None,
        map_frames: bool | None = None,
    ) -> None:
        self.packed = packed
        self.ratios = list(ratios)
        self.device = device
        # in-memory arrays are shared as tensors; stored frames are read batch by batch
        self.sources = [s.data if isinstance(s.data, ShardFrames) else as_tensor(s.data) for s in packed.streams]
        self._buffers: dict[tuple[int, int], np.ndarray] = {}  # (stream, slot) -> reused read buffer
        self._warm = False
        self.norms = [
            None if s.norm_group is None else Norm.from_arrays(s.norm_shift, s.norm_scale)
            for s in packed.streams
        ]
        self.groups = [None if s.norm_group is None else np.asarray(s.norm_group, np.int64) for s in packed.streams]
        self.starts = [np.asarray(s.starts, dtype=np.int64) for s in packed.streams]
        lens = [np.asarray(s.lengths, dtype=np.int64) for s in packed.streams]
        self.flat = utterance_level(packed)
        framed = [k for k, f in enumerate(self.flat) if not f]
        out = np.min([-(-lens[k] // self.ratios[k]) for k in framed], axis=0)
        if max_frames is not None:
            out = np.minimum(out, int(max_frames))
        self.out_lengths = out.astype(np.int64)
        self.counts = [lk if f else np.minimum(lk, self.out_lengths * r) for lk, r, f in zip(lens, self.ratios, self.flat)]
        self.access = self._choose_access(memory_budget)
        self.mapped, self._mparts = self._map_sources() if (MAP_FRAMES if map_frames is None else map_frames) else ([None] * len(self.sources),) * 2

    def _choose_access(self, budget: int | None) -> dict:
        """How the utterances are visited: ``memory`` (arrays in memory), ``random`` (stored
        frames whose selection fits in ``budget``: uniform random batches) or ``stream``
        (shard-buffered shuffle, see :func:`featcache.frames.shard_buffered_order`)."""
        backed = [k for k, src in enumerate(self.sources) if isinstance(src, ShardFrames)]
        if not backed:
            return {"mode": "memory"}
        selection = int(sum(int(self.counts[k].sum()) * self.sources[k].row_bytes for k in backed))
        budget = int(budget) if budget is not None else selection
        self._lead = self.sources[backed[0]]  # its shards decide the visiting order
        self._parts = self._lead.part_of(self.starts[backed[0]])
        self._nbytes = sum(self.counts[k] * self.sources[k].row_bytes for k in backed)
        mode = "random" if selection <= budget else "stream"
        return {"mode": mode, "read_ahead": read_ahead(mode), "mapped": False, "selection_bytes": selection, "budget_bytes": budget,
                "window_bytes": None if mode == "random" else max(budget // 2, 1),
                "shards": int(len(np.unique(self._parts)))}

    def _map_sources(self) -> tuple[list, list]:
        """Per stream, its shards as memory-mapped tensors (one per shard) and the shard of
        every utterance, or None: in the ``random`` mode on the CPU the mix reads the frames
        straight from the page cache (no copy per batch, no buffer per process). Where a
        stream's shards cannot be mapped as one view each, its batches are copied (``_read``).
        """
        mapped: list = [None] * len(self.sources)
        parts: list = [None] * len(self.sources)
        if self.access["mode"] != "random" or self.device.type != "cpu":
            return mapped, parts
        for k, src in enumerate(self.sources):
            if isinstance(src, ShardFrames):
                views = [src.mapped(p) for p in range(src.n_parts)]
                if all(v is not None for v in views):
                    mapped[k] = tuple(tuple(as_tensor(layer) for layer in v) for v in views)
                    parts[k] = src.part_of(self.starts[k])
        backed = [k for k, src in enumerate(self.sources) if isinstance(src, ShardFrames)]
        self.access["mapped"] = all(mapped[k] is not None for k in backed)
        if self.access["mapped"]:
            self.access["read_ahead"] = False  # nothing left to read ahead
        return mapped, parts

    def __len__(self) -> int:
        return len(self.out_lengths)

    def batch(self, index: np.ndarray, reuse: int | None = None) -> Batch:
        """The batch of the utterances at ``index`` (positions in the Packed).

        With ``reuse`` (a slot number), frames read from the shards go into a buffer the
        plan keeps for that slot, so a batch is valid only until the slot is reused
        (:meth:`iter_batches` rotates ``PREFETCH + 1`` slots: batches are read ahead while
        the current one trains).
        """
        idx = np.asarray(index, dtype=np.int64)
        dev = self.device
        lengths_np = self.out_lengths[idx]
        offsets_np = np.concatenate([[0], np.cumsum(lengths_np)]).astype(np.int64)
        total = int(offsets_np[-1])
        lengths = torch.from_numpy(lengths_np).to(dev)
        seg_ids = torch.repeat_interleave(torch.arange(len(idx), device=dev), lengths)
        streams = []
        for k, source in enumerate(self.sources):
            starts = self.starts[k][idx]
            counts = self.counts[k][idx]
            r = self.ratios[k]
            raw_to_out = out_counts = None
            if r > 1:
                raw_off = np.concatenate([[0], np.cumsum(counts)])
                local = np.arange(int(raw_off[-1])) - np.repeat(raw_off[:-1], counts)
                r2o = np.repeat(offsets_np[:-1], counts) + local // r
                raw_to_out = torch.from_numpy(r2o).to(dev)
                out_counts = torch.from_numpy(np.bincount(r2o, minlength=total).astype(np.float32)).to(dev)
            groups = None if self.groups[k] is None else self.groups[k][idx]
            parts = None
            if self.mapped[k] is not None:
                parts = self._mparts[k][idx]
                starts = starts - source.base[parts]
                source.rows_mapped += int(counts.sum())
                source = self.mapped[k]
            elif isinstance(source, ShardFrames):
                source, starts = self._read(k, starts, counts, reuse)
            streams.append(StreamSlice(source, starts, counts, r, raw_to_out, out_counts, self.norms[k], groups,
                                       seg_ids if self.flat[k] else None, parts))
        offsets = torch.from_numpy(offsets_np).to(dev)
        ids = None if self.packed.ids is None else np.asarray(self.packed.ids)[idx]
        return Batch(idx, streams, lengths, offsets, seg_ids, ids)

    def _read(self, k: int, starts: np.ndarray, counts: np.ndarray, reuse: int | None) -> tuple[torch.Tensor, np.ndarray]:
        """Rows of stream ``k`` copied from the shards: (tensor (rows, L, D), new starts)."""
        src: ShardFrames = self.sources[k]
        out = None
        if reuse is not None:
            need = int(counts.sum()) * src.shape[1] * src.shape[2]
            buf = self._buffers.get((k, reuse))
            if buf is None or buf.size < need:
                grown = max(need, int(1.25 * (0 if buf is None else buf.size)))
                buf = self._buffers[(k, reuse)] = np.empty(grown, src.dtype)
            out = buf
        frames = src.read(starts, counts, out=out)
        local = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return as_tensor(frames), local

    def epoch_order(self, index: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """The shuffled visiting order of ``index`` for one epoch, as windows of positions
        (one window unless the access mode is ``stream``)."""
        index = np.asarray(index, dtype=np.int64)
        if self.access["mode"] != "stream":
            return [index[rng.permutation(len(index))]]
        windows = shard_buffered_order(self._parts[index], self._nbytes[index], self.access["window_bytes"], rng)
        return [index[w] for w in windows]

    def _advise(self, positions: np.ndarray, preload: bool = False) -> Future | None:
        """Ask the kernel to read ahead the shards of the utterances at ``positions``.

        ``preload``: read them into the page cache now, sequentially, in the advisor thread
        (:meth:`featcache.frames.ShardFrames.preload`); the returned future is done when they
        are there. Else ``posix_fadvise(WILLNEED)``, which only queues the reads.
        """
        if self.access["mode"] == "memory" or not len(positions):
            return None
        parts = np.unique(self._parts[positions])
        sources = [src for src in self.sources if isinstance(src, ShardFrames) and src.n_parts == self._lead.n_parts]
        if preload:
            return _ADVISOR.submit(lambda: [src.preload(parts) for src in sources])
        # fadvise(WILLNEED) submits the reads of the whole range before returning: never in
        # the way of the batches
        return _ADVISOR.submit(lambda: [src.advise(parts) for src in sources])

    def iter_batches(
        self,
        index: np.ndarray,
        batch_size: int,
        rng: np.random.Generator | None = None,
        merge_singleton: bool = False,
    ) -> Iterator[Batch]:
        """Batches of ``batch_size`` utterances of ``index``.

        Parameters
        ----------
        index : ndarray of shape (n,)
        batch_size : int
        rng : Generator or None
            Shuffle when given (:meth:`epoch_order`: uniformly, or shard-buffered in the
            ``stream`` access mode); else ``index`` is visited in its order.
        merge_singleton : bool
            Append a last batch of one utterance to the previous batch (batch
            normalisation and the CCC loss need two or more).

        Yields
        ------
        Batch
            Valid while the consumer holds it: frames read from the shards go into
            ``PREFETCH + 1`` rotating buffers, and ``PREFETCH`` batches are read ahead in a
            thread (when :func:`read_ahead` says so), so a batch must not be kept beyond the
            next ``PREFETCH`` ones.
        """
        index = np.asarray(index, dtype=np.int64)
        windows = [index] if rng is None else self.epoch_order(index, rng)
        if self.access["mode"] == "random" and rng is not None and not self._warm:
            self._advise(index)  # the whole selection fits: let the kernel read it ahead once
            self._warm = True
        order = np.concatenate(windows)
        ends = np.cumsum([len(w) for w in windows])
        bounds = list(range(0, len(order), batch_size)) + [len(order)]
        if merge_singleton and len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]
        # streamed windows: each is read into the page cache sequentially (one after the other,
        # in the advisor thread) while the one before trains; a window's batches wait until
        # it is there, so the disk never sees the batches' scattered reads
        loads: list[Future | None] = []

        def make(j: int) -> Batch:
            a, b = bounds[j], bounds[j + 1]
            first, last = (int(np.searchsorted(ends, k, side="right")) for k in (a, b - 1))  # a batch may span two
            while len(windows) > 1 and len(loads) < len(windows) and len(loads) <= last + 1:  # these windows and the next
                loads.append(self._advise(windows[len(loads)], preload=True))
            for w in range(first, min(last + 1, len(loads))):
                if loads[w] is not None:
                    loads[w].result()
            return self.batch(order[a:b], reuse=j % (PREFETCH + 1))

        n = len(bounds) - 1
        if self.access["mode"] == "memory" or n < 2 or not self.access["read_ahead"]:
            for j in range(n):
                yield make(j)
            return
        # frames read from the shards: read the next batch while this one trains (the reads
        # are system calls and memory copies that release the GIL)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="featcache-read") as pool:
            ahead = [pool.submit(make, j) for j in range(min(PREFETCH, n))]
            for j in range(n):
                current = ahead.pop(0).result()
                if j + PREFETCH < n:
                    ahead.append(pool.submit(make, j + PREFETCH))
                yield current
