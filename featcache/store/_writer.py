"""Writing stores: :class:`StoreWriter` appends utterances a shard at a time, crash-safely.

Each commit writes ``shard-NNNNN.h5.tmp``, fsyncs it, renames it into place, then replaces
``manifest.json`` atomically: a reader only ever sees complete shards, and a process killed
at any moment loses at most the shard being filled. Nothing outside the store folder is
ever written or deleted: every name acted on is the store's own (``shard-NNNNN.h5``,
``store.json``, ``manifest.json``, their ``.tmp``), checked by :mod:`featcache.store._format`.

In a distributed run (:mod:`featcache.distributed`) the steps are split: a worker's
:meth:`StoreWriter.stager` writes and fsyncs a staged ``shard-NNNNN.h5.<16 hex>.tmp``
(:meth:`~StoreWriter.write_file`); the client's writer, the only one holding the cache
lock, renames it and replaces the manifest (:meth:`~StoreWriter.commit_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.errors import ParameterError, StoreError, StoreMismatchError
from featcache.fileio import atomic_write_json, fsync_dir, sha256_file
from featcache.store import faults
from featcache.store._recovery import Recovery
from featcache.store._shard import pack_content, write_shard
from featcache.store._format import (
    FORMAT_VERSION,
    FRAMES,
    STORE_FORMAT,
    compare_params,
    empty_manifest,
    load_store_info,
    now,
    shard_path,
    strip_versions,
)

__all__ = ["StoreWriter"]


@dataclass
class _Pending:
    ids: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)  # (L, frames, D) each
    original_seconds: list[float] = field(default_factory=list)
    used_seconds: list[float] = field(default_factory=list)
    pcm_sha256: list[str] = field(default_factory=list)  # "" where not given
    fingerprints: list[np.ndarray | None] = field(default_factory=list)
    nbytes: int = 0


class StoreWriter(Recovery):
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
    fingerprint_method : str, optional
        Name of the method of the content fingerprints given to :meth:`add` (stored with
        them, :mod:`featcache.fingerprint`); without it none are stored.
    frames : {"all", "none"}
        ``"none"``: a statistics-only store (per-utterance sums, no frames; recorded in
        ``store.json``, so a store of the other kind is refused like other parameters).

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
        fingerprint_method: str | None = None,
        frames: str = "all",
    ) -> None:
        if frames not in FRAMES:
            raise ParameterError("frames", f"one of {', '.join(FRAMES)}", frames)
        self.frames = frames
        self.path = Path(path)
        self.fingerprint_method = fingerprint_method
        self.description = description
        self.pipeline = pipeline
        self.shard_size = int(shard_size)
        self.shard_bytes = int(shard_bytes)
        self.n_layers = int(description["n_layers"])
        self.dim = int(description["dim"])
        self.dtype = np.dtype(description["dtype"])
        self._pending = _Pending()
        self.dropped: list[str] = []
        self.rebuilt: dict | None = None  # what --repair rebuilt the manifest from, if it did
        self.staging = False  # True for a copy made by stager(): never touches the store itself
        self._open(overwrite, repair)

    # -- set-up
    def _open(self, overwrite: bool, repair: bool) -> None:
        if self.path.is_symlink():
            raise StoreError(f"{self.path} is a symbolic link; a store must be a real folder inside its cache")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the store folder ({e.strerror or e})") from e
        info_path = self.path / "store.json"
        wanted = {"extractor": strip_versions(self.description), "pipeline": self.pipeline, "frames": self.frames}
        if info_path.exists():
            info = load_store_info(self.path)
            have = {"extractor": strip_versions(info["extractor"]), "pipeline": info.get("pipeline", {}),
                    "frames": info.get("frames", "all")}
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
                    "created": now(),
                    "extractor": self.description,
                    "pipeline": self.pipeline,
                    "frames": self.frames,
                },
            )
        self.manifest = self._load_manifest(repair)
        self._drop_bad_shards(deep=repair)
        self._remove_orphans()

    def remove_orphans(self) -> None:
        """Delete the store's shard files and temporaries that the manifest does not name.

        Done when a writer opens its store; a distributed run calls it again at its end,
        for the staged files of worker attempts that were lost or never committed.
        """
        self._remove_orphans()

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

    @property
    def next_index(self) -> int:
        """Number of the next shard file (one more than the highest committed)."""
        return self._next_index()

    # -- distributed runs (featcache.distributed): workers write, this writer commits
    def stager(self) -> StoreWriter:
        """A copy of this writer for a worker: it queues and writes shards, never commits.

        The copy shares the store's parameters (extractor, shard layout, frames,
        fingerprints) and starts empty: :meth:`add` only queues (no automatic commit),
        :meth:`add_failure` only records, :meth:`write_file` writes the queue as a staged
        file (:meth:`staged_path`) that this writer then commits with :meth:`commit_file`.
        It never reads or writes ``store.json`` or ``manifest.json`` and deletes nothing.
        """
        import copy

        s = copy.copy(self)
        s.staging = True
        s.manifest = empty_manifest()
        s._pending = _Pending()
        s._failures_dirty = False
        s.dropped, s.rebuilt = [], None
        return s

    def staged_path(self, index: int) -> Path:
        """A fresh name for shard ``index`` written by a worker: ``shard-NNNNN.h5.<16 hex>.tmp``.

        Unique per attempt, so two attempts at the same work (a worker thought dead that
        still runs) never write the same file; what is not committed is deleted by
        :meth:`remove_orphans`.
        """
        return self.path / f"shard-{int(index):05d}.h5.{secrets.token_hex(8)}.tmp"

    # -- appending
    def add(
        self, uid: str, features: np.ndarray, original_seconds: float, used_seconds: float, *,
        pcm_sha256: str | None = None, fingerprint: np.ndarray | None = None,
    ) -> None:
        """Queue one utterance; commits a shard when the limits are reached.

        Parameters
        ----------
        uid : str
            Utterance id.
        features : ndarray of shape (n_frames, dim) or (n_layers, n_frames, dim)
            The extractor's output.
        pcm_sha256, fingerprint : str and ndarray of shape (K,), optional
            Content fingerprints (:mod:`featcache.fingerprint`); the same K for all.
        """
        x = np.asarray(features)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[0] != self.n_layers or x.shape[2] != self.dim or x.shape[1] < 1:
            raise StoreError(
                f"{uid}: features of shape {features.shape} do not fit store {self.path.name}"
                f" (expected (n_frames>=1, {self.dim}) per layer, {self.n_layers} layers)"
            )
        fp = None if fingerprint is None else np.asarray(fingerprint, dtype=np.float32).ravel()
        p = self._pending
        if fp is not None and any(v is not None and len(v) != len(fp) for v in p.fingerprints):
            raise StoreError(f"{uid}: a fingerprint of {len(fp)} values; the others of the shard differ in length")
        p.ids.append(uid)
        p.arrays.append(x)
        p.pcm_sha256.append(pcm_sha256 or "")
        p.fingerprints.append(fp)
        p.original_seconds.append(float(original_seconds))
        p.used_seconds.append(float(used_seconds))
        p.nbytes += x.shape[0] * x.shape[1] * x.shape[2] * self.dtype.itemsize
        if not self.staging and (len(p.ids) >= self.shard_size or p.nbytes >= self.shard_bytes):
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
        if self.staging:
            raise StoreError(f"{self.path}: a stager only writes files (write_file); the client's writer commits them")
        index = self._next_index()
        tmp = self.path / f"shard-{index:05d}.h5.tmp"
        self.commit_file(tmp, self.write_file(tmp, index))
        self._pending = _Pending()

    def write_file(self, path: Path, index: int) -> dict:
        """Write the queued utterances to ``path`` as shard ``index``, fsynced but not committed.

        Returns
        -------
        dict
            The shard's manifest entry (file, ids, n_utterances, n_frames, size, sha256),
            for :meth:`commit_file`. The queue is left as it is.

        Raises
        ------
        StoreError
            Not enough free disk space, or the write failed (the file is removed).
        """
        p = self._pending
        name = f"shard-{int(index):05d}.h5"
        self._check_free_space(name, p)
        try:
            n_frames = write_shard(
                path,
                ids=p.ids,
                arrays=p.arrays,
                original_seconds=p.original_seconds,
                used_seconds=p.used_seconds,
                dtype=self.dtype,
                content=pack_content(p.pcm_sha256, p.fingerprints, self.fingerprint_method),
                frames=self.frames == "all",
                attrs={
                    "store": self.path.name,
                    "extractor": json.dumps(self.description, sort_keys=True),
                    "n_layers": self.n_layers,
                    "dim": self.dim,
                    "frame_rate": float(self.description["frame_rate"]),
                    "shard_index": index,
                },
            )
            if faults.ACTIVE:
                faults.hit("shard_written")
            entry = {
                "file": name,
                "ids": list(p.ids),
                "n_utterances": len(p.ids),
                "n_frames": int(n_frames),
                "size": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        except (OSError, RuntimeError) as e:  # h5py reports some write errors as RuntimeError
            path.unlink(missing_ok=True)
            raise self._write_error(name, e) from e
        return entry

    def commit_file(self, path: Path, entry: dict) -> None:
        """Rename a complete shard file into place, then name it in the manifest atomically.

        Parameters
        ----------
        path : Path
            The file written by :meth:`write_file` (of this writer, or of a
            :meth:`stager` on a worker), inside the store folder.
        entry : dict
            What :meth:`write_file` returned.

        Raises
        ------
        StoreError
            The shard or one of its utterances is already committed, the file's size is not
            the one written, or the rename or the manifest write failed (the manifest is then
            left as it was; the file is an orphan that :meth:`remove_orphans` deletes).
        """
        name = entry["file"]
        final = shard_path(self.path, name, "shard to commit")
        if name in {s["file"] for s in self.manifest["shards"]} or self.done_ids.intersection(entry["ids"]):
            raise StoreError(f"{self.path}: {name} or one of its utterances is already committed")
        try:
            if path.stat().st_size != entry["size"]:
                raise StoreError(f"{path}: {path.stat().st_size} bytes, {entry['size']} were written (changed since?)")
            os.replace(path, final)
        except OSError as e:
            path.unlink(missing_ok=True)
            raise self._write_error(name, e) from e
        fsync_dir(self.path)
        if faults.ACTIVE:
            faults.hit("shard_renamed")
        # the new manifest replaces the current one only once it is on disk: a failed write
        # leaves both as they were (and the renamed shard an orphan, deleted by the next run)
        manifest = dict(self.manifest, shards=[*self.manifest["shards"], dict(entry)], failed=dict(self.manifest["failed"]))
        for uid in entry["ids"]:
            manifest["failed"].pop(uid, None)
        try:
            self._save_manifest(manifest)
        except StoreError:
            final.unlink(missing_ok=True)
            raise

    def _check_free_space(self, name: str, p: _Pending) -> None:
        """Refuse to start a shard the file system has no room for.

        HDF5 does not always survive a failed write (on some versions the process crashes),
        so a full disk is best caught before the shard is started.
        """
        n_values = len(p.ids) * self.n_layers * self.dim
        need = p.nbytes * (self.frames == "all") + 2 * 8 * n_values + 64 * len(p.ids) + (1 << 20)
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
        m["updated"] = now()
        m["token"] = hashlib.sha1(json.dumps([s["sha256"] for s in m["shards"]]).encode()).hexdigest()
        try:
            atomic_write_json(self.path / "manifest.json", m, midway=_midway("manifest_mid_write"))
        except OSError as e:
            raise self._write_error("manifest.json", e) from e
        self.manifest = m
        self._failures_dirty = False

    def close(self) -> None:
        """Commit what is queued."""
        self.commit()


def _midway(point: str):
    """The fault hook between the two halves of an atomic write (None unless a test set one)."""
    return (lambda: faults.hit(point)) if faults.ACTIVE else None
