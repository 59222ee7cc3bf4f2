"""Experiments on a Dask cluster: every fit of a grid x folds x seeds run is a Dask task.

The experiment runner (:func:`estimators.run_experiment`) and plain scikit-learn
(``GridSearchCV``, ``cross_validate``) parallelise through joblib, so running them on a
cluster is joblib's Dask backend around the call::

    import joblib
    from distributed import Client

    with Client("tcp://scheduler:8786"), joblib.parallel_config(backend="dask"):
        GridSearchCV(make_pipeline(SpeakerNormalizer(), DenseClassifier()), grid, cv=GroupKFold(5),
                     n_jobs=-1).fit(X, X.labels, groups=X.speakers)

A :class:`featcache.FeatureSet` pickles as its cache path plus row indices, so a task carries
a few bytes and every worker reads the frames from the (shared) cache itself; open the cache
by an absolute path when the workers do not share this process's working directory.
:func:`dask_backend` does the above for ``estimators fit --scheduler / --cluster``: it connects
(:func:`featcache.distributed.connect`), checks that every worker sees the cache, and turns the
backend on. Under it the runner also runs the grid points of each fold as tasks of their own
(joblib's nested Dask backend), so folds x seeds x grid points all spread over the workers.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

__all__ = ["dask_backend", "dask_is_active"]


@contextlib.contextmanager
def dask_backend(scheduler: str | None = None, cluster: str | None = None, *, client: Any = None,
                 caches: tuple[Path, ...] = (), gpus: list[str] | None = None) -> Iterator[Any]:
    """joblib's Dask backend on a cluster for the block (``n_jobs=-1``: all its worker threads).

    Parameters
    ----------
    scheduler, cluster, client
        Exactly one (see :func:`featcache.distributed.connect`): an address, ``"local:N"``
        (N worker processes here, with this process's torch and BLAS thread counts, so fits
        give the scores of a local run) or a ``distributed.Client``.
    caches : tuple of Path
        Corpus caches the fits read: every worker must see them (checked first).
    gpus : list of str, optional
        ``local:N`` only: worker ``i`` sees GPU ``gpus[i % len(gpus)]`` as ``cuda``
        (:func:`featcache.distributed.spread_gpus`).

    Yields
    ------
    distributed.Client

    Raises
    ------
    featcache.distributed.ClusterError
        No scheduler, Dask missing, or a worker that does not see a cache (named).
    """
    import joblib

    from featcache.distributed import check_folders, connect, require_distributed

    require_distributed()
    with connect(scheduler, cluster, client=client, gpus=gpus) as c:
        if caches:
            check_folders(c, read=tuple(Path(p).resolve() for p in caches))
        with joblib.parallel_config(backend="dask"):
            yield c


def dask_is_active() -> bool:
    """Whether joblib's active backend is Dask's (``joblib.parallel_config(backend="dask")``)."""
    try:
        from joblib.parallel import get_active_backend
    except ImportError:  # pragma: no cover
        return False
    backend, _ = get_active_backend()
    return type(backend).__name__ == "DaskDistributedBackend"
