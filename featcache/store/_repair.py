"""Rebuilding a lost or corrupt ``manifest.json`` from the self-describing shards (``--repair``)."""

from __future__ import annotations

import json
from pathlib import Path

from featcache.errors import StoreError
from featcache.fileio import sha256_file
from featcache.store._format import strip_versions
from featcache.store._shard import Shard

__all__ = ["rebuild_entries"]


def rebuild_entries(files: list[Path], description: dict) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest entries for the shards among ``files`` that belong to this extractor.

    Parameters
    ----------
    files : list of Path
        Candidate shard files (``shard-NNNNN.h5``), in name order.
    description : dict
        The store's extractor description; a shard written by another extractor
        configuration, or with another layout, is not adopted.

    Returns
    -------
    entries : list of dict
        One manifest entry per adopted shard (file, ids, n_utterances, n_frames, size, sha256).
    skipped : list of (str, str)
        Shard files not adopted, with the reason; the writer deletes them as orphans.

    Notes
    -----
    An utterance found in two shards is kept in the first only (the second is skipped): a
    manifest never names an utterance twice. Failures recorded in the lost manifest are not
    recoverable; those utterances are simply tried again.
    """
    want = strip_versions(description)
    entries: list[dict] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for p in files:
        try:
            sh = Shard(p)
            desc = _shard_description(p)
        except StoreError as e:
            skipped.append((p.name, str(e)))
            continue
        if strip_versions(desc) != want or (sh.n_layers, sh.dim) != (int(want["n_layers"]), int(want["dim"])):
            skipped.append((p.name, "written by another extractor configuration"))
            continue
        if seen.intersection(sh.ids) or len(set(sh.ids)) != len(sh.ids):
            skipped.append((p.name, "holds utterances already found in another shard"))
            continue
        seen.update(sh.ids)
        entries.append(
            {
                "file": p.name,
                "ids": list(sh.ids),
                "n_utterances": len(sh.ids),
                "n_frames": sh.n_frames,
                "size": p.stat().st_size,
                "sha256": sha256_file(p),
            }
        )
    return entries, skipped


def _shard_description(p: Path) -> dict:
    import h5py

    try:
        with h5py.File(p, "r") as f:
            raw = f.attrs.get("extractor")
        desc = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (OSError, ValueError, TypeError, RecursionError) as e:
        raise StoreError(f"{p}: no readable extractor description ({e})") from e
    if not isinstance(desc, dict):
        raise StoreError(f"{p}: the extractor description is not an object")
    return desc
