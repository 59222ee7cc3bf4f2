"""Predicting on new audio files with a model trained from a feature cache.

A model directory written by ``estimators fit`` holds, next to the estimator
(:func:`estimators.persist.save_model`):

* ``preprocessing.json`` -- the feature spec and ``FeatureSet.describe()`` of the cache the
  model was trained on (per stream: store, layers, extractor name, extractor parameters and
  the pipeline parameters such as ``max_seconds``), the normalisation kind, the label map
  or regression targets;
* ``normalizer.safetensors`` -- the global mean and scale (per stream, shape
  ``(n_layers, dim)``, float64) of all the training data, when the model was trained on
  normalised features.

To predict, the extractors are rebuilt from that description (:func:`build_extractor`),
and their parameters are checked equal to the recorded ones, so the features of new files
are computed exactly as the cache's were: same audio loading (mono, resampled with soxr,
cropped to the first ``max_seconds``), same extractor parameters, same storage dtype
(float16 for self-supervised models), same layers.

Normalisation at predict time (:func:`normalize_packed`):

* ``none``: nothing;
* ``global``: the training data's global mean and scale;
* ``speaker`` with ``enrol=True``: the given files are taken as one speaker and normalised
  by their own mean and standard deviation (all their frames together);
* ``speaker`` without enrolment: the training data's global statistics (the fallback
  :class:`estimators.normalize.SpeakerNormalizer` uses for unknown speakers).
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from featcache.audio import load_audio, resample
from featcache.errors import AudioError
from featcache.packed import Packed, Stream

from .errors import ModelFileError, ParameterError

__all__ = [
    "PREPROCESSING_FILE",
    "NORMALIZER_FILE",
    "Preprocessing",
    "save_preprocessing",
    "load_preprocessing",
    "build_extractor",
    "build_extractors",
    "windows",
    "extract_packed",
    "normalize_packed",
    "Predictor",
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
    """Write ``preprocessing.json`` (and ``normalizer.safetensors`` when there are statistics)."""
    from safetensors.numpy import save_file

    from .report import write_json

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if prep.normalization not in NORMALIZATIONS:
        raise ParameterError("normalization", f"one of {', '.join(NORMALIZATIONS)}", prep.normalization)
    has_stats = prep.mean is not None
    if has_stats:
        tensors = {}
        for i, (m, s) in enumerate(zip(prep.mean, prep.scale)):
            tensors[f"stream{i}.mean"] = np.ascontiguousarray(m, dtype=np.float64)
            tensors[f"stream{i}.scale"] = np.ascontiguousarray(s, dtype=np.float64)
        save_file(tensors, str(d / NORMALIZER_FILE), metadata={"format": "estimators.normalizer", "format_version": _FORMAT_VERSION})
    write_json(
        d / PREPROCESSING_FILE,
        {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "spec": prep.spec,
            "features": prep.features,
            "normalization": {
                "kind": prep.normalization,
                "eps": prep.eps,
                "statistics": NORMALIZER_FILE if has_stats else None,
                "n_streams": len(prep.mean) if has_stats else 0,
                "note": "global mean/scale of all training data (raw features), per stream",
            },
            "label_map": prep.label_map,
            "targets": prep.targets,
            "info": prep.info,
        },
    )


def load_preprocessing(directory: str | Path) -> Preprocessing:
    """Read what :func:`save_preprocessing` wrote.

    Raises
    ------
    ModelFileError
        Missing or unreadable files, another format or version.
    """
    d = Path(directory)
    p = d / PREPROCESSING_FILE
    if not p.is_file():
        raise ModelFileError(
            f"{d} has no {PREPROCESSING_FILE}: not a model directory written by `estimators fit` "
            "(it records the features and normalisation needed to predict on audio)"
        )
    try:
        info = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{p} cannot be read ({e})") from e
    if info.get("format") != _FORMAT or str(info.get("format_version", "")).split(".")[0] != _FORMAT_VERSION.split(".")[0]:
        raise ModelFileError(f"{p}: format {info.get('format')!r} version {info.get('format_version')!r}; expected {_FORMAT!r} {_FORMAT_VERSION}")
    norm = info.get("normalization") or {}
    mean = scale = None
    if norm.get("statistics"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        f = d / norm["statistics"]
        try:
            t = load_file(str(f))
        except (OSError, SafetensorError) as e:
            raise ModelFileError(f"{f} cannot be read ({e})") from e
        n = int(norm.get("n_streams", 0))
        try:
            mean = [t[f"stream{i}.mean"] for i in range(n)]
            scale = [t[f"stream{i}.scale"] for i in range(n)]
        except KeyError as e:
            raise ModelFileError(f"{f} lacks tensor {e}") from e
    return Preprocessing(
        features=info["features"],
        spec=info.get("spec", ""),
        normalization=norm.get("kind", "none"),
        mean=mean,
        scale=scale,
        eps=float(norm.get("eps", 1e-8)),
        label_map=info.get("label_map"),
        targets=info.get("targets"),
        info=info.get("info") or {},
    )


# --------------------------------------------------------------------------- extractors


def _canon(obj: Any) -> Any:
    """JSON round trip (tuples -> lists, numpy -> python) for comparing parameters."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


def _diff(saved: dict, now: dict, skip: Sequence[str] = ()) -> list[str]:
    a, b = _canon(saved or {}), _canon(now or {})
    out = []
    for k in sorted(set(a) | set(b)):
        if k in skip:
            continue
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(va, float) and isinstance(vb, (int, float)) and math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-12):
            continue
        if va != vb:
            out.append(f"{k}: recorded {va!r}, rebuilt {vb!r}")
    return out


def build_extractor(stream: dict, *, device: str = "auto", ssl_model: str | None = None):
    """Rebuild the extractor of one stream of ``FeatureSet.describe()``.

    Handcrafted extractors (``mfcc``, ``logmel``, ``spectrogram``, ``egemaps``) are built by
    :func:`featcache.extractors.handcrafted.get_handcrafted` with those recorded parameters
    that are constructor arguments (the others, e.g. ``hop_length`` or ``window``, follow
    from them). Self-supervised extractors (``ssl``) are built as
    :class:`featcache.extractors.ssl.SSLExtractor` from the recorded Hugging Face id (or,
    for a local ``save_pretrained`` directory, which the cache records only as
    ``local:<name>`` plus a fingerprint, from ``ssl_model``) with the recorded precision.

    Every recorded parameter is then compared with the rebuilt extractor's ``params()``
    (for SSL models: the Hub revision or the local fingerprint too).

    Parameters
    ----------
    stream : dict
        One entry of ``describe()["streams"]``.
    device : str
        Device of self-supervised models (``auto``, ``cpu``, ``cuda``).
    ssl_model : str, optional
        Short name, Hub id or local directory to load the self-supervised model from
        instead of the recorded one (needed for local models).

    Raises
    ------
    ParameterError
        The extractor kind is unknown, a local model directory is needed, or the rebuilt
        extractor's parameters differ from the recorded ones.
    FeatcacheError
        From featcache (model cannot be loaded...).
    """
    kind = stream.get("extractor")
    params = dict(stream.get("params") or {})
    store = stream.get("store", "?")
    if kind == "ssl":
        from featcache.extractors.ssl import SSLExtractor

        recorded = str(params.get("model", ""))
        local = recorded.startswith("local:")
        source = ssl_model
        if source is None:
            if local:
                raise ParameterError(
                    "ssl_model (--ssl-model DIR)",
                    f"given: the features of store {store!r} come from a local model directory "
                    f"({recorded[6:]!r}, fingerprint {params.get('fingerprint')}), which caches record by "
                    "name only; point it at that directory",
                    None,
                )
            source = recorded
        ex = SSLExtractor(str(source), precision=params.get("precision", "fp32"), device=device)
        now = ex.params()
        skip = ["model", "revision", "fingerprint"]
        problems = _diff(params, now, skip)
        if local or params.get("fingerprint"):
            if now.get("fingerprint") != params.get("fingerprint"):
                problems.append(
                    f"model weights: recorded {recorded} with fingerprint {params.get('fingerprint')}, "
                    f"{source} has {now.get('fingerprint') or now.get('model')}"
                )
        else:
            if now.get("model") != recorded:
                problems.append(f"model: recorded {recorded!r}, rebuilt {now.get('model')!r}")
            rev_a, rev_b = params.get("revision"), now.get("revision")
            if rev_a and rev_b and rev_a != rev_b:
                problems.append(f"revision: recorded {rev_a}, available {rev_b}")
    else:
        from featcache.extractors.handcrafted import HANDCRAFTED, get_handcrafted

        if kind not in HANDCRAFTED:
            raise ParameterError(f"extractor of store {store!r}", f"one of ssl, {', '.join(HANDCRAFTED)}", kind)
        allowed = [p for p in inspect.signature(HANDCRAFTED[kind].__init__).parameters if p != "self"]
        ex = get_handcrafted(kind, **{k: v for k, v in params.items() if k in allowed})
        problems = _diff(params, ex.params())
    if problems:
        raise ParameterError(
            f"extractor of store {store!r}",
            "rebuilt with the parameters recorded in the cache",
            "; ".join(problems),
        )
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


def windows(n_samples: int, sampling_rate: int, segment: float, hop: float) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of windows of ``segment`` seconds every ``hop`` seconds.

    Windows start at 0, ``hop``, ``2 hop``... while they fit in the signal; when the last
    one does not reach the end, one more window ending at the end is added (so every sample
    is covered). A signal no longer than ``segment`` gives one window: the whole signal.
    """
    if not (isinstance(segment, (int, float)) and segment > 0 and math.isfinite(segment)):
        raise ParameterError("segment", "a positive number of seconds", segment)
    if not (isinstance(hop, (int, float)) and hop > 0 and math.isfinite(hop)):
        raise ParameterError("hop", "a positive number of seconds", hop)
    seg = int(round(segment * sampling_rate))
    step = max(1, int(round(hop * sampling_rate)))
    if n_samples <= seg:
        return [(0, int(n_samples))]
    out = [(a, a + seg) for a in range(0, n_samples - seg + 1, step)]
    if out[-1][1] < n_samples:
        out.append((n_samples - seg, n_samples))
    return out


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
    streams = features["streams"]
    rate = max(int(ex.sampling_rate) for ex in extractors)
    crop = [(s.get("pipeline") or {}).get("max_seconds") for s in streams]
    items: list[_Item] = []
    per_stream: list[list[np.ndarray]] = [[] for _ in streams]
    failed: dict[str, str] = {}
    for path in paths:
        p = str(path)
        try:
            pieces = _pieces(p, rate, crop, segment, hop)
            outs = _run_extractors(pieces, streams, extractors, rate)
        except AudioError as e:
            failed[p] = e.reason
            continue
        for (start, end, _), feats in zip(pieces, outs):
            items.append(_Item(p, start, end))
            for k, f in enumerate(feats):
                per_stream[k].append(f)
    if not items:
        return None, pd.DataFrame(columns=["file", "start", "end"]), failed  # type: ignore[return-value]
    st = [
        Stream.from_list(arrays, name=s.get("name", f"s{k}"), frame_rate=s.get("frame_rate"))
        for k, (s, arrays) in enumerate(zip(streams, per_stream))
    ]
    n = len(items)
    packed = Packed(st, ids=np.array([f"{it.path}@{it.start:.3f}" for it in items], dtype=object), speakers=np.array([speaker] * n, dtype=object))
    rows = pd.DataFrame({"file": [it.path for it in items], "start": [it.start for it in items], "end": [it.end for it in items]})
    return packed, rows, failed


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
            sigs = []
            for start, end, by_crop in pieces:
                sig = by_crop[m]
                if ex.sampling_rate != rate:
                    sig = resample(sig, rate, ex.sampling_rate)
                if len(sig) < ex.min_samples():
                    where = f" (window {start:.2f}-{end:.2f} s)" if len(pieces) > 1 else ""
                    raise AudioError(
                        "<signal>",
                        f"too short for the {ex.name} extractor{where}: {len(sig)} samples, needs {ex.min_samples()}",
                    )
                sigs.append(sig)
            outs = ex.batch(sigs, ex.sampling_rate)
            arrays = []
            for o in outs:
                o = np.asarray(o)
                o = o[:, None, :] if o.ndim == 2 else np.transpose(o, (1, 0, 2))  # (T, L, D)
                arrays.append(o)
            done[key] = arrays
        layers = list(s.get("layers") or range(ex.n_layers))
        for i, a in enumerate(done[key]):
            results[i][k] = np.ascontiguousarray(a[:, layers, :]).astype(ex.dtype)
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- normalisation


def _stats(stream: Stream, eps: float) -> tuple[np.ndarray, np.ndarray]:
    s = np.zeros((stream.n_layers, stream.dim))
    q = np.zeros_like(s)
    n = 0
    for i in range(stream.n_utterances):
        x = stream.utterance(i).astype(np.float64)
        s += x.sum(0)
        q += (x * x).sum(0)
        n += len(x)
    mean = s / n
    std = np.sqrt(np.maximum(q / n - mean**2, 0.0))
    return mean, np.where(std > eps, std, 1.0)


def normalize_packed(packed: Packed, prep: Preprocessing, *, enrol: bool = False) -> tuple[Packed, str, str]:
    """Attach the model's normalisation to ``packed``.

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
        stats = [_stats(st, prep.eps) for st in packed.streams]
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
        st = st.subset(np.arange(st.n_utterances))
        st.norm_shift, st.norm_scale = m[None], sc[None]
        st.norm_group = np.zeros(st.n_utterances, dtype=np.int64)
        out.append(st)
    return Packed(out, packed.ids, packed.speakers, dict(packed.meta)), mode, note


# --------------------------------------------------------------------------- all together


class Predictor:
    """A model directory written by ``estimators fit``, ready to predict on audio files.

    Parameters
    ----------
    model_dir : str or Path
    device : str
        Device of the self-supervised feature extractor and of the estimator.
    ssl_model : str, optional
        Where to load the self-supervised model from (needed when the cache was built
        from a local directory).
    """

    def __init__(self, model_dir: str | Path, *, device: str = "auto", ssl_model: str | None = None) -> None:
        from .persist import load_model

        self.model_dir = Path(model_dir)
        self.prep = load_preprocessing(self.model_dir)
        self.estimator = load_model(self.model_dir)
        if "device" in self.estimator.get_params():
            self.estimator.set_params(device=device)
        self.extractors = build_extractors(self.prep.features, device=device, ssl_model=ssl_model)
        self.classes = getattr(self.estimator, "classes_", None)

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None and hasattr(self.estimator, "predict_proba")

    def predict_files(
        self,
        paths: Sequence[str | Path],
        *,
        enrol: bool = False,
        segment: float | None = None,
        hop: float | None = None,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Label (and class probabilities) or regression outputs per file or window.

        Returns
        -------
        table : DataFrame
            ``file, start, end``, then ``label`` and ``p_<class>`` for classifiers, or one
            column per target for regressors, then ``normalization``.
        info : dict
            ``normalization`` (mode), ``note``, ``failed`` {file: reason}.
        """
        if hop is not None and segment is None:
            raise ParameterError("hop", "given together with segment", hop)
        packed, rows, failed = extract_packed(paths, self.prep.features, self.extractors, segment=segment, hop=hop)
        if packed is None:
            return rows, {"normalization": None, "note": "", "failed": failed}
        # normalisation statistics of the files are taken over whole utterances (like the
        # cache's per-speaker statistics); max_frames of the features applies afterwards
        packed, mode, note = normalize_packed(packed, self.prep, enrol=enrol)
        mf = self.prep.features.get("max_frames")
        if mf:
            for st in packed.streams:
                st.lengths = np.minimum(st.lengths, int(mf))
        table = rows.copy()
        if self.is_classifier:
            proba = np.asarray(self.estimator.predict_proba(packed), dtype=np.float64)
            classes = [str(c) for c in self.classes]
            table["label"] = [classes[i] for i in proba.argmax(1)]
            for j, c in enumerate(classes):
                table[f"p_{c}"] = proba[:, j]
        else:
            pred = np.asarray(self.estimator.predict(packed), dtype=np.float64).reshape(len(table), -1)
            names = self.prep.targets or [f"y{j}" for j in range(pred.shape[1])]
            for j, name in enumerate(names):
                table[name] = pred[:, j]
        table["normalization"] = mode
        return table, {"normalization": mode, "note": note, "failed": failed}
