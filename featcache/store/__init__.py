"""Sharded, crash-safe HDF5 feature stores, split by job.

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

Modules: :mod:`._format` (names, versions, validation of every file read), :mod:`._writer`,
:mod:`._reader`, :mod:`._shard` (one shard file), :mod:`._verify`, :mod:`._repair` (a manifest rebuilt from the shards) and
:mod:`.faults` (the test-only fault-injection hook). The format is written down in the
README ("On-disk format").
"""

from featcache.store import faults
from featcache.store._format import (
    FORMAT_VERSION,
    MANIFEST_FORMAT,
    SHARD_FORMAT,
    SPEAKERS_FORMAT,
    STORE_FORMAT,
    check_version,
    compare_params,
    load_manifest,
    load_store_info,
    now,
    shard_path,
)
from featcache.store._reader import StoreReader
from featcache.store._shard import Shard, write_shard
from featcache.store._verify import Problem, check_coverage, table_ids, unnamed_shards, verify_cache, verify_store
from featcache.store._writer import StoreWriter
from featcache.store.faults import parse_faults

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FORMAT",
    "SHARD_FORMAT",
    "SPEAKERS_FORMAT",
    "STORE_FORMAT",
    "Problem",
    "Shard",
    "StoreReader",
    "StoreWriter",
    "check_coverage",
    "check_version",
    "compare_params",
    "faults",
    "load_manifest",
    "load_store_info",
    "now",
    "parse_faults",
    "shard_path",
    "table_ids",
    "unnamed_shards",
    "verify_cache",
    "verify_store",
    "write_shard",
]
