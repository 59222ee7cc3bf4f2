"""Which hidden states a self-supervised store keeps: the one place for ``--layers 0,6-12``.

:func:`parse_layers` turns what a user writes (``"0,6-12"``, a list of integers, ``None``
or ``"all"``) into the sorted model layer numbers to keep, checked against the model's
number of hidden states; :func:`format_layers` writes them back compactly (``0,6-12``), as
``featcache info`` and error messages show them.
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from featcache.errors import ParameterError

__all__ = ["format_layers", "parse_layers"]

_ITEM = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def parse_layers(value: str | Iterable[int] | None, n_model_layers: int, *, name: str = "layers") -> tuple[int, ...] | None:
    """The model layer numbers to keep, sorted; None for all of them.

    Parameters
    ----------
    value : str, iterable of int or None
        Comma-separated layer numbers and inclusive ranges (``"0,6-12"``), the numbers
        themselves, or None / ``"all"`` (every hidden state). A list naming every layer is
        the same as None, so it makes the same store as a plain extraction.
    n_model_layers : int
        Hidden states of the model (``num_hidden_layers + 1``: 13 for base models).
    name : str
        The parameter's name in error messages.

    Returns
    -------
    tuple of int or None
        Distinct model layer numbers in increasing order, or None (all).

    Raises
    ------
    ParameterError
        Not that syntax, a descending range, nothing named, or a layer beyond the model's
        count (the message names the count).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    n = int(n_model_layers)
    allowed = "comma-separated model layer numbers or ranges A-B with A <= B (e.g. 0,6-12), or 'all'"
    if isinstance(value, str):
        found = _parse_text(value, name, allowed)
    else:
        try:
            items = list(value)
        except TypeError:
            raise ParameterError(name, allowed, value) from None
        if not items or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 0 for k in items):
            raise ParameterError(name, allowed, value)
        found = [int(k) for k in items]
    beyond = sorted(k for k in found if k >= n)
    if beyond:
        raise ParameterError(name, f"layer numbers from 0 to {n - 1} (the model has {n} layers)", value)
    kept = tuple(sorted(set(found)))
    return None if kept == tuple(range(n)) else kept


def _parse_text(text: str, name: str, allowed: str) -> list[int]:
    out: list[int] = []
    parts = text.split(",")
    for part in parts:
        m = _ITEM.fullmatch(part)
        if m is None:
            raise ParameterError(name, allowed, text)
        a = int(m.group(1))
        b = a if m.group(2) is None else int(m.group(2))
        if b < a:
            raise ParameterError(name, allowed, text)
        out += range(a, b + 1)
    return out


def format_layers(layers: Iterable[int]) -> str:
    """Layer numbers written compactly: ``(0, 6, 7, 8, 12)`` -> ``"0,6-8,12"``."""
    ks = sorted(set(int(k) for k in layers))
    runs: list[str] = []
    i = 0
    while i < len(ks):
        j = i
        while j + 1 < len(ks) and ks[j + 1] == ks[j] + 1:
            j += 1
        runs.append(str(ks[i]) if i == j else f"{ks[i]}-{ks[j]}")
        i = j + 1
    return ",".join(runs)
