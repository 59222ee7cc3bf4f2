"""Per-frame dense blocks (Linear, ReLU, dropout) fused for CPU training, and fast dropout masks.

A head over handcrafted features (25 eGeMAPS or 40 MFCC dims, 128 units) does little
arithmetic per frame, so on a CPU an epoch's time went to what surrounds the matrix
products: the dropout masks (numpy's ``Generator.bytes`` took ~9 ms per 12k x 128 mask,
``torch.bernoulli_`` longer), and separate passes over the (frames, 128) activations for the
bias, ReLU, mask, inverted-dropout scale and their gradients.

:class:`DenseStack` keeps the modules of ``nn.Sequential(Linear, ReLU, FastDropout, ...)``
(same ``state_dict`` keys, so saved models load unchanged) and, when training on a CPU in
float32, runs every three as one autograd function:

* forward: ``y = relu(s * (x @ W.T + b)) * keep`` in one ``addmm`` (``alpha = beta = s``, the
  inverted-dropout scale ``s = 1 / (1 - p)``; ReLU commutes with a positive scale) and two
  in-place passes; only ``x`` and ``y`` are kept for the backward pass (``y > 0`` exactly
  where ``z > 0`` and the unit was kept);
* backward: ``g_z = g_y`` where ``y > 0`` else 0 (one pass), then ``s`` applied to the small
  results (weight and bias gradients, and ``W`` before the input gradient) rather than to
  the (frames, units) gradient.

Elsewhere (evaluation, GPUs, bf16 autocast) it is the plain sequence.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DenseStack", "FastDropout", "dropout_keep"]


def dropout_keep(shape: tuple[int, ...], p: float) -> torch.Tensor:
    """A boolean keep-mask, each element kept with probability ``1 - p``, shape ``shape``.

    Drawn from numpy's SFC64 (raw 64-bit words cut into 16-bit uniforms, so ``p`` is
    resolved to 1/65536), seeded from torch's generator: ``torch.manual_seed`` makes it
    reproducible.
    """
    n = int(np.prod(shape))
    seed = int(torch.randint(0, 2**62, (1,)))
    words = np.random.SFC64(seed).random_raw((n + 3) // 4)
    u16 = words.view(np.uint16)[:n]
    return torch.from_numpy(u16 >= int(round(p * 65536))).view(shape)


class FastDropout(nn.Module):
    """Inverted dropout whose CPU masks come from :func:`dropout_keep` (several times faster
    than ``torch.bernoulli_`` on a CPU); :func:`torch.nn.functional.dropout` on other devices.

    Parameters
    ----------
    p : float
        Probability of zeroing an element.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        keep = dropout_keep(tuple(x.shape), self.p)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


class _LinearReLUDropout(torch.autograd.Function):
    """``relu(s * (x @ W.T + b)) * keep``; see the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, bias, keep, scale):  # type: ignore[override]
        y = torch.addmm(bias, x, weight.t(), beta=scale, alpha=scale)
        y.clamp_min_(0.0)
        if keep is not None:
            # numpy multiplies by a bool array in one pass; torch would first copy it to float
            np.multiply(y.numpy(), keep.numpy(), out=y.numpy())
        ctx.scale = scale
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight, y = ctx.saved_tensors
        s = ctx.scale
        g = torch.ops.aten.threshold_backward(grad_y.contiguous(), y, 0.0)
        grad_x = torch.mm(g, weight * s) if ctx.needs_input_grad[0] else None
        # (x.T @ g).T: with few input dims (25 eGeMAPS) this order runs ~1.6x faster than g.T @ x
        grad_w = torch.mm(x.t(), g).t().mul(s) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0).mul_(s) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


class DenseStack(nn.Sequential):
    """``Linear``, ``ReLU``, ``FastDropout`` repeated for every size: fused on a CPU while training.

    The modules sit flat in the sequence (``0`` Linear, ``1`` ReLU, ``2`` FastDropout, ``3``
    Linear ...), as in the plain ``nn.Sequential`` the heads had, so ``state_dict`` keys
    are unchanged.

    Parameters
    ----------
    in_dim : int
    sizes : sequence of int
        Units of every block.
    p : float
        Dropout probability.
    """

    def __init__(self, in_dim: int, sizes, p: float) -> None:
        layers: list[nn.Module] = []
        for units in sizes:
            layers += [nn.Linear(int(in_dim), int(units)), nn.ReLU(), FastDropout(p)]
            in_dim = int(units)
        super().__init__(*layers)
        self.out_features = int(in_dim)

    def _fusable(self, x: torch.Tensor) -> bool:
        return (self.training and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (n_frames, in_dim) -> (n_frames, sizes[-1])."""
        if not self._fusable(x):
            return super().forward(x)
        for k in range(0, len(self), 3):
            linear, p = self[k], self[k + 2].p
            keep = dropout_keep((x.shape[0], linear.out_features), p) if p > 0.0 else None
            x = _LinearReLUDropout.apply(x, linear.weight, linear.bias, keep, 1.0 / (1.0 - p))
        return x

