"""The exception tree of :mod:`estimators`.

Every error raised on purpose by the package derives from :class:`EstimatorsError`, so a
caller (the CLI in particular) can turn any of them into one clear message. Errors about
what the caller passed also derive from :class:`ValueError`, which is what scikit-learn's
conventions (and its estimator checks) expect.
"""

from __future__ import annotations

from featcache.errors import ParameterError as _FeatcacheParameterError

__all__ = [
    "EstimatorsError",
    "InputError",
    "ParameterError",
    "TargetError",
    "ModelFileError",
    "LeakageError",
]


class EstimatorsError(Exception):
    """Base class of every error raised on purpose by :mod:`estimators`."""


class InputError(EstimatorsError, ValueError):
    """The features passed to ``fit``/``predict`` cannot be used.

    Wrong type or shape, NaN or infinity, or a shape (number of streams, layers or
    feature dimension) that differs from the one seen at ``fit``.
    """


class ParameterError(EstimatorsError, _FeatcacheParameterError):
    """A constructor parameter has a value that is not allowed.

    The message names the parameter, what is allowed and what was given
    (``ParameterError(name, allowed, given)``, one definition shared with
    :class:`featcache.ParameterError`, which this also is).
    """


class TargetError(EstimatorsError, ValueError):
    """The targets ``y`` cannot be used (wrong length, a single class, NaN...)."""


class ModelFileError(EstimatorsError):
    """A saved model directory cannot be loaded.

    Missing or unreadable ``model.json`` / ``weights.safetensors``, bad JSON, unknown
    format version or estimator class, weights that do not match the model (missing,
    unexpected or wrongly shaped tensors) or a checksum that does not match.
    """


class LeakageError(EstimatorsError):
    """An evaluation would leak: a test utterance duplicates a training one, a test speaker
    is in training, or validation data come from the test part (:mod:`estimators.leakage`).

    The message names the files or speakers and the ``allow_leakage`` opt-out.
    """
