"""CCC score, scorer and loss against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.model_selection import GridSearchCV

from estimators import DenseRegressor, ccc_score, ccc_scorer
from estimators.metrics import ccc_loss, ccc_per_output


def ccc_reference(t: np.ndarray, p: np.ndarray) -> float:
    """Lin's CCC from Pearson's r: 2 r s_t s_p / (s_t^2 + s_p^2 + (m_t - m_p)^2)."""
    t = np.asarray(t, float)
    p = np.asarray(p, float)
    st_, sp = t.std(), p.std()
    r = np.corrcoef(t, p)[0, 1] if st_ > 0 and sp > 0 else 0.0
    return 2 * r * st_ * sp / (st_**2 + sp**2 + (t.mean() - p.mean()) ** 2)


def test_ccc_examples():
    rng = np.random.default_rng(0)
    t = rng.normal(size=100)
    t -= t.mean()
    assert ccc_score(t, t) == pytest.approx(1.0)
    assert ccc_score(t, -t) == pytest.approx(-1.0)
    assert ccc_score(t, t + 1.0) < 1.0
    p = 0.5 * t + rng.normal(size=100)
    assert ccc_score(t, p) == pytest.approx(ccc_reference(t, p))
    T = rng.normal(size=(100, 3))
    P = T + rng.normal(size=(100, 3))
    assert ccc_score(T, P) == pytest.approx(np.mean([ccc_reference(T[:, k], P[:, k]) for k in range(3)]))
    assert ccc_score(np.ones(5), np.ones(5)) == 1.0
    with pytest.raises(ValueError):
        ccc_score(T, P[:, :2])


# multiples of 1e-3 in [-1e3, 1e3]: no denormal-scale values whose CCC is pure rounding
finite = st.integers(-(10**6), 10**6).map(lambda v: v / 1000)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(1, 3)), elements=finite),
    arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(1, 3)), elements=finite),
    st.floats(0.1, 10),
    st.floats(-5, 5),
)
def test_ccc_properties(a, b, scale, shift):
    n, k = min(len(a), len(b)), min(a.shape[1], b.shape[1])
    t, p = a[:n, :k], b[:n, :k]
    per = ccc_per_output(t, p)
    assert np.all(per >= -1 - 1e-9) and np.all(per <= 1 + 1e-9)
    for j in range(k):
        if t[:, j].std() > 1e-3 and p[:, j].std() > 1e-3:
            assert per[j] == pytest.approx(ccc_reference(t[:, j], p[:, j]), abs=1e-7)
    assert ccc_score(t, p) == pytest.approx(ccc_score(p, t), abs=1e-9)
    # invariant to one affine map applied to both sides
    assert ccc_score(t * scale + shift, p * scale + shift) == pytest.approx(ccc_score(t, p), abs=1e-6)
    # the torch loss is 1 - CCC (float32)
    if np.all(t.std(0) > 1e-2) or np.all(p.std(0) > 1e-2):
        loss = ccc_loss(torch.from_numpy(p), torch.from_numpy(t))
        assert float(loss) == pytest.approx(1 - ccc_score(t, p), abs=1e-3)


def test_ccc_loss_gradient_flows():
    p = torch.randn(20, 2, requires_grad=True)
    ccc_loss(p, torch.randn(20, 2)).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_ccc_scorer_in_grid_search():
    rng = np.random.default_rng(0)
    y = rng.normal(size=120)
    X = rng.normal(size=(120, 5, 4))
    X[:, :, 0] += 2 * y[:, None]
    gs = GridSearchCV(
        DenseRegressor(hidden_sizes=(8, 8), max_epochs=20, lr=1e-2, random_state=0),
        {"loss": ["ccc", "mse"]},
        scoring=ccc_scorer,
        cv=2,
    )
    gs.fit(X, y)
    assert gs.best_score_ > 0.5
    assert gs.best_score_ == pytest.approx(max(gs.cv_results_["mean_test_score"]))
