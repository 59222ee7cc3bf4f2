"""Corpus caches: :func:`open_cache` one, :class:`FeatureCache` (its utterance table and
stores) and :meth:`FeatureCache.select` (a :class:`featcache.reader.FeatureSet`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from featcache.errors import IncompleteStoreWarning, SpecError, StoreError
from featcache.fileio import read_json
from featcache.spec import parse_spec
from featcache.store import StoreReader, check_version

if TYPE_CHECKING:
    from featcache.reader import FeatureSet

__all__ = ["open_cache", "find_caches", "FeatureCache"]


def find_caches(root: Path) -> list[Path]:
    """Corpus caches (folders holding ``corpus.json``) at or directly below ``root``."""
    root = Path(root)
    if (root / "corpus.json").exists():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "corpus.json").exists())


def open_cache(path: str | Path) -> "FeatureCache":
    """Open a corpus cache (``<cache-dir>/<corpus>``, or a cache root holding exactly one).

    Raises
    ------
    StoreError
        When ``path`` holds no corpus cache, or several (the message lists them).
    """
    found = find_caches(Path(path))
    if not found:
        raise StoreError(f"{path} holds no featcache corpus cache (no corpus.json); run featcache extract first")
    if len(found) > 1:
        raise StoreError(
            f"{path} holds several corpus caches; name one: " + ", ".join(str(p) for p in found)
        )
    return FeatureCache(found[0])


class FeatureCache:
    """A corpus cache: its utterance table and feature stores.

    Attributes
    ----------
    path : Path
    corpus : str
    utterances : pandas.DataFrame
        The utterance table (id, path, speaker, label, corpus fields, duration).
    stores : dict of str to StoreReader
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.info = read_json(self.path / "corpus.json", StoreError)
        check_version(
            "corpus cache", self.path / "corpus.json", self.info.get("format"), self.info.get("format_version"), "featcache.corpus"
        )
        self.corpus = self.info.get("corpus", self.path.name)
        self.utterances = pd.read_csv(
            self.path / "utterances.csv", dtype={"id": str, "speaker": str, "label": str}, keep_default_na=False
        )
        self.stores = {
            p.name: StoreReader(p) for p in sorted(self.path.iterdir()) if (p / "store.json").exists()
        }
        self._row = {uid: i for i, uid in enumerate(self.utterances["id"])}

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r}, corpus={self.corpus!r}, stores={list(self.stores)})"

    @property
    def features(self) -> pd.DataFrame:
        """One row per store: name, kind, layers, dim, frame rate, utterances, failed."""
        keys = ("extractor", "n_layers", "dim", "frame_rate", "dtype", "n_utterances")
        rows = []
        for name, d in self.describe()["stores"].items():
            rows.append({"name": name, **{k: d[k] for k in keys}, "n_failed": len(d["failed"])})
        return pd.DataFrame(rows)

    def describe(self) -> dict[str, Any]:
        """What ``featcache info`` shows: the corpus, its table's counts and every store.

        Returns
        -------
        dict
            ``path, corpus, data_dir, n_utterances, n_speakers, labels {label: count},
            problems [[path, reason]], dropped {label: count}, stores {name: {extractor,
            n_layers, layers (the model layer numbers kept), model_layers, frames ("all", or
            "none" for statistics only), dim, frame_rate, dtype, n_utterances, n_shards,
            n_frames, size_bytes, params, pipeline, versions, created, failed}}``.
        """
        stores = {}
        for name, r in self.stores.items():
            ext = r.info["extractor"]
            stores[name] = {
                "extractor": ext.get("name"),
                "n_layers": r.n_layers,
                "layers": list(r.layer_numbers),
                "model_layers": r.model_layers,
                "frames": "all" if r.has_frames else "none",
                "dim": r.dim,
                "frame_rate": r.frame_rate,
                "dtype": r.dtype.name,
                "n_utterances": len(r.ids),
                "n_shards": len(r.manifest["shards"]),
                "n_frames": int(sum(s["n_frames"] for s in r.manifest["shards"])),
                "size_bytes": r.size_bytes(),
                "params": ext.get("params"),
                "pipeline": r.info.get("pipeline"),
                "versions": ext.get("versions"),
                "created": r.info.get("created"),
                "failed": r.failed,
            }
        tab = self.utterances
        return {
            "path": str(self.path),
            "corpus": self.corpus,
            "data_dir": self.info.get("data_dir"),
            "n_utterances": int(len(tab)),
            "n_speakers": int(tab["speaker"].nunique()),
            "labels": {str(k): int(v) for k, v in tab["label"].value_counts().sort_index().items()},
            "problems": self.info.get("problems", []),
            "dropped": self.info.get("dropped", {}),
            "stores": stores,
        }

    def select(
        self,
        spec: str,
        *,
        max_frames: int | None = None,
        pooled: str | None = None,
        label_map: str | dict | None = None,
        label_column: str = "label",
        **audio,
    ) -> "FeatureSet | np.ndarray":
        """Features of every utterance present in all the spec's stores.

        Parameters
        ----------
        spec : str
            Feature spec, see :func:`parse_spec`; ``"audio"``: the decoded waveforms of the
            corpus table's files instead (an :class:`featcache.audioset.AudioSet`, for
            fine-tuning), taking the keywords ``sampling_rate``, ``max_seconds`` and
            ``data_dir`` of :func:`featcache.audioset.select_audio`.
        max_frames : int, optional
            Keep the first ``max_frames`` frames of each utterance.
        pooled : {"mean"}, optional
            Return a plain ndarray of shape (n_utterances, n_layers * dim) (streams
            concatenated) instead of a FeatureSet; computed from the stored per-utterance
            sums when ``max_frames`` is None (no frame is read). The only way to select a
            statistics-only store (``--frames none``).
        label_map : str or dict, optional
            A name from :data:`featcache.corpora.LABEL_MAPS` (e.g. ``"ravdess7"``) or a mapping.
        """
        if spec == "audio":
            if max_frames is not None or pooled is not None:
                raise SpecError("select('audio') takes no max_frames or pooled (use max_seconds)")
            from featcache.audioset import select_audio

            return select_audio(self, label_map=label_map, label_column=label_column, **audio)
        if audio:
            raise SpecError(f"{', '.join(sorted(audio))}: only for select('audio'), not for a feature spec ({spec!r})")
        streams = parse_spec(spec, self.stores)
        for name in dict.fromkeys(s.store for s in streams):
            if not self.stores[name].has_frames and (pooled != "mean" or max_frames is not None):
                raise SpecError(self.stores[name].statistics_only_message)
            self._warn_incomplete(name)
        ids = [uid for uid in self.utterances["id"] if all(uid in self.stores[s.store] for s in streams)]
        from featcache.reader import FeatureSet  # the reader builds on this module

        fs = FeatureSet(self, streams, np.array([self._row[u] for u in ids], dtype=np.int64), max_frames, label_map, label_column)
        if pooled is None:
            return fs
        if pooled != "mean":
            raise SpecError(f"pooled must be None or 'mean'; got {pooled!r}")
        return fs.pooled_mean()

    def _warn_incomplete(self, name: str) -> None:
        """Warn when a store lacks utterances of the table that it does not list as failed."""
        r = self.stores[name]
        have = set(r.ids) | set(r.failed)
        missing = [u for u in self.utterances["id"] if u not in have]
        if missing:
            warnings.warn(
                f"store {name!r} of {self.path} holds {len(r.ids)} of the {len(self.utterances)} utterances"
                f" of the corpus table; {len(missing)} are neither committed nor recorded as failed"
                f" (first: {missing[0]}). Only the utterances present are selected. An interrupted run:"
                " re-run the same extract command; `featcache verify` tells whether shards are damaged.",
                IncompleteStoreWarning,
                stacklevel=3,
            )
