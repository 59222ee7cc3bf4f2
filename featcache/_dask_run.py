"""The client side of a distributed extraction: units out as Dask tasks, shards committed in order.

:class:`DaskRun` is the ``run`` argument that :func:`featcache.distributed.extract` gives
:func:`featcache.pipeline.extract`: the pipeline scans the corpus, takes the cache lock,
opens the store writers and plans the work units exactly as for a local run; this object
then submits one task per unit (:func:`featcache._dask_tasks.extract_unit`) and, as they
finish, commits their staged shards through the client's writers *in unit order*, so the
stores list the utterances in the order of a local run. A unit whose worker dies is run
again by Dask; its lost attempt leaves at most a staged file, deleted at the end
(:meth:`~featcache.store.StoreWriter.remove_orphans`) or by the next run.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any

from featcache._dask_tasks import extract_unit
from featcache.errors import ClusterError, StoreError

__all__ = ["DaskRun"]


class _Bar:
    """One progress bar over the whole run: committed units plus the live counts of running ones."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="utt", disable=not enabled, desc="extract", dynamic_ncols=True)
        self.lock = threading.Lock()
        self.live: dict[int, tuple[int, float, int]] = {}
        self.committed: set[int] = set()
        self.n, self.audio, self.failed = 0, 0.0, 0
        self.t0 = time.perf_counter()

    def event(self, event: Any) -> None:
        """A worker's progress event (``client.subscribe_topic`` handler)."""
        msg = event[1] if isinstance(event, tuple) else event
        with self.lock:
            if isinstance(msg, dict) and msg.get("unit") not in self.committed:
                self.live[msg["unit"]] = (int(msg["n"]), float(msg["audio"]), int(msg["failed"]))
                self._show()

    def commit(self, unit: int, n: int, audio: float, failed: int) -> None:
        with self.lock:
            self.committed.add(unit)
            self.live.pop(unit, None)
            self.n, self.audio, self.failed = self.n + n, self.audio + audio, self.failed + failed
            self._show()

    def _show(self) -> None:
        live = list(self.live.values())
        n = self.n + sum(v[0] for v in live)
        audio = self.audio + sum(v[1] for v in live)
        el = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.n = min(n, self.bar.total)
        self.bar.set_postfix_str(f"{audio / el:.1f} audio-s/s, failed {self.failed + sum(v[2] for v in live)}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class DaskRun:
    """Runs the planned units of an extraction on a Dask cluster (see the module docstring).

    Parameters
    ----------
    client : distributed.Client
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, todo, table, cobj, data_dir, extractors, writers, summary, max_seconds, batch_seconds, workers,
                 progress, units=None) -> None:
        if not todo:
            return
        import cloudpickle

        blob = cloudpickle.dumps(list(extractors))
        token = secrets.token_hex(6)
        topic = f"featcache-extract-{token}"
        common = {"key": hashlib.sha256(blob).hexdigest(), "extractors": blob, "max_seconds": max_seconds,
                  "batch_seconds": batch_seconds, "workers": workers, "topic": topic,
                  "stagers": {k: w.stager() for k, w in writers.items()}}
        base = {k: w.next_index for k, w in writers.items()}
        paths = dict(zip(table["id"], table["path"]))
        bar = _Bar(len(todo), progress)
        self.client.subscribe_topic(topic, bar.event)
        futures, start = [], 0
        try:
            sizes = list(units or [len(todo)])
            for u, size in enumerate(sizes):
                items = [(uid, sorted(needs), str(cobj.resolve(data_dir, paths[uid]))) for uid, needs in todo[start:start + size]]
                start += size
                spec = dict(common, unit=u, items=items, indices={k: base[k] + u for k in writers})
                futures.append(self.client.submit(extract_unit, spec, key=f"featcache-unit-{token}-{u:05d}", pure=False))
            self._collect(futures, sizes, writers, summary, bar)
        except BaseException:
            self.client.cancel(futures)
            raise
        finally:
            self.client.unsubscribe_topic(topic)
            bar.close()
        for w in writers.values():
            w.remove_orphans()

    def _collect(self, futures: list, sizes: list[int], writers: dict, summary, bar: _Bar) -> None:
        """Commit the units' shards in unit order as their tasks finish."""
        from distributed import KilledWorker, as_completed

        ready: dict[int, dict] = {}
        nxt = 0
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except KilledWorker as e:
                raise ClusterError(
                    f"a unit of work ({fut.key}) was lost with the workers running it several times"
                    " (distributed.scheduler.allowed-failures): a file that crashes the extractors, or a"
                    f" worker out of memory? The shards committed so far are kept; re-run to resume ({e})"
                ) from e
            ready[res["unit"]] = res
            while nxt in ready:
                done = ready.pop(nxt)
                _commit(done, writers, summary)
                bar.commit(nxt, sizes[nxt], done["audio_seconds"], len(done["failed"]))
                nxt += 1


def _commit(res: dict, writers: dict, summary) -> None:
    """Record one unit's failures and commit its staged shards through the client's writers."""
    for k, r in res["stores"].items():
        w = writers[k]
        for uid, reason in r["failed"].items():
            w.add_failure(uid, reason)
        if r["entry"] is not None:
            name = r["staged"]
            if not isinstance(name, str) or "/" in name or not name.startswith(r["entry"]["file"] + "."):
                raise StoreError(f"{w.path}: a worker returned the staged file name {name!r}")
            w.commit_file(w.path / name, r["entry"])
    summary.done += res["done"]
    summary.audio_seconds += res["audio_seconds"]
    summary.failed.update(res["failed"])
