"""Concordance correlation coefficient (CCC): score, scorer and torch loss.

``CCC = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with population (biased)
(co)variances, computed per output and averaged over outputs. It is 1 only for perfect
agreement, penalising both low correlation and shifts/scalings. When both ``y_true`` and
``y_pred`` are constant and equal (0/0) it is defined as 1.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import make_scorer
from sklearn.utils import check_consistent_length

__all__ = ["ccc_score", "ccc_per_output", "ccc_scorer", "ccc_loss"]


def _as_2d(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"{name} must have shape (n,) or (n, n_outputs); got {y.shape}")
    return y


def ccc_per_output(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """CCC of every output.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,) or (n, n_outputs)

    Returns
    -------
    ndarray of shape (n_outputs,)
    """
    check_consistent_length(y_true, y_pred)
    t = _as_2d(y_true, "y_true")
    p = _as_2d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} and y_pred {p.shape}")
    if len(t) == 0:
        raise ValueError("CCC needs at least one sample")
    mt, mp = t.mean(0), p.mean(0)
    vt, vp = t.var(0), p.var(0)
    cov = ((t - mt) * (p - mp)).mean(0)
    den = vt + vp + (mt - mp) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ccc = np.where(den > 0, 2 * cov / np.where(den > 0, den, 1.0), 1.0)
    return ccc


def ccc_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over outputs of the concordance correlation coefficient.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,) or (n, n_outputs)

    Returns
    -------
    float
        In [-1, 1]; higher is better.
    """
    return float(np.mean(ccc_per_output(y_true, y_pred)))


#: scikit-learn scorer (greater is better) for ``GridSearchCV(scoring=ccc_scorer)``.
ccc_scorer = make_scorer(ccc_score)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - CCC`` averaged over outputs (differentiable).

    Parameters
    ----------
    pred, target : Tensor of shape (n, n_outputs)
    eps : float
        Added to the denominator.

    Returns
    -------
    Tensor, scalar
    """
    pred = pred.float()
    target = target.float()
    mp, mt = pred.mean(0), target.mean(0)
    vp = ((pred - mp) ** 2).mean(0)
    vt = ((target - mt) ** 2).mean(0)
    cov = ((pred - mp) * (target - mt)).mean(0)
    ccc = 2 * cov / (vp + vt + (mp - mt) ** 2 + eps)
    return 1.0 - ccc.mean()
