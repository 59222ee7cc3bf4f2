"""Hyper-parameter grids in short form: ``--grid "hidden=64,128;lr=1e-3,3e-4"``.

:func:`parse_grid` turns the short form into a scikit-learn parameter grid (a dict of
lists) with the estimator's parameter names; see :data:`GRID_NAMES`. Public through
:mod:`estimators.cv`.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ParameterError

__all__ = ["GRID_NAMES", "parse_grid", "parse_hidden"]


#: Short grid names -> estimator parameter names (``hidden`` gives two layers ``(h, h)``).
GRID_NAMES: dict[str, str] = {
    "hidden": "hidden_sizes",
    "hidden_sizes": "hidden_sizes",
    "lr": "lr",
    "dropout": "dropout",
    "batch": "batch_size",
    "batch_size": "batch_size",
    "pooling": "pooling",
    "layer_weighting": "layer_weighting",
    "max_frames": "max_frames",
    "fusion": "fusion",
    "channels": "channels",
    "scale": "scale",
    "embedding_size": "embedding_size",
    "bottleneck": "bottleneck",
    "c": "C",  # the classic baselines (svc, logreg)
    "gamma": "gamma",
}


def _scalar(text: str) -> Any:
    t = text.strip()
    if t.lower() == "none":
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def parse_hidden(text: str) -> tuple[int, ...]:
    """``64`` -> (64, 64); ``128x64`` -> (128, 64)."""
    parts = [p for p in re.split(r"[x/]", text.strip().lower()) if p]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise ParameterError("grid hidden", "positive integers: H (two layers of H) or AxB", text)
    return sizes * 2 if len(sizes) == 1 else sizes


def parse_grid(text: str, prefix: str = "") -> dict[str, list]:
    """Parse ``"hidden=64,128;lr=1e-3,3e-4"`` into a scikit-learn parameter grid.

    Parameters
    ----------
    text : str
        ``NAME=V1,V2,...`` items joined by ``;``. Names: see :data:`GRID_NAMES`
        (``hidden=64`` means ``hidden_sizes=(64, 64)``; ``128x64`` gives ``(128, 64)``);
        ``none`` is None; numbers are parsed as int, then float.
    prefix : str
        Prepended to every parameter name (``"est__"`` for a Pipeline step).

    Returns
    -------
    dict of str to list

    Raises
    ------
    ParameterError
        Malformed items, unknown names or empty value lists.
    """
    if not isinstance(text, str) or not text.strip():
        raise ParameterError("grid", "'NAME=V1,V2;NAME=...' (e.g. 'hidden=64,128;lr=1e-3,3e-4')", text)
    grid: dict[str, list] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ParameterError("grid", "items of the form NAME=V1,V2,... separated by ';'", item)
        name, _, values = item.partition("=")
        name = name.strip().lower()
        if name not in GRID_NAMES:
            raise ParameterError("grid name", f"one of {', '.join(GRID_NAMES)}", name)
        vals = [v for v in values.split(",") if v.strip()]
        if not vals:
            raise ParameterError(f"grid {name}", "at least one value", values)
        key = GRID_NAMES[name]
        if prefix + key in grid:  # a second item would silently replace the first one's values
            raise ParameterError("grid", "each parameter named once, all its values in one item (e.g. hidden=64,128)", f"{name} repeated in {text.strip()}")
        if key == "hidden_sizes":
            parsed = [parse_hidden(v) for v in vals]
        else:
            parsed = [_scalar(v) for v in vals]
        if key in ("lr", "dropout", "C") and not all(isinstance(v, (int, float)) for v in parsed):
            raise ParameterError(f"grid {name}", "numbers", values)
        if key == "batch_size" and not all(isinstance(v, int) and v > 0 for v in parsed):
            raise ParameterError(f"grid {name}", "positive integers", values)
        if key == "max_frames" and not all(v is None or (isinstance(v, int) and v > 0) for v in parsed):
            raise ParameterError(f"grid {name}", "positive integers or none", values)
        if key in ("lr", "dropout", "C"):
            parsed = [float(v) for v in parsed]
        grid[prefix + key] = parsed
    if not grid:
        raise ParameterError("grid", "at least one NAME=V1,V2 item", text)
    return grid
