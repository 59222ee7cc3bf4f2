"""The fused CPU dense blocks (estimators._fused) compute what the plain modules compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from estimators import DenseClassifier
from estimators._fused import DenseStack, dropout_keep


@pytest.fixture
def plain(monkeypatch):
    """Switch the fusion off: the blocks run as the plain nn.Sequential."""

    def off():
        monkeypatch.setattr(DenseStack, "_fusable", lambda self, x: False)

    return off


def _run(stack: DenseStack, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(seed)
    x = x.clone().requires_grad_(True)
    out = stack(x)
    (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
    grads = [x.grad] + [p.grad.clone() for p in stack.parameters()]
    stack.zero_grad(set_to_none=True)
    return out.detach(), grads


def test_keep_mask_rate_and_reproducibility():
    torch.manual_seed(3)
    a = dropout_keep((1000, 1000), 0.2)
    torch.manual_seed(3)
    b = dropout_keep((1000, 1000), 0.2)
    c = dropout_keep((1000, 1000), 0.2)
    assert a.dtype == torch.bool and a.shape == (1000, 1000)
    assert torch.equal(a, b) and not torch.equal(b, c)
    assert abs(a.float().mean().item() - 0.8) < 0.003
    assert dropout_keep((7, 3), 0.0).all()


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5])
def test_fused_equals_plain_forward_and_gradients(p, plain):
    torch.manual_seed(0)
    stack = DenseStack(25, (128, 64), p).train()
    x = torch.randn(500, 25)
    fused_out, fused_grads = _run(stack, x, seed=11)
    plain()
    ref_out, ref_grads = _run(stack, x, seed=11)
    assert (fused_out == 0).float().mean() > p * 0.9  # dropped units and ReLU zeros
    torch.testing.assert_close(fused_out, ref_out, rtol=1e-5, atol=1e-6)
    for got, want in zip(fused_grads, ref_grads):  # float32 sums over 500 frames in another order
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_state_dict_keys_match_the_plain_sequence():
    stack = DenseStack(40, (128, 128), 0.2)
    ref = nn.Sequential(nn.Linear(40, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 128), nn.ReLU(), nn.Dropout(0.2))
    assert list(stack.state_dict()) == list(ref.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert stack.out_features == 128


def test_eval_and_autocast_use_the_plain_path():
    torch.manual_seed(0)
    stack = DenseStack(8, (16,), 0.5)
    x = torch.randn(20, 8)
    stack.eval()
    want = torch.relu(stack[0](x))
    torch.testing.assert_close(stack(x), want)  # no dropout in evaluation
    stack.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stack(x).dtype == torch.bfloat16  # the plain modules under autocast


def test_classifier_trains_the_same_with_and_without_fusion(plain):
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(int(n), 6)).astype(np.float32) + (i % 3) for i, n in enumerate(rng.integers(20, 60, 30))]
    y = np.array([i % 3 for i in range(30)])
    kw = dict(hidden_sizes=(16, 16), max_epochs=3, batch_size=8, random_state=0, validation_fraction=None)
    fused = DenseClassifier(**kw).fit(X, y)
    plain()
    ref = DenseClassifier(**kw).fit(X, y)
    for (name, a), (_, b) in zip(fused.module_.state_dict().items(), ref.module_.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    np.testing.assert_allclose(fused.predict_proba(X), ref.predict_proba(X), rtol=1e-4, atol=1e-5)
