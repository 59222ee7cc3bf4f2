"""Stored frames read in place: :class:`ShardFrames`, the bounded-memory frame source.

A :class:`ShardFrames` looks like one array of shape ``(total_frames, n_layers, dim)`` (the
selected layers of a store's shards, concatenated), but nothing is loaded when it is made:
:meth:`ShardFrames.read` copies the rows of the utterances asked for (a batch) straight from
the shard files (``preadv`` out of the kernel's page cache; a memory map where ``preadv`` is
missing). The frames therefore live in the operating system's page
cache, which every process reading the same cache shares, never in a private copy of the
store; how much of them stays there is the kernel's business (it is reclaimable memory).

How a training epoch visits the utterances depends on a memory budget
(:func:`featcache.memory.resolve_memory_budget`):

* the selection fits in the budget: uniform random batches (an exact shuffle; the pages read
  in the first epoch stay cached for the next ones);
* it does not: :func:`shard_buffered_order` -- shards in random order, taken a window of
  shards at a time (a window holds at most half the budget), utterances shuffled within the
  window (the webdataset / ``tf.data`` shuffle buffer, with whole shards as the unit). Each
  window's files are announced to the kernel (``posix_fadvise(WILLNEED)``) one window ahead,
  so the disk reads them sequentially while the previous window trains.

Either way every utterance is seen exactly once per epoch.
"""

from __future__ import annotations

import mmap
import os
import threading
from typing import Sequence

import numpy as np

from featcache.errors import SpecError, StoreError
from featcache.store import Shard, StoreReader

__all__ = ["ShardFrames", "shard_buffered_order"]

_PREADV = hasattr(os, "preadv")


class ShardFrames:
    """The selected layers of some shards, read in place (never loaded whole).

    Parameters
    ----------
    parts : list of (Shard, tuple of int)
        Shards in order and, for each, the stored layer positions taken from it (the same
        number of layers, dim and dtype for every shard).

    Attributes
    ----------
    shape : (total_frames, n_layers, dim)
    dtype : numpy dtype
        The stored dtype (float16 / float32 / float64).
    base : ndarray of shape (n_parts + 1,), int64
        First global row of every part, then ``total_frames``.
    rows_read : int
        Frame rows copied by :meth:`read` so far (what tests and benchmarks count).
    rows_mapped : int
        Frame rows handed out as views of :meth:`mapped` (counted by whoever hands them out).
    """

    ndim = 3

    def __init__(self, parts: list[tuple[Shard, tuple[int, ...]]]) -> None:
        if not parts:
            raise SpecError("ShardFrames needs at least one shard")
        kinds = {(len(layers), sh.dim, sh.dtype) for sh, layers in parts}
        if len(kinds) != 1:
            raise SpecError(f"shards of one frame source must have one (n_layers, dim, dtype); got {sorted(map(str, kinds))}")
        (n_layers, dim, dtype), = kinds
        self._parts = [(sh, tuple(int(k) for k in layers)) for sh, layers in parts]
        self.base = np.concatenate([[0], np.cumsum([sh.n_frames for sh, _ in parts])]).astype(np.int64)
        self.shape = (int(self.base[-1]), int(n_layers), int(dim))
        self.dtype = np.dtype(dtype)
        self.rows_read = 0
        self.rows_mapped = 0
        self._fds: dict[int, int] = {}
        self._views: dict[int, tuple | None] = {}  # part -> memory-mapped layers (see mapped)
        self._lock = threading.Lock()  # plans in several threads may read one source

    @classmethod
    def of_store(cls, reader: StoreReader, layers: Sequence[int]) -> "ShardFrames":
        """Every committed shard of a store (manifest order), layers ``layers`` (stored positions)."""
        n = len(reader.manifest["shards"])
        if not reader.has_frames:
            raise SpecError(
                f"store {reader.name} holds statistics only (extracted with --frames none): select it with pooled='mean'"
            )
        if n == 0:
            raise SpecError(f"store {reader.path} has no committed shard")
        return cls([(reader.shard(si), tuple(layers)) for si in range(n)])

    @classmethod
    def concat(cls, sources: list["ShardFrames"]) -> "ShardFrames":
        """One source over the shards of several (their global rows follow each other)."""
        return cls([p for s in sources for p in s._parts])

    # -- geometry
    @property
    def parts(self) -> list[tuple[Shard, tuple[int, ...]]]:
        """The shards and, for each, the stored layer positions read from it."""
        return list(self._parts)

    @property
    def n_parts(self) -> int:
        return len(self._parts)

    @property
    def row_bytes(self) -> int:
        """Bytes of one frame row (all selected layers), as stored."""
        return self.shape[1] * self.shape[2] * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def part_of(self, starts: np.ndarray) -> np.ndarray:
        """The part (shard) holding each global row of ``starts``, shape (n,), int64."""
        starts = np.asarray(starts, dtype=np.int64)
        return np.searchsorted(self.base, starts, side="right").astype(np.int64) - 1

    def rows_of(self, uid_rows: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Global ``(starts, lengths)`` of utterances given as ``(part, row in the part)``."""
        starts = np.empty(len(uid_rows), np.int64)
        lengths = np.empty(len(uid_rows), np.int64)
        for i, (pi, row) in enumerate(uid_rows):
            off = self._parts[pi][0].offsets
            starts[i] = self.base[pi] + off[row]
            lengths[i] = off[row + 1] - off[row]
        return starts, lengths

    # -- reading
    def read(self, starts: np.ndarray, counts: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Copy the rows ``[starts[i], starts[i] + counts[i])`` of every segment, concatenated.

        Parameters
        ----------
        starts, counts : ndarray of shape (n_segments,)
            Global first rows and row counts; a segment never crosses a shard (an
            utterance is always inside one).
        out : ndarray, optional
            A flat buffer of the stored dtype with room for the rows, reused instead of a
            fresh allocation (fresh pages cost a page fault each on first touch).

        Returns
        -------
        ndarray of shape (sum(counts), n_layers, dim), the stored dtype
            A transposed view of a ``(n_layers, sum(counts), dim)`` buffer (fresh, or
            ``out``): each layer of a run of adjacent segments is one contiguous copy.
        """
        starts = np.asarray(starts, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        total = int(counts.sum())
        shape = (self.shape[1], total, self.shape[2])
        if out is None:
            buf = np.empty(shape, dtype=self.dtype)
        else:
            if out.dtype != self.dtype or out.ndim != 1 or out.size < np.prod(shape):
                raise ValueError(f"out must be a flat {self.dtype} buffer of at least {int(np.prod(shape))} values")
            buf = out[: int(np.prod(shape))].reshape(shape)
        if total:
            parts = self.part_of(starts)
            if np.any(parts < 0) or np.any(starts + counts > self.base[parts + 1]):
                raise IndexError("a segment lies outside its shard")
            a = 0
            for (p, s, n) in _runs(parts, starts, counts):
                self._copy_run(p, int(s - self.base[p]), n, buf[:, a : a + n])
                a += n
        self.rows_read += total
        return buf.transpose(1, 0, 2)

    def _copy_run(self, p: int, local: int, n: int, dest: np.ndarray) -> None:
        """Rows ``[local, local + n)`` of part ``p`` into ``dest`` (n_layers, n, dim).

        ``preadv`` straight from the file (the kernel copies from its page cache): unlike a
        memory map it takes no page fault per 4 KiB page and maps nothing into the process.
        """
        sh, layers = self._parts[p]
        row = self.shape[2] * self.dtype.itemsize
        fd = self._fd(p) if _PREADV else None
        for li, k in enumerate(layers):
            if fd is None:
                dest[li] = sh.layer(k)[local : local + n]
                continue
            off = sh.layout(k)[0] + local * row
            view = memoryview(dest[li]).cast("B")
            done = 0
            while done < len(view):
                got = os.preadv(fd, [view[done:]], off + done)
                if got <= 0:
                    raise StoreError(f"{sh.path}: layer {k} ends before row {local + n} (run featcache verify)")
                done += got

    def mapped(self, p: int) -> tuple[np.ndarray, ...] | None:
        """Part ``p``'s selected layers as read-only views of one memory map of its file.

        Returns
        -------
        tuple of ndarray of shape (n_frames of the part, dim), the stored dtype, or None
            One view per selected layer (in order) of the page cache's pages, with no copy;
            None where the file cannot be mapped or a layer's data is not aligned to its
            dtype: then :meth:`read`. The mapping is made once per part and process and
            shares the page cache with every other process reading the file.
        """
        with self._lock:
            if p not in self._views:
                self._views[p] = self._map(p)
            return self._views[p]

    def _map(self, p: int) -> tuple[np.ndarray, ...] | None:
        sh, layers = self._parts[p]
        n, dim, item = sh.n_frames, self.shape[2], self.dtype.itemsize
        offs = [sh.layout(k)[0] for k in layers]
        if not n or any(o % item for o in offs):
            return None
        try:
            with open(sh.path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        if max(offs) + n * dim * item > len(mm):
            return None
        # each view keeps the mapping alive
        return tuple(np.frombuffer(mm, self.dtype, n * dim, o).reshape(n, dim) for o in offs)

    def _fd(self, p: int) -> int:
        with self._lock:
            fd = self._fds.get(p)
            if fd is None:
                fd = self._fds[p] = os.open(self._parts[p][0].path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            return fd

    def close(self) -> None:
        """Close the file descriptors opened for reading (reopened when read again)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:  # descriptors and the lock do not travel
        return {k: v for k, v in self.__dict__.items() if k not in ("_fds", "_views", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fds, self._views, self._lock = {}, {}, threading.Lock()

    def __getitem__(self, key):
        """Contiguous row slices only (``frames[s:e]``), as :meth:`read` returns them."""
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("ShardFrames supports contiguous row slices only; use read(starts, counts)")
        s, e, _ = key.indices(self.shape[0])
        return self.read(np.array([s]), np.array([max(e - s, 0)]))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardFrames(shape={self.shape}, dtype={self.dtype.name}, shards={self.n_parts})"

    # -- page cache hints
    def advise(self, parts: Sequence[int], willneed: bool = True) -> None:
        """Tell the kernel that the selected layers of ``parts`` are about to be read
        (``posix_fadvise(WILLNEED)``: an asynchronous, sequential read-ahead into the page
        cache) or are no longer needed (``DONTNEED``). A no-op where the call is missing."""
        if not hasattr(os, "posix_fadvise"):
            return
        flag = os.POSIX_FADV_WILLNEED if willneed else os.POSIX_FADV_DONTNEED
        self._on_ranges(parts, lambda fd, off, n: os.posix_fadvise(fd, off, n, flag), lambda p: None)  # only a hint

    def preload(self, parts: Sequence[int]) -> None:
        """Read the selected layers of ``parts`` into the page cache now, sequentially (blocking).

        The kernel copies the file ranges to ``/dev/null`` (``os.sendfile``): the disk sees
        one sequential read per layer and nothing is copied into this process. Where
        ``sendfile`` is missing or refuses, the ranges are only announced (:meth:`advise`).
        """
        try:
            null = os.open(os.devnull, os.O_WRONLY) if hasattr(os, "sendfile") else None
        except OSError:
            null = None
        if null is None:
            self.advise(parts)
            return
        try:  # only a warm-up: where it fails, the batches' own reads still work
            self._on_ranges(parts, lambda fd, off, n: _send_all(fd, null, off, n), lambda p: self.advise([p]))
        finally:
            os.close(null)

    def _on_ranges(self, parts: Sequence[int], act, on_error) -> None:
        """``act(fd, offset, nbytes)`` on the byte range of every selected layer of each part
        (each part once, in order); ``on_error(part)`` when that raises an OSError."""
        for p in dict.fromkeys(int(x) for x in parts):
            sh, layers = self._parts[p]
            try:
                fd = os.open(sh.path, os.O_RDONLY)
            except OSError:
                continue
            try:
                for k in layers:
                    off, shape = sh.layout(k)
                    act(fd, off, shape[0] * shape[1] * sh.dtype.itemsize)
            except OSError:
                on_error(p)
            finally:
                os.close(fd)


def _send_all(fd: int, null: int, offset: int, count: int) -> None:
    """``count`` bytes of ``fd`` from ``offset`` through the page cache to ``null``."""
    end = offset + count
    while offset < end:
        n = os.sendfile(null, fd, offset, min(64 << 20, end - offset))
        if n <= 0:
            return
        offset += n


def _runs(parts: np.ndarray, starts: np.ndarray, counts: np.ndarray):
    """Segments merged where one ends where the next starts in the same shard."""
    i, n = 0, len(starts)
    while i < n:
        j = i
        while j + 1 < n and parts[j + 1] == parts[i] and starts[j + 1] == starts[j] + counts[j]:
            j += 1
        yield int(parts[i]), int(starts[i]), int(starts[j] + counts[j] - starts[i])
        i = j + 1


def shard_buffered_order(
    parts: np.ndarray, nbytes: np.ndarray, window_bytes: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """An epoch's visiting order that keeps reads within a few shards at a time.

    Shards are taken in random order and grouped into windows of consecutive (in that order)
    shards holding at most ``window_bytes`` of the selected utterances (at least one shard
    per window); the utterances of a window are shuffled uniformly. The last shard is a
    window of its own: while a window trains the next one is read, so the last window's
    training is the part of a streamed epoch that no read overlaps, and it is kept short.

    Parameters
    ----------
    parts : ndarray of shape (n,)
        Shard of every utterance.
    nbytes : ndarray of shape (n,)
        Bytes read for every utterance.
    window_bytes : int
    rng : Generator

    Returns
    -------
    list of ndarray
        Per window, positions into ``parts`` (0..n-1); together a permutation of them.
    """
    parts = np.asarray(parts, dtype=np.int64)
    nbytes = np.asarray(nbytes, dtype=np.int64)
    shards = np.unique(parts)
    shards = shards[rng.permutation(len(shards))]
    members = {int(s): np.flatnonzero(parts == s) for s in shards}
    windows, current, size = [], [], 0
    for i, s in enumerate(shards):
        m = members[int(s)]
        b = int(nbytes[m].sum())
        if current and (size + b > window_bytes or i == len(shards) - 1):
            windows.append(np.concatenate(current))
            current, size = [], 0
        current.append(m)
        size += b
    if current:
        windows.append(np.concatenate(current))
    return [w[rng.permutation(len(w))] for w in windows]
