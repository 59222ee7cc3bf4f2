"""Work units of an extraction run: consecutive utterances that make one shard of every store.

A unit is the granularity at which :func:`featcache.pipeline.extract` batches the
self-supervised models (a model batch never spans two units) and at which
:mod:`featcache.distributed` hands work to a Dask worker (one task per unit, one shard file
per store). Both use :func:`plan_units` on the same utterances, so a distributed run feeds
the models exactly the batches of a local run and their features are the same bit for bit.

A unit ends as soon as one store would commit a shard in a local run if every utterance
were kept: after ``shard_size`` utterances, or once the frames it holds reach
``shard_bytes``. The frames are estimated from the durations of the corpus table (read
from the file headers before anything is decoded), cropped to ``max_seconds``; the
estimate only bounds a worker's memory (a shard of about ``shard_bytes``), it never
changes the features.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["plan_units"]


def _frames(seconds: float, frame_rate: float) -> int:
    return int(math.ceil(max(seconds, 0.0) * frame_rate)) + 1


def plan_units(
    todo: Iterable[tuple[str, set[str]]],
    durations: Mapping[str, float],
    writers: Mapping[str, Any],
    max_seconds: float | None,
) -> list[int]:
    """Sizes of the consecutive units that cover ``todo``, in order.

    Parameters
    ----------
    todo : iterable of (str, set of str)
        (utterance id, store keys still to extract), as planned by the pipeline.
    durations : mapping of str to float
        Seconds of each utterance (NaN or missing: ``max_seconds``, or 0 without it).
    writers : mapping of str to StoreWriter
        The store writers by key: their ``shard_size``, ``shard_bytes``, ``n_layers``,
        ``dim``, ``dtype`` and ``description["frame_rate"]`` are used.
    max_seconds : float or None
        The crop of the run.

    Returns
    -------
    list of int
        Positive sizes summing to ``len(todo)`` (empty for an empty ``todo``).
    """
    per_frame = {k: int(w.n_layers) * int(w.dim) * int(w.dtype.itemsize) for k, w in writers.items()}
    rate = {k: float(w.description["frame_rate"]) for k, w in writers.items()}
    sizes: list[int] = []
    count = {k: 0 for k in writers}
    nbytes = {k: 0 for k in writers}
    n = 0
    for uid, needs in todo:
        seconds = durations.get(uid)
        if seconds is None or not math.isfinite(seconds):  # NaN: the header could not be read
            seconds = max_seconds or 0.0
        if max_seconds is not None:
            seconds = min(seconds, max_seconds)
        n += 1
        full = False
        for k in needs:
            count[k] += 1
            nbytes[k] += _frames(seconds, rate[k]) * per_frame[k]
            w = writers[k]
            full = full or count[k] >= int(w.shard_size) or nbytes[k] >= int(w.shard_bytes)
        if full:
            sizes.append(n)
            n = 0
            count = dict.fromkeys(count, 0)
            nbytes = dict.fromkeys(nbytes, 0)
    if n:
        sizes.append(n)
    return sizes
