"""The one rule for "the same features": parameters equal after a JSON round trip.

Stores refuse to mix features made with different parameters, estimators refuse to predict
on features unlike those they were fitted on, and ``estimators predict`` checks that the
extractors it rebuilds are the ones recorded: all three compare with
:func:`param_differences`. Values are compared exactly once canonicalised (tuples as lists,
numpy scalars as Python numbers, as a saved file would hold them). Parameters in
:data:`NUMERIC_ONLY` change the numbers only slightly (``precision``); each caller decides
whether that refuses (a store must be homogeneous) or warns (an estimator).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

__all__ = ["NUMERIC_ONLY", "Difference", "canonical", "param_differences"]

#: parameters whose differences change values by rounding only (bf16 vs fp32 computation)
NUMERIC_ONLY = frozenset({"precision"})
MISSING = "<missing>"


def canonical(obj: Any) -> Any:
    """``obj`` as JSON would store it (tuples -> lists, numpy -> Python, others -> str)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


@dataclass(frozen=True)
class Difference:
    """One parameter that differs: its dotted key and both values (``MISSING`` when absent)."""

    key: str
    left: Any
    right: Any

    @property
    def numeric_only(self) -> bool:
        return self.key.rsplit(".", 1)[-1] in NUMERIC_ONLY

    def __str__(self) -> str:
        return f"{self.key}: {self.left!r} != {self.right!r}"


def param_differences(left: dict, right: dict, *, ignore: Iterable[str] = (), prefix: str = "") -> list[Difference]:
    """Every parameter that differs between two nested parameter dicts, in key order.

    Parameters
    ----------
    left, right : dict
        Parameter dicts (nested dicts are compared key by key, with dotted keys).
    ignore : iterable of str
        Top-level keys not compared (e.g. a model's ``revision`` when weights match).
    prefix : str
        Prepended to every key (for nested calls and messages).
    """
    skip = set(ignore)
    a, b = canonical(left or {}), canonical(right or {})
    out: list[Difference] = []
    for k in sorted(set(a) | set(b)):
        if k in skip:
            continue
        va, vb = a.get(k, MISSING), b.get(k, MISSING)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += param_differences(va, vb, prefix=f"{prefix}{k}.")
        elif va != vb:
            out.append(Difference(f"{prefix}{k}", va, vb))
    return out
