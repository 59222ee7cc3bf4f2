"""Early, intermediate and late fusion of two or more streams (dense and ECAPA-TDNN heads).

Includes a cache of the synthetic corpus with two tiny random upstreams (wav2vec2 and
HuBERT): early fusion over ``tiny_wav2vec2_0:all_layers+tiny_hubert_0:all_layers``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.estimators import main
from estimators import DenseClassifier, ECAPAClassifier, FusionClassifier, ModelFileError, ParameterError, load_model, save_model
from estimators._batch import stream_ratios
from featcache.packed import Packed, Stream

FAST = dict(hidden_sizes=(16, 16), lr=3e-3, max_epochs=40, random_state=0)
ECAPA = dict(channels=16, scale=4, embedding_size=8, lr=1e-2, max_epochs=25, patience=8, random_state=0)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def two_streams(n=240, seed=0, egemaps_first=False):
    """wav2vec2-like (3 layers, 50 frames/s) + eGeMAPS-like (1 layer, 100 frames/s).

    Utterance ``i`` carries a value ``u_i`` in stream 0 (layer 1) and ``v_i`` in stream 1;
    its label is ``u_i + v_i > 0``: either stream alone gives about 75 % accuracy, both
    together nearly all of it.
    """
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=n), rng.normal(size=n)
    y = (u + v > 0).astype(int)
    w2v, ege = [], []
    for i in range(n):
        frames = int(rng.integers(6, 14))
        a = rng.normal(size=(frames, 3, 6)).astype(np.float32)
        e = rng.normal(size=(2 * frames + int(rng.integers(-1, 2)), 1, 4)).astype(np.float32)
        a[:, 1, :2] += u[i]
        e[:, 0, :2] += v[i]
        w2v.append(a)
        ege.append(e)
    streams = [Stream.from_list(w2v, name="all_layers", frame_rate=50.0), Stream.from_list(ege, name="egemaps", frame_rate=100.0)]
    return Packed(streams[::-1] if egemaps_first else streams), y


# --------------------------------------------------------------------------- configurations


def test_default_fusion_is_the_former_fusion_model():
    P, y = two_streams(n=40)
    est = FusionClassifier(hidden_sizes=(8, 4), max_epochs=1, random_state=0).fit(P, y)
    assert est.fusion == "intermediate"
    assert est.module_config_ == {  # the configuration saved models of the former FusionClassifier hold
        "kind": "frame", "streams": [[3, 6], [1, 4]], "weighting": "sum", "branch_sizes": [8], "trunk_sizes": [4],
        "lstm_size": None, "bidirectional": False, "dropout": 0.2, "pooling": "mean", "n_outputs": 2,
    }
    early = FusionClassifier(hidden_sizes=(8, 4), fusion="early", max_epochs=1, random_state=0).fit(P, y)
    assert early.module_config_["branch_sizes"] == [] and early.module_config_["trunk_sizes"] == [8, 4]
    late = FusionClassifier(hidden_sizes=(8, 4), fusion="late", max_epochs=1, random_state=0).fit(P, y)
    cfg = late.module_config_
    assert cfg["kind"] == "late" and [h["streams"] for h in cfg["heads"]] == [[[3, 6]], [[1, 4]]]
    assert all(h["branch_sizes"] == [8, 4] and h["n_outputs"] is None for h in cfg["heads"])
    with pytest.raises(ParameterError, match="fusion.*'intermediate' or 'early' or 'late'.*'middle'"):
        FusionClassifier(fusion="middle").fit(P, y)


def test_streams_are_brought_to_the_coarsest_frame_rate_in_either_order():
    P, _ = two_streams(n=6)
    R, _ = two_streams(n=6, egemaps_first=True)
    assert stream_ratios(P) == [1, 2] and stream_ratios(R) == [2, 1]
    odd = Packed([Stream.from_list([np.zeros((4, 1, 2), np.float32)], frame_rate=30.0),
                  Stream.from_list([np.zeros((4, 1, 2), np.float32)], frame_rate=50.0)])
    with pytest.raises(Exception, match="integer multiple of the coarsest rate"):
        stream_ratios(odd)


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("make", [
    lambda: FusionClassifier(fusion="intermediate", **FAST),
    lambda: FusionClassifier(fusion="early", **FAST),
    lambda: FusionClassifier(fusion="late", **FAST),
    lambda: FusionClassifier(fusion="late", pooling="attentive", **FAST),
    lambda: ECAPAClassifier(fusion="early", **ECAPA),
    lambda: ECAPAClassifier(fusion="late", **ECAPA),
], ids=["intermediate", "early", "late", "late-attentive", "ecapa-early", "ecapa-late"])
def test_each_fusion_learns_from_both_streams(make):
    P, y = two_streams(egemaps_first=True)
    train, test = np.arange(160), np.arange(160, 240)
    est = make().fit(P.subset(train), y[train])
    assert est.stream_ratios_ == [2, 1]
    assert est.score(P.subset(test), y[test]) > 0.82  # one stream alone: about 0.75
    assert est.stream_layer_weights_[0] is None and est.stream_layer_weights_[1].shape == (3,)


def test_one_stream_alone_is_not_enough():
    P, y = two_streams(egemaps_first=True)
    train, test = np.arange(160), np.arange(160, 240)
    for k in (0, 1):
        one = Packed([P.streams[k]])
        est = DenseClassifier(**FAST).fit(one.subset(train), y[train])
        assert est.score(one.subset(test), y[test]) < 0.82


@pytest.mark.parametrize("est", [FusionClassifier(fusion="late", hidden_sizes=(8,), max_epochs=2, random_state=0),
                                 ECAPAClassifier(fusion="late", channels=8, embedding_size=4, max_epochs=2, random_state=0)],
                         ids=["dense", "ecapa"])
def test_late_fusion_round_trips_and_its_heads_are_checked(est, tmp_path):
    P, y = two_streams(n=40)
    est.fit(P, y)
    save_model(est, tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(P), est.predict_proba(P))
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc.pop("checksum")
    doc["module_config"]["heads"][1]["streams"] = [[3, 6]]
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="no checksum"), pytest.raises(ModelFileError, match=r"heads\[1\].streams"):
        load_model(tmp_path / "m")
    doc["module_config"]["heads"] = doc["module_config"]["heads"][:1]
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="no checksum"), pytest.raises(ModelFileError, match="one per stream"):
        load_model(tmp_path / "m")


# --------------------------------------------------------------------------- two upstreams


@pytest.fixture(scope="module")
def two_upstream_cache(built_cache, ravdess_dir, tiny_model_dir, tmp_path_factory):
    """The synthetic corpus cache plus a tiny random HuBERT store (the wav2vec2 one is there)."""
    from featcache.extractors.ssl import SSLExtractor
    from featcache.pipeline import extract

    root = tmp_path_factory.mktemp("two_upstreams")
    shutil.copytree(built_cache, root / "ravdess")
    hubert = SSLExtractor(str(tiny_model_dir("hubert", 0)), precision="fp32", device="cpu")
    extract("ravdess", ravdess_dir, root, [hubert], shard_size=24, progress=False)
    return root / "ravdess"


SPEC = "tiny_wav2vec2_0:all_layers+tiny_hubert_0:all_layers"


def test_early_fusion_of_two_upstreams_trains_and_round_trips(two_upstream_cache, tmp_path):
    import featcache

    X = featcache.open(two_upstream_cache).select(SPEC)
    y = np.asarray(X.labels)
    est = ECAPAClassifier(fusion="early", channels=8, embedding_size=4, max_epochs=2, random_state=0).fit(X, y)
    assert est.input_shapes_ == [[3, 32], [3, 32]] and est.stream_ratios_ == [1, 1]
    assert est.module_.layer1.conv.in_channels == 64  # the two upstreams' frames concatenated
    assert [w.shape for w in est.stream_layer_weights_] == [(3,), (3,)]
    save_model(est, tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    for a, b in zip(again.stream_layer_weights_, est.stream_layer_weights_):
        np.testing.assert_array_equal(a, b)


def _fit(cache, out, *args):
    return CliRunner().invoke(main, ["fit", "--cache", str(cache), "--cv", "groupkfold:2", "--max-epochs", "1",
                                     "--batch-size", "16", "--device", "cpu", "-q", "--out", str(out), *map(str, args)],
                              catch_exceptions=False)


def test_cli_early_fusion_of_two_upstreams_and_per_stream_layer_weights(two_upstream_cache, tmp_path):
    out = tmp_path / "early"
    res = _fit(two_upstream_cache, out, "--features", SPEC, "--model", "ecapa", "--fusion", "early")
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["model"]["params"]["fusion"] == "early" and rep["model"]["class"] == "ECAPAClassifier"
    slw = rep["stream_layer_weights"]
    assert len(slw) == 2 and all(len(fits) == 2 and all(len(w) == 3 for w in fits) for fits in slw)
    assert slw[0] == rep["layer_weights"]
    png = (out / "layer_weights.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_model(out / "model").module_config_["kind"] == "ecapa"


def test_cli_fusion_and_pooling_options(built_cache, tmp_path):
    out = tmp_path / "late"
    res = _fit(built_cache, out, "--features", "all_layers+egemaps", "--model", "fusion", "--fusion", "late",
               "--pooling", "attentive", "--hidden", "8")
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["model"]["params"]["fusion"] == "late" and rep["model"]["params"]["pooling"] == "attentive"
    assert rep["stream_layer_weights"][1] is None and len(rep["stream_layer_weights"][0]) == 2
    cfg = load_model(out / "model").module_config_
    assert cfg["kind"] == "late" and cfg["heads"][0]["pooling"] == "attentive"
    res = _fit(built_cache, tmp_path / "dense", "--features", "mfcc", "--pooling", "attentive", "--hidden", "8")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "dense" / "report.json").read_text())["model"]["params"]["pooling"] == "attentive"
    res = _fit(built_cache, tmp_path / "bad", "--features", "mfcc", "--fusion", "late")
    assert res.exit_code == 1 and "--fusion" in res.output and "fusion or ecapa" in res.output


# --------------------------------------------------------------------------- utterance-level streams


def frames_and_vectors(n=160, seed=3):
    """eGeMAPS-like frames (100 frames/s, 150-260 frames) + one functionals-like vector per
    utterance (nominal 1 frame/s). The label lives in the frames after the first 100 only
    (the first second is noise), so cropping the frames to one second loses it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    frames, vectors = [], []
    for i in range(n):
        f = rng.normal(size=(int(rng.integers(150, 260)), 1, 4)).astype(np.float32)
        f[100:, 0, :2] += 1.5 * (2 * y[i] - 1)
        frames.append(f)
        vectors.append(rng.normal(size=(1, 1, 3)).astype(np.float32))
    streams = [Stream.from_list(frames, name="egemaps", frame_rate=100.0),
               Stream.from_list(vectors, name="egemaps_functionals", frame_rate=1.0)]
    return Packed(streams), y


def test_a_one_vector_stream_is_repeated_over_the_frames_of_the_other():
    from estimators._batch import BatchPlan, utterance_level
    from estimators._modules import LayerMix

    P, _ = frames_and_vectors(n=5)
    assert utterance_level(P) == [False, True]
    assert stream_ratios(P) == [1, 1]  # the functionals' nominal 1 frame/s does not set the rate
    plan = BatchPlan(P, stream_ratios(P), None, torch.device("cpu"))
    np.testing.assert_array_equal(plan.out_lengths, P.streams[0].lengths)  # every frame kept
    b = plan.batch(np.array([3, 1]))
    mix = LayerMix(1, None)
    x0, x1 = mix(b.streams[0], torch.device("cpu")), mix(b.streams[1], torch.device("cpu"))
    assert x0.shape[0] == x1.shape[0] == int(P.streams[0].lengths[[3, 1]].sum())
    n3 = int(P.streams[0].lengths[3])
    torch.testing.assert_close(x1[:n3], torch.from_numpy(P.streams[1].data[3, 0]).expand(n3, -1))
    torch.testing.assert_close(x1[n3:], torch.from_numpy(P.streams[1].data[1, 0]).expand(x1.shape[0] - n3, -1))
    # a stream of vectors alone, or beside another of vectors, is not repeated
    solo = Packed([P.streams[1]])
    assert utterance_level(solo) == [False] and BatchPlan(solo, [1], None, torch.device("cpu")).batch(np.array([0])).streams[0].broadcast is None


@pytest.mark.parametrize("fusion", ["intermediate", "early", "late"])
def test_fusion_with_functionals_uses_every_frame(fusion):
    P, y = frames_and_vectors()
    est = FusionClassifier(fusion=fusion, validation_fraction=None, **FAST).fit(P, y)
    assert est.score(P, y) > 0.9  # the label is only in frames 100 and later
