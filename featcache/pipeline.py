"""Extraction over a corpus: audio decoding, extractors and stores, orchestrated.

Audio decoding and the handcrafted extractors (MFCC, log-mel, spectrogram, eGeMAPS) run in
a small thread pool ahead of the self-supervised model, so they overlap with it instead of
serialising behind it; without a model they run in worker processes, one per core
(:mod:`featcache._procpool`; this process alone writes the stores). The model gets
length-sorted batches (see :meth:`featcache.extractors.ssl.SSLExtractor.batch`). The loop itself
is :mod:`featcache._loop`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from featcache._loop import run as _run
from featcache._loop import run_todo
from featcache._procpool import check_workers
from featcache.corpora import Corpus, get_corpus
from featcache.errors import FeatcacheError, ParameterError, StoreError
from featcache.extractors.base import Extractor
from featcache.fingerprint import FINGERPRINT_METHOD
from featcache.lock import CacheLock
from featcache.process import is_model
from featcache.stats import write_speaker_stats
from featcache.fileio import atomic_write_bytes, atomic_write_json, read_json
from featcache.store import FORMAT_VERSION, StoreReader, StoreWriter, check_version
from featcache.workunits import plan_units

__all__ = ["ExtractionSummary", "extract", "build_extractors", "run_todo", "FEATURE_NAMES"]

FEATURE_NAMES = ("wav2vec2", "mfcc", "logmel", "spectrogram", "egemaps", "egemaps_functionals", "compare_functionals")


@dataclass
class ExtractionSummary:
    """What one extraction run did.

    Attributes
    ----------
    done : int
        Utterances extracted (for at least one store) in this run.
    skipped : int
        Utterances already complete in every requested store.
    failed : dict
        Utterance id → reason, for failures of this run.
    audio_seconds : float
        Audio (after cropping) processed in this run.
    wall_seconds : float
    cache_bytes : int
        Size of the corpus cache after the run.
    stores : list of str
    """

    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    cache_bytes: int = 0
    stores: list[str] = field(default_factory=list)
    cache_path: str = ""
    redone: int = 0
    rebuilt: list[str] = field(default_factory=list)  # "store: how --repair rebuilt its manifest"


def build_extractors(
    features: Iterable[str],
    *,
    model: str | None = "wav2vec_small",
    precision: str = "auto",
    device: str = "auto",
    layers: str | Iterable[int] | None = None,
) -> list[Extractor]:
    """Extractor objects for the names of ``--features``.

    Parameters
    ----------
    features : iterable of str
        Names among :data:`FEATURE_NAMES` (``wav2vec2`` means the self-supervised ``model``).
    model : str
        Short name, HuggingFace id or local directory of the self-supervised model.
    layers : str, iterable of int or None
        Hidden states the model's store keeps (``"0,6-12"``; None: all); needs ``wav2vec2``.
    """
    from featcache.extractors.functionals import FUNCTIONALS
    from featcache.extractors.handcrafted import get_handcrafted

    out: list[Extractor] = []
    names = [f.strip() for f in features if f.strip()]
    if not names:
        raise ParameterError("features", f"a comma-separated list of {', '.join(FEATURE_NAMES)}", "")
    for name in names:
        if name in ("wav2vec2", "ssl"):
            from featcache.extractors.ssl import SSLExtractor

            out.append(SSLExtractor(model or "wav2vec_small", precision=precision, device=device, layers=layers))
        elif name in FUNCTIONALS:  # one vector per utterance
            out.append(FUNCTIONALS[name]())
        elif name in FEATURE_NAMES:
            out.append(get_handcrafted(name))
        else:
            raise ParameterError("features", f"names among {', '.join(FEATURE_NAMES)}", name)
    if layers is not None and not any(is_model(ex) for ex in out):
        raise ParameterError("layers", "given only with a self-supervised model among the features (wav2vec2)", layers)
    return out


def _write_table(cache: Path, corpus: Corpus, data_dir: Path, scan) -> pd.DataFrame:
    """Write ``utterances.csv`` and ``corpus.json`` (merging with rows already cached)."""
    table = scan.table.copy()
    table_path = cache / "utterances.csv"
    if table_path.exists():
        old = pd.read_csv(table_path, dtype={"id": str, "speaker": str, "label": str}, keep_default_na=False)
        old = old[~old["id"].isin(table["id"])]
        if len(old):
            table = pd.concat([table, old], ignore_index=True).sort_values("id").reset_index(drop=True)
    atomic_write_bytes(table_path, table.to_csv(index=False).encode("utf-8"))
    atomic_write_json(
        cache / "corpus.json",
        {
            "format": "featcache.corpus",
            "format_version": FORMAT_VERSION,
            "corpus": corpus.name,
            "data_dir": str(Path(data_dir).resolve()),
            "n_utterances": int(len(table)),
            "problems": [list(p) for p in scan.problems],
            "dropped": scan.dropped,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return table


def extract(
    corpus: str,
    data_dir: Path,
    cache_dir: Path,
    extractors: list[Extractor],
    *,
    max_seconds: float | None = 15.0,
    overwrite: bool = False,
    repair: bool = False,
    names: dict[str, str] | None = None,
    shard_size: int = 256,
    batch_seconds: float = 60.0,
    workers: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    frames: str = "all",
    log: Callable[[str], None] = lambda s: None,
    run: Callable[..., None] | None = None,
) -> ExtractionSummary:
    """Extract features of every utterance of a corpus into ``<cache_dir>/<corpus>/``.

    Resumable: utterances already committed are skipped; a killed run loses at most the
    shard being filled. Holds an exclusive lock on the corpus cache.

    Parameters
    ----------
    corpus : str
        Registered corpus name (see :func:`featcache.corpora.list_corpora`).
    data_dir : Path
        The corpus folder (or CSV manifest for ``csv``).
    cache_dir : Path
        Cache root; features go to ``cache_dir / corpus``.
    extractors : list of Extractor
    max_seconds : float or None
        Crop every file to its first ``max_seconds`` seconds (None: no cropping).
    overwrite : bool
        Replace stores made with other parameters instead of refusing.
    repair : bool
        Verify every shard deeply first and re-extract the utterances of damaged ones.
    names : dict, optional
        Store name overrides, extractor store name → folder name (``--name``).
    shard_size : int
        Most utterances per shard.
    batch_seconds : float
        Audio seconds per batch given to the self-supervised model.
    workers : int or None
        Workers decoding audio and running the handcrafted extractors: threads alongside a
        self-supervised model, worker processes without one (when > 1, picklable extractors
        and a main script guarded by ``if __name__ == "__main__":``). None (default):
        without a model and with at least two minutes of audio to do, one process per
        usable core, else one thread (:func:`featcache._procpool.plan_workers`). The
        features are the same either way.
    limit : int, optional
        Only the first ``limit`` utterances of the table (quick trials).
    frames : {"all", "none"}
        ``"none"``: the self-supervised models' stores keep per-utterance statistics only,
        no frames (``--frames none``); the handcrafted stores keep their frames.
    run : callable, optional
        What extracts the planned utterances, with the arguments of :func:`run_todo` (the
        default, in this process); :func:`featcache.distributed.extract` passes one that
        runs them on a Dask cluster while this process keeps the lock and commits.
    """
    if max_seconds is not None and not (max_seconds > 0):
        raise ParameterError("max_seconds", "a positive number of seconds or None", max_seconds)
    if frames not in ("all", "none"):
        raise ParameterError("frames", "'all' or 'none'", frames)
    check_workers(workers)
    t0 = time.perf_counter()
    cobj = get_corpus(corpus)
    scan = cobj.scan(Path(data_dir))
    for path, reason in scan.problems:
        log(f"skipped {path}: {reason}")
    cache = Path(cache_dir) / corpus
    cache.mkdir(parents=True, exist_ok=True)
    summary = ExtractionSummary(cache_path=str(cache))
    with CacheLock(cache):
        _check_corpus_file(cache)
        table = scan.table if limit is None else scan.table.iloc[: int(limit)]
        writers = _open_writers(cache, extractors, names, summary, max_seconds=max_seconds, shard_size=shard_size,
                                overwrite=overwrite, repair=repair, frames=frames)
        summary.stores = [w.path.name for w in writers.values()]
        # after the stores accepted the parameters: a refused run leaves the table as it was
        try:
            _write_table(cache, cobj, Path(data_dir), scan)
        except OSError as e:
            raise StoreError(f"{cache}: writing the utterance table failed ({e}); free disk space or fix the cause and re-run") from e
        todo = _plan(table, writers)
        summary.skipped = len(table) - len(todo)
        if workers is None and run is not None:  # Dask workers: one decoding thread each, as before
            workers = 1
        try:
            seconds = dict(zip(table["id"], table["duration"])) if "duration" in table else {}
            units = plan_units(todo, seconds, writers, max_seconds)
            (run or _run)(todo, table, cobj, Path(data_dir), extractors, writers, summary, max_seconds, batch_seconds,
                          workers, progress, units=units)
        except BaseException:
            # keep what can be kept, but report the first error, not a second one from close()
            for w in writers.values():
                try:
                    w.close()
                except FeatcacheError:
                    pass
            raise
        for w in writers.values():
            w.close()
        _write_speaker_stats(writers, table, scan.table)
    summary.wall_seconds = time.perf_counter() - t0
    summary.cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    return summary


def _open_writers(cache: Path, extractors, names, summary: ExtractionSummary, **kw) -> dict[str, StoreWriter]:
    """One writer per extractor (each checks, repairs or refuses its store before any work)."""
    writers: dict[str, StoreWriter] = {}
    for ex in extractors:
        folder = (names or {}).get(ex.store_name, ex.store_name)
        if folder in writers:
            raise ParameterError("features", "distinct stores", folder)
        w = writers[ex.store_name] = StoreWriter(
            cache / folder, ex.describe(), {"max_seconds": kw["max_seconds"]}, shard_size=kw["shard_size"],
            overwrite=kw["overwrite"], repair=kw["repair"], fingerprint_method=FINGERPRINT_METHOD,
            frames=kw["frames"] if is_model(ex) else "all",
        )
        summary.redone += len(w.dropped)
        if w.rebuilt:
            summary.rebuilt.append(
                f"{folder}: manifest.json rebuilt from {w.rebuilt['shards']} shard(s) ({w.rebuilt['reason']});"
                f" {len(w.rebuilt['skipped'])} unreadable or foreign shard file(s) removed"
            )
    return writers


def _write_speaker_stats(writers: dict[str, StoreWriter], table: pd.DataFrame, full_table: pd.DataFrame) -> None:
    """Rewrite ``speakers.h5`` of every store from its per-utterance sums."""
    speaker_of = dict(zip(full_table["id"], full_table["speaker"].astype(str)))
    speaker_of.update(zip(table["id"], table["speaker"].astype(str)))
    for w in writers.values():
        reader = StoreReader(w.path)
        if reader.ids:
            try:
                write_speaker_stats(reader, speaker_of)
            except (OSError, RuntimeError) as e:
                raise StoreError(
                    f"{w.path}: writing speakers.h5 failed ({e}); the features are committed, a re-run"
                    " (after freeing disk space or fixing the cause) writes the statistics"
                ) from e


def _check_corpus_file(cache: Path) -> None:
    """Refuse to write into a corpus cache made by another featcache format (before touching it)."""
    path = cache / "corpus.json"
    if path.exists():
        info = read_json(path, StoreError)
        check_version("corpus cache", path, info.get("format"), info.get("format_version"), "featcache.corpus")


def _plan(table: pd.DataFrame, writers: dict[str, StoreWriter]) -> list[tuple[str, set[str]]]:
    """(utterance id, stores that still need it) for every unfinished utterance, in table order."""
    done = {k: w.done_ids | set(w.failed) for k, w in writers.items()}
    todo = []
    for uid in table["id"]:
        needs = {k for k in writers if uid not in done[k]}
        if needs:
            todo.append((uid, needs))
    return todo
