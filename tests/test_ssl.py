"""Tests of featcache.models and featcache.extractors.ssl on tiny random models (no download)."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings

import numpy as np
import pytest

try:  # tests/ is not a package: pytest puts it on sys.path (rootdir "prepend" mode)
    from ssl_fixtures import KINDS, make_tiny_model, speechlike, tiny_model_dir, tiny_models_root  # noqa: F401
except ImportError:  # pragma: no cover - tests/ made a package
    from tests.ssl_fixtures import (  # noqa: F401
        KINDS,
        make_tiny_model,
        speechlike,
        tiny_model_dir,
        tiny_models_root,
    )

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from featcache.errors import AudioError, ModelError, ParameterError  # noqa: E402
from featcache.extractors.ssl import SSLExtractor  # noqa: E402
from featcache.models import MODEL_DESCRIPTIONS, MODELS, load_model, resolve_model  # noqa: E402

SR = 16000
#: very different lengths, 0.3 s .. 3 s, deliberately unsorted
LENGTHS_S = (0.3, 3.0, 1.1, 0.45, 2.2, 0.8, 1.7, 0.3)


@pytest.fixture(scope="module")
def extractors(tiny_model_dir):
    """One fp32 CPU extractor per kind, loaded once for the module."""
    return {k: SSLExtractor(str(tiny_model_dir(k)), device="cpu").load() for k in KINDS}


def _direct(model_dir, signal):
    """transformers run directly on the normalised signal (the reference)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    x = (signal - signal.mean()) / np.sqrt(signal.var() + 1e-7)
    with torch.inference_mode():
        out = model(torch.from_numpy(x.astype(np.float32))[None], output_hidden_states=True)
    return torch.stack(out.hidden_states)[:, 0].numpy()


# ------------------------------------------------------------------ registry / resolution


def test_registry_short_names():
    assert MODELS["wav2vec_small"] == "facebook/wav2vec2-base"
    assert MODELS["wavlm_large"] == "microsoft/wavlm-large"
    assert len(MODELS) == 9 and set(MODEL_DESCRIPTIONS) == set(MODELS)
    r = resolve_model("hubert_base")
    assert (r.source, r.store_name, r.is_local) == ("facebook/hubert-base-ls960", "hubert_base", False)
    r = resolve_model("someorg/some-model")
    assert (r.source, r.store_name, r.is_local) == ("someorg/some-model", "someorg__some-model", False)


def test_resolve_local_dir(tiny_model_dir, tmp_path):
    d = tiny_model_dir("wav2vec2")
    r = resolve_model(str(d))
    assert r.is_local and r.source == str(d.resolve()) and r.store_name == d.name
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json") as info:
        resolve_model(str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in str(info.value)


def test_unknown_model_lists_short_names():
    with pytest.raises(ModelError) as info:
        SSLExtractor("no_such_model", device="cpu")
    msg = str(info.value)
    assert "no_such_model" in msg
    assert all(name in msg for name in MODELS)


def test_hf_id_offline_is_a_clear_model_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        SSLExtractor("featcache-tests/surely-not-cached-3f9c1e7a", device="cpu")
    msg = str(info.value)
    assert "featcache-tests/surely-not-cached-3f9c1e7a" in msg
    assert "offline" in msg and "--model" in msg and "save_pretrained" in msg


def test_missing_preprocessor_config_falls_back_with_warning(tiny_model_dir, tmp_path):
    d = tmp_path / "no_preproc"
    shutil.copytree(tiny_model_dir("wav2vec2"), d)
    (d / "preprocessor_config.json").unlink()
    with pytest.warns(UserWarning, match="preprocessor_config.json"):
        _, fe = load_model(resolve_model(str(d)), device="cpu")
    assert fe.do_normalize and fe.sampling_rate == 16000


# ------------------------------------------------------------------ attributes


@pytest.mark.parametrize("kind", KINDS)
def test_attributes_from_config(extractors, kind):
    ex = extractors[kind]
    assert ex.name == "ssl"
    assert ex.n_layers == 3 and ex.dim == 32  # num_hidden_layers 2 + 1, hidden_size 32
    assert ex.sampling_rate == 16000 and ex.frame_rate == 50.0
    assert ex.min_samples() == 400
    assert ex.dtype == np.float16
    assert ex.store_name == f"tiny_{kind}_0"


def test_params_and_describe(extractors, tiny_model_dir):
    p = extractors["wav2vec2"].params()
    json.dumps(extractors["wav2vec2"].describe())
    assert p["model"] == "local:tiny_wav2vec2_0" and p["revision"] is None
    assert p["fingerprint"].startswith("sha256:")
    assert p["precision"] == "fp32" and p["do_normalize"] is True
    other = SSLExtractor(str(tiny_model_dir("wav2vec2", seed=1)), device="cpu")
    assert other.params()["fingerprint"] != p["fingerprint"]
    assert SSLExtractor(str(tiny_model_dir("wav2vec2")), precision="bf16", device="cpu").params() != p


# ------------------------------------------------------------------ outputs


def test_shape_and_frame_count(extractors):
    ex = extractors["wav2vec2"]
    out = ex(speechlike(SR), SR)
    assert out.shape == (3, 49, 32) and out.dtype == np.float32
    assert ex.n_frames(SR) == 49
    assert ex(speechlike(400), SR).shape == (3, 1, 32)


@pytest.mark.parametrize("kind", ["wav2vec2", "wav2vec2_stable"])
def test_call_equals_transformers_directly(extractors, tiny_model_dir, kind):
    signal = speechlike(int(1.3 * SR), seed=3)
    ref = _direct(tiny_model_dir(kind), signal)
    out = extractors[kind](signal, SR)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("max_batch_frames", [100_000, 200])
def test_batch_equals_one_at_a_time(extractors, kind, max_batch_frames):
    ex = extractors[kind]
    ex.max_batch_frames = max_batch_frames  # 200: several groups, some of one utterance
    signals = [speechlike(int(s * SR), seed=i) for i, s in enumerate(LENGTHS_S)]
    try:
        batched = ex.batch(signals, SR)
    finally:
        ex.max_batch_frames = 3000
    assert len(batched) == len(signals)
    for sig, b in zip(signals, batched):
        one = ex(sig, SR)
        assert b.shape == one.shape == (3, ex.n_frames(len(sig)), 32)
        assert np.abs(b - one).max() <= 1e-4
    assert ex.batch([], SR) == []


def test_bf16_close_to_fp32(extractors, tiny_model_dir):
    # Measured on these tiny models: max |bf16 - fp32| per layer <= 4.4 % of the layer's
    # largest |value|, mean <= 0.5 %; tolerances below give ~2x margin.
    ex32 = extractors["wav2vec2"]
    ex16 = SSLExtractor(str(tiny_model_dir("wav2vec2")), precision="bf16", device="cpu")
    signals = [speechlike(int(s * SR), seed=i) for i, s in enumerate((0.5, 2.0, 1.0))]
    b16 = ex16.batch(signals, SR)
    for sig, b in zip(signals, b16):
        a = ex32(sig, SR)
        s16 = ex16(sig, SR)
        assert s16.dtype == np.float32 and s16.shape == a.shape
        for layer in range(a.shape[0]):
            scale = np.abs(a[layer]).max()
            assert np.abs(s16[layer] - a[layer]).max() <= 0.10 * scale
            assert np.abs(s16[layer] - a[layer]).mean() <= 0.01 * scale
        assert np.abs(b - s16).max() <= 0.10 * np.abs(a).max()


# ------------------------------------------------------------------ errors


def test_too_short_signal_is_audio_error(extractors):
    with pytest.raises(AudioError) as info:
        extractors["wav2vec2"](np.zeros(399, np.float32), SR)
    assert info.value.path == "<signal>"
    assert "receptive field (400 samples = 25 ms)" in info.value.reason
    with pytest.raises(AudioError):
        extractors["hubert"].batch([speechlike(SR), np.zeros(100, np.float32)], SR)


def test_wrong_rate_is_parameter_error(extractors):
    with pytest.raises(ParameterError, match="sampling_rate"):
        extractors["wav2vec2"](speechlike(8000), 8000)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"precision": "fp64"}, "precision"),
        ({"precision": "fp16", "device": "cpu"}, "precision"),
        ({"device": "tpu"}, "device"),
        ({"max_batch_frames": 0}, "max_batch_frames"),
    ],
)
def test_bad_parameters(tiny_model_dir, kwargs, name):
    kwargs = {"device": "cpu", **kwargs}
    with pytest.raises(ParameterError) as info:
        SSLExtractor(str(tiny_model_dir("wav2vec2")), **kwargs)
    err = info.value
    assert err.name == name and str(err.given) in str(err)
    if kwargs.get("precision") == "fp16":
        assert "CUDA" in str(err)


def test_cuda_unavailable_is_parameter_error(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ParameterError, match="device"):
        SSLExtractor(str(tiny_model_dir("wav2vec2")), device="cuda")
    assert SSLExtractor(str(tiny_model_dir("wav2vec2")), device="auto").device == "cpu"
    assert SSLExtractor(str(tiny_model_dir("wav2vec2")), precision="auto").precision == "fp32"


# ------------------------------------------------------------------ pickling


def test_pickle_drops_the_model(extractors):
    ex = extractors["wavlm"]
    assert ex._model is not None
    signal = speechlike(int(0.7 * SR), seed=5)
    expected = ex(signal, SR)
    data = pickle.dumps(ex)
    n_weight_bytes = sum(p.numel() * p.element_size() for p in ex._model.parameters())
    assert len(data) < n_weight_bytes
    clone = pickle.loads(data)
    assert clone._model is None and ex._model is not None
    assert clone.params() == ex.params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(clone(signal, SR), expected, atol=1e-6)
