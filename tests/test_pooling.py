"""Attentive statistics pooling: the math on packed frames, padding and batch independence, learning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from estimators import DenseClassifier, FusionClassifier, LSTMClassifier, ModelFileError, ParameterError, load_model, save_model
from estimators._batch import BatchPlan
from estimators._modules import build_module
from estimators._pooling import AttentivePool, segment_softmax, weighted_stats
from featcache.packed import Packed, Stream


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _ragged(n=12, n_layers=2, dim=5, seed=0, low=1, high=15):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(f), n_layers, dim)).astype(np.float32) for f in rng.integers(low, high, n)]


def _segments(lengths):
    lengths = torch.as_tensor(lengths)
    return torch.repeat_interleave(torch.arange(len(lengths)), lengths)


def test_segment_softmax_is_a_softmax_per_utterance():
    lengths = [3, 1, 5]
    scores = torch.randn(9, 2)
    w = segment_softmax(scores, _segments(lengths), 3)
    start = 0
    for n in lengths:
        torch.testing.assert_close(w[start:start + n], torch.softmax(scores[start:start + n], dim=0))
        start += n
    # huge scores do not overflow (the maximum of each utterance is subtracted)
    big = segment_softmax(torch.tensor([[1000.0], [999.0], [-1000.0]]), torch.tensor([0, 0, 1]), 2)
    assert torch.isfinite(big).all() and big[2, 0] == 1.0


def test_attentive_pool_equals_a_direct_computation_per_utterance():
    torch.manual_seed(0)
    pool = AttentivePool(4, 6)
    lengths = [2, 7, 1, 4]
    h = torch.randn(sum(lengths), 4)
    out = pool(h, _segments(lengths), len(lengths))
    assert out.shape == (4, 8)
    start = 0
    for i, n in enumerate(lengths):
        x = h[start:start + n].double()
        lin1, lin2 = pool.attention[0], pool.attention[2]
        e = torch.tanh(x @ lin1.weight.double().T + lin1.bias.double()) @ lin2.weight.double().T + lin2.bias.double()
        a = torch.softmax(e, dim=0)
        mean = (a * x).sum(0)
        std = torch.sqrt(((a * (x - mean) ** 2).sum(0)).clamp(min=1e-12))
        torch.testing.assert_close(out[i].double(), torch.cat([mean, std]), rtol=1e-5, atol=1e-6)
        start += n
    # one frame: the mean is the frame, the std is (numerically) zero
    assert out[2, 4:].max() < 1e-5
    np.testing.assert_allclose(out[2, :4].detach().numpy(), h[9].detach().numpy(), rtol=1e-6)  # frames 0-1, 2-8, 9


def test_weighted_stats_uniform_weights_are_mean_and_population_std():
    lengths = [3, 4]
    h = torch.randn(7, 3)
    seg = _segments(lengths)
    w = torch.tensor([1 / 3] * 3 + [1 / 4] * 4).unsqueeze(1)
    mean, std = weighted_stats(h, w, seg, 2)
    torch.testing.assert_close(mean[1], h[3:].mean(0))
    torch.testing.assert_close(std[0], h[:3].std(0, unbiased=False))


@pytest.mark.parametrize("lstm", [False, True])
def test_an_utterance_pools_the_same_whatever_its_batch(lstm):
    """The frame network + attentive pooling of an utterance does not depend on the other
    utterances of its batch (packed frames: there is no padding to leak into it)."""
    torch.manual_seed(0)
    utts = _ragged(n=10)
    plan = BatchPlan(Packed([Stream.from_list(utts)]), [1], None, torch.device("cpu"))
    cfg = {"kind": "frame", "streams": [[2, 5]], "weighting": "sum", "branch_sizes": [8] if lstm else [8, 8],
           "trunk_sizes": [], "lstm_size": 6 if lstm else None, "bidirectional": lstm, "dropout": 0.0,
           "pooling": "attentive", "n_outputs": 3}
    module = build_module(cfg).eval()
    with torch.no_grad():
        together = module(plan.batch(np.arange(10)))
        alone = torch.cat([module(plan.batch(np.array([i]))) for i in range(10)])
        other = module(plan.batch(np.array([9, 3, 0, 5])))
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(other, together[[9, 3, 0, 5]], rtol=1e-5, atol=1e-6)


def _spread_task(n=240, seed=0):
    """Feature 0 is N(0, 1) in every frame of both classes, but constant over the frames of
    class-0 utterances and independent across frames in class 1: only its spread over
    time tells the classes apart, which no mean of per-frame features can see."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    utts = []
    for label in y:
        x = rng.normal(size=(int(rng.integers(15, 30)), 1, 3)).astype(np.float32)
        if label == 0:
            x[:, 0, 0] = rng.normal()
        utts.append(x)
    return utts, y


def test_attentive_pooling_sees_the_spread_over_time_that_mean_pooling_cannot():
    utts, y = _spread_task()
    train, test = slice(0, 180), slice(180, 240)
    fit = dict(hidden_sizes=(16,), lr=1e-2, max_epochs=60, patience=10, random_state=0)
    att = DenseClassifier(pooling="attentive", **fit).fit(utts[train], y[train])
    mean = DenseClassifier(pooling="mean", **fit).fit(utts[train], y[train])
    assert att.score(utts[test], y[test]) >= 0.85
    assert mean.score(utts[test], y[test]) <= 0.7  # chance level: the task needs the std
    assert att.module_config_["pooling"] == "attentive"


def test_attentive_models_round_trip_and_bad_pooling_is_refused(tmp_path):
    utts = _ragged(n=30, seed=1, low=2)
    y = np.arange(30) % 3
    est = LSTMClassifier(pooling="attentive", hidden_sizes=(8, 8), max_epochs=2, random_state=0).fit(utts, y)
    save_model(est, tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(utts), est.predict_proba(utts))
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["module_config"]["pooling"] = "median"
    doc.pop("checksum")
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="no checksum"), pytest.raises(ModelFileError, match="pooling.*attentive"):
        load_model(tmp_path / "m")
    with pytest.raises(ParameterError, match="pooling.*attentive"):
        FusionClassifier(pooling="attention").fit(utts, y)
