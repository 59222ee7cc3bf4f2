"""Reading committed stores: :class:`StoreReader` over what a manifest names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featcache.errors import StoreError
from featcache.store._format import load_manifest, load_store_info, shard_path, statistics_only_message, stored_layers
from featcache.store._shard import Shard

__all__ = ["StoreReader"]


class StoreReader:
    """Read access to a committed store (what its manifest names; never a half-written shard).

    Attributes
    ----------
    info : dict
        ``store.json``.
    manifest : dict
        ``manifest.json`` as read when the reader was made.
    ids : list of str
        Committed utterance ids, in store order.
    layer_numbers : tuple of int
        The model layer number of each stored layer position (``featcache extract
        --layers``; every layer, ``0..n_layers-1``, when no subset is recorded).
    model_layers : int
        The extractor's number of layers, stored or not.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.info = load_store_info(self.path)
        self.manifest = load_manifest(self.path)
        ext = self.info["extractor"]
        self.n_layers = int(ext["n_layers"])
        self.dim = int(ext["dim"])
        self.frame_rate = float(ext["frame_rate"])
        self.dtype = np.dtype(ext["dtype"])
        self.layer_numbers, self.model_layers = stored_layers(self.info)
        self.ids: list[str] = []
        self._where: dict[str, tuple[int, int]] = {}
        self.n_frames_of: dict[str, int] = {}
        for si, s in enumerate(self.manifest["shards"]):
            for row, uid in enumerate(s["ids"]):
                self._where[uid] = (si, row)
                self.ids.append(uid)
        self._shards: dict[int, Shard] = {}

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def token(self) -> str:
        """Changes whenever a shard is committed (for caching loaded data)."""
        return str(self.manifest.get("token", ""))

    @property
    def has_frames(self) -> bool:
        """False for a statistics-only store (``--frames none``): sums, no frames."""
        return self.info.get("frames", "all") != "none"

    @property
    def statistics_only_message(self) -> str:
        """What reading frames of a statistics-only store raises (the remedy included)."""
        return statistics_only_message(self.name)

    @property
    def failed(self) -> dict[str, str]:
        return dict(self.manifest.get("failed", {}))

    def shard(self, si: int) -> Shard:
        if si not in self._shards:
            entry = self.manifest["shards"][si]
            p = shard_path(self.path, entry["file"])
            if not p.exists():
                raise StoreError(f"{p}: shard named in the manifest is missing (run featcache verify)")
            sh = Shard(p)
            if sh.ids != list(entry["ids"]):
                raise StoreError(f"{p}: ids differ from the manifest (run featcache verify)")
            if sh.has_frames != self.has_frames:
                what = "frames, but store.json says statistics only" if sh.has_frames else "statistics only, store.json says frames"
                raise StoreError(f"{p}: holds {what} (run featcache verify)")
            if (sh.n_layers, sh.dim, sh.dtype) != (self.n_layers, self.dim, self.dtype):
                raise StoreError(
                    f"{p}: holds {sh.n_layers} layers x {sh.dim} {sh.dtype}, store.json says"
                    f" {self.n_layers} x {self.dim} {self.dtype} (run featcache verify)"
                )
            self._shards[si] = sh
        return self._shards[si]

    def locate(self, uid: str) -> tuple[int, int]:
        """(shard index, row) of an utterance."""
        try:
            return self._where[uid]
        except KeyError:
            raise StoreError(f"utterance {uid!r} is not in store {self.path}") from None

    def __contains__(self, uid: str) -> bool:
        return uid in self._where

    def frames(self, uid: str, layers: list[int] | None = None) -> np.ndarray:
        """Frames of one utterance, shape (n_frames, n_selected_layers, dim), in the store's dtype.

        ``layers`` are stored positions (see :attr:`layer_numbers`). A statistics-only store
        raises :class:`StoreError`.
        """
        if not self.has_frames:
            raise StoreError(self.statistics_only_message)
        si, row = self.locate(uid)
        sh = self.shard(si)
        a, b = int(sh.offsets[row]), int(sh.offsets[row + 1])
        layers = list(range(self.n_layers)) if layers is None else layers
        return np.stack([sh.layer(k)[a:b] for k in layers], axis=1)

    def lengths(self) -> dict[str, int]:
        """Frames per committed utterance."""
        out = {}
        for si, s in enumerate(self.manifest["shards"]):
            sh = self.shard(si)
            for uid, n in zip(sh.ids, np.diff(sh.offsets)):
                out[uid] = int(n)
        return out

    def utterance_stats(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Per-utterance ``(ids, n_frames (n,), sum (n, L, D), sumsq (n, L, D))`` in float64."""
        ids, ns, sums, sqs = [], [], [], []
        for si in range(len(self.manifest["shards"])):
            sh = self.shard(si)
            s, q = sh.stats()
            ids += sh.ids
            ns.append(np.diff(sh.offsets))
            sums.append(s)
            sqs.append(q)
        if not ids:
            z = np.zeros((0, self.n_layers, self.dim))
            return [], np.zeros(0, np.int64), z, z
        return ids, np.concatenate(ns), np.concatenate(sums), np.concatenate(sqs)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
