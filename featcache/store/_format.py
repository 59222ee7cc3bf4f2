"""The store format: names, versions, and the checks every file read from a store passes.

A store folder is untrusted input (caches are shared between people and machines), so
``store.json`` and ``manifest.json`` are read within size and depth limits and validated
field by field before anything acts on them: a shard name must match the store's own
pattern (``shard-NNNNN.h5``), so no entry can point outside the folder.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from featcache.errors import StoreError, StoreMismatchError
from featcache.fileio import read_json, resolve_inside
from featcache.params import param_differences

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FORMAT",
    "SHARD_FORMAT",
    "SHARD_NAME",
    "SPEAKERS_FORMAT",
    "STORE_FORMAT",
    "check_version",
    "compare_params",
    "empty_manifest",
    "load_manifest",
    "load_store_info",
    "now",
    "shard_path",
    "statistics_only_message",
    "stored_layers",
    "strip_versions",
]

STORE_FORMAT = "featcache.store"
SHARD_FORMAT = "featcache.shard"
MANIFEST_FORMAT = "featcache.manifest"
SPEAKERS_FORMAT = "featcache.speakers"
# 1.1: shards hold content fingerprints; 1.2: statistics-only stores (store.json "frames":
# "none", shards without layers/) and kept layer subsets; 1.0 and 1.1 files are still read
FORMAT_VERSION = "1.2"
#: what a store keeps of each utterance (store.json ``frames``; absent: "all")
FRAMES = ("all", "none")
_MAJOR = 1
SHARD_NAME = re.compile(r"shard-(\d{5})\.h5")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DTYPES = ("float16", "float32", "float64")
# generous bounds on what a store may declare: a 25-layer x 1024 model is far inside them
MAX_LAYERS, MAX_DIM = 4096, 1 << 16


def check_version(what: str, path: Path, fmt: Any, version: Any, expected_fmt: str) -> None:
    """Refuse a file of another format or of a major version this featcache cannot read."""
    if fmt != expected_fmt:
        raise StoreError(f"{path}: not a {expected_fmt} file (format attribute is {fmt!r})")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        major = -1
    if major != _MAJOR:
        raise StoreMismatchError(
            f"{path}: {what} format version {version!r} cannot be read by this featcache "
            f"(reads {_MAJOR}.0 to {FORMAT_VERSION}); upgrade featcache or re-extract"
        )


def compare_params(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Differences between two nested parameter dicts, as ``key: old != new`` lines.

    The rule is :func:`featcache.params.param_differences`; a store refuses every difference.
    """
    return [str(d) for d in param_differences(old, new, prefix=prefix)]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def strip_versions(desc: dict) -> dict:
    return {k: v for k, v in desc.items() if k != "versions"}


def shard_path(store: Path, name: Any, what: str = "manifest.json shard file") -> Path:
    """The path of a shard named in a manifest; only ``shard-NNNNN.h5`` inside ``store``."""
    if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
        raise StoreError(f"{store}: {what} must be a name like shard-00000.h5; got {name!r}")
    return resolve_inside(store, name, f"{store}: {what}", StoreError)


def _is_int(v: Any, lo: int = 0, hi: float = math.inf) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def load_store_info(path: Path) -> dict:
    """Read and validate ``store.json`` of the store folder ``path``.

    Raises
    ------
    StoreError
        Missing, unreadable, of another format, or an extractor description whose layers,
        dimension, dtype or frame rate are not sane values.
    """
    info_path = Path(path) / "store.json"
    if not info_path.exists():
        raise StoreError(f"{path} is not a feature store (no store.json)")
    info = read_json(info_path, StoreError)
    check_version("store", info_path, info.get("format"), info.get("format_version"), STORE_FORMAT)
    ext = info.get("extractor")
    if not isinstance(ext, dict):
        raise StoreError(f"{info_path}: 'extractor' must be an object; got {type(ext).__name__}")
    bad = []
    if not _is_int(ext.get("n_layers"), 1, MAX_LAYERS):
        bad.append(f"n_layers must be an integer from 1 to {MAX_LAYERS}; got {ext.get('n_layers')!r}")
    if not _is_int(ext.get("dim"), 1, MAX_DIM):
        bad.append(f"dim must be an integer from 1 to {MAX_DIM}; got {ext.get('dim')!r}")
    if ext.get("dtype") not in _DTYPES:
        bad.append(f"dtype must be one of {', '.join(_DTYPES)}; got {ext.get('dtype')!r}")
    fr = ext.get("frame_rate")
    if isinstance(fr, bool) or not isinstance(fr, (int, float)) or not (0 < fr <= 1e6):
        bad.append(f"frame_rate must be a number in (0, 1e6]; got {fr!r}")
    if not isinstance(info.get("pipeline", {}), dict) or not isinstance(ext.get("params", {}), dict):
        bad.append("'pipeline' and extractor 'params' must be objects")
    elif not bad:
        bad += _check_layers(ext)
    if info.get("frames", "all") not in FRAMES:
        bad.append(f"frames must be one of {', '.join(FRAMES)}; got {info.get('frames')!r}")
    if bad:
        raise StoreError(f"{info_path}: " + "; ".join(bad))
    return info


def _check_layers(ext: dict) -> list[str]:
    """Problems of a recorded layer subset (``params.layers`` a list, ``params.model_layers``)."""
    params = ext.get("params", {})
    kept, total = params.get("layers"), params.get("model_layers")
    if not isinstance(kept, list):
        return []
    if not _is_int(total, 1, MAX_LAYERS):
        return [f"extractor params.model_layers must be an integer from 1 to {MAX_LAYERS}; got {total!r}"]
    if (
        len(kept) != ext["n_layers"]
        or not all(_is_int(k, 0, total - 1) for k in kept)
        or any(b <= a for a, b in zip(kept, kept[1:]))
    ):
        return [
            f"extractor params.layers must be {ext['n_layers']} increasing layer numbers below"
            f" model_layers ({total}); got {kept!r}"
        ]
    return []


def stored_layers(info: dict) -> tuple[tuple[int, ...], int]:
    """``(model layer number of each stored position, the model's number of layers)`` of a
    validated ``store.json``; a store without a recorded subset holds every layer."""
    ext = info["extractor"]
    params = ext.get("params", {})
    if isinstance(params.get("layers"), list):
        return tuple(int(k) for k in params["layers"]), int(params["model_layers"])
    return tuple(range(int(ext["n_layers"]))), int(ext["n_layers"])


def statistics_only_message(store: str) -> str:
    """Why the frames of a statistics-only store cannot be read, and what to do instead."""
    return (
        f"store {store!r} holds statistics only (extracted with --frames none): select it with"
        " pooled='mean' (and max_frames=None)"
    )


def empty_manifest() -> dict:
    return {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, "shards": [], "failed": {}}


def load_manifest(path: Path) -> dict:
    """Read and validate ``manifest.json`` of the store folder ``path`` (empty when absent).

    Raises
    ------
    StoreError
        Unreadable, of another format, or any entry that is not what a writer writes: a
        shard name outside the ``shard-NNNNN.h5`` pattern, ids that are not strings or that
        appear twice, sizes that are not non-negative integers, a malformed checksum.
    """
    mpath = Path(path) / "manifest.json"
    if not mpath.exists():
        return empty_manifest()
    m = read_json(mpath, StoreError)
    check_version("manifest", mpath, m.get("format"), m.get("format_version"), MANIFEST_FORMAT)
    shards, failed = m.get("shards"), m.get("failed", {})
    if not isinstance(shards, list):
        raise StoreError(f"{mpath}: 'shards' must be a list; got {type(shards).__name__}")
    if not isinstance(failed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in failed.items()):
        raise StoreError(f"{mpath}: 'failed' must map utterance ids to reasons (strings)")
    seen_files: set[str] = set()
    seen_ids: set[str] = set()
    for i, s in enumerate(shards):
        what = f"shards[{i}]"
        _check_entry(mpath, what, s)
        if s["file"] in seen_files:
            raise StoreError(f"{mpath}: {what}.file {s['file']!r} is named twice")
        seen_files.add(s["file"])
        dup = seen_ids.intersection(s["ids"])
        if dup or len(set(s["ids"])) != len(s["ids"]):
            raise StoreError(f"{mpath}: {what} names utterance(s) already committed: {sorted(dup)[:3]}")
        seen_ids.update(s["ids"])
    if not isinstance(m.get("token", ""), str):
        raise StoreError(f"{mpath}: 'token' must be a string")
    m["failed"] = dict(failed)
    return m


def _check_entry(mpath: Path, what: str, s: Any) -> None:
    if not isinstance(s, dict):
        raise StoreError(f"{mpath}: {what} must be an object; got {type(s).__name__}")
    shard_path(mpath.parent, s.get("file"), f"manifest.json {what}.file")
    ids = s.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(x, str) and x for x in ids):
        raise StoreError(f"{mpath}: {what}.ids must be a non-empty list of utterance ids (strings)")
    if s.get("n_utterances", len(ids)) != len(ids):
        raise StoreError(f"{mpath}: {what}.n_utterances is {s.get('n_utterances')!r} but it lists {len(ids)} ids")
    for key in ("size", "n_frames"):
        if not _is_int(s.get(key)):
            raise StoreError(f"{mpath}: {what}.{key} must be a non-negative integer; got {s.get(key)!r}")
    if not isinstance(s.get("sha256"), str) or not _SHA256.fullmatch(s["sha256"]):
        raise StoreError(f"{mpath}: {what}.sha256 must be 64 lower-case hex digits; got {s.get('sha256')!r}")


def store_dtype(info: dict) -> np.dtype:
    """The stored dtype of a validated ``store.json``."""
    return np.dtype(info["extractor"]["dtype"])
