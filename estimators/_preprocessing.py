"""Saved preprocessing of a model directory and the normalisation of new features.

``preprocessing.json`` (plus ``normalizer.safetensors``) records what is needed to turn
audio into a model's input; see :mod:`estimators.predict`. Reading it is reading untrusted
input: see :mod:`estimators._modelfiles` for the checks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.fileio import atomic_write_bytes, atomic_write_json, dumps_json
from featcache.packed import Packed, Stream
from featcache.stats import combine_stats

from ._modelfiles import (
    MAX_STATS_BYTES,
    check_preprocessing,
    read_inside,
    read_model_json,
    verify_doc_checksum,
    with_checksum,
)
from .errors import InputError, ModelFileError, ParameterError

__all__ = [
    "PREPROCESSING_FILE",
    "NORMALIZER_FILE",
    "NORMALIZATIONS",
    "Preprocessing",
    "save_preprocessing",
    "load_preprocessing",
    "Moments",
    "normalize_packed",
]

PREPROCESSING_FILE = "preprocessing.json"
NORMALIZER_FILE = "normalizer.safetensors"
_FORMAT = "estimators.preprocessing"
_FORMAT_VERSION = "1.0"
NORMALIZATIONS = ("speaker", "global", "none")


# --------------------------------------------------------------------------- saved preprocessing


@dataclass
class Preprocessing:
    """What is needed to turn audio into the model's input.

    Attributes
    ----------
    features : dict
        ``FeatureSet.describe()`` of the training features.
    spec : str
        The feature spec (``all_layers``, ``mfcc``...).
    normalization : {"speaker", "global", "none"}
    mean, scale : list of ndarray of shape (n_layers, dim), or None
        Global statistics of all the training data, one entry per stream.
    eps : float
        Standard deviations at most ``eps`` are replaced by 1 (as the normalizers do).
    label_map : str or None
    targets : list of str or None
        Regression targets (None for classifiers).
    info : dict
        Anything else recorded at fit.
    """

    features: dict
    spec: str
    normalization: str = "none"
    mean: list[np.ndarray] | None = None
    scale: list[np.ndarray] | None = None
    eps: float = 1e-8
    label_map: str | None = None
    targets: list[str] | None = None
    info: dict = field(default_factory=dict)


def save_preprocessing(directory: str | Path, prep: Preprocessing) -> None:
    """Write ``preprocessing.json`` (and ``normalizer.safetensors`` when there are statistics).

    ``preprocessing.json`` carries its own checksum and the SHA-256 of the statistics file.
    """
    from safetensors.numpy import save

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if prep.normalization not in NORMALIZATIONS:
        raise ParameterError("normalization", f"one of {', '.join(NORMALIZATIONS)}", prep.normalization)
    has_stats = prep.mean is not None
    digest = None
    if has_stats:
        import hashlib

        tensors = {}
        for i, (m, s) in enumerate(zip(prep.mean, prep.scale)):
            tensors[f"stream{i}.mean"] = np.ascontiguousarray(m, dtype=np.float64)
            tensors[f"stream{i}.scale"] = np.ascontiguousarray(s, dtype=np.float64)
        data = save(tensors, metadata={"format": "estimators.normalizer", "format_version": _FORMAT_VERSION})
        digest = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(d / NORMALIZER_FILE, data)
    doc = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "spec": prep.spec,
        "features": prep.features,
        "normalization": {
            "kind": prep.normalization,
            "eps": prep.eps,
            "statistics": NORMALIZER_FILE if has_stats else None,
            "sha256": digest,
            "n_streams": len(prep.mean) if has_stats else 0,
            "note": "global mean/scale of all training data (raw features), per stream",
        },
        "label_map": prep.label_map,
        "targets": prep.targets,
        "info": prep.info,
    }
    # plain JSON types first, so that the checksum is that of what is read back
    atomic_write_json(d / PREPROCESSING_FILE, with_checksum(json.loads(dumps_json(doc))))


def _stream_shape(stream: dict) -> tuple[int | None, int | None]:
    layers = stream.get("layers")
    n_layers = len(layers) if layers else stream.get("n_layers")
    return n_layers, stream.get("dim")


def _load_statistics(d: Path, info: dict, checked: bool) -> tuple[list | None, list | None]:
    norm = info.get("normalization") or {}
    if not norm.get("statistics"):
        return None, None
    from safetensors import SafetensorError
    from safetensors.numpy import load

    sha = norm.get("sha256")
    if sha is None and checked:
        raise ModelFileError(f"{d / PREPROCESSING_FILE}: normalization.sha256 missing")
    f, data = read_inside(d, norm["statistics"], f"{PREPROCESSING_FILE} normalization.statistics", sha, MAX_STATS_BYTES)
    try:
        t = load(data)
    except (SafetensorError, ValueError, OSError) as e:
        raise ModelFileError(f"{f} cannot be read ({e})") from e
    streams = info["features"]["streams"]
    mean, scale = [], []
    for i in range(int(norm.get("n_streams", 0))):
        want = _stream_shape(streams[i])
        for name, out in ((f"stream{i}.mean", mean), (f"stream{i}.scale", scale)):
            if name not in t:
                raise ModelFileError(f"{f} lacks tensor {name!r}")
            a = t[name]
            if a.dtype != np.float64 or a.ndim != 2 or any(w is not None and w != g for w, g in zip(want, a.shape)):
                raise ModelFileError(f"{f}: {name} is {a.dtype} of shape {a.shape}; expected float64 of shape {want}")
            if not np.isfinite(a).all() or (name.endswith("scale") and not (a > 0).all()):
                raise ModelFileError(f"{f}: {name} holds non-finite{' or non-positive' if name.endswith('scale') else ''} values")
            out.append(a)
    return mean, scale


def load_preprocessing(directory: str | Path) -> Preprocessing:
    """Read what :func:`save_preprocessing` wrote, checking it (see :mod:`estimators._modelfiles`).

    Raises
    ------
    ModelFileError
        Missing, unreadable, corrupted (checksum) or out-of-range files, another format or
        version, a statistics file outside the directory.
    """
    d = Path(directory)
    p = d / PREPROCESSING_FILE
    if not os.path.lexists(p):
        raise ModelFileError(
            f"{d} has no {PREPROCESSING_FILE}: not a model directory written by `estimators fit` "
            "(it records the features and normalisation needed to predict on audio)"
        )
    info = read_model_json(p, PREPROCESSING_FILE)
    version = info.get("format_version")
    if info.get("format") != _FORMAT or not isinstance(version, str) or version.split(".")[0] != _FORMAT_VERSION.split(".")[0]:
        raise ModelFileError(f"{p}: format {info.get('format')!r} version {version!r}; expected {_FORMAT!r} {_FORMAT_VERSION}")
    checked = verify_doc_checksum(info, p)
    check_preprocessing(info, str(p))
    mean, scale = _load_statistics(d, info, checked)
    norm = info.get("normalization") or {}
    return Preprocessing(
        features=info["features"],
        spec=info.get("spec") or "",
        normalization=norm.get("kind", "none"),
        mean=mean,
        scale=scale,
        eps=float(norm.get("eps", 1e-8)),
        label_map=info.get("label_map"),
        targets=info.get("targets"),
        info=info.get("info") or {},
    )


# --------------------------------------------------------------------------- normalisation


class Moments:
    """Sums of frames and of their squares over utterances (float64), for enrolment statistics."""

    def __init__(self) -> None:
        self.s: np.ndarray | None = None
        self.q: np.ndarray | None = None
        self.n = 0

    def add(self, stream: Stream) -> None:
        if self.s is None:
            self.s = np.zeros((stream.n_layers, stream.dim))
            self.q = np.zeros_like(self.s)
        for i in range(stream.n_utterances):
            x = stream.utterance(i).astype(np.float64)
            self.s += x.sum(0)
            self.q += (x * x).sum(0)
            self.n += len(x)

    def merge(self, other: Moments) -> None:
        if other.s is None:
            return
        if self.s is None:
            self.s, self.q = np.zeros_like(other.s), np.zeros_like(other.q)
        self.s += other.s
        self.q += other.q
        self.n += other.n

    def stats(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and scale (std, or 1 where std <= eps), each (n_layers, dim)."""
        if self.n == 0:
            raise InputError("enrolment statistics need at least one frame; the given files have none")
        _, mean, std = combine_stats(np.array([self.n]), self.s[None], self.q[None])
        return mean, np.where(std > eps, std, 1.0)


def _stats(stream: Stream, eps: float) -> tuple[np.ndarray, np.ndarray]:
    m = Moments()
    m.add(stream)
    return m.stats(eps)


def normalize_packed(
    packed: Packed, prep: Preprocessing, *, enrol: bool = False, enrol_stats: list | None = None
) -> tuple[Packed, str, str]:
    """Attach the model's normalisation to ``packed``.

    ``enrol_stats`` (per stream ``(mean, scale)``) replaces the statistics of ``packed``
    itself for enrolment, when the files are normalised in several chunks.

    Returns
    -------
    packed : Packed
    mode : str
        ``none``, ``global`` (training statistics), ``training-global`` (a speaker-normalised
        model given no enrolment: training data's global statistics) or ``enrol`` (the files'
        own statistics, as one speaker).
    note : str
        One sentence saying which.
    """
    kind = prep.normalization
    if kind == "none":
        return packed, "none", "features not normalised (the model was trained without normalisation)"
    if kind == "speaker" and enrol:
        stats = enrol_stats if enrol_stats is not None else [_stats(st, prep.eps) for st in packed.streams]
        mode = "enrol"
        note = (
            "speaker normalisation: the given file(s) normalised with their own mean and standard "
            "deviation (all their frames together), as one speaker (--enrol)"
        )
    else:
        if prep.mean is None:
            raise ModelFileError(f"the model was trained with {kind} normalisation but its directory holds no {NORMALIZER_FILE}")
        stats = list(zip(prep.mean, prep.scale))
        if kind == "speaker":
            mode = "training-global"
            note = (
                "speaker normalisation without enrolment: features normalised with the global mean and "
                "standard deviation of the training data (pass --enrol to normalise the given files "
                "as one speaker with their own statistics)"
            )
        else:
            mode = "global"
            note = "global normalisation with the training data's mean and standard deviation"
    if len(stats) != len(packed.streams):
        raise ModelFileError(f"normalisation statistics for {len(stats)} stream(s); the features have {len(packed.streams)}")
    out = []
    for st, (m, sc) in zip(packed.streams, stats):
        m, sc = np.asarray(m), np.asarray(sc)
        if m.shape != (st.n_layers, st.dim):
            raise ModelFileError(f"normalisation statistics of shape {m.shape}; features of stream {st.name!r} are {(st.n_layers, st.dim)}")
        out.append(st.with_normalization(m[None], sc[None], np.zeros(st.n_utterances, dtype=np.int64)))
    return Packed(out, packed.ids, packed.speakers, dict(packed.meta)), mode, note


