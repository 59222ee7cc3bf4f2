"""bf16 on the CPU: the CNN as time-major matmuls (``ConvEncoder``), the model's weights in bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcache.extractors._cpu_bf16 import CHUNK_ROWS, ROW_BUCKET, ConvEncoder
from featcache.extractors.ssl import SSLExtractor
from ssl_fixtures import KINDS, speechlike

SR = 16000


def _hf_model(tiny_model_dir, kind):
    ex = SSLExtractor(str(tiny_model_dir(kind)), precision="fp32", device="cpu")
    return ex, ex._get_model()


@pytest.mark.parametrize("kind", KINDS)
def test_conv_encoder_equals_the_hf_cnn_in_fp32(tiny_model_dir, kind):
    # In fp32 the matmul form is the same arithmetic up to summation order: any layout slip
    # (window order, weight transpose, GroupNorm folding, LayerNorm axis) would be O(1).
    ex, model = _hf_model(tiny_model_dir, kind)
    fe = model.feature_extractor
    assert ConvEncoder.supports(fe)
    enc = ConvEncoder(fe, torch.float32)
    for seconds, seed in ((0.3, 1), (1.7, 2)):
        x = torch.from_numpy(ex._prepare(speechlike(int(seconds * SR), seed=seed)))[None]
        with torch.inference_mode():
            ref = fe(x).transpose(1, 2)
            got = enc(x)
        assert got.shape == ref.shape == (1, ex.n_frames(x.shape[1]), 16)
        assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_conv_encoder_groupnorm_fold_with_a_conv_bias(tiny_model_dir):
    # base configs have no conv bias; a GroupNorm layer with one must fold it into the shift
    ex, model = _hf_model(tiny_model_dir, "wav2vec2")
    fe = model.feature_extractor
    conv = fe.conv_layers[0].conv
    with torch.no_grad():
        conv.bias = torch.nn.Parameter(torch.linspace(-2.0, 3.0, conv.out_channels))
        fe.conv_layers[0].layer_norm.weight.uniform_(0.5, 2.0)
    x = torch.from_numpy(ex._prepare(speechlike(SR, seed=4)))[None]
    with torch.inference_mode():
        ref = fe(x).transpose(1, 2)
        got = ConvEncoder(fe, torch.float32)(x)
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_conv_encoder_bounds_matmul_shapes_and_reuses_its_workspace(tiny_model_dir, monkeypatch):
    ex, model = _hf_model(tiny_model_dir, "wav2vec2")
    enc = ConvEncoder(model.feature_extractor)
    shapes = set()
    real_mm = torch.mm

    def mm(a, b, *, out):
        shapes.add(tuple(a.shape))
        return real_mm(a, b, out=out)

    monkeypatch.setattr(torch, "mm", mm)
    with torch.inference_mode():
        first = enc(torch.from_numpy(ex._prepare(speechlike(2 * SR, seed=1)))[None]).clone()
        bufs = {k: v.data_ptr() for k, v in enc._local.__dict__.items()}
        for n in (17000, 23001, 31999):  # shorter inputs: same buffers, rows in bounded buckets
            enc(torch.from_numpy(ex._prepare(speechlike(n, seed=n)))[None])
        again = enc(torch.from_numpy(ex._prepare(speechlike(2 * SR, seed=1)))[None])
    assert all(r % ROW_BUCKET == 0 and r <= CHUNK_ROWS for r, _ in shapes)
    assert {k: v.data_ptr() for k, v in enc._local.__dict__.items()} == bufs
    assert torch.equal(first, again)  # a returned result is not a view of the workspace


def test_unsupported_conv_layers_fall_back(tiny_model_dir):
    _, model = _hf_model(tiny_model_dir, "wav2vec2")
    fe = model.feature_extractor
    assert ConvEncoder.supports(fe)
    fe.conv_layers[2].conv.padding = (1,)
    assert not ConvEncoder.supports(fe)
    ex = SSLExtractor(str(tiny_model_dir("wav2vec2")), precision="bf16", device="cpu")
    assert ex._cpu_bf16(model) is False


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_cpu_path_close_to_fp32_and_one_path_for_one_and_many(tiny_model_dir, kind):
    ex32 = SSLExtractor(str(tiny_model_dir(kind)), precision="fp32", device="cpu")
    ex16 = SSLExtractor(str(tiny_model_dir(kind)), precision="bf16", device="cpu").load()
    assert ex16._cnn is not None
    assert next(ex16._model.parameters()).dtype == torch.bfloat16
    signals = [speechlike(int(s * SR), seed=i) for i, s in enumerate((0.5, 2.0, 1.0))]
    batched = ex16.batch(signals, SR)
    for sig, b in zip(signals, batched):
        ref = ex32(sig, SR)
        one = ex16(sig, SR)
        assert one.dtype == np.float32 and one.shape == b.shape == ref.shape
        for layer in range(ref.shape[0]):  # the bf16 tolerances of tests/test_ssl.py
            scale = np.abs(ref[layer]).max()
            assert np.abs(one[layer] - ref[layer]).max() <= 0.10 * scale
            assert np.abs(one[layer] - ref[layer]).mean() <= 0.01 * scale
        assert np.abs(b - one).max() <= 0.05 * np.abs(ref).max()  # batching changes bf16 rounding only


def test_pickled_bf16_extractor_rebuilds_its_cnn(tiny_model_dir):
    import pickle

    ex = SSLExtractor(str(tiny_model_dir("hubert")), precision="bf16", device="cpu").load()
    sig = speechlike(SR, seed=9)
    expected = ex(sig, SR)
    clone = pickle.loads(pickle.dumps(ex))
    assert clone._cnn is None and clone._model is None
    np.testing.assert_array_equal(clone(sig, SR), expected)
    assert clone._cnn is not None


def test_bf16_cpu_path_at_the_receptive_field_and_on_silence(tiny_model_dir):
    ex32 = SSLExtractor(str(tiny_model_dir("wav2vec2")), precision="fp32", device="cpu")
    ex16 = SSLExtractor(str(tiny_model_dir("wav2vec2")), precision="bf16", device="cpu")
    for sig in (speechlike(400, seed=3), speechlike(720, seed=4), np.zeros(SR // 2, np.float32)):
        ref, got = ex32(sig, SR), ex16(sig, SR)
        assert got.shape == ref.shape and np.isfinite(got).all()
        assert np.abs(got - ref).max() <= 0.10 * max(np.abs(ref).max(), 1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_cpu_folds_only_the_first_layer_and_equals_the_hf_cnn(tiny_model_dir, kind):
    # fp32 on the CPU: the first layer + GroupNorm as one folded matmul, the rest the model's
    # own conv modules; where the first layer has no GroupNorm nothing changes.
    ex = SSLExtractor(str(tiny_model_dir(kind)), precision="fp32", device="cpu").load()
    fe = ex._model.feature_extractor
    folds = isinstance(fe.conv_layers[0].layer_norm if hasattr(fe.conv_layers[0], "layer_norm") else None, torch.nn.GroupNorm)
    if not folds:
        assert ex._cnn is None
        return
    assert ex._cnn is not None and len(ex._cnn.layers) == 1 and ex._cnn._rest == list(fe.conv_layers[1:])
    assert next(ex._model.parameters()).dtype == torch.float32
    for seconds, seed in ((0.4, 3), (1.3, 5)):
        x = torch.from_numpy(ex._prepare(speechlike(int(seconds * SR), seed=seed)))[None]
        with torch.inference_mode():
            ref = fe(x).transpose(1, 2)
            got = ex._cnn(x)
        assert got.shape == ref.shape
        assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


def test_fp32_cpu_extraction_equals_the_models_own_forward(tiny_model_dir):
    ex = SSLExtractor(str(tiny_model_dir("wav2vec2")), precision="fp32", device="cpu").load()
    assert ex._cnn is not None
    sig = speechlike(int(1.1 * SR), seed=9)
    got = ex(sig, SR)
    with torch.inference_mode():
        out = ex._model(torch.from_numpy(ex._prepare(sig))[None], output_hidden_states=True)
    ref = torch.stack([h[0] for h in out.hidden_states]).numpy()
    assert got.shape == ref.shape
    for layer in range(ref.shape[0]):
        assert np.abs(got[layer] - ref[layer]).max() <= 1e-4 * np.abs(ref[layer]).max()
