"""Internal validation splits for early stopping.

* :func:`speaker_split` -- speaker-disjoint: whole speakers go to validation until it holds
  ``fraction`` of the utterances (at least one speaker, and at least one left to train on);
* :func:`random_split` -- stratified by class when every class has 2+ utterances and both
  parts can hold every class, else a plain random split.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit

__all__ = ["n_validation", "speaker_split", "random_split"]


def n_validation(n: int, fraction: float) -> int:
    """Validation size for ``n`` utterances: ``round(fraction * n)``, in [1, n - 1] (0 if n < 2)."""
    if n < 2:
        return 0
    return int(min(max(1, round(fraction * n)), n - 1))


def speaker_split(
    speakers: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """Speaker-disjoint (train, validation) positions.

    Parameters
    ----------
    speakers : ndarray of shape (n,)
    fraction : float
        Target share of utterances in validation.
    rng : Generator

    Returns
    -------
    (train_index, valid_index) or None when there are fewer than 2 speakers.
    """
    speakers = np.asarray(speakers)
    uniq, inverse, counts = np.unique(speakers, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        return None
    target = max(1, round(fraction * len(speakers)))
    chosen: list[int] = []
    total = 0
    for k in rng.permutation(len(uniq)):
        if total >= target or len(chosen) == len(uniq) - 1:
            break
        chosen.append(int(k))
        total += int(counts[k])
    is_val = np.isin(inverse, chosen)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def random_split(
    n: int, fraction: float, rng: np.random.Generator, classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, validation) positions, stratified by ``classes`` when possible.

    Parameters
    ----------
    n : int
    fraction : float
    rng : Generator
    classes : ndarray of shape (n,) of int, or None
        Encoded class of every utterance (classifiers).

    Returns
    -------
    (train_index, valid_index), both sorted.
    """
    n_val = n_validation(n, fraction)
    if classes is not None:
        counts = np.bincount(classes)
        counts = counts[counts > 0]
        if counts.min() >= 2 and len(counts) <= n_val and len(counts) <= n - n_val:
            sss = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=int(rng.integers(2**31 - 1)))
            train, valid = next(sss.split(np.zeros(n), classes))
            return np.sort(train), np.sort(valid)
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
