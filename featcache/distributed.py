"""Scale-out on a Dask cluster: :func:`extract` (``featcache extract --scheduler / --cluster``).

Dask distributed (``pip install 'ser-featcache[dask]'``) runs the work; nothing here
schedules, queues or talks to sockets itself. The cluster is either an existing one
(``scheduler="tcp://host:8786"``: ``dask scheduler`` + ``dask worker``, or dask-jobqueue on
SLURM/PBS, see the README) or ``cluster="local:N"``: a ``LocalCluster`` of N single-threaded
worker processes on this machine, one GPU each when there are several (``CUDA_VISIBLE_DEVICES``
set per worker, in turn over the GPUs this process sees).

Extraction is split into work units (:mod:`featcache.workunits`), one task each; a worker
loads the extractors once, extracts its unit with the local code and writes one staged
shard per store into the cache; this process keeps the cache lock and is the only one that
commits (:mod:`featcache._dask_run`). Results are the local run's bit for bit on the same
kind of machine with the same thread counts: the workers of ``local:N`` get this process's
torch and BLAS thread counts (``threads=`` changes them; floating-point reductions on a CPU
depend on them).

Before any work, :func:`check_folders` makes every worker prove that it sees the corpus and
the cache as this process does (a shared file system); the error names the worker and the path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any, Iterator

from featcache._dask_run import DaskRun
from featcache.errors import ClusterError
from featcache._dask_tasks import check_paths, listing
from featcache.errors import ParameterError

__all__ = ["ClusterError", "check_folders", "connect", "extract", "local_cluster", "parse_cluster", "spread_gpus"]

_LOCAL = re.compile(r"local:(\d+)")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CONNECT_TIMEOUT = "20s"  #: how long a client waits for the scheduler at ``--scheduler``


def require_distributed() -> None:
    """Raise :class:`ClusterError` with the install command when Dask distributed is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError as e:
        raise ClusterError(
            "--scheduler / --cluster need Dask distributed: pip install 'dask[distributed]'"
            " (or the package's extra: pip install -e '.[dask]')"
        ) from e


def parse_cluster(spec: Any) -> int:
    """The number of workers of a ``local:N`` cluster spec (N >= 1).

    Raises
    ------
    ParameterError
    """
    m = _LOCAL.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if not m or int(m.group(1)) < 1:
        raise ParameterError("cluster (--cluster)", "'local:N' with N >= 1 worker processes", spec)
    return int(m.group(1))


def _thread_counts(threads: int | None) -> dict[str, str]:
    """Thread variables for workers: ``threads``, or this process's torch and BLAS counts."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ParameterError("threads", "a positive number of threads per worker, or None", threads)
        return dict.fromkeys(_THREAD_VARS, str(threads))
    import torch
    from threadpoolctl import threadpool_info

    blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    t = str(torch.get_num_threads())
    return {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": str(blas[0] if blas else t)}


def local_cluster(n_workers: int, *, gpus: list[str] | None = None, threads: int | None = None) -> Any:
    """A cluster of ``n_workers`` single-threaded worker processes on this machine (loopback).

    Parameters
    ----------
    n_workers : int
    gpus : list of str, optional
        CUDA devices (as this process numbers them in ``CUDA_VISIBLE_DEVICES``); worker
        ``i`` gets ``CUDA_VISIBLE_DEVICES=gpus[i % len(gpus)]`` and sees that one GPU as ``cuda``.
    threads : int, optional
        torch / BLAS threads of every worker (default: this process's counts).

    Returns
    -------
    distributed.LocalCluster or distributed.SpecCluster
    """
    require_distributed()
    import dask
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    env = _thread_counts(threads)
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update(env)  # set before spawning, and kept by the nannies for restarts
    try:
        # Dask's default also sets MALLOC_TRIM_THRESHOLD_=65536, which makes glibc mmap and unmap
        # every large buffer: torch fits in such workers were 2-2.5x slower here
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            if not gpus:
                return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                    silence_logs=logging.ERROR)
            spec = {
                i: {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "silence_logs": logging.ERROR,
                                              "memory_limit": MEMORY_LIMIT // n_workers,
                                              "env": {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}}}
                for i in range(n_workers)
            }
            scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
            return SpecCluster(workers=spec, scheduler=scheduler, silence_logs=logging.ERROR)
    finally:
        _restore(saved)


def _restore(saved: dict[str, str | None]) -> None:
    """Put environment variables back (a nanny sets its workers' variables here too, at each restart)."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def connect(scheduler: str | None = None, cluster: str | None = None, *, client: Any = None,
            gpus: list[str] | None = None, threads: int | None = None) -> Iterator[Any]:
    """A Dask client on an existing scheduler, on a new ``local:N`` cluster, or the one given.

    Exactly one of ``scheduler`` (an address such as ``tcp://10.0.0.5:8786``), ``cluster``
    (``local:N``) and ``client`` is given. What this creates is closed on leaving.

    Raises
    ------
    ParameterError
        Not exactly one of them, or a bad ``cluster`` spec.
    ClusterError
        Dask distributed is not installed, or no scheduler answers at ``scheduler``.
    """
    given = [n for n, v in (("scheduler", scheduler), ("cluster", cluster), ("client", client)) if v is not None]
    if len(given) != 1:
        raise ParameterError("scheduler / cluster", "exactly one of --scheduler ADDRESS and --cluster local:N", given or None)
    if client is not None:
        yield client
        return
    require_distributed()
    from distributed import Client

    if scheduler is not None:
        try:
            c = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterError(f"no Dask scheduler answers at {scheduler!r} ({e}); start one (`dask scheduler`) or use --cluster local:N") from e
        with c:
            yield c
        return
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    try:
        with local_cluster(parse_cluster(cluster), gpus=gpus, threads=threads) as lc, Client(lc) as c:
            yield c
    finally:
        _restore(saved)


def _workers(client: Any) -> dict[str, str]:
    """Worker address -> how to name it in a message (its address and name)."""
    info = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) else client.scheduler_info()["workers"]
    return {a: f"{a} (name {w.get('name')})" for a, w in info.items()}


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def check_folders(client: Any, *, data: Path | None = None, cache: Path | None = None, read: tuple[Path, ...] = ()) -> None:
    """Make every worker show that it sees ``data`` and ``read`` and can write ``cache``, as this process.

    Parameters
    ----------
    data : Path, optional
        The corpus folder (or CSV manifest): each worker's listing must equal this one's.
    cache : Path, optional
        A folder the run writes into: each worker must read a probe file written here just
        now (the same folder, not one of the same name) and create a file beside it.
    read : tuple of Path
        Folders the workers read (a feature cache for training): listings compared.

    Raises
    ------
    ClusterError
        The cluster has no worker, or one or more workers do not see a path; the message
        names each worker and path and what it saw.
    """
    checks = [{"what": "the corpus", "path": str(data), "view": listing(str(data))}] if data is not None else []
    checks += [{"what": "the feature cache", "path": str(p), "view": listing(str(p))} for p in read]
    probe = None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        probe = cache / f".featcache-probe-{token[:12]}"
        probe.write_text(token, encoding="ascii")
        checks.append({"what": "the cache", "path": str(cache), "view": None, "probe": probe.name, "token": token})
    try:
        names = _workers(client)
        if not names:
            raise ClusterError("the Dask cluster has no worker (start some: `dask worker ADDRESS`, or wait for the jobs)")
        found = client.run(check_paths, checks, on_error="return")
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
    lines = []
    for addr, problems in sorted(found.items()):
        if isinstance(problems, BaseException):
            problems = [f"the check failed ({type(problems).__name__}: {problems})"]
        lines += [f"worker {names.get(addr, addr)} cannot use {p}" for p in problems]
    if lines:
        raise ClusterError(
            "; ".join(lines) + ". Every worker must see the corpus and the cache at the same paths as this"
            " process (a shared file system) and be able to write the cache."
        )


def _gpus(extractors: list) -> list[str] | None:
    """The GPUs to spread ``local:N`` workers over: when a model runs on ``cuda`` (no index) and there are several."""
    return spread_gpus([getattr(ex, "device", None) for ex in extractors])


def spread_gpus(devices: list[Any]) -> list[str] | None:
    """GPUs for ``local:N`` workers (:func:`local_cluster`'s ``gpus``), one each in turn.

    When any of ``devices`` is ``"cuda"`` or ``"auto"`` (no index) and this process sees
    several GPUs: their ids as ``CUDA_VISIBLE_DEVICES`` numbers them; else None (``cuda:K``
    puts every worker on GPU K).
    """
    if not any(str(d) in ("cuda", "auto") for d in devices if d is not None):
        return None
    import torch

    n = torch.cuda.device_count()
    if n < 2:
        return None
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[:n] if len(visible) >= n else [str(i) for i in range(n)]


def extract(corpus: str, data_dir: Path, cache_dir: Path, extractors: list, *, scheduler: str | None = None,
            cluster: str | None = None, client: Any = None, threads: int | None = None, **options: Any):
    """:func:`featcache.pipeline.extract` with the work done by the workers of a Dask cluster.

    Parameters
    ----------
    corpus, data_dir, cache_dir
        As for :func:`featcache.pipeline.extract` (paths are made absolute for the workers).
    extractors : list of Extractor, or callable
        The extractors; or a function returning them (e.g.
        ``functools.partial(build_extractors, ["wav2vec2"], device="cuda", precision="bf16")``),
        called on one worker, so that a client without a GPU (a login node) can ask for one
        and ``auto`` device and precision resolve where the work runs.
    scheduler, cluster, client
        Exactly one: a scheduler address, ``"local:N"``, or a ``distributed.Client``.
    threads : int, optional
        torch / BLAS threads of each ``local:N`` worker (default: this process's, which
        makes the features equal to a local run's bit for bit).
    **options
        The other arguments of :func:`featcache.pipeline.extract` (``shard_size``,
        ``max_seconds``, ``overwrite``, ``repair``, ``progress``, ``limit`` ...).

    Returns
    -------
    ExtractionSummary

    Raises
    ------
    ClusterError
        See :func:`connect` and :func:`check_folders`; or a unit lost with its workers again
        and again.
    """
    from featcache import pipeline

    data_dir, cache_root = Path(data_dir).resolve(), Path(cache_dir).resolve()
    gpus = _gpus(extractors) if cluster and not callable(extractors) else None
    with connect(scheduler, cluster, client=client, gpus=gpus, threads=threads) as c:
        if callable(extractors):
            extractors = c.submit(extractors, pure=False).result()
        check_folders(c, data=data_dir, cache=cache_root / corpus)
        return pipeline.extract(corpus, data_dir, cache_root, extractors, run=DaskRun(c), **options)
