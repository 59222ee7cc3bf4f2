"""Integrity checks of a corpus cache: what ``featcache verify`` runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from featcache.errors import StoreError
from featcache.fileio import sha256_file
from featcache.store._format import SHARD_NAME, shard_path
from featcache.store._reader import StoreReader
from featcache.store._shard import Shard

__all__ = ["Problem", "check_coverage", "table_ids", "unnamed_shards", "verify_cache", "verify_store"]


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


def unnamed_shards(path: Path, manifest: dict) -> list[str]:
    """Readable shard files (``shard-NNNNN.h5``) of a store that its manifest does not name.

    A crash leaves at most one (renamed, not yet committed); more mean a lost or cut
    manifest. Unreadable leftovers (a half-written file) are not counted: they are orphans.
    """
    named = {s["file"] for s in manifest["shards"]}
    out = []
    for q in sorted(Path(path).iterdir()):
        if SHARD_NAME.fullmatch(q.name) and q.name not in named and q.is_file():
            try:
                Shard(q)
            except StoreError:
                continue
            out.append(q.name)
    return out


def verify_store(path: Path, *, deep: bool = True) -> list[Problem]:
    """Check every shard the manifest names: present, same size and sha256, readable, consistent.

    Parameters
    ----------
    path : Path
        A store folder.
    deep : bool
        Also recompute per-utterance sums from the frames (reads all data); for a
        statistics-only store (``--frames none``), check its sums are finite.
    """
    path = Path(path)
    try:
        reader = StoreReader(path)
    except StoreError as e:
        return [Problem(path.name, "store.json/manifest.json", str(e))]
    problems: list[Problem] = []
    unnamed = unnamed_shards(path, reader.manifest)
    if len(unnamed) > 1:  # one is what a crash between rename and manifest leaves
        what = "missing" if not (path / "manifest.json").exists() else "lost or cut"
        problems.append(
            Problem(
                path.name,
                "manifest.json",
                f"{what}: {len(unnamed)} shard files ({unnamed[0]}...) are not named by it;"
                " `featcache extract ... --repair` rebuilds it from the shards",
            )
        )
    for si, entry in enumerate(reader.manifest["shards"]):
        p = shard_path(path, entry["file"])
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
        if sha256_file(p) != entry["sha256"]:
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
        if _content(sh) != _content(reader):
            problems.append(Problem(path.name, entry["file"], f"holds {_content(sh)}; store.json says {_content(reader)}", ids))
            continue
        if deep:
            for msg in sh.check_data():
                problems.append(Problem(path.name, entry["file"], msg, ids))
    return problems


def _content(x: Shard | StoreReader) -> str:
    """What a shard or a store holds, in words: ``"13 layers x 768"`` or ``"..., statistics only"``."""
    return f"{x.n_layers} layers x {x.dim}" + ("" if x.has_frames else ", statistics only")


def check_coverage(path: Path, table_ids: list[str]) -> list[str]:
    """Utterances of the corpus table that are neither committed in the store nor failed.

    Parameters
    ----------
    path : Path
        A store folder.
    table_ids : list of str
        The ids of the corpus cache's ``utterances.csv``.

    Returns
    -------
    list of str
        The missing ids, in table order (empty: the store is complete).

    Notes
    -----
    An incomplete store is not damaged: its run was interrupted or limited (``--limit``),
    and a re-run of the same command completes it. A lost or cut manifest beside its shards
    is damage, reported by :func:`verify_store` ("shard files not named").
    """
    try:
        reader = StoreReader(path)
    except StoreError:
        return []  # verify_store reports it
    have = set(reader.ids) | set(reader.failed)
    return [u for u in table_ids if u not in have]


def table_ids(cache: Path) -> list[str] | None:
    """Ids of a corpus cache's ``utterances.csv`` (None when there is none)."""
    import pandas as pd

    p = Path(cache) / "utterances.csv"
    if not p.is_file():
        return None
    try:
        return [str(x) for x in pd.read_csv(p, dtype={"id": str}, usecols=["id"], keep_default_na=False)["id"]]
    except (OSError, ValueError, KeyError) as e:
        raise StoreError(f"{p}: cannot be read ({e})") from e


def verify_cache(path: Path, *, deep: bool = True) -> dict[str, list[Problem]]:
    """Verify every store of a corpus cache; returns store name → problems (empty = fine).

    :func:`check_coverage` tells, besides, whether each store covers the corpus table.
    """
    path = Path(path)
    out = {}
    for d in sorted(p for p in path.iterdir() if (p / "store.json").exists()):
        out[d.name] = verify_store(d, deep=deep)
    if not out:
        raise StoreError(f"{path} holds no feature store (no */store.json)")
    return out
