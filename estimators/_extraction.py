"""Rebuilding a model's extractors and turning audio files into its input features.

See :mod:`estimators.predict`. Extractor descriptions come from an untrusted model
directory: their parameters are bounded by the extractors themselves, and a
self-supervised model is loaded only from a recorded short name or Hub id, or from where
the caller says (``ssl_model``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from featcache.audio import load_audio
from featcache.errors import AudioError, ModelSourceError
from featcache.packed import Packed, Stream
from featcache.process import MAX_WINDOWS_PER_FILE, MIN_HOP_SECONDS, MIN_SEGMENT_SECONDS, check_windowing, run_extractors, windows

from ._preprocessing import PREPROCESSING_FILE
from .errors import ModelFileError, ParameterError

__all__ = [
    "MIN_HOP_SECONDS",
    "MIN_SEGMENT_SECONDS",
    "MAX_WINDOWS_PER_FILE",
    "PREDICT_CHUNK",
    "build_extractor",
    "build_extractors",
    "windows",
    "check_windowing",
    "extract_packed",
    "file_chunks",
    "to_packed",
]

PREDICT_CHUNK = 32  # utterances (files or windows) extracted and predicted at a time


# --------------------------------------------------------------------------- extractors


def build_extractor(stream: dict, *, device: str = "auto", ssl_model: str | None = None):
    """Rebuild the extractor of one stream of ``FeatureSet.describe()``.

    The extractor rebuilds itself from its recorded name and parameters
    (:func:`featcache.extractors.from_description`, which refuses when the rebuilt
    parameters differ: the one rule for "same features"). A self-supervised model is loaded
    from the recorded short name or Hugging Face id, or from ``ssl_model``, never from a
    local path read from the model directory.

    Parameters
    ----------
    stream : dict
        One entry of ``describe()["streams"]``.
    device : str
        Device of self-supervised models (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
    ssl_model : str, optional
        Short name, Hub id or local directory to load the self-supervised model from
        instead of the recorded one (needed for local models): the caller's word, so it
        may be a local path.

    Raises
    ------
    ParameterError
        The extractor kind is unknown, or the rebuilt extractor's parameters, layers or
        dimension differ from the recorded ones.
    ModelFileError
        The recorded self-supervised model may not be loaded without ``ssl_model``.
    FeatcacheError
        From featcache (model cannot be loaded, extractor parameters out of range...).
    """
    from featcache.errors import ParameterError as FeatcacheParameterError
    from featcache.extractors import from_description

    kind, store = stream.get("extractor"), stream.get("store", "?")
    params = dict(stream.get("params") or {})
    try:
        if kind == "ssl":
            ex = from_description(kind, params, device=device, model=ssl_model)
        else:
            ex = from_description(str(kind), params)
    except ModelSourceError as e:
        raise ModelFileError(
            f"{PREPROCESSING_FILE}: the features of store {store!r} name the self-supervised model "
            f"{params.get('model')!r}, which may not be loaded from what a model directory says ({e}); "
            "a model directory may not make predict load a model from a local path: pass --ssl-model "
            "PATH_OR_ID (ssl_model=...) to say where the model is"
        ) from e
    except FeatcacheParameterError as e:
        raise ParameterError(f"extractor of store {store!r}", "rebuilt with the parameters recorded in the cache", str(e)) from e
    layers = list(stream.get("layers") or range(ex.n_layers))
    if int(stream.get("dim", ex.dim)) != ex.dim or (layers and max(layers) >= ex.n_layers):
        raise ParameterError(
            f"extractor of store {store!r}",
            f"{len(layers)} layer(s) up to {max(layers)} x {stream.get('dim')} as recorded",
            f"{ex.n_layers} x {ex.dim}",
        )
    return ex


def build_extractors(features: dict, *, device: str = "auto", ssl_model: str | None = None) -> list:
    """One extractor per stream of ``features`` (a ``FeatureSet.describe()``); streams of
    the same store share theirs."""
    out, by_store = [], {}
    for s in features["streams"]:
        key = s.get("store")
        if key not in by_store:
            by_store[key] = build_extractor(s, device=device, ssl_model=ssl_model)
        out.append(by_store[key])
    return out


# --------------------------------------------------------------------------- audio -> Packed


@dataclass
class _Item:
    path: str
    start: float
    end: float


def extract_packed(
    paths: Sequence[str | Path],
    features: dict,
    extractors: list,
    *,
    segment: float | None = None,
    hop: float | None = None,
    speaker: str = "new",
) -> tuple[Packed, pd.DataFrame, dict[str, str]]:
    """Features of audio files (or of windows of them) as a :class:`Packed`.

    Each file is read as the cache's files were (:func:`featcache.audio.load_audio`: mono,
    resampled to the extractors' highest rate, cropped to the first ``max_seconds`` of the
    stream's pipeline); with ``segment`` the whole file is read and cut into windows (each
    window then counts as one utterance, cropped to ``max_seconds`` like one).

    Frames are not cut to ``features["max_frames"]`` here (see :func:`predict_files`).

    Returns
    -------
    packed : Packed
        One stream per entry of ``features["streams"]``, in the store's dtype; speakers all
        ``speaker``.
    rows : DataFrame
        ``file``, ``start``, ``end`` (seconds) of every utterance of ``packed``.
    failed : dict
        File -> reason for files that could not be used (not in ``packed``).
    """
    chunks: list[tuple[list[_Item], list[list[np.ndarray]]]] = []
    failed: dict[str, str] = {}
    for path in paths:
        p = str(path)
        try:
            chunks.extend(list(file_chunks(p, features["streams"], extractors, segment, hop, PREDICT_CHUNK)))
        except AudioError as e:
            failed[p] = e.reason
    packed, rows = to_packed(chunks, features["streams"], speaker)
    return packed, rows, failed


def file_chunks(path: str, streams: list, extractors: list, segment, hop, chunk: int):
    """Features of the utterances of one file, ``chunk`` utterances at a time.

    Yields ``(items, feats)``: the utterances (file, start, end) and, per utterance, per
    stream, frames ``(n_frames, n_layers, dim)``. Raises the file's AudioError.
    """
    rate = max(int(ex.sampling_rate) for ex in extractors)
    crop = [(s.get("pipeline") or {}).get("max_seconds") for s in streams]
    pieces = _pieces(path, rate, crop, segment, hop)
    for i in range(0, len(pieces), chunk):
        part = pieces[i : i + chunk]
        yield [_Item(path, a, b) for a, b, _ in part], _run_extractors(part, streams, extractors, rate)


def to_packed(chunks: list, streams: list, speaker: str = "new") -> tuple[Packed | None, pd.DataFrame]:
    """One Packed (and its rows ``file, start, end``) of chunks of :func:`file_chunks`."""
    items = [it for its, _ in chunks for it in its]
    if not items:
        return None, pd.DataFrame(columns=["file", "start", "end"])
    st = []
    for k, s in enumerate(streams):
        arrays = [feats[k] for _, outs in chunks for feats in outs]
        st.append(Stream.from_list(arrays, name=s.get("name", f"s{k}"), frame_rate=s.get("frame_rate")))
    n = len(items)
    packed = Packed(st, ids=np.array([f"{it.path}@{it.start:.3f}" for it in items], dtype=object), speakers=np.array([speaker] * n, dtype=object))
    rows = pd.DataFrame({"file": [it.path for it in items], "start": [it.start for it in items], "end": [it.end for it in items]})
    return packed, rows


def _pieces(path: str, rate: int, crop: list, segment, hop) -> list[tuple[float, float, dict]]:
    """(start s, end s, {max_seconds: signal}) per utterance of one file."""
    if segment is None:
        sigs, ends = {}, {}
        for m in set(crop):
            a = load_audio(path, sampling_rate=rate, max_seconds=m)
            sigs[m] = a.signal
            ends[m] = a.used_seconds
        return [(0.0, max(ends.values()), sigs)]
    a = load_audio(path, sampling_rate=rate, max_seconds=None)
    x = a.signal
    out = []
    for s, e in windows(len(x), rate, segment, hop if hop is not None else segment):
        sigs = {}
        for m in set(crop):
            stop = e if m is None else min(e, s + int(round(m * rate)))
            sigs[m] = x[s:stop]
        out.append((s / rate, e / rate, sigs))
    return out


def _run_extractors(pieces, streams, extractors, rate) -> list[list[np.ndarray]]:
    """Per piece, per stream: frames (n_frames, n_layers, dim) in the store's dtype."""
    results: list[list[np.ndarray | None]] = [[None] * len(streams) for _ in pieces]
    done: dict[tuple[int, Any], list[np.ndarray]] = {}
    for k, (s, ex) in enumerate(zip(streams, extractors)):
        m = (s.get("pipeline") or {}).get("max_seconds")
        key = (id(ex), m)
        if key not in done:
            # the one path from signals to features (featcache.process), as extraction uses
            outcomes = run_extractors([by_crop[m] for _, _, by_crop in pieces], rate, [ex])
            arrays = []
            for (start, end, _), got in zip(pieces, outcomes):
                if ex.store_name in got.errors:
                    where = f" (window {start:.2f}-{end:.2f} s)" if len(pieces) > 1 else ""
                    raise AudioError("<signal>", f"{got.errors[ex.store_name]}{where}")
                o = np.asarray(got.results[ex.store_name])
                o = o[:, None, :] if o.ndim == 2 else np.transpose(o, (1, 0, 2))  # (T, L, D)
                arrays.append(o)
            done[key] = arrays
        layers = list(s.get("layers") or range(ex.n_layers))
        for i, a in enumerate(done[key]):
            results[i][k] = np.ascontiguousarray(a[:, layers, :]).astype(ex.dtype)
    return results  # type: ignore[return-value]


