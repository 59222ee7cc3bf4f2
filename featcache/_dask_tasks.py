"""What runs on a Dask worker in a distributed extraction (see :mod:`featcache.distributed`).

:func:`extract_unit` is one task: one work unit (:mod:`featcache.workunits`) extracted by
the same loop as a local run (:func:`featcache._loop.run_todo`) into the stagers of the
client's store writers (:meth:`featcache.store.StoreWriter.stager`), then written as one
staged shard file per store. The worker never commits: it returns the manifest entries and
the failures, and the client, which holds the cache lock, commits them in unit order.

The extractors travel pickled (a self-supervised model without its weights) and are
unpickled once per worker process and kept (:func:`cached_extractors`), so the weights are
loaded by the first task of a worker and reused by the next ones.

:func:`check_paths` is what ``client.run`` calls on every worker before anything is sent:
can this worker see the corpus and the cache, and are they the client's?
"""

from __future__ import annotations

import os
import pickle
import secrets
import time
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["cached_extractors", "check_paths", "extract_unit", "listing"]

#: extractors of the current run, by the sha256 of their pickle (one entry: a new run
#: on a long-lived cluster replaces the previous one and its model)
_EXTRACTORS: dict[str, list] = {}
#: names compared between the client's and a worker's view of a folder
LISTED = 32
_PROGRESS_EVERY = 0.5  # seconds between two progress events of a task


def cached_extractors(key: str, blob: bytes) -> list:
    """The extractors pickled in ``blob``, unpickled once per process (models loaded once)."""
    ex = _EXTRACTORS.get(key)
    if ex is None:
        _EXTRACTORS.clear()
        ex = _EXTRACTORS[key] = pickle.loads(blob)
    return ex


class _Resolved:
    """Stands in for the corpus on a worker: the client resolved every path already."""

    @staticmethod
    def resolve(data_dir: Any, path: str) -> Path:
        return Path(path)


class _Progress:
    """Counts the utterances a task has recorded and tells the client now and then."""

    def __init__(self, topic: str | None, unit: int) -> None:
        self.topic, self.unit = topic, unit
        self.attempt = secrets.token_hex(4)
        self.seen: set[str] = set()
        self.failed: set[str] = set()
        self.audio = 0.0
        self.last = 0.0

    def note(self, uid: str, seconds: float | None = None, failed: bool = False) -> None:
        if uid not in self.seen:
            self.seen.add(uid)
            self.audio += seconds or 0.0
        if failed:
            self.failed.add(uid)
        now = time.monotonic()
        if self.topic and now - self.last >= _PROGRESS_EVERY:
            self.last = now
            try:
                from distributed import get_worker

                worker = get_worker()
                worker.log_event(self.topic, {"unit": self.unit, "attempt": self.attempt, "worker": worker.address,
                                              "n": len(self.seen), "audio": self.audio, "failed": len(self.failed)})
            except (ImportError, ValueError):  # not on a worker (a test calling the task directly)
                pass


class _Counted:
    """A stager that also counts for the progress bar (everything else goes to the stager)."""

    def __init__(self, stager: Any, progress: _Progress) -> None:
        self._stager, self._progress = stager, progress

    def add(self, uid: str, features: Any, original_seconds: float, used_seconds: float, **kw: Any) -> None:
        self._stager.add(uid, features, original_seconds, used_seconds, **kw)
        self._progress.note(uid, used_seconds)

    def add_failure(self, uid: str, reason: str) -> None:
        self._stager.add_failure(uid, reason)
        self._progress.note(uid, failed=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stager, name)


def extract_unit(spec: dict) -> dict:
    """Extract one work unit on this worker and write one staged shard per store.

    Parameters
    ----------
    spec : dict
        ``unit`` (its number), ``items`` [(utterance id, store keys, absolute path)...],
        ``key`` and ``extractors`` (sha256 and pickle of the extractors), ``stagers``
        {store key: StoreWriter.stager()}, ``indices`` {store key: shard number},
        ``max_seconds``, ``batch_seconds``, ``workers`` (decoding threads), ``topic``
        (of the progress events, or None).

    Returns
    -------
    dict
        ``unit``; ``stores`` {store key: {"staged": file name or None, "entry": manifest
        entry or None, "failed": {id: reason}}}; ``done``, ``audio_seconds``, ``failed``
        (the :class:`~featcache.pipeline.ExtractionSummary` counts of this unit).
    """
    from featcache._loop import run_todo
    from featcache.pipeline import ExtractionSummary

    extractors = cached_extractors(spec["key"], spec["extractors"])
    stagers = spec["stagers"]
    progress = _Progress(spec.get("topic"), spec["unit"])
    writers = {k: _Counted(s, progress) for k, s in stagers.items()}
    items = spec["items"]
    todo = [(uid, set(needs)) for uid, needs, _ in items]
    table = pd.DataFrame({"id": [i[0] for i in items], "path": [i[2] for i in items]})
    summary = ExtractionSummary()
    run_todo(todo, table, _Resolved(), None, extractors, writers, summary, spec["max_seconds"], spec["batch_seconds"],
             int(spec.get("workers", 1)), False)
    stores = {}
    for k, s in stagers.items():
        staged = entry = None
        if s.pending:
            index = spec["indices"][k]
            path = s.staged_path(index)
            entry = s.write_file(path, index)
            staged = path.name
        stores[k] = {"staged": staged, "entry": entry, "failed": s.failed}
    return {"unit": spec["unit"], "stores": stores, "done": summary.done, "audio_seconds": summary.audio_seconds,
            "failed": dict(summary.failed)}


def listing(path: str) -> dict:
    """What identifies a folder or file for :func:`check_paths`: kind, first names, count or size."""
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        return {"kind": "folder", "names": names[:LISTED], "count": len(names)}
    st = os.stat(path)
    return {"kind": "file", "size": st.st_size}


def check_paths(checks: list[dict]) -> list[str]:
    """The problems this worker has with the folders of a run (empty: it sees them as the client does).

    Parameters
    ----------
    checks : list of dict
        ``what`` (words for the message), ``path`` (absolute), ``view`` (the client's
        :func:`listing`, or None) and, for a folder the run writes into, ``probe`` and
        ``token``: a file the client wrote there and its content (this worker must read
        it, and must be able to create and delete a file beside it).
    """
    problems = []
    for c in checks:
        what, path = c["what"], c["path"]
        try:
            if c.get("view") is not None:
                mine = listing(path)
                if mine != c["view"]:
                    problems.append(f"{what} {path}: this worker sees other content there than the client"
                                    f" ({_differs(mine, c['view'])}); a folder of the same name on another disk?")
                    continue
            else:
                os.listdir(path)
            if c.get("probe"):
                with open(os.path.join(path, c["probe"]), encoding="ascii") as f:
                    if f.read() != c["token"]:
                        problems.append(f"{what} {path}: not the client's folder (its probe file differs)")
                        continue
                mine = os.path.join(path, f"{c['probe']}.{secrets.token_hex(4)}")
                with open(mine, "w", encoding="ascii"):
                    pass
                os.remove(mine)
        except OSError as e:
            problems.append(f"{what} {path}: {e.strerror or e}")
    return problems


def _differs(mine: dict, theirs: dict) -> str:
    if mine.get("kind") != theirs.get("kind"):
        return f"a {mine.get('kind')}, the client has a {theirs.get('kind')}"
    if "size" in mine:
        return f"{mine['size']} bytes, the client's has {theirs.get('size')}"
    return f"{mine['count']} entries, the client's {theirs.get('count')}"
