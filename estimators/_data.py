"""Conversion of every accepted input to a :class:`featcache.packed.Packed`.

The estimators accept

(a) an object with a ``to_packed()`` method returning a :class:`~featcache.packed.Packed`
    (the featcache ``FeatureSet``; utterance ids and speakers come with it);
(b) a :class:`~featcache.packed.Packed` (or a single :class:`~featcache.packed.Stream`);
(c) a list of ragged arrays, each of shape ``(n_frames_i, dim)`` or
    ``(n_frames_i, n_layers, dim)``;
(d) numeric array-likes: 2-D ``(n, dim)`` (one-frame sequences), 3-D
    ``(n, n_frames, dim)`` or 4-D ``(n, n_frames, n_layers, dim)``.

Everything becomes a ``Packed`` whose streams hold ``data`` of shape
``(total_frames, n_layers, dim)``. Numeric arrays are validated with
:func:`sklearn.utils.check_array` (NaN, infinity, complex, sparse, empty input refused) and
reshaped without copying where possible; float16, float32 and float64 are kept as they
are (batches are converted to float32 one at a time), other dtypes become float32.
The frames of a ``Packed`` are not scanned for NaN here (that would read the whole cache):
the training and prediction loops check every batch and raise :class:`InputError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils import check_array

from featcache.frames import ShardFrames
from featcache.packed import Packed, Stream
from featcache.params import canonical, param_differences

from .errors import InputError

__all__ = ["to_packed", "describe_packed", "stream_shapes", "feature_differences", "describe_streams"]

_FLOATS = (np.float32, np.float64, np.float16)


def to_packed(X: Any) -> Packed:
    """Convert any accepted input to a validated :class:`~featcache.packed.Packed`.

    Parameters
    ----------
    X : FeatureSet-like, Packed, Stream, list of ndarray or array-like
        See the module docstring for the accepted forms and shapes.

    Returns
    -------
    Packed
        Shares memory with ``X`` wherever possible.

    Raises
    ------
    InputError
        When ``X`` has an unsupported type or shape or inconsistent streams.
    ValueError, TypeError
        From :func:`sklearn.utils.check_array` for invalid numeric input (NaN,
        infinity, complex values, sparse matrices, empty arrays, 1-D arrays).
    """
    if isinstance(X, Packed):
        packed = X
    elif isinstance(X, Stream):
        packed = Packed([X])
    elif hasattr(X, "to_packed") and callable(X.to_packed):
        packed = X.to_packed()
        if not isinstance(packed, Packed):
            raise InputError(
                f"{type(X).__name__}.to_packed() returned {type(packed).__name__}, "
                "expected featcache.packed.Packed"
            )
    elif _is_ragged_list(X):
        packed = _from_ragged(X)
    else:
        packed = _from_numeric(X)
    _validate_packed(packed)
    return packed


def stream_shapes(packed: Packed) -> list[tuple[int, int]]:
    """``(n_layers, dim)`` of each stream."""
    return [(s.n_layers, s.dim) for s in packed.streams]


def describe_packed(packed: Packed) -> dict:
    """A JSON-able summary of the streams (used as ``feature_info_`` for non-FeatureSets).

    A Packed made by ``FeatureSet.to_packed()`` carries the FeatureSet's description in
    ``meta["describe"]``; it is returned then.
    """
    if isinstance(packed.meta, dict) and isinstance(packed.meta.get("describe"), dict):
        return packed.meta["describe"]
    return {
        "n_utterances": len(packed),
        "streams": [
            {
                "name": str(s.name),
                "n_layers": s.n_layers,
                "dim": s.dim,
                "frame_rate": None if s.frame_rate is None else float(s.frame_rate),
                "dtype": str(s.data.dtype),
            }
            for s in packed.streams
        ],
        "has_speakers": packed.speakers is not None,
    }


#: what makes two featcache streams different features (``FeatureSet.describe()`` keys);
#: the corpus, store folder, ``max_frames`` and the pipeline's cropping do not.
_FEATURE_KEYS = ("extractor", "layers", "n_layers", "dim", "frame_rate", "params")
#: extractor parameters that change the numbers only slightly: a difference warns


def _featureset_streams(info: Any) -> list[dict] | None:
    streams = info.get("streams") if isinstance(info, dict) else None
    if not isinstance(streams, list) or not all(isinstance(s, dict) and "params" in s for s in streams):
        return None
    return streams


def feature_differences(fitted: Any, given: Any) -> tuple[list[str], list[str]]:
    """How the features of ``given`` differ from those an estimator was ``fitted`` on.

    Parameters
    ----------
    fitted, given : dict
        ``FeatureSet.describe()`` outputs (``feature_info_`` of a fitted estimator, and the
        description carried by the input). Anything else (arrays, a Packed built by hand)
        carries no description: nothing is compared.

    Returns
    -------
    refused : list of str
        ``stream K key: fitted != given`` lines for differences in extractor, layers
        (the feature spec), layer count, dimension, frame rate or extractor parameters.
    warned : list of str
        The same for parameters that only change the numbers slightly (``precision``).
    """
    a, b = _featureset_streams(fitted), _featureset_streams(given)
    if a is None or b is None or len(a) != len(b):
        return [], []
    refused, warned = [], []
    for k, (fa, fb) in enumerate(zip(canonical(a), canonical(b))):
        for key in _FEATURE_KEYS:
            va, vb = fa.get(key), fb.get(key)
            if key != "params":
                if va != vb:
                    refused.append(f"stream {k} {key}: {va!r} (fit) != {vb!r} (X)")
                continue
            pa, pb = va or {}, vb or {}
            same_weights = pa.get("fingerprint") is not None and pa.get("fingerprint") == pb.get("fingerprint")
            # the one rule for "same features" (featcache.params); only precision merely warns
            for d in param_differences(pa, pb, ignore=("model", "revision") if same_weights else (), prefix="params."):
                line = f"stream {k} {d.key}: {d.left!r} (fit) != {d.right!r} (X)"
                (warned if d.numeric_only else refused).append(line)
    return refused, warned


def describe_streams(info: Any) -> str:
    """A one-line summary of a ``FeatureSet.describe()`` (for messages)."""
    streams = _featureset_streams(info) or []
    parts = []
    for s in streams:
        model = (s.get("params") or {}).get("model")
        what = f"{s.get('extractor')}" + (f" {model}" if model else "")
        parts.append(f"{s.get('name')!r} ({what}, layers {s.get('layers')}, dim {s.get('dim')})")
    corpus = info.get("corpus") if isinstance(info, dict) else None
    return ("corpus " + repr(corpus) + ": " if corpus else "") + " + ".join(parts)


def _is_ragged_list(X: Any) -> bool:
    """A non-empty list/tuple whose items are all ndarrays of 2 or 3 dimensions."""
    return (
        isinstance(X, (list, tuple))
        and len(X) > 0
        and all(isinstance(a, np.ndarray) and a.ndim in (2, 3) for a in X)
    )


def _from_ragged(arrays: list[np.ndarray] | tuple[np.ndarray, ...]) -> Packed:
    ndims = {a.ndim for a in arrays}
    if len(ndims) != 1:
        raise InputError(
            "a list of utterances must hold arrays of one kind: all (n_frames, dim) or all "
            f"(n_frames, n_layers, dim); got arrays with {sorted(ndims)} dimensions"
        )
    items = []
    for i, a in enumerate(arrays):
        if a.ndim == 2:
            a = a[:, None, :]
        if a.shape[0] < 1:
            raise InputError(f"utterance {i} of the list has 0 frames; every utterance needs 1 or more")
        if a.dtype.kind not in "fiub":
            raise InputError(f"utterance {i} of the list has dtype {a.dtype}; expected a numeric dtype")
        if a.dtype.kind != "f":
            a = a.astype(np.float32)
        items.append(a)
    shapes = {a.shape[1:] for a in items}
    if len(shapes) != 1:
        raise InputError(
            "all utterances must have the same (n_layers, dim); got "
            + ", ".join(str(s) for s in sorted(shapes))
        )
    dtype = np.result_type(*[a.dtype for a in items])
    if dtype not in _FLOATS:
        dtype = np.float32
    stream = Stream.from_list([np.asarray(a, dtype=dtype) for a in items])
    if not np.isfinite(stream.data).all():
        bad = [i for i, a in enumerate(items) if not np.isfinite(a).all()]
        raise InputError(f"Input X contains NaN or infinity (utterances {bad[:10]} of the list)")
    return Packed([stream])


def _from_numeric(X: Any) -> Packed:
    X = check_array(
        X,
        accept_sparse=False,
        dtype=list(_FLOATS),
        allow_nd=True,
        ensure_all_finite=True,
        ensure_min_samples=1,
        ensure_min_features=1,
        input_name="X",
    )
    if X.ndim > 4:
        raise InputError(
            f"numeric X must be 2-D (n, dim), 3-D (n, n_frames, dim) or 4-D "
            f"(n, n_frames, n_layers, dim); got shape {X.shape}"
        )
    if 0 in X.shape:
        raise InputError(f"numeric X has an empty axis: shape {X.shape}")
    n = X.shape[0]
    if X.ndim == 2:
        data = X[:, None, :]
        frames = 1
    elif X.ndim == 3:
        frames = X.shape[1]
        data = X.reshape(n * frames, 1, X.shape[2])
    else:
        frames = X.shape[1]
        data = X.reshape(n * frames, X.shape[2], X.shape[3])
    starts = np.arange(n, dtype=np.int64) * frames
    lengths = np.full(n, frames, dtype=np.int64)
    return Packed([Stream(data, starts, lengths)])


def _validate_packed(packed: Packed) -> None:
    n = len(packed)
    if n < 1:
        raise InputError("X holds 0 utterances; at least 1 is required")
    for k, s in enumerate(packed.streams):
        if not isinstance(s.data, (np.ndarray, ShardFrames)):
            raise InputError(
                f"stream {k} ({s.name!r}): data must be a numpy array or a featcache ShardFrames; "
                f"got {type(s.data).__name__}"
            )
        if s.data.ndim != 3:
            raise InputError(
                f"stream {k} ({s.name!r}): data must have shape (total_frames, n_layers, dim); "
                f"got shape {s.data.shape}"
            )
        if s.data.dtype.kind != "f" or s.data.dtype.itemsize not in (2, 4, 8):
            raise InputError(f"stream {k} ({s.name!r}): data must be float16/32/64; got {s.data.dtype}")
        if s.n_layers < 1 or s.dim < 1:
            raise InputError(f"stream {k} ({s.name!r}): data has an empty axis: shape {s.data.shape}")
        starts = np.asarray(s.starts)
        lengths = np.asarray(s.lengths)
        if starts.shape != (n,) or lengths.shape != (n,):
            raise InputError(f"stream {k} ({s.name!r}): starts/lengths must have shape ({n},)")
        if n and (lengths.min() < 1 or starts.min() < 0 or (starts + lengths).max() > s.data.shape[0]):
            raise InputError(
                f"stream {k} ({s.name!r}): every utterance needs 1 or more frames inside data "
                f"(lengths >= 1, 0 <= starts, starts + lengths <= {s.data.shape[0]})"
            )
        if getattr(s, "norm_group", None) is not None:
            shift, scale, group = np.asarray(s.norm_shift), np.asarray(s.norm_scale), np.asarray(s.norm_group)
            if shift.ndim != 3 or shift.shape[1:] != s.data.shape[1:] or scale.shape != shift.shape:
                raise InputError(
                    f"stream {k} ({s.name!r}): norm_shift/norm_scale must have shape (n_groups, "
                    f"{s.n_layers}, {s.dim}); got {shift.shape} and {scale.shape}"
                )
            if group.shape != (n,) or (n and (group.min() < 0 or group.max() >= len(shift))):
                raise InputError(f"stream {k} ({s.name!r}): norm_group must hold {n} indices into norm_shift")
            if not (np.isfinite(shift).all() and np.isfinite(scale).all() and (scale != 0).all()):
                raise InputError(f"stream {k} ({s.name!r}): norm_shift/norm_scale must be finite, scale non-zero")
    if packed.speakers is not None and len(packed.speakers) != n:
        raise InputError(f"speakers has {len(packed.speakers)} entries for {n} utterances")
