"""Bounds and checks shared by the handcrafted extractors.

Parameters may come from untrusted files (a saved model's ``preprocessing.json``): values
that would need absurd amounts of memory are refused before anything is allocated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from featcache.errors import ParameterError

__all__ = [
    "MAX_FFT_PER_HOP",
    "MAX_HOP_MS",
    "MAX_N_FFT",
    "MAX_N_MELS",
    "MAX_SAMPLING_RATE",
    "MAX_WIN_MS",
    "hop_samples",
    "is_number",
    "library_versions",
    "make_smile",
    "positive_float",
    "positive_int",
]


MAX_SAMPLING_RATE = 384_000
MAX_WIN_MS = 1000.0
MAX_HOP_MS = 1000.0
MAX_N_FFT = 1 << 16
MAX_FFT_PER_HOP = 64
MAX_N_MELS = 1024


def is_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(float(value))
    )


def positive_int(name: str, value: Any, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise ParameterError(name, "a positive integer", value)
    if most is not None and int(value) > most:
        raise ParameterError(name, f"a positive integer of at most {most}", value)
    return int(value)


def positive_float(name: str, value: Any, most: float | None = None) -> float:
    if not is_number(value) or float(value) <= 0:
        raise ParameterError(name, "a positive finite number", value)
    if most is not None and float(value) > most:
        raise ParameterError(name, f"a positive number of at most {most:g}", value)
    return float(value)


def hop_samples(hop_ms: float, sampling_rate: int) -> int:
    exact = hop_ms * sampling_rate / 1000.0
    hop = int(round(exact))
    if hop < 1 or abs(exact - hop) > 1e-6:
        raise ParameterError(
            "hop_ms",
            f"a whole number of samples at {sampling_rate} Hz (multiple of "
            f"{1000.0 / sampling_rate:g} ms)",
            hop_ms,
        )
    return hop


def library_versions(*names: str) -> dict[str, str]:
    import importlib

    out = {}
    for name in names:
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except Exception:  # pragma: no cover - a missing library is reported, not fatal
            out[name] = "unavailable"
    return out


def make_smile(feature_set: str, level: str):
    """An ``opensmile.Smile`` for a feature set and level (``"LowLevelDescriptors"``, ``"Functionals"``).

    Raises
    ------
    ModelError
        openSMILE cannot build it (an installation problem).
    """
    import opensmile

    from featcache.errors import ModelError

    try:
        return opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, feature_set),
            feature_level=getattr(opensmile.FeatureLevel, level),
        )
    except Exception as exc:  # pragma: no cover - depends on the installation
        raise ModelError(f"cannot create openSMILE {feature_set} ({level}): {exc}") from exc
