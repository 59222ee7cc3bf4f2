"""Integrity checks of a corpus cache: what ``featcache verify`` runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from featcache.errors import StoreError
from featcache.store import Shard, StoreReader, _sha256

__all__ = ["Problem", "verify_store", "verify_cache"]


@dataclass
class Problem:
    """One thing wrong in a store.

    Attributes
    ----------
    store : str
        Store folder name.
    where : str
        The file concerned (a shard, ``manifest.json``...).
    message : str
        What is wrong.
    ids : list of str
        Utterances whose features are lost or untrusted (re-extracted by a repair).
    """

    store: str
    where: str
    message: str
    ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        n = f" ({len(self.ids)} utterances affected)" if self.ids else ""
        return f"{self.store}/{self.where}: {self.message}{n}"


def verify_store(path: Path, *, deep: bool = True) -> list[Problem]:
    """Check every shard the manifest names: present, same size and sha256, readable, consistent.

    Parameters
    ----------
    path : Path
        A store folder.
    deep : bool
        Also recompute per-utterance sums from the frames (reads all data).
    """
    path = Path(path)
    try:
        reader = StoreReader(path)
    except StoreError as e:
        return [Problem(path.name, "store.json/manifest.json", str(e))]
    problems: list[Problem] = []
    for si, entry in enumerate(reader.manifest["shards"]):
        p = path / entry["file"]
        ids = list(entry["ids"])
        if not p.exists():
            problems.append(Problem(path.name, entry["file"], "missing (named in the manifest)", ids))
            continue
        size = p.stat().st_size
        if size != entry["size"]:
            problems.append(
                Problem(path.name, entry["file"], f"size {size} bytes, manifest says {entry['size']} (truncated?)", ids)
            )
            continue
        if _sha256(p) != entry["sha256"]:
            problems.append(Problem(path.name, entry["file"], "checksum differs from the manifest (corrupt)", ids))
            continue
        try:
            sh = Shard(p)
        except StoreError as e:
            problems.append(Problem(path.name, entry["file"], str(e), ids))
            continue
        if sh.ids != ids:
            problems.append(Problem(path.name, entry["file"], "utterance ids differ from the manifest", ids))
            continue
        if deep:
            for msg in sh.check_data():
                problems.append(Problem(path.name, entry["file"], msg, ids))
    return problems


def verify_cache(path: Path, *, deep: bool = True) -> dict[str, list[Problem]]:
    """Verify every store of a corpus cache; returns store name → problems (empty = fine)."""
    path = Path(path)
    out = {}
    for d in sorted(p for p in path.iterdir() if (p / "store.json").exists()):
        out[d.name] = verify_store(d, deep=deep)
    if not out:
        raise StoreError(f"{path} holds no feature store (no */store.json)")
    return out
