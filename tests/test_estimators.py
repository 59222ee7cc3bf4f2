"""Behaviour of the estimators: learning, validation splits, inputs, pooling, fusion, CV."""

from __future__ import annotations

import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline

from estimators import (
    Callback,
    CNNClassifier,
    DenseClassifier,
    DenseRegressor,
    FusionClassifier,
    InputError,
    LSTMClassifier,
    LSTMRegressor,
    ParameterError,
    ccc_score,
    to_packed,
)
from estimators._batch import BatchPlan
from estimators._ops import CHUNK_FRAMES, mix_frames, segment_pool
from featcache.packed import Packed, Stream


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------- data
INFORMATIVE = (1, 3)


def layered_task(n=240, n_layers=5, dim=8, seed=0, shift=0.8, dtype=np.float32):
    """Ragged utterances whose two classes differ only in layers INFORMATIVE (dims 0-3)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    utts = []
    for label in y:
        frames = int(rng.integers(5, 16))
        x = rng.normal(size=(frames, n_layers, dim))
        for layer in INFORMATIVE:
            x[:, layer, :4] += (2 * label - 1) * shift
        utts.append(x.astype(dtype))
    return utts, y


def as_packed(utts, speakers=None, ids=None, frame_rate=None, name="x"):
    stream = Stream.from_list(utts, name=name, frame_rate=frame_rate)
    return Packed([stream], ids=ids, speakers=speakers)


class FeatureSetLike:
    """What featcache's FeatureSet offers the estimators."""

    def __init__(self, packed: Packed) -> None:
        self.packed = packed

    def to_packed(self) -> Packed:
        return self.packed

    def describe(self) -> dict:
        return {"kind": "FeatureSetLike", "n": len(self.packed)}


FAST = dict(hidden_sizes=(32, 32), lr=3e-3, max_epochs=40, random_state=0)


# --------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def layered():
    utts, y = layered_task()
    return utts[:180], y[:180], utts[180:], y[180:]


@pytest.fixture(scope="module")
def dense_fit(layered):
    X, y, _, _ = layered
    return DenseClassifier(**FAST).fit(X, y)


def test_dense_learns_informative_layers(dense_fit, layered):
    _, _, Xt, yt = layered
    assert dense_fit.score(Xt, yt) > 0.85
    w = dense_fit.layer_weights_
    assert w.shape == (5,) and np.isclose(w.sum(), 1.0)
    assert set(np.argsort(w)[-2:]) == set(INFORMATIVE), w
    assert dense_fit.n_features_in_ == 8 and dense_fit.n_layers_in_ == 5
    assert set(dense_fit.history_[0]) >= {"epoch", "train_loss", "valid_loss", "valid_score"}
    assert dense_fit.n_epochs_ == len(dense_fit.history_)
    assert 1 <= dense_fit.best_epoch_ <= dense_fit.n_epochs_
    proba = dense_fit.predict_proba(Xt)
    assert proba.shape == (len(Xt), 2) and np.allclose(proba.sum(1), 1)


@pytest.mark.parametrize(
    "est",
    [
        LSTMClassifier(layer_weighting="softmax", **FAST),
        FusionClassifier(**FAST),
        CNNClassifier(max_frames=16, n_filters=4, kernel_size=(3, 3), n_blocks=2, dense_size=16, lr=3e-3,
                      max_epochs=25, random_state=0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_heads_learn_layered_task(est, layered):
    X, y, Xt, yt = layered
    est.fit(X, y)
    assert est.score(Xt, yt) > 0.75
    assert est.layer_weights_.shape == (5,)


def test_regressors_learn_linear_target():
    utts, _ = layered_task(n=200, seed=1, shift=0.0)
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(200, 4))
    for u, z in zip(utts, latent):
        u[:, 2, :4] += z  # the targets depend on layer 2 only
    Y = latent @ rng.normal(size=(4, 2)) + 0.1 * rng.normal(size=(200, 2))
    for est in (
        DenseRegressor(**FAST),
        DenseRegressor(loss="mse", **FAST),
        LSTMRegressor(**{**FAST, "max_epochs": 25}),
    ):
        est.fit(utts[:150], Y[:150])
        pred = est.predict(utts[150:])
        assert pred.shape == (50, 2)
        assert ccc_score(Y[150:], pred) > 0.5, (est, ccc_score(Y[150:], pred))
    single = DenseRegressor(**{**FAST, "max_epochs": 3}).fit(utts[:150], Y[:150, 0])
    assert single.predict(utts[150:]).shape == (50,)


# --------------------------------------------------------------------------- validation
def test_internal_validation_is_speaker_disjoint():
    utts, y = layered_task(n=120, seed=2)
    speakers = np.repeat([f"spk{i:02d}" for i in range(12)], 10)
    P = as_packed(utts, speakers=speakers)
    est = DenseClassifier(hidden_sizes=(8, 8), max_epochs=2, validation_fraction=0.25, random_state=3).fit(P, y)
    val = est.validation_index_
    train = np.setdiff1d(np.arange(120), val)
    assert set(speakers[val]).isdisjoint(speakers[train])
    assert 20 <= len(val) <= 40
    # through a FeatureSet-like object too, and the split changes with the seed
    est2 = clone(est).set_params(random_state=4).fit(FeatureSetLike(P), y)
    assert set(speakers[est2.validation_index_]).isdisjoint(np.delete(speakers, est2.validation_index_))
    assert est2.feature_info_ == {"kind": "FeatureSetLike", "n": 120}


def test_random_validation_is_stratified():
    utts, y = layered_task(n=100, seed=2)
    est = DenseClassifier(hidden_sizes=(8, 8), max_epochs=1, validation_fraction=0.2, random_state=0).fit(utts, y)
    assert len(est.validation_index_) == 20
    assert np.bincount(y[est.validation_index_]).tolist() == [10, 10]


def test_explicit_validation_set_and_no_validation():
    utts, y = layered_task(n=80, seed=3)
    est = DenseClassifier(hidden_sizes=(8, 8), max_epochs=30, patience=2, random_state=0)
    est.fit(utts[:60], y[:60], X_val=utts[60:], y_val=y[60:])
    assert est.validation_index_ is None
    assert all(h["valid_loss"] is not None for h in est.history_)
    best = min(range(len(est.history_)), key=lambda i: est.history_[i]["valid_loss"])
    assert est.best_epoch_ == best + 1
    est.set_params(validation_fraction=0, max_epochs=3).fit(utts, y)
    assert est.n_epochs_ == 3 and est.best_epoch_ == 3
    assert est.history_[-1]["valid_loss"] is None
    with pytest.raises(InputError):
        est.fit(utts, y, X_val=utts[:5])


def test_early_stopping_restores_best_weights():
    utts, y = layered_task(n=80, seed=4)
    est = DenseClassifier(hidden_sizes=(8, 8), lr=0.05, max_epochs=40, patience=2, random_state=0).fit(utts, y)
    assert est.n_epochs_ < 40
    assert est.n_epochs_ - est.best_epoch_ == 2
    # the restored weights give the best recorded validation loss
    from estimators._batch import BatchPlan

    P = to_packed(utts)
    plan = BatchPlan(P, [1], None, torch.device("cpu"))
    tt = torch.as_tensor(np.unique(y, return_inverse=True)[1])
    loss, _ = est._evaluate(plan, est.validation_index_, tt)
    assert loss == pytest.approx(est.history_[est.best_epoch_ - 1]["valid_loss"], rel=1e-5)


def test_callbacks():
    utts, y = layered_task(n=60, seed=5)
    seen = []

    class Recorder(Callback):
        def on_train_begin(self, estimator):
            seen.append("begin")

        def on_epoch_end(self, estimator, record):
            seen.append(record["epoch"])

        def on_train_end(self, estimator):
            seen.append("end")

    def stop_at_2(estimator, record):
        return record["epoch"] >= 2

    est = DenseClassifier(hidden_sizes=(8, 8), max_epochs=10, validation_fraction=None,
                          callbacks=[Recorder(), stop_at_2], random_state=0).fit(utts, y)
    assert est.n_epochs_ == 2
    assert seen == ["begin", 1, 2, "end"]


# --------------------------------------------------------------------------- reproducibility
def test_same_seed_same_predictions_and_global_rng_untouched(layered):
    X, y, Xt, _ = layered
    state = torch.get_rng_state()
    a = DenseClassifier(hidden_sizes=(8, 8), max_epochs=3, random_state=7).fit(X, y).predict_proba(Xt)
    assert torch.equal(state, torch.get_rng_state())
    b = DenseClassifier(hidden_sizes=(8, 8), max_epochs=3, random_state=7).fit(X, y).predict_proba(Xt)
    c = DenseClassifier(hidden_sizes=(8, 8), max_epochs=3, random_state=8).fit(X, y).predict_proba(Xt)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pickle_and_joblib_round_trip(dense_fit, layered, tmp_path):
    _, _, Xt, _ = layered
    expected = dense_fit.predict_proba(Xt)
    again = pickle.loads(pickle.dumps(dense_fit))
    np.testing.assert_array_equal(again.predict_proba(Xt), expected)
    joblib.dump(dense_fit, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(Xt), expected)
    np.testing.assert_array_equal(again.layer_weights_, dense_fit.layer_weights_)


# --------------------------------------------------------------------------- inputs
def test_input_forms_agree():
    rng = np.random.default_rng(0)
    X4 = rng.normal(size=(40, 6, 3, 5)).astype(np.float32)
    y = np.arange(40) % 2
    est = DenseClassifier(hidden_sizes=(8, 8), max_epochs=2, random_state=0).fit(X4, y)
    p = est.predict_proba(X4)
    np.testing.assert_allclose(est.predict_proba(list(X4)), p, rtol=1e-6)
    np.testing.assert_allclose(est.predict_proba(to_packed(X4)), p, rtol=1e-6)
    half = est.predict_proba(X4.astype(np.float16))
    np.testing.assert_allclose(half, p, atol=2e-3)
    # 3-D (n, frames, dim) and 2-D (n, dim)
    X3 = X4[:, :, 0, :]
    e3 = DenseClassifier(hidden_sizes=(8, 8), max_epochs=2, random_state=0).fit(X3, y)
    np.testing.assert_allclose(e3.predict_proba(list(X3)), e3.predict_proba(X3), rtol=1e-6)
    assert e3.n_layers_in_ == 1 and not hasattr(e3, "layer_weights_")
    e2 = DenseClassifier(hidden_sizes=(8, 8), max_epochs=2, random_state=0).fit(X3[:, 0], y)
    np.testing.assert_allclose(e2.predict_proba(X3[:, :1]), e2.predict_proba(X3[:, 0]), rtol=1e-6)


def test_shape_mismatch_errors_name_both_sides(dense_fit):
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=r"X has 7 features, but DenseClassifier is expecting 8"):
        dense_fit.predict(rng.normal(size=(3, 4, 5, 7)))
    with pytest.raises(InputError, match=r"X has 4 layers .* fitted on 5 layers"):
        dense_fit.predict(rng.normal(size=(3, 4, 4, 8)))
    two = Packed([Stream.from_list([np.zeros((3, 5, 8), np.float32)]), Stream.from_list([np.zeros((3, 1, 2), np.float32)])])
    with pytest.raises(InputError, match=r"X has 2 feature stream"):
        dense_fit.predict(two)
    with pytest.raises(InputError, match=r"FusionClassifier"):
        DenseClassifier().fit(two, [0])


def test_bad_inputs_are_refused():
    rng = np.random.default_rng(0)
    utts = [rng.normal(size=(int(n), 3, 4)).astype(np.float16) for n in rng.integers(2, 6, 20)]
    y = np.arange(20) % 2
    utts[7][1, 2, 0] = np.nan
    with pytest.raises(InputError, match="NaN or infinity"):
        DenseClassifier(max_epochs=1).fit(as_packed(utts, ids=np.arange(20)), y)
    with pytest.raises(InputError, match="NaN"):
        DenseClassifier(max_epochs=1).fit(utts, y)
    utts[7][1, 2, 0] = 0
    with pytest.raises(InputError, match="layer_weighting=None"):
        DenseClassifier(layer_weighting=None, max_epochs=1).fit(utts, y)
    single = [u[:, :1] for u in utts]
    DenseClassifier(layer_weighting=None, max_epochs=1, hidden_sizes=(4, 4)).fit(single, y)
    with pytest.raises(ValueError, match="2 or more classes"):
        DenseClassifier(max_epochs=1).fit(utts, np.zeros(20))
    with pytest.raises(ValueError):
        DenseClassifier(max_epochs=1).fit(utts, y[:5])
    with pytest.raises(ParameterError, match="pooling"):
        DenseClassifier(pooling="median").fit(utts, y)
    with pytest.raises(ParameterError, match="max_frames"):
        CNNClassifier(max_frames=None).fit(utts, y)
    with pytest.raises(InputError):
        DenseClassifier().fit([np.zeros((3, 4)), np.zeros((3, 5))], [0, 1])


def test_max_frames_keeps_first_frames():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 10, 2, 4)).astype(np.float32)
    y = np.arange(30) % 2
    est = DenseClassifier(hidden_sizes=(8, 8), max_frames=4, max_epochs=2, random_state=0).fit(X, y)
    X2 = X.copy()
    X2[:, 4:] = rng.normal(size=X2[:, 4:].shape)
    np.testing.assert_array_equal(est.predict_proba(X), est.predict_proba(X2))
    plan = BatchPlan(to_packed(X), [1], 4, torch.device("cpu"))
    assert (plan.out_lengths == 4).all()


# --------------------------------------------------------------------------- ops
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_mix_frames_matches_autograd_reference(dtype):
    rng = np.random.default_rng(0)
    lengths = np.array([3, CHUNK_FRAMES + 7, 1, 2 * CHUNK_FRAMES + 1, 5])
    data = rng.normal(size=(int(lengths.sum()) + 10, 4, 6)).astype(dtype)
    starts = np.concatenate([[4], 4 + np.cumsum(lengths)[:-1]])
    order = np.array([3, 0, 4, 1])
    source = torch.from_numpy(data)
    w = torch.tensor([0.1, 0.5, 0.3, 0.1], requires_grad=True)
    out = mix_frames(w, source, starts[order], lengths[order], torch.device("cpu"))
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out * g).sum().backward()
    w_ref = w.detach().clone().requires_grad_(True)
    rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts[order], lengths[order])])
    x = torch.from_numpy(data[rows].astype(np.float32))
    ref = torch.einsum("fld,l->fd", x, w_ref)
    (ref * g).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-4, atol=1e-3)
    # the gather-based path used on CUDA devices agrees
    w_gen = w.detach().clone().requires_grad_(True)
    gen = mix_frames(w_gen, source, starts[order], lengths[order], torch.device("cpu"), chunked=False)
    (gen * g).sum().backward()
    torch.testing.assert_close(gen, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w_gen.grad, w_ref.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("layout", ["frame-major", "layer-major"])
@pytest.mark.parametrize("chunked", [True, False])
def test_mix_frames_applies_lazy_normalisation(chunked, layout):
    # contiguous utterances of different groups share a chunk: each keeps its own terms
    from estimators._ops import Norm

    rng = np.random.default_rng(1)
    lengths = np.array([CHUNK_FRAMES + 3, 4, 9, 2 * CHUNK_FRAMES - 20, 7])
    data = rng.normal(size=(int(lengths.sum()), 3, 5)).astype(np.float16)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    shift = rng.normal(size=(2, 3, 5))
    scale = rng.uniform(0.5, 2.0, size=(2, 3, 5))
    groups = np.array([1, 0, 1, 0, 1])
    w = torch.tensor([0.2, 0.5, 0.3], requires_grad=True)
    source = torch.from_numpy(data)
    if layout == "layer-major":  # a (T, L, D) view of an (L, T, D) buffer, as batches read from shards
        source = torch.from_numpy(np.ascontiguousarray(data.transpose(1, 0, 2))).permute(1, 0, 2)
    out = mix_frames(w, source, starts, lengths, torch.device("cpu"),
                     Norm.from_arrays(shift, scale), groups, chunked=chunked)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * g).sum().backward()
    frames = [(data[s:s + n].astype(np.float64) - shift[k]) / scale[k] for s, n, k in zip(starts, lengths, groups)]
    x = torch.from_numpy(np.concatenate(frames))
    w_ref = w.detach().double().clone().requires_grad_(True)
    ref = torch.einsum("fld,l->fd", x, w_ref)
    (ref * g.double()).sum().backward()
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w.grad.double(), w_ref.grad, rtol=1e-3, atol=1e-2)


def test_estimator_uses_lazy_normalisation():
    utts, y = layered_task(n=60, seed=8, dtype=np.float16)
    speakers = np.repeat(np.arange(6), 10)
    rng = np.random.default_rng(0)
    shift = rng.normal(size=(6, 5, 8))
    scale = rng.uniform(0.5, 2.0, size=(6, 5, 8))
    lazy = as_packed(utts, speakers=speakers)
    st = lazy.streams[0]
    st.norm_shift, st.norm_scale, st.norm_group = shift, scale, speakers
    eager = as_packed([((u - shift[k]) / scale[k]).astype(np.float32) for u, k in zip(utts, speakers)], speakers=speakers)
    est = DenseClassifier(hidden_sizes=(8, 8), max_epochs=3, random_state=0)
    p_lazy = est.fit(lazy, y).predict_proba(lazy)
    np.testing.assert_allclose(est.predict_proba(eager), p_lazy, rtol=1e-4, atol=1e-5)
    p_eager = clone(est).fit(eager, y).predict_proba(eager)
    np.testing.assert_allclose(p_eager, p_lazy, rtol=1e-3, atol=1e-4)
    # the subsets of a normalised Packed keep their groups
    sub = lazy.subset(np.arange(10, 30))
    np.testing.assert_allclose(est.predict_proba(sub), p_lazy[10:30], rtol=1e-5, atol=1e-6)
    single = as_packed([u[:, :1] for u in utts])
    s0 = single.streams[0]
    s0.norm_shift, s0.norm_scale, s0.norm_group = shift[:, :1], scale[:, :1], speakers
    e1 = DenseClassifier(layer_weighting=None, hidden_sizes=(8, 8), max_epochs=2, random_state=0).fit(single, y)
    eager1 = as_packed([((u[:, :1] - shift[k, :1]) / scale[k, :1]).astype(np.float32) for u, k in zip(utts, speakers)])
    np.testing.assert_allclose(e1.predict_proba(eager1), e1.predict_proba(single), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "max", "first", "last"])
def test_segment_pool_matches_numpy(mode):
    rng = np.random.default_rng(0)
    lengths = np.array([1, 4, 2, 7])
    h = rng.normal(size=(lengths.sum(), 3)).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seg = np.repeat(np.arange(4), lengths)
    got = segment_pool(torch.from_numpy(h), torch.from_numpy(seg), torch.from_numpy(offsets),
                       torch.from_numpy(lengths), mode).numpy()
    fn = {"mean": lambda a: a.mean(0), "max": lambda a: a.max(0), "first": lambda a: a[0], "last": lambda a: a[-1]}[mode]
    ref = np.stack([fn(h[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_on_padded_batches_equals_each_utterance_alone(bidirectional):
    """The padded LSTM gives, at every real frame, what the LSTM gives on the utterance alone."""
    from estimators._batch import Batch
    from estimators._modules import FrameNet

    torch.manual_seed(0)
    net = FrameNet([(1, 5)], None, (), (), 6, bidirectional, 0.0, "mean", 3)
    lengths = np.array([7, 2, 11, 1, 11, 4])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    h = torch.randn(int(offsets[-1]), 5, requires_grad=True)
    batch = Batch(np.arange(6), [], torch.from_numpy(lengths), torch.from_numpy(offsets),
                  torch.repeat_interleave(torch.arange(6), torch.from_numpy(lengths)))
    got = net._run_lstm(h, batch)
    ref = torch.cat([net.lstm(h[a:b].unsqueeze(0))[0][0] for a, b in zip(offsets[:-1], offsets[1:])])
    assert got.shape == (int(offsets[-1]), 12 if bidirectional else 6)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # and so do the gradients of the LSTM weights and of the frames
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((got * w).sum(), [h, *net.lstm.parameters()])
    ref_grads = torch.autograd.grad((ref * w).sum(), [h, *net.lstm.parameters()])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_denormals_flushed_while_fitting_and_restored_after():
    """Fit runs with denormals flushed (a 5x faster LSTM backward on a CPU), then restores the setting."""
    from estimators._base import _denormals_flushed

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals (torch supports it on x86 with SSE3 and on AArch64)")
    utts, y = layered_task(n=40, seed=8)
    seen = []
    est = LSTMClassifier(hidden_sizes=(8, 8), max_epochs=2, random_state=0,
                         callbacks=[lambda est, record: seen.append(_denormals_flushed())])
    assert not _denormals_flushed()
    est.fit(utts, y)
    assert seen == [True, True]
    assert not _denormals_flushed()
    est.predict(utts)
    assert not _denormals_flushed()
    # a process that flushes already keeps doing so
    torch.set_flush_denormal(True)
    try:
        est.fit(utts, y)
        assert _denormals_flushed()
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("pooling", ["mean", "max", "first", "last"])
def test_pooling_variants_fit(pooling):
    utts, y = layered_task(n=60, seed=6)
    est = LSTMClassifier(pooling=pooling, hidden_sizes=(8, 8), bidirectional=True, max_epochs=2, random_state=0)
    est.fit(utts, y)
    assert est.predict(utts).shape == (60,)
    est = DenseClassifier(pooling=pooling, hidden_sizes=(8, 8), max_epochs=2, random_state=0).fit(utts, y)
    assert est.predict_proba(utts).shape == (60, 2)


def test_bf16_precision_runs():
    utts, y = layered_task(n=40, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # slow bf16 on CPUs without it
        est = DenseClassifier(precision="bf16", hidden_sizes=(8, 8), max_epochs=2, random_state=0).fit(utts, y)
    assert np.isfinite(est.predict_proba(utts)).all()


# --------------------------------------------------------------------------- fusion
def _fusion_data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    w2v, ege = [], []
    for label in y:
        frames = int(rng.integers(4, 12))
        w2v.append(rng.normal(size=(frames, 3, 6)).astype(np.float32))
        e = rng.normal(size=(2 * frames + int(rng.integers(-1, 2)), 1, 4)).astype(np.float32)
        e[:, 0, :2] += (2 * label - 1) * 0.7  # the label is only in the eGeMAPS stream
        ege.append(e)
    P = Packed([Stream.from_list(w2v, name="all_layers", frame_rate=50.0),
                Stream.from_list(ege, name="egemaps", frame_rate=100.0)])
    return P, y


def test_fusion_aligns_100_and_50_fps():
    P, _ = _fusion_data(n=6)
    plan = BatchPlan(P, [1, 2], None, torch.device("cpu"))
    batch = plan.batch(np.arange(6))
    from estimators._modules import LayerMix

    ege = LayerMix(1, "sum")(batch.streams[1], torch.device("cpu")).numpy()
    offsets = batch.offsets.numpy()
    for i in range(6):
        n0, n1 = P.streams[0].lengths[i], P.streams[1].lengths[i]
        n = min(n0, -(-n1 // 2))
        assert batch.lengths[i] == n
        raw = P.streams[1].utterance(i)[:, 0]
        expected = np.stack([raw[2 * k: 2 * k + 2].mean(0) for k in range(n)])
        np.testing.assert_allclose(ege[offsets[i]:offsets[i + 1]], expected, rtol=1e-6)


def test_fusion_learns_from_second_stream():
    P, y = _fusion_data()
    train, test = np.arange(120), np.arange(120, 160)
    est = FusionClassifier(**FAST).fit(P.subset(train), y[train])
    assert est.score(P.subset(test), y[test]) > 0.8
    assert est.stream_ratios_ == [1, 2] and est.input_shapes_ == [[3, 6], [1, 4]]
    with pytest.raises(InputError, match="stream"):
        est.predict(Packed([P.streams[0]]))


# --------------------------------------------------------------------------- model selection
class FrameScaler(TransformerMixin, BaseEstimator):
    """Standardise every feature over all frames of (n, n_frames, dim) arrays."""

    def fit(self, X, y=None):
        X = np.asarray(X)
        self.mean_ = X.mean(axis=(0, 1))
        self.scale_ = X.std(axis=(0, 1)) + 1e-8
        return self

    def transform(self, X):
        return (np.asarray(X) - self.mean_) / self.scale_


def test_grid_search_group_kfold_pipeline_parallel():
    rng = np.random.default_rng(0)
    n = 60
    y = np.arange(n) % 3
    X = rng.normal(size=(n, 6, 5)) * 3 + 10
    X[:, :, 0] += y[:, None] * 3
    groups = np.repeat(np.arange(6), 10)
    pipe = Pipeline([("scale", FrameScaler()), ("clf", DenseClassifier(max_epochs=15, lr=1e-2, random_state=0))])
    gs = GridSearchCV(pipe, {"clf__hidden_sizes": [(8, 8), (16, 16)]}, cv=GroupKFold(n_splits=3), n_jobs=2)
    gs.fit(X, y, groups=groups)
    assert gs.best_score_ > 0.6
    assert gs.predict(X).shape == (n,)
