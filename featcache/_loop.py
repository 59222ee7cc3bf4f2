"""The extraction loop of :func:`featcache.pipeline.extract`: decoding ahead, model batches, records.

Worker threads or processes (:mod:`featcache._procpool`) decode audio and run the handcrafted
extractors a few files ahead (:func:`prepare`); files the self-supervised models still need
are gathered into batches of about ``batch_seconds`` of audio (:class:`Runner`); every result
goes to the store writers in file order. :func:`run_todo` is the same loop on a Dask worker.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache._procpool import PreparePool, plan_workers, planned_seconds
from featcache.audio import load_audio
from featcache.errors import AudioError
from featcache.extractors.base import Extractor
from featcache.fingerprint import fingerprint, pcm_sha256
from featcache.process import is_model, run_extractors

__all__ = ["Prepared", "Runner", "prepare", "run", "run_todo"]


@dataclass
class Prepared:
    uid: str
    signal: np.ndarray | None = None
    original_seconds: float = 0.0
    used_seconds: float = 0.0
    results: dict[str, np.ndarray] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    pcm_sha256: str | None = None  # content fingerprints (featcache.fingerprint)
    fingerprint: np.ndarray | None = None


def prepare(uid: str, path: Path, rate: int, max_seconds: float | None, cheap: list[Extractor], needs: set[str]) -> Prepared:
    """Decode one file and run the handcrafted extractors it still needs (worker thread)."""
    out = Prepared(uid)
    try:
        audio = load_audio(path, sampling_rate=rate, max_seconds=max_seconds)
    except AudioError as e:
        out.error = e.reason
        return out
    out.signal = audio.signal
    out.original_seconds = audio.original_seconds
    out.used_seconds = audio.used_seconds
    # of the signal every extractor sees (decoded, cropped, at the extraction rate)
    out.pcm_sha256 = pcm_sha256(audio.signal)
    out.fingerprint = fingerprint(audio.signal, rate)
    done = run_extractors([audio.signal], rate, cheap, [needs])[0]
    out.results, out.errors = done.results, done.errors
    return out


class Runner:
    """Feeds decoded files to the extractors and their results to the store writers.

    Worker threads decode audio and run the handcrafted extractors a few files ahead
    (:func:`prepare`); files the self-supervised models still need are gathered into
    batches of about ``batch_seconds`` of audio (:meth:`run_models`).
    """

    def __init__(self, todo, writers, summary, extractors, batch_seconds, progress) -> None:
        from tqdm.auto import tqdm

        self.writers, self.summary, self.batch_seconds = writers, summary, batch_seconds
        self.models = [ex for ex in extractors if is_model(ex)]
        self.cheap = [ex for ex in extractors if not is_model(ex)]
        self.rate = max(ex.sampling_rate for ex in extractors)
        self.needs_of = dict(todo)
        self.batch: list[Prepared] = []
        self.pending_s = 0.0
        self.bar = tqdm(total=len(todo), unit="utt", disable=not progress, desc="extract", dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def record(self, p: Prepared) -> None:
        """Hand one utterance's results (or failure) to the writers; update the bar."""
        summary, writers = self.summary, self.writers
        if p.error is not None:
            for k in self.needs_of[p.uid]:
                writers[k].add_failure(p.uid, p.error)
            summary.failed[p.uid] = p.error
        else:
            for k, reason in p.errors.items():
                writers[k].add_failure(p.uid, reason)
                summary.failed.setdefault(p.uid, f"{k}: {reason}")
            for k, x in p.results.items():
                if not np.isfinite(x).all():  # never store what every later step would choke on
                    reason = "the extractor produced NaN or infinite values"
                    writers[k].add_failure(p.uid, reason)
                    summary.failed.setdefault(p.uid, f"{k}: {reason}")
                    continue
                writers[k].add(p.uid, x, p.original_seconds, p.used_seconds, pcm_sha256=p.pcm_sha256, fingerprint=p.fingerprint)
            summary.done += 1
            summary.audio_seconds += p.used_seconds
        self.bar.update(1)
        el = time.perf_counter() - self.t0
        self.bar.set_postfix_str(
            f"{summary.audio_seconds / max(el, 1e-9):.1f} audio-s/s, failed {len(summary.failed)}", refresh=False
        )

    def take(self, p: Prepared) -> None:
        """One decoded utterance: batched for the models when they need it, else recorded."""
        needs = self.needs_of[p.uid]
        if p.error is None and any(ex.store_name in needs for ex in self.models):
            self.batch.append(p)
            self.pending_s += p.used_seconds
            if self.pending_s >= self.batch_seconds:
                self.run_models()
        else:
            self.record(p)

    def run_models(self) -> None:
        """Run the self-supervised models on the gathered batch, then record it."""
        if not self.batch:
            return
        sigs = [p.signal for p in self.batch]
        for p, done in zip(self.batch, run_extractors(sigs, self.rate, self.models, [self.needs_of[p.uid] for p in self.batch])):
            p.results.update(done.results)
            p.errors.update(done.errors)
            p.signal = None
            self.record(p)
        self.batch.clear()
        self.pending_s = 0.0

    def close(self) -> None:
        self.bar.close()


def run_todo(todo, table, cobj, data_dir, extractors, writers, summary, max_seconds, batch_seconds, workers, progress,
             units=None) -> None:
    """Extract ``todo`` in this process, as :func:`extract` does (its ``run`` argument).

    ``writers`` map store keys to anything with ``add`` and ``add_failure`` (a
    :class:`~featcache.store.StoreWriter` or, on a Dask worker, its ``stager()``); ``units``
    are the sizes of :func:`featcache.workunits.plan_units` (a model batch never spans two).
    """
    run(todo, table, cobj, data_dir, extractors, writers, summary, max_seconds, batch_seconds, workers, progress, units,
         processes=False)  # on a Dask worker (a daemon process): threads


def run(todo, table, cobj, data_dir, extractors, writers, summary, max_seconds, batch_seconds, workers, progress,
         units=None, processes=True) -> None:
    """Extract every utterance of ``todo``: decoding ahead in threads or processes, models in batches (never across units)."""
    ends = set(itertools.accumulate(units or []))
    paths = dict(zip(table["id"], table["path"]))
    runner = Runner(todo, writers, summary, extractors, batch_seconds, progress)
    n, procs = plan_workers(workers, runner.cheap, bool(runner.models), planned_seconds(todo, table, max_seconds), processes)
    ahead = max(8, 4 * n)
    pool = PreparePool(prepare, runner.cheap, n, processes=procs)
    queue: deque[Future] = deque()
    it = iter(todo)
    taken = 0

    def fill() -> None:
        for uid, needs in it:
            path = cobj.resolve(data_dir, paths[uid])
            queue.append(pool.submit(uid, path, runner.rate, max_seconds, needs))
            if len(queue) >= ahead:
                return

    try:
        fill()
        while queue:
            fut = queue.popleft()
            fill()
            runner.take(pool.result(fut))
            taken += 1
            if taken in ends:
                runner.run_models()
        runner.run_models()
    finally:
        pool.shutdown()
        runner.close()
