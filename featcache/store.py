"""Sharded, crash-safe HDF5 feature stores.

A *store* is one folder per extractor configuration inside a corpus cache
(``<cache-dir>/<corpus>/<store>/``). It holds:

``store.json``
    What the store contains: format name and version, the extractor's description
    (name, parameters, library versions, layers, dimension, frame rate) and the pipeline
    parameters (``max_seconds``).
``manifest.json``
    The committed shards (file name, utterances, frames, size, sha256) and the utterances
    that failed, with their reasons. Replaced atomically after each shard: a reader only
    ever sees complete shards.
``shard-NNNNN.h5``
    A bounded number of utterances. Frame-level data is ragged: one concatenated array per
    layer (``layers/00`` ...) plus an ``offsets`` index, contiguous and uncompressed so that
    readers can memory-map it. Per-utterance float64 sums and sums of squares make
    statistics for any set of utterances exact without re-reading frames.
``speakers.h5``
    Per-speaker statistics (count, sum, sumsq, mean, std), rewritten at the end of a run.

The exact format is written down in the README ("On-disk format").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from featcache.errors import StoreError, StoreMismatchError

__all__ = [
    "FORMAT_VERSION",
    "SHARD_FORMAT",
    "STORE_FORMAT",
    "StoreWriter",
    "StoreReader",
    "Shard",
    "atomic_write_json",
    "compare_params",
]

STORE_FORMAT = "featcache.store"
SHARD_FORMAT = "featcache.shard"
MANIFEST_FORMAT = "featcache.manifest"
SPEAKERS_FORMAT = "featcache.speakers"
FORMAT_VERSION = "1.0"
_MAJOR = 1


def _check_version(what: str, path: Path, fmt: str, version: str, expected_fmt: str) -> None:
    if fmt != expected_fmt:
        raise StoreError(f"{path}: not a {expected_fmt} file (format attribute is {fmt!r})")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        major = -1
    if major != _MAJOR:
        raise StoreMismatchError(
            f"{path}: {what} format version {version!r} cannot be read by this featcache "
            f"(reads {FORMAT_VERSION}); upgrade featcache or re-extract"
        )


# --------------------------------------------------------------------------- fault injection
#
# The crash, disk-full and concurrency tests (tests/test_reliability_*.py) and
# benchmarks/stress_kill.py make a writer stop or fail at exact points of a commit:
#
#   FEATCACHE_FAULTS="point=action[@n],..."   (read once, at import)
#
# point: one of FAULT_POINTS; action: ``pause`` (write "featcache-fault: pause POINT N" to
# stderr, then block until a line or EOF arrives on stdin: a killer aims at that moment) or
# ``enospc`` (raise OSError(ENOSPC), as a full disk does); ``@n``: from the n-th time the
# point is reached in this process on, ``@n-m``: the n-th to m-th times only (default: every
# time). Unset (the normal case), each point costs one truth test of an empty dict.

FAULT_POINTS = (
    "shard_mid_write",  # inside the shard's HDF5 file: first layer written, the rest not yet
    "shard_written",  # shard-NNNNN.h5.tmp complete and fsync'ed, not yet renamed
    "shard_renamed",  # shard-NNNNN.h5 in place, not yet named by manifest.json
    "manifest_mid_write",  # half of manifest.json.tmp written, not yet renamed over manifest.json
)
_FAULT_ACTIONS = ("pause", "enospc")


def parse_faults(spec: str) -> dict[str, dict]:
    """Parse a ``FEATCACHE_FAULTS`` value into ``{point: {"action", "at", "until", "seen"}}``."""
    faults: dict[str, dict] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        point, _, rest = item.partition("=")
        action, _, when = (rest or "pause").partition("@")
        at, _, until = when.partition("-")
        if (
            point not in FAULT_POINTS
            or action not in _FAULT_ACTIONS
            or not all(x.isdigit() for x in (at, until) if x)
            or (until and not at)
        ):
            raise StoreError(
                f"FEATCACHE_FAULTS must be point=action[@n[-m]] items with point in {', '.join(FAULT_POINTS)}"
                f" and action in {', '.join(_FAULT_ACTIONS)}; got {item!r}"
            )
        faults[point] = {"action": action, "at": int(at) if at else None, "until": int(until) if until else None, "seen": 0}
    return faults


_FAULTS: dict[str, dict] = parse_faults(os.environ.get("FEATCACHE_FAULTS", ""))


def _fault(point: str) -> None:
    """Act on ``point`` when FEATCACHE_FAULTS names it (call sites test ``_FAULTS`` first)."""
    f = _FAULTS.get(point)
    if f is None:
        return
    f["seen"] += 1
    if (f["at"] is not None and f["seen"] < f["at"]) or (f["until"] is not None and f["seen"] > f["until"]):
        return
    if f["action"] == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (injected at {point})")
    sys.stderr.write(f"featcache-fault: pause {point} {f['seen']}\n")
    sys.stderr.flush()
    sys.stdin.readline()


def atomic_write_json(path: Path, obj: Any, *, fault_point: str | None = None) -> None:
    """Write JSON to ``path`` atomically (temporary file, fsync, rename).

    On an error the temporary file is removed and ``path`` is left as it was.
    ``fault_point`` names the fault-injection point between the two halves of the write.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(obj, indent=1, sort_keys=True, default=_json_default)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            if fault_point is not None and _FAULTS:
                f.write(text[: len(text) // 2])
                f.flush()
                _fault(fault_point)
                f.write(text[len(text) // 2 :])
            else:
                f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def compare_params(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Differences between two nested parameter dicts, as ``key: old != new`` lines."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += compare_params(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} != {b!r}")
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------- writing


@dataclass
class _Pending:
    ids: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)  # (L, frames, D) each
    original_seconds: list[float] = field(default_factory=list)
    used_seconds: list[float] = field(default_factory=list)
    nbytes: int = 0


class StoreWriter:
    """Appends utterances to a store, committing a shard at a time.

    Parameters
    ----------
    path : Path
        The store folder (created if missing).
    description : dict
        ``Extractor.describe()`` of the extractor (must hold ``n_layers``, ``dim``,
        ``dtype``, ``frame_rate``, ``params``).
    pipeline : dict
        Parameters of the pipeline that change the features (``max_seconds``).
    shard_size : int
        Most utterances per shard.
    shard_bytes : int
        Most bytes of frame data per shard (whichever limit comes first).
    overwrite : bool
        Delete an existing store made with other parameters instead of refusing.

    Notes
    -----
    Locking is done by the caller (one lock per corpus cache, see
    :mod:`featcache.pipeline`). Killing the process at any moment loses at most the
    utterances of the shard being filled; a re-run skips every committed utterance.
    """

    def __init__(
        self,
        path: Path,
        description: dict,
        pipeline: dict,
        *,
        shard_size: int = 256,
        shard_bytes: int = 1 << 30,
        overwrite: bool = False,
        repair: bool = False,
    ) -> None:
        self.path = Path(path)
        self.description = description
        self.pipeline = pipeline
        self.shard_size = int(shard_size)
        self.shard_bytes = int(shard_bytes)
        self.n_layers = int(description["n_layers"])
        self.dim = int(description["dim"])
        self.dtype = np.dtype(description["dtype"])
        self._pending = _Pending()
        self.dropped: list[str] = []
        self._open(overwrite, repair)

    # -- set-up
    def _open(self, overwrite: bool, repair: bool) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        info_path = self.path / "store.json"
        wanted = {"extractor": _strip_versions(self.description), "pipeline": self.pipeline}
        if info_path.exists():
            info = _read_json(info_path)
            _check_version("store", info_path, info.get("format"), info.get("format_version"), STORE_FORMAT)
            have = {"extractor": _strip_versions(info.get("extractor", {})), "pipeline": info.get("pipeline", {})}
            diff = compare_params(have, wanted)
            if diff and not overwrite:
                raise StoreMismatchError(
                    f"{self.path} holds features made with other parameters:\n  "
                    + "\n  ".join(diff)
                    + "\n(left: in the store, right: asked for). Use --overwrite to replace the"
                    " store, or --name to write another one."
                )
            if diff and overwrite:
                self._wipe()
        if not info_path.exists():
            atomic_write_json(
                info_path,
                {
                    "format": STORE_FORMAT,
                    "format_version": FORMAT_VERSION,
                    "created": _now(),
                    "extractor": self.description,
                    "pipeline": self.pipeline,
                },
            )
        self.manifest = _load_manifest(self.path)
        self._drop_bad_shards(deep=repair)
        self._remove_orphans()

    def _drop_bad_shards(self, deep: bool) -> None:
        """Forget committed shards that are missing or damaged, so their utterances are redone.

        Without ``deep`` only existence and size are checked (cheap, every run); with it
        (``--repair``) every check of :func:`featcache.verify.verify_store`.
        """
        bad: dict[str, str] = {}
        if deep:
            from featcache.verify import verify_store

            for prob in verify_store(self.path, deep=True):
                bad.setdefault(prob.where, prob.message)
        else:
            for s in self.manifest["shards"]:
                p = self.path / s["file"]
                if not p.exists():
                    bad[s["file"]] = "missing"
                elif p.stat().st_size != s["size"]:
                    bad[s["file"]] = "truncated"
        if not bad:
            return
        keep = []
        for s in self.manifest["shards"]:
            if s["file"] in bad:
                self.dropped += list(s["ids"])
            else:
                keep.append(s)
        self.manifest["shards"] = keep
        self._save_manifest()
        for name in bad:
            (self.path / name).unlink(missing_ok=True)

    def _wipe(self) -> None:
        for p in self.path.iterdir():
            if p.is_file() and (p.suffix in {".h5", ".json", ".tmp"} or p.name.endswith(".tmp")):
                p.unlink()
        _fsync_dir(self.path)

    def _remove_orphans(self) -> None:
        """Delete shard files that no committed manifest names (a run killed mid-commit)."""
        named = {s["file"] for s in self.manifest["shards"]}
        for p in self.path.glob("shard-*"):
            if p.name not in named:
                p.unlink()

    # -- state
    @property
    def done_ids(self) -> set[str]:
        """Ids of committed utterances."""
        return {i for s in self.manifest["shards"] for i in s["ids"]}

    @property
    def failed(self) -> dict[str, str]:
        """Failed utterance id → reason."""
        return dict(self.manifest["failed"])

    def _next_index(self) -> int:
        used = [int(s["file"][6:11]) for s in self.manifest["shards"]]
        return max(used) + 1 if used else 0

    # -- appending
    def add(self, uid: str, features: np.ndarray, original_seconds: float, used_seconds: float) -> None:
        """Queue one utterance; commits a shard when the limits are reached.

        Parameters
        ----------
        uid : str
            Utterance id.
        features : ndarray of shape (n_frames, dim) or (n_layers, n_frames, dim)
            The extractor's output.
        """
        x = np.asarray(features)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[0] != self.n_layers or x.shape[2] != self.dim or x.shape[1] < 1:
            raise StoreError(
                f"{uid}: features of shape {features.shape} do not fit store {self.path.name}"
                f" (expected (n_frames>=1, {self.dim}) per layer, {self.n_layers} layers)"
            )
        p = self._pending
        p.ids.append(uid)
        p.arrays.append(x)
        p.original_seconds.append(float(original_seconds))
        p.used_seconds.append(float(used_seconds))
        p.nbytes += x.shape[0] * x.shape[1] * x.shape[2] * self.dtype.itemsize
        if len(p.ids) >= self.shard_size or p.nbytes >= self.shard_bytes:
            self.commit()

    def add_failure(self, uid: str, reason: str) -> None:
        """Record that ``uid`` could not be extracted (saved with the next commit)."""
        self.manifest["failed"][uid] = reason
        self._failures_dirty = True

    @property
    def pending(self) -> int:
        """Utterances queued but not committed."""
        return len(self._pending.ids)

    def commit(self) -> None:
        """Write the queued utterances as one shard and update the manifest atomically.

        Raises
        ------
        StoreError
            Not enough free disk space for the shard, or writing it or the manifest failed
            (full disk, I/O error). Committed shards and ``manifest.json`` are left as they
            were; the queued utterances stay queued (a later ``commit`` retries them).
        """
        p = self._pending
        if not p.ids:
            if getattr(self, "_failures_dirty", False):
                self._save_manifest()
            return
        index = self._next_index()
        name = f"shard-{index:05d}.h5"
        final = self.path / name
        tmp = self.path / (name + ".tmp")
        self._check_free_space(name, p)
        try:
            n_frames = write_shard(
                tmp,
                ids=p.ids,
                arrays=p.arrays,
                original_seconds=p.original_seconds,
                used_seconds=p.used_seconds,
                dtype=self.dtype,
                attrs={
                    "store": self.path.name,
                    "extractor": json.dumps(self.description, sort_keys=True),
                    "n_layers": self.n_layers,
                    "dim": self.dim,
                    "frame_rate": float(self.description["frame_rate"]),
                    "shard_index": index,
                },
            )
            if _FAULTS:
                _fault("shard_written")
            os.replace(tmp, final)
        except (OSError, RuntimeError) as e:  # h5py reports some write errors as RuntimeError
            tmp.unlink(missing_ok=True)
            raise self._write_error(name, e) from e
        _fsync_dir(self.path)
        if _FAULTS:
            _fault("shard_renamed")
        entry = {
            "file": name,
            "ids": list(p.ids),
            "n_utterances": len(p.ids),
            "n_frames": int(n_frames),
            "size": final.stat().st_size,
            "sha256": _sha256(final),
        }
        # the new manifest replaces the current one only once it is on disk: a failed write
        # leaves both as they were (and the renamed shard an orphan, deleted by the next run)
        manifest = dict(self.manifest, shards=[*self.manifest["shards"], entry], failed=dict(self.manifest["failed"]))
        for uid in p.ids:
            manifest["failed"].pop(uid, None)
        try:
            self._save_manifest(manifest)
        except StoreError:
            final.unlink(missing_ok=True)
            raise
        self._pending = _Pending()

    def _check_free_space(self, name: str, p: _Pending) -> None:
        """Refuse to start a shard the file system has no room for.

        HDF5 does not always survive a failed write (on some versions the process crashes),
        so a full disk is best caught before the shard is started.
        """
        n_values = len(p.ids) * self.n_layers * self.dim
        need = p.nbytes + 2 * 8 * n_values + 64 * len(p.ids) + (1 << 20)
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            return
        if free < need:
            raise StoreError(
                f"{self.path}: not enough free disk space to write {name}: about {need / 2**20:.1f} MiB"
                f" needed, {free / 2**20:.1f} MiB free. Utterances committed so far are kept;"
                " free some space and re-run the same command to extract the rest."
            )

    def _write_error(self, what: str, e: BaseException) -> StoreError:
        return StoreError(
            f"{self.path}: writing {what} failed ({e}). Utterances committed so far are kept"
            " (featcache verify checks them); free disk space or fix the cause and re-run the"
            " same command to extract the rest."
        )

    def _save_manifest(self, manifest: dict | None = None) -> None:
        """Write ``manifest`` (default: the current one) atomically, then make it current."""
        m = dict(self.manifest if manifest is None else manifest)
        m["updated"] = _now()
        m["token"] = hashlib.sha1(json.dumps([s["sha256"] for s in m["shards"]]).encode()).hexdigest()
        try:
            atomic_write_json(self.path / "manifest.json", m, fault_point="manifest_mid_write")
        except OSError as e:
            raise self._write_error("manifest.json", e) from e
        self.manifest = m
        self._failures_dirty = False

    def close(self) -> None:
        """Commit what is queued."""
        self.commit()


def _strip_versions(desc: dict) -> dict:
    return {k: v for k, v in desc.items() if k != "versions"}


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: cannot be read ({e})") from e


def _load_manifest(path: Path) -> dict:
    mpath = path / "manifest.json"
    if not mpath.exists():
        return {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, "shards": [], "failed": {}}
    m = _read_json(mpath)
    _check_version("manifest", mpath, m.get("format"), m.get("format_version"), MANIFEST_FORMAT)
    return m


def write_shard(
    path: Path,
    *,
    ids: list[str],
    arrays: list[np.ndarray],
    original_seconds: Iterable[float],
    used_seconds: Iterable[float],
    dtype: np.dtype,
    attrs: dict,
) -> int:
    """Write one shard file (see the README for the layout); returns its number of frames.

    Parameters
    ----------
    arrays : list of ndarray of shape (n_layers, n_frames_i, dim)
        Features of each utterance, in the order of ``ids``.
    """
    lengths = np.array([a.shape[1] for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_layers, dim = arrays[0].shape[0], arrays[0].shape[2]
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format"] = SHARD_FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = _now()
        f.attrs["dtype"] = np.dtype(dtype).name
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("original_seconds", data=np.asarray(list(original_seconds), dtype=np.float64))
        f.create_dataset("used_seconds", data=np.asarray(list(used_seconds), dtype=np.float64))
        g = f.create_group("layers")
        s = f.create_group("stats")
        sums = np.empty((len(arrays), n_layers, dim), dtype=np.float64)
        sumsq = np.empty_like(sums)
        for layer in range(n_layers):
            data = np.concatenate([a[layer] for a in arrays], axis=0).astype(dtype, copy=False)
            g.create_dataset(f"{layer:02d}", data=data)  # contiguous, uncompressed: memory-mappable
            if layer == 0 and _FAULTS:
                f.flush()
                _fault("shard_mid_write")
            # statistics of the values as stored (after the cast), in float64
            d64 = data.astype(np.float64)
            sums[:, layer] = np.add.reduceat(d64, offsets[:-1], axis=0)
            sumsq[:, layer] = np.add.reduceat(d64 * d64, offsets[:-1], axis=0)
        s.create_dataset("sum", data=sums)
        s.create_dataset("sumsq", data=sumsq)
        f.flush()
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
    return int(offsets[-1])


# --------------------------------------------------------------------------- reading


class Shard:
    """Read access to one committed shard.

    Frame data is memory-mapped (``numpy.memmap``) straight from the HDF5 file, which the
    writer keeps contiguous and uncompressed; nothing is read until it is accessed.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as f:
                _check_version(
                    "shard", self.path, _attr(f, "format"), _attr(f, "format_version"), SHARD_FORMAT
                )
                self.ids = [x.decode() if isinstance(x, bytes) else x for x in f["ids"][()]]
                self.offsets = f["offsets"][()].astype(np.int64)
                self.original_seconds = f["original_seconds"][()]
                self.used_seconds = f["used_seconds"][()]
                self.n_layers = int(f.attrs["n_layers"])
                self.dim = int(f.attrs["dim"])
                self.dtype = np.dtype(_attr(f, "dtype"))
                self._layout = []
                for layer in range(self.n_layers):
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

    def layer(self, k: int) -> np.ndarray:
        """All frames of layer ``k``, shape (n_frames, dim), memory-mapped (read-only)."""
        if k not in self._maps:
            off, shape = self._layout[k]
            self._maps[k] = np.memmap(self.path, dtype=self.dtype, mode="r", offset=off, shape=shape)
        return self._maps[k]

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-utterance float64 ``(sum, sumsq)``, each of shape (n_utterances, n_layers, dim)."""
        with h5py.File(self.path, "r") as f:
            return f["stats/sum"][()], f["stats/sumsq"][()]

    def check_data(self) -> list[str]:
        """Re-compute per-utterance sums from the frames and compare with the stored ones."""
        problems = []
        sums, _ = self.stats()
        for k in range(self.n_layers):
            d = np.asarray(self.layer(k), dtype=np.float64)
            if not np.all(np.isfinite(d)):
                problems.append(f"layer {k} holds NaN or infinite values")
            got = np.add.reduceat(d, self.offsets[:-1], axis=0)
            if not np.allclose(got, sums[:, k], rtol=1e-6, atol=1e-6):
                problems.append(f"layer {k} does not match its stored statistics")
        return problems


def _attr(f: h5py.File, name: str) -> Any:
    v = f.attrs.get(name)
    return v.decode() if isinstance(v, bytes) else v


class StoreReader:
    """Read access to a committed store (what its manifest names; never a half-written shard).

    Attributes
    ----------
    info : dict
        ``store.json``.
    manifest : dict
        ``manifest.json`` as read when the reader was made.
    ids : list of str
        Committed utterance ids, in store order.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        info_path = self.path / "store.json"
        if not info_path.exists():
            raise StoreError(f"{self.path} is not a feature store (no store.json)")
        self.info = _read_json(info_path)
        _check_version("store", info_path, self.info.get("format"), self.info.get("format_version"), STORE_FORMAT)
        self.manifest = _load_manifest(self.path)
        ext = self.info["extractor"]
        self.n_layers = int(ext["n_layers"])
        self.dim = int(ext["dim"])
        self.frame_rate = float(ext["frame_rate"])
        self.dtype = np.dtype(ext["dtype"])
        self.ids: list[str] = []
        self._where: dict[str, tuple[int, int]] = {}
        self.n_frames_of: dict[str, int] = {}
        for si, s in enumerate(self.manifest["shards"]):
            for row, uid in enumerate(s["ids"]):
                self._where[uid] = (si, row)
                self.ids.append(uid)
        self._shards: dict[int, Shard] = {}

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def token(self) -> str:
        """Changes whenever a shard is committed (for caching loaded data)."""
        return str(self.manifest.get("token", ""))

    @property
    def failed(self) -> dict[str, str]:
        return dict(self.manifest.get("failed", {}))

    def shard(self, si: int) -> Shard:
        if si not in self._shards:
            entry = self.manifest["shards"][si]
            p = self.path / entry["file"]
            if not p.exists():
                raise StoreError(f"{p}: shard named in the manifest is missing (run featcache verify)")
            sh = Shard(p)
            if sh.ids != list(entry["ids"]):
                raise StoreError(f"{p}: ids differ from the manifest (run featcache verify)")
            self._shards[si] = sh
        return self._shards[si]

    def locate(self, uid: str) -> tuple[int, int]:
        """(shard index, row) of an utterance."""
        try:
            return self._where[uid]
        except KeyError:
            raise StoreError(f"utterance {uid!r} is not in store {self.path}") from None

    def __contains__(self, uid: str) -> bool:
        return uid in self._where

    def frames(self, uid: str, layers: list[int] | None = None) -> np.ndarray:
        """Frames of one utterance, shape (n_frames, n_selected_layers, dim), in the store's dtype."""
        si, row = self.locate(uid)
        sh = self.shard(si)
        a, b = int(sh.offsets[row]), int(sh.offsets[row + 1])
        layers = list(range(self.n_layers)) if layers is None else layers
        return np.stack([sh.layer(k)[a:b] for k in layers], axis=1)

    def lengths(self) -> dict[str, int]:
        """Frames per committed utterance."""
        out = {}
        for si, s in enumerate(self.manifest["shards"]):
            sh = self.shard(si)
            for uid, n in zip(sh.ids, np.diff(sh.offsets)):
                out[uid] = int(n)
        return out

    def utterance_stats(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Per-utterance ``(ids, n_frames (n,), sum (n, L, D), sumsq (n, L, D))`` in float64."""
        ids, ns, sums, sqs = [], [], [], []
        for si in range(len(self.manifest["shards"])):
            sh = self.shard(si)
            s, q = sh.stats()
            ids += sh.ids
            ns.append(np.diff(sh.offsets))
            sums.append(s)
            sqs.append(q)
        if not ids:
            z = np.zeros((0, self.n_layers, self.dim))
            return [], np.zeros(0, np.int64), z, z
        return ids, np.concatenate(ns), np.concatenate(sums), np.concatenate(sqs)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def combine_stats(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Exact mean and (population) std from per-utterance counts, sums and sums of squares.

    Parameters
    ----------
    n : ndarray of shape (n_utterances,)
    s, q : ndarray of shape (n_utterances, ...)

    Returns
    -------
    count : float, mean : ndarray (...), std : ndarray (...)
    """
    count = float(np.sum(n))
    if count == 0:
        raise StoreError("cannot compute statistics of zero frames")
    mean = np.sum(s, axis=0) / count
    var = np.maximum(np.sum(q, axis=0) / count - mean * mean, 0.0)
    return count, mean, np.sqrt(var)
