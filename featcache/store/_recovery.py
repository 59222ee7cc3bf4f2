"""Opening a store after a crash or damage: the recovery steps of :class:`~featcache.store.StoreWriter`.

A mixin of the writer (it uses the writer's ``path``, ``description``, ``manifest``,
``rebuilt``, ``dropped`` and ``_save_manifest``): the committed manifest, rebuilt from the
shards with ``--repair``; committed shards that are missing or damaged forgotten, so their
utterances are redone; orphans of a killed commit deleted; ``--overwrite``'s wipe. Every name
deleted is the store's own (``shard-NNNNN.h5``, its JSON files, their temporaries).
"""

from __future__ import annotations

import re

from featcache.errors import StoreError, StoreMismatchError
from featcache.fileio import fsync_dir
from featcache.store._format import SHARD_NAME, empty_manifest, load_manifest, shard_path
from featcache.store._repair import rebuild_entries
from featcache.store._verify import unnamed_shards, verify_store

__all__ = ["Recovery", "own_stem"]

#: temporaries of a shard: ``shard-NNNNN.h5.tmp`` (a local commit) and the staged
#: ``shard-NNNNN.h5.<16 hex>.tmp`` a distributed worker writes (see ``StoreWriter.stager``)
_TEMP_NAME = re.compile(r"(shard-\d{5}\.h5)(?:\.[0-9a-f]{16})?\.tmp")


def own_stem(name: str) -> str:
    """The shard name a temporary belongs to (``name`` itself when it is not one)."""
    m = _TEMP_NAME.fullmatch(name)
    return m.group(1) if m else name



class Recovery:
    """The recovery steps of a store writer (see the module docstring)."""

    def _load_manifest(self, repair: bool) -> dict:
        """The committed manifest; with ``repair``, rebuilt from the shards when lost, cut or corrupt.

        A crash leaves at most one shard that the manifest does not name (deleted as an
        orphan). More than one means the manifest was lost or cut: refusing keeps those
        shards for ``--repair`` instead of deleting them.
        """
        try:
            manifest = load_manifest(self.path)
        except StoreMismatchError:
            raise
        except StoreError as e:
            if not repair:
                raise StoreError(
                    f"{e}. Re-run the same command with --repair to rebuild manifest.json from the shards"
                    " (each shard describes itself; nothing else is deleted)."
                ) from e
            return self._rebuild_manifest(f"manifest.json unusable ({e})", {})
        unnamed = unnamed_shards(self.path, manifest)
        if unnamed and repair:
            return self._rebuild_manifest(f"{len(unnamed)} shard file(s) not named by manifest.json", manifest["failed"])
        if len(unnamed) > 1:
            what = "is missing" if not (self.path / "manifest.json").exists() else "does not name them (lost or cut)"
            raise StoreError(
                f"{self.path}: {len(unnamed)} shard files ({unnamed[0]}...) are present but manifest.json {what}."
                " Re-run the same command with --repair to rebuild it from the shards, or with"
                " --overwrite to start the store again."
            )
        return manifest

    def _rebuild_manifest(self, why: str, failed: dict) -> dict:
        """Name every readable shard of this extractor in a new manifest (see :func:`rebuild_entries`)."""
        files = sorted(p for p in self.path.iterdir() if SHARD_NAME.fullmatch(p.name) and p.is_file())
        entries, skipped = rebuild_entries(files, self.description)
        adopted = {i for e in entries for i in e["ids"]}
        self.rebuilt = {"reason": why, "shards": len(entries), "skipped": skipped}
        self.manifest = empty_manifest()
        self._save_manifest(
            dict(self.manifest, shards=entries, failed={k: v for k, v in failed.items() if k not in adopted})
        )
        return self.manifest

    def _drop_bad_shards(self, deep: bool) -> None:
        """Forget committed shards that are missing or damaged, so their utterances are redone.

        Without ``deep`` only existence and size are checked (cheap, every run); with it
        (``--repair``) every check of :func:`featcache.store.verify_store`.
        """
        bad: dict[str, str] = {}
        if deep:
            for prob in verify_store(self.path, deep=True):
                if SHARD_NAME.fullmatch(prob.where):  # only the store's own shards are ever deleted
                    bad.setdefault(prob.where, prob.message)
        else:
            for s in self.manifest["shards"]:
                p = shard_path(self.path, s["file"])
                if not p.exists():
                    bad[s["file"]] = "missing"
                elif p.stat().st_size != s["size"]:
                    bad[s["file"]] = "truncated"
        if not bad:
            return
        keep = []
        for s in self.manifest["shards"]:
            if s["file"] in bad:
                self.dropped += list(s["ids"])
            else:
                keep.append(s)
        self.manifest["shards"] = keep
        self._save_manifest()
        for name in bad:
            shard_path(self.path, name).unlink(missing_ok=True)

    def _wipe(self) -> None:
        """Delete the store's own files (``--overwrite``): shards, its JSON files, temporaries."""
        own = {"store.json", "manifest.json", "speakers.h5"}
        for p in self.path.iterdir():
            name = p.name[:-4] if p.name.endswith(".tmp") and p.name[:-4] in own else own_stem(p.name)
            if (name in own or SHARD_NAME.fullmatch(name)) and (p.is_file() or p.is_symlink()):
                p.unlink()
        fsync_dir(self.path)

    def _remove_orphans(self) -> None:
        """Delete shard files that no committed manifest names (a run killed mid-commit)."""
        named = {s["file"] for s in self.manifest["shards"]}
        for p in self.path.glob("shard-*"):
            stem = own_stem(p.name)
            if p.name not in named and SHARD_NAME.fullmatch(stem) and (p.is_file() or p.is_symlink()):
                p.unlink()

