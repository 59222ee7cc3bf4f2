"""Late fusion: one head per stream, utterance embeddings concatenated before the output layer.

Early fusion needs no module of its own: a :class:`estimators._modules.FrameNet` without
per-stream branches, or an :class:`estimators._ecapa.ECAPANet`, given several streams
concatenates their (layer-averaged, aligned) frames and runs one head over them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ._batch import Batch
from ._modules import LayerMix, check_outputs

__all__ = ["LateFusionNet"]


class LateFusionNet(nn.Module):
    """Heads over one stream each; their embeddings concatenated, then a linear output.

    Parameters
    ----------
    heads : list of nn.Module
        Head ``k`` reads stream ``k`` only (its own layer weights) and, built without an
        output layer, returns embeddings of width ``head.out_width``.
    n_outputs : int

    Notes
    -----
    The streams of a batch are aligned as for early fusion (brought to the coarsest frame
    rate, trimmed to the shortest stream; see :mod:`estimators._batch`).
    """

    def __init__(self, heads: list[nn.Module], n_outputs: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.output = nn.Linear(sum(int(h.out_width) for h in heads), int(n_outputs))

    @property
    def mixers(self) -> list[LayerMix]:
        """The layer mix of every stream (that of its head), in stream order."""
        return [h.mixers[0] for h in self.heads]

    def forward(self, batch: Batch) -> torch.Tensor:
        """Outputs of shape (batch_size, n_outputs)."""
        embeddings = [
            head(dataclasses.replace(batch, streams=[sl])) for head, sl in zip(self.heads, batch.streams)
        ]
        return check_outputs(self.output(torch.cat(embeddings, dim=1)), batch)
