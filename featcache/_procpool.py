"""Where :func:`featcache.pipeline.extract` decodes audio and runs the handcrafted extractors.

Alongside a self-supervised model, decoding and the handcrafted extractors run in a thread
of the extracting process (the model takes the cores). Without a model they *are* the work:
eGeMAPS (openSMILE) alone costs ~1 s of CPU per ~60 s of audio on one core, so
:class:`PreparePool` runs them in worker processes (a :class:`~concurrent.futures.ProcessPoolExecutor`,
``spawn`` start), one file per task. Only this process writes the stores: a worker returns
one utterance's features (or its per-file failure) and the caller records them through its
:class:`~featcache.store.StoreWriter` exactly as in a thread, in the same order. Workers
ignore Ctrl-C (the caller stops the pool after the files in hand) and exit as soon as the
caller is gone (killed: nothing else would end them). A worker that dies stops the run with
one :class:`~featcache.errors.FeatcacheError`; committed shards stay, a re-run resumes.
Each worker costs ~3 s of CPU to start (imports, first calls), hence one thread for small runs.

One BLAS thread for the handcrafted features, in threads and processes alike. Their matrix
products (MFCC, log-mel, the fingerprints) are small: on a second thread they mostly wait for it
when every core is busy with a worker (measured on 2 cores: ~3 ms instead of 0.3 ms a product,
~20-30 % of the extraction's throughput). With one thread the features also stop depending on
the machine's core count (OpenBLAS may give other last bits with another thread count; it did on
an AMD EPYC, not on an Intel Xeon). So :class:`PreparePool` limits every BLAS library to one
thread (:mod:`threadpoolctl`): in each worker process after its libraries are loaded, and in this
process while a thread pool runs, restoring the caller's counts at :meth:`PreparePool.shutdown`.
torch's own threads (the model) are not BLAS libraries here and keep their count. The workers
start with ``OPENBLAS_THREAD_TIMEOUT=4`` and ``OMP_WAIT_POLICY=PASSIVE`` unless set: idle OpenMP
threads then sleep at once instead of spinning ~0.1 s; how threads wait never changes a result.

Processes need the extractors picklable and importable by name, and a main script that a
spawned process can import without running it again (``if __name__ == "__main__":``); where
that is not so (:func:`main_is_guarded`), the run stays in threads.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import re
import signal
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable

import numpy as np

from featcache.errors import FeatcacheError, ParameterError

__all__ = ["BLAS_THREADS", "MIN_PROCESS_AUDIO_SECONDS", "PreparePool", "check_workers", "main_is_guarded", "plan_workers", "planned_seconds", "thread_counts"]

#: automatic ``workers``: below this much audio to extract, one thread (starting a worker costs ~3 s of CPU)
MIN_PROCESS_AUDIO_SECONDS = 120.0
#: BLAS threads of the handcrafted extractors, whatever the caller's count (see the module docstring)
BLAS_THREADS = 1
#: environment the worker processes start with (how idle threads wait; never the results)
SPAWN_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

_GUARD = re.compile(r"""__name__\s*==\s*["']__main__["']""")
_STATE: dict[str, Any] = {}  # in a worker process: the prepare function and the extractors


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def planned_seconds(todo: Iterable[tuple[str, Any]], table: Any, max_seconds: float | None) -> float:
    """Audio seconds of ``todo`` from the table's header durations, cropped to ``max_seconds``."""
    if "duration" not in getattr(table, "columns", ()):
        return 0.0
    dur = dict(zip(table["id"], table["duration"]))
    crop = math.inf if max_seconds is None else float(max_seconds)
    seconds = (float(dur.get(uid, math.nan)) for uid, _ in todo)
    return float(sum(min(x, crop) for x in seconds if math.isfinite(x)))  # unknown durations (NaN) not counted


def main_is_guarded() -> bool:
    """Whether a spawned process may import this program's main module without running it again.

    A spawned worker imports the main script (as ``__mp_main__``): one that calls
    :func:`featcache.pipeline.extract` outside ``if __name__ == "__main__":`` would run again
    in every worker. Safe: no main file (interactive, ``python -c``, notebooks) or a main
    file with that guard (the ``featcache`` command, ``python -m pytest``).
    """
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path is None:
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return bool(_GUARD.search(f.read()))
    except OSError:  # "<stdin>" and the like
        return False


def _spawnable(cheap: list) -> bool:
    """Whether worker processes can run ``cheap``: picklable, not from ``__main__``, and a guarded main."""
    if any(type(ex).__module__ == "__main__" for ex in cheap) or not main_is_guarded():
        return False
    try:
        pickle.dumps(cheap)
    except Exception:  # noqa: BLE001 - any pickling failure: stay in threads
        return False
    return True


def plan_workers(workers: int | None, cheap: list, has_model: bool, audio_seconds: float,
                 processes: bool = True) -> tuple[int, bool]:
    """How many workers decode and run ``cheap``, and whether they are processes.

    Parameters
    ----------
    workers : int or None
        ``extract(workers=...)``. None: automatic -- without a model and with at least
        :data:`MIN_PROCESS_AUDIO_SECONDS` of audio to do, one process per usable core;
        else one thread. An integer > 1 without a model: that many processes; with a
        model (or 1): threads. Threads also where processes cannot be spawned safely
        (extractors that do not pickle or come from ``__main__``, a main script without
        an ``if __name__ == "__main__":`` guard: :func:`main_is_guarded`).
    cheap : list of Extractor
        The handcrafted extractors of the run.
    has_model : bool
        A self-supervised model is among the extractors (then always threads).
    audio_seconds : float
        Audio left to extract (:func:`planned_seconds`).
    processes : bool
        False where processes may not be started (a Dask worker): threads.

    Returns
    -------
    (int, bool)
        Workers, and True for processes.

    Raises
    ------
    ParameterError
        ``workers`` is not None nor a positive integer.
    """
    check_workers(workers)
    can = processes and not has_model and bool(cheap) and _spawnable(cheap)
    if workers is None:
        cores = usable_cores()
        if can and cores > 1 and audio_seconds >= MIN_PROCESS_AUDIO_SECONDS:
            return cores, True
        return 1, False
    return int(workers), bool(can and workers > 1)


def check_workers(workers: Any) -> None:
    """Refuse a ``workers`` value other than None or a positive integer (:class:`ParameterError`)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ParameterError("workers", "None (automatic) or a positive number of workers", workers)


def thread_counts() -> dict[str, int]:
    """Thread count of every BLAS / OpenMP library loaded in this process, by file path."""
    from threadpoolctl import threadpool_info

    return {lib["filepath"]: int(lib["num_threads"]) for lib in threadpool_info()}


def _init_worker(prepare: Callable, cheap: list) -> None:
    """In a new worker: ignore Ctrl-C (the parent stops the pool), die with the parent, warm up, one BLAS thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), name="featcache-parent-watch", daemon=True).start()
    _STATE.update(prepare=prepare, cheap=cheap)
    _limit_blas(cheap)


def _limit_blas(cheap: list) -> Any:
    """Run each extractor once (loads librosa/scipy/openSMILE and their BLAS), then limit BLAS to one thread.

    Returns the :class:`threadpoolctl.threadpool_limits` object, whose ``restore_original_limits``
    gives the previous counts back.
    """
    for ex in cheap:
        rate = int(ex.sampling_rate)
        x = (0.1 * np.sin(np.arange(rate // 2) * (2 * np.pi * 220 / rate))).astype(np.float32)
        try:
            ex(x, rate)
        except Exception:  # noqa: BLE001 - a real file reports its own error
            pass
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def _exit_with_parent(sentinel: int) -> None:
    """In a worker: exit as soon as the extracting process is gone (killed: its queues never close)."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _task(uid: str, path: Any, rate: int, max_seconds: float | None, needs: set[str]) -> Any:
    """One file in a worker: the parent's prepare function, without the signal (no model needs it)."""
    try:
        out = _STATE["prepare"](uid, path, rate, max_seconds, _STATE["cheap"], needs)
    except Exception as e:
        raise _sendable(e) from e
    out.signal = None
    return out


def _sendable(e: Exception) -> Exception:
    """``e`` if it survives pickling back to the parent, else a FeatcacheError naming it."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return FeatcacheError(f"{type(e).__name__}: {e}")


class PreparePool:
    """Runs ``prepare(uid, path, rate, max_seconds, cheap, needs)`` in worker threads or processes.

    Parameters
    ----------
    prepare : callable
        The per-file function (:func:`featcache.pipeline` passes its own); importable by
        name when ``processes`` (it travels to the workers by reference).
    cheap : list of Extractor
        Handcrafted extractors, sent once to every worker process.
    workers : int
    processes : bool
        Worker processes (``spawn``) instead of threads.
    """

    def __init__(self, prepare: Callable, cheap: list, workers: int, processes: bool = False) -> None:
        self.prepare, self.cheap, self.workers, self.processes = prepare, cheap, max(1, int(workers)), bool(processes)
        self._started: list[Future] = []
        self._limits: Any = None
        if not self.processes:
            self._limits = _limit_blas(cheap)
            self._pool: Any = ThreadPoolExecutor(max_workers=self.workers)
            return
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker, initargs=(prepare, cheap))
        saved = {k: os.environ.get(k) for k in SPAWN_ENV}
        for k, v in SPAWN_ENV.items():
            os.environ.setdefault(k, v)
        try:  # each submit while no worker is idle spawns one: all of them start now, with this environment
            self._started = [self._pool.submit(thread_counts) for _ in range(self.workers)]
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def submit(self, uid: str, path: Any, rate: int, max_seconds: float | None, needs: set[str]) -> Future:
        """Prepare one file; the future's result is what ``prepare`` returned."""
        if self.processes:
            return self._pool.submit(_task, uid, path, rate, max_seconds, needs)
        return self._pool.submit(self.prepare, uid, path, rate, max_seconds, self.cheap, needs)

    def result(self, fut: Future) -> Any:
        """``fut.result()``; a worker process that died becomes one :class:`FeatcacheError`."""
        try:
            return fut.result()
        except BrokenProcessPool as e:
            raise FeatcacheError(
                f"a worker process extracting handcrafted features died ({e}); the shards committed so far are"
                " kept: re-run the same command to resume (--workers 1 extracts in this process)"
            ) from e

    def worker_threads(self) -> list[dict[str, int]]:
        """Thread counts reported by the start-up tasks, one submitted per worker (one worker may run two; tests)."""
        return [self.result(f) for f in self._started]

    def shutdown(self) -> None:
        """Stop the workers after the files they are on (pending ones are cancelled); the caller's BLAS threads back."""
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if self._limits is not None:
                self._limits.restore_original_limits()
                self._limits = None
