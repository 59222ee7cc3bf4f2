"""Attentive statistics pooling over packed (variable-length) utterances.

Attentive statistics pooling (Okabe et al., Interspeech 2018): a small network scores
every frame, the scores are turned into weights by a softmax over the frames of each
utterance, and the utterance is summarised by the weighted mean and the weighted standard
deviation of its frames (output width ``2 * n_features``).

Everything here works on packed frames (``(total_frames, n_features)`` plus the utterance
of every frame, see :class:`estimators._batch.Batch`): the softmax and the sums run per
utterance with segment operations, so an utterance's output does not depend on the other
utterances of its batch and there is no padding to mask.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["STD_EPS", "segment_softmax", "weighted_stats", "AttentivePool"]

#: Variances are clamped to this before the square root (one-frame utterances have none).
STD_EPS = 1e-12


def segment_softmax(scores: torch.Tensor, seg_ids: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Softmax of ``scores`` over the frames of each utterance.

    Parameters
    ----------
    scores : Tensor of shape (total_frames, k)
        One score per frame (``k = 1``) or per frame and channel.
    seg_ids : Tensor of shape (total_frames,)
        Utterance of every frame.
    n_segments : int

    Returns
    -------
    Tensor of shape (total_frames, k)
        Non-negative weights summing to 1 over the frames of every utterance (per column).
    """
    s = scores.float()
    idx = seg_ids.unsqueeze(1).expand(-1, s.shape[1])
    top = s.new_full((n_segments, s.shape[1]), float("-inf")).scatter_reduce(0, idx, s, reduce="amax")
    e = torch.exp(s - top[seg_ids])
    total = e.new_zeros(n_segments, s.shape[1]).index_add_(0, seg_ids, e)
    return e / total[seg_ids]


def weighted_stats(
    h: torch.Tensor, weights: torch.Tensor, seg_ids: torch.Tensor, n_segments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and standard deviation of the frames of each utterance.

    Parameters
    ----------
    h : Tensor of shape (total_frames, n_features)
    weights : Tensor of shape (total_frames, 1) or (total_frames, n_features)
        Summing to 1 over each utterance (see :func:`segment_softmax`).
    seg_ids : Tensor of shape (total_frames,)
    n_segments : int

    Returns
    -------
    mean, std : Tensor of shape (n_segments, n_features), float32
        ``std = sqrt(max(sum_t w_t (h_t - mean)^2, STD_EPS))``.
    """
    h = h.float()
    mean = h.new_zeros(n_segments, h.shape[1]).index_add_(0, seg_ids, weights * h)
    dev = h - mean[seg_ids]
    var = h.new_zeros(n_segments, h.shape[1]).index_add_(0, seg_ids, weights * dev * dev)
    return mean, torch.sqrt(var.clamp(min=STD_EPS))


class AttentivePool(nn.Module):
    """Attentive statistics pooling with one weight per frame (Okabe et al. 2018).

    ``e_t = v^T tanh(W h_t + b) + c``, ``w_t = softmax_t(e_t)`` over the frames of the
    utterance, output ``[sum_t w_t h_t, sqrt(sum_t w_t (h_t - mean)^2)]``.

    Parameters
    ----------
    width : int
        Features of every frame (``n_features``).
    attention_size : int
        Hidden units of the scoring network (``W`` has shape ``(attention_size, width)``).
    """

    def __init__(self, width: int, attention_size: int) -> None:
        super().__init__()
        self.width = int(width)
        self.attention = nn.Sequential(nn.Linear(self.width, int(attention_size)), nn.Tanh(), nn.Linear(int(attention_size), 1))

    def forward(self, h: torch.Tensor, seg_ids: torch.Tensor, n_segments: int) -> torch.Tensor:
        """Pooled utterances of shape (n_segments, 2 * width), float32."""
        w = segment_softmax(self.attention(h), seg_ids, n_segments)
        mean, std = weighted_stats(h, w, seg_ids, n_segments)
        return torch.cat([mean, std], dim=1)
