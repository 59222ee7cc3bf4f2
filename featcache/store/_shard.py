"""One shard file: :func:`write_shard` writes it, :class:`Shard` reads it (memory-mapped).

Layout (see the README, "On-disk format"): attributes (format, version, dtype, store,
extractor, n_layers, dim, frame_rate, shard_index); ``ids``; ``offsets`` (n+1, int64);
``original_seconds`` and ``used_seconds``; ``layers/LL`` (frames x dim, contiguous and
uncompressed, so it can be memory-mapped); ``stats/sum`` and ``stats/sumsq`` (float64,
utterances x layers x dim). Since format 1.1 also the content fingerprints of
:mod:`featcache.fingerprint`: ``content/pcm_sha256`` (n,) and ``content/fingerprint``
(n x K float32), with the attribute ``fingerprint_method``; 1.0 shards have none. Since
1.2 the attribute ``frames``: ``"none"`` marks a statistics-only shard (``--frames none``),
which has no ``layers`` group; ``"all"`` or absent, every layer's frames are there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from featcache.errors import StoreError
from featcache.store import faults
from featcache.store._format import FORMAT_VERSION, MAX_DIM, SHARD_FORMAT, check_version, now, statistics_only_message

__all__ = ["Shard", "pack_content", "write_shard"]


def write_shard(
    path: Path,
    *,
    ids: list[str],
    arrays: list[np.ndarray],
    original_seconds: Iterable[float],
    used_seconds: Iterable[float],
    dtype: np.dtype,
    attrs: dict,
    content: tuple[list[str], np.ndarray, str] | None = None,
    frames: bool = True,
) -> int:
    """Write one shard file (see the README for the layout); returns its number of frames.

    Parameters
    ----------
    arrays : list of ndarray of shape (n_layers, n_frames_i, dim)
        Features of each utterance, in the order of ``ids``.
    content : (pcm_sha256, fingerprints, method), optional
        Content fingerprints of the utterances: list of n hex strings (``""`` where
        unknown), ndarray of shape (n, K) (NaN rows where unknown) and the method name.
    frames : bool
        Store the frames (``layers/LL``); False: only the per-utterance statistics, computed
        from the values as they would have been stored (so they equal a full shard's).
    """
    lengths = np.array([a.shape[1] for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_layers, dim = arrays[0].shape[0], arrays[0].shape[2]
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format"] = SHARD_FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = now()
        f.attrs["dtype"] = np.dtype(dtype).name
        f.attrs["frames"] = "all" if frames else "none"
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("original_seconds", data=np.asarray(list(original_seconds), dtype=np.float64))
        f.create_dataset("used_seconds", data=np.asarray(list(used_seconds), dtype=np.float64))
        g = f.create_group("layers") if frames else None
        s = f.create_group("stats")
        sums = np.empty((len(arrays), n_layers, dim), dtype=np.float64)
        sumsq = np.empty_like(sums)
        for layer in range(n_layers):
            data = np.concatenate([a[layer] for a in arrays], axis=0, dtype=dtype, casting="same_kind")
            if g is not None:
                g.create_dataset(f"{layer:02d}", data=data)  # contiguous, uncompressed: memory-mappable
            if layer == 0 and faults.ACTIVE:
                f.flush()
                faults.hit("shard_mid_write")
            _utterance_sums(data, offsets, sums[:, layer], sumsq[:, layer])
        s.create_dataset("sum", data=sums)
        s.create_dataset("sumsq", data=sumsq)
        if content is not None:
            _write_content(f, len(ids), *content)
        f.flush()
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
    return int(offsets[-1])


def _utterance_sums(data: np.ndarray, offsets: np.ndarray, sums: np.ndarray, sumsq: np.ndarray) -> None:
    """Per-utterance float64 sum and sum of squares over frames of the values as stored.

    ``data`` (frames, dim) in the stored dtype; utterance ``i`` is rows
    ``offsets[i]:offsets[i + 1]``; results go into ``sums`` and ``sumsq`` (n, dim). One
    ``sum`` per utterance slice is ~15x faster than ``np.add.reduceat`` over the shard (equal
    to float64 rounding). A float16 value's square is exact in float32 (11-bit mantissas),
    so squares of float16 data are formed in float32; others in float64.
    """
    square_dtype = np.float32 if data.dtype == np.float16 else np.float64
    for i in range(len(offsets) - 1):
        seg = data[offsets[i]:offsets[i + 1]]
        sums[i] = seg.sum(axis=0, dtype=np.float64)
        sumsq[i] = np.square(seg, dtype=square_dtype).sum(axis=0, dtype=np.float64)


def pack_content(sha: list[str], vectors: list, method: str | None) -> tuple[list[str], np.ndarray, str] | None:
    """The ``content`` argument of :func:`write_shard` from per-utterance values (None entries: unknown).

    None when there is no method or no fingerprint at all (the shard then has none).
    """
    given = [v for v in vectors if v is not None]
    if method is None or not given:
        return None
    rows = [np.full(len(given[0]), np.nan, np.float32) if v is None else v for v in vectors]
    return [h or "" for h in sha], np.stack(rows).astype(np.float32), method


def _write_content(f: h5py.File, n: int, sha: list[str], vectors: np.ndarray, method: str) -> None:
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(sha) != n or vectors.ndim != 2 or len(vectors) != n:
        raise StoreError(f"content fingerprints of {len(sha)} / {len(vectors)} utterances for a shard of {n}")
    g = f.create_group("content")
    g.attrs["fingerprint_method"] = str(method)
    g.create_dataset("pcm_sha256", data=np.array(sha, dtype=object), dtype=h5py.string_dtype("ascii"))
    g.create_dataset("fingerprint", data=vectors)


class Shard:
    """Read access to one committed shard.

    Frame data is memory-mapped (``numpy.memmap``) straight from the HDF5 file, which the
    writer keeps contiguous and uncompressed; nothing is read until it is accessed. A
    statistics-only shard (:attr:`has_frames` False) has no frames, only its sums.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as f:
                check_version("shard", self.path, _attr(f, "format"), _attr(f, "format_version"), SHARD_FORMAT)
                self.ids = [x.decode() if isinstance(x, bytes) else x for x in f["ids"][()]]
                self.offsets = f["offsets"][()].astype(np.int64)
                self.original_seconds = f["original_seconds"][()]
                self.used_seconds = f["used_seconds"][()]
                self.n_layers = int(f.attrs["n_layers"])
                self.dim = int(f.attrs["dim"])
                dtype = _attr(f, "dtype")
                if dtype not in ("float16", "float32", "float64"):
                    raise StoreError(f"{self.path}: dtype attribute must be float16, float32 or float64; got {dtype!r}")
                self.dtype = np.dtype(dtype)
                self.has_frames = _attr(f, "frames") != "none"
                self._layout = []
                if not self.has_frames:
                    self._check_stats_shape(f)
                for layer in range(self.n_layers if self.has_frames else 0):
                    d = f["layers"][f"{layer:02d}"]
                    off = d.id.get_offset()
                    if d.chunks is not None or off is None:
                        raise StoreError(f"{self.path}: layer {layer} is not contiguous")
                    self._layout.append((int(off), tuple(d.shape)))
        except StoreError:
            raise
        except (OSError, KeyError, ValueError) as e:
            raise StoreError(f"{self.path}: unreadable or corrupt shard ({e})") from e
        if len(self.offsets) != len(self.ids) + 1 or np.any(np.diff(self.offsets) < 1):
            raise StoreError(f"{self.path}: corrupt offsets index")
        size = self.path.stat().st_size
        for off, shape in self._layout:
            if shape != (int(self.offsets[-1]), self.dim) or off + shape[0] * shape[1] * self.dtype.itemsize > size:
                raise StoreError(f"{self.path}: truncated or inconsistent layer data")
        self._maps: dict[int, np.memmap] = {}

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    def _check_stats_shape(self, f: h5py.File) -> None:
        want = (len(f["ids"]), self.n_layers, self.dim)
        for name in ("sum", "sumsq"):
            d = f["stats"][name]
            if tuple(d.shape) != want or d.dtype != np.float64:
                raise StoreError(f"{self.path}: stats/{name} is {d.dtype} {tuple(d.shape)}, expected float64 {want}")

    def layer(self, k: int) -> np.ndarray:
        """All frames of layer ``k``, shape (n_frames, dim), memory-mapped (read-only).

        Raises
        ------
        StoreError
            A statistics-only shard (it has no frames).
        """
        if not self.has_frames:
            raise StoreError(statistics_only_message(self.path.parent.name))
        if k not in self._maps:
            off, shape = self._layout[k]
            self._maps[k] = np.memmap(self.path, dtype=self.dtype, mode="r", offset=off, shape=shape)
        return self._maps[k]

    def layout(self, k: int) -> tuple[int, tuple[int, int]]:
        """``(file offset in bytes, (n_frames, dim))`` of layer ``k``'s contiguous data."""
        return self._layout[k]

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-utterance float64 ``(sum, sumsq)``, each of shape (n_utterances, n_layers, dim)."""
        with h5py.File(self.path, "r") as f:
            return f["stats/sum"][()], f["stats/sumsq"][()]

    def fingerprints(self) -> tuple[list[str], np.ndarray, str] | None:
        """``(pcm_sha256 (n,), fingerprints (n, K) float32, method)``; None for a 1.0 shard.

        Raises
        ------
        StoreError
            The datasets are there but do not have one row per utterance.
        """
        try:
            with h5py.File(self.path, "r") as f:
                if "content" not in f:
                    return None
                g = f["content"]
                sha = [x.decode() if isinstance(x, bytes) else str(x) for x in g["pcm_sha256"][()]]
                vec = np.asarray(g["fingerprint"][()], dtype=np.float32)
                method = _attr(g, "fingerprint_method")
        except (OSError, KeyError, ValueError) as e:
            raise StoreError(f"{self.path}: unreadable content fingerprints ({e})") from e
        if len(sha) != len(self.ids) or vec.ndim != 2 or len(vec) != len(self.ids) or not 0 < vec.shape[1] <= MAX_DIM:
            raise StoreError(f"{self.path}: content fingerprints do not have one row per utterance")
        return sha, vec, str(method)

    def check_data(self) -> list[str]:
        """Re-compute per-utterance sums from the frames and compare with the stored ones
        (a statistics-only shard: its sums are finite and its sums of squares not negative)."""
        problems = []
        sums, sumsq = self.stats()
        if not self.has_frames:
            if not (np.all(np.isfinite(sums)) and np.all(np.isfinite(sumsq))):
                problems.append("statistics hold NaN or infinite values")
            elif np.any(sumsq < 0):
                problems.append("statistics hold negative sums of squares")
        for k in range(self.n_layers if self.has_frames else 0):
            d = np.asarray(self.layer(k))
            if not np.all(np.isfinite(d)):
                problems.append(f"layer {k} holds NaN or infinite values")
            got, _ = np.empty_like(sums[:, k]), np.empty_like(sums[:, k])
            _utterance_sums(d, self.offsets, got, _)
            if not np.allclose(got, sums[:, k], rtol=1e-6, atol=1e-6):
                problems.append(f"layer {k} does not match its stored statistics")
        return problems


def _attr(f: h5py.File, name: str) -> Any:
    v = f.attrs.get(name)
    return v.decode() if isinstance(v, bytes) else v
