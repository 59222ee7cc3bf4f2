"""Reused work buffers of the CPU kernels (:mod:`estimators._ops`, :mod:`estimators._mapped_mix`).

A fresh buffer of tens of MB comes from ``mmap`` and costs a page fault per 4 KiB page on its
first touch, in every batch: the layer mix's 20 MB float32 work buffer took ~5k faults per
batch (~0.5 M per Dense all-layers epoch over RAVDESS; 2-core EPYC, 2026-12-04). Buffers are
kept per thread and per name, so two kernels never share one at the same time.
"""

from __future__ import annotations

import threading

import torch

__all__ = ["scratch"]

_LOCAL = threading.local()


def scratch(name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A flat CPU tensor of ``numel`` values of ``dtype``, reused by later calls of this
    thread with the same ``name`` (its contents are garbage; valid until that next call)."""
    bufs = getattr(_LOCAL, "bufs", None)
    if bufs is None:
        bufs = _LOCAL.bufs = {}
    t = bufs.get((name, dtype))
    if t is None or t.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: written in and out of inference mode
            t = bufs[(name, dtype)] = torch.empty(int(numel), dtype=dtype)
    return t[: int(numel)]
