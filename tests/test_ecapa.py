"""ECAPA-TDNN heads: masking of the padding, learning, sizes, persistence, grid search, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.model_selection import GridSearchCV

from cli.estimators import main
from estimators import ECAPAClassifier, ECAPARegressor, InputError, ModelFileError, ParameterError, ccc_score, load_model, save_model
from estimators._batch import BatchPlan
from estimators._ecapa import MaskedBatchNorm1d
from estimators._modelfiles import check_module_config
from estimators._modules import build_module
from featcache.packed import Packed, Stream

TINY = dict(channels=16, scale=4, embedding_size=8, lr=3e-3, random_state=0)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def layered_task(n=160, n_layers=4, dim=6, seed=0, shift=0.8):
    """Ragged utterances whose two classes differ only in layer 2 (dims 0-2)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    utts = []
    for label in y:
        x = rng.normal(size=(int(rng.integers(4, 20)), n_layers, dim))
        x[:, 2, :3] += (2 * label - 1) * shift
        utts.append(x.astype(np.float32))
    return utts, y


def _config(**kw):
    cfg = {"kind": "ecapa", "streams": [[3, 6]], "weighting": "sum", "channels": 16, "scale": 4,
           "embedding_size": 8, "bottleneck": 8, "dropout": 0.0, "n_outputs": 3}
    return {**cfg, **kw}


# --------------------------------------------------------------------------- padding


def test_masked_batch_norm_uses_the_real_frames_only():
    torch.manual_seed(0)
    lengths = torch.tensor([3, 1, 5])
    packed = torch.randn(9, 4)
    seg = torch.repeat_interleave(torch.arange(3), lengths)
    pos = torch.arange(9) - torch.tensor([0, 3, 4])[seg]
    padded = torch.full((3, 5, 4), 100.0)  # garbage on the padding must not count
    padded[seg, pos] = packed
    mask = (torch.arange(5)[None, :] < lengths[:, None]).unsqueeze(1).float()
    masked, plain = MaskedBatchNorm1d(4), torch.nn.BatchNorm1d(4)
    out = masked(padded.transpose(1, 2), mask, 9).transpose(1, 2)
    ref = plain(packed)
    torch.testing.assert_close(out[seg, pos], ref, rtol=1e-5, atol=1e-5)
    assert (out[mask[:, 0] == 0] == 0).all()
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    masked.eval(), plain.eval()
    torch.testing.assert_close(masked(padded.transpose(1, 2), mask, 9).transpose(1, 2)[seg, pos], plain(packed), rtol=1e-5, atol=1e-5)
    assert set(masked.state_dict()) == set(plain.state_dict())


def test_an_utterance_gets_the_same_output_whatever_its_batch_and_padding():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    utts = [rng.normal(size=(int(f), 3, 6)).astype(np.float32) for f in [1, 2, 30, 7, 12, 3, 25, 9]]
    plan = BatchPlan(Packed([Stream.from_list(utts)]), [1], None, torch.device("cpu"))
    module = build_module(_config())
    module.train()
    module(plan.batch(np.arange(8))).sum().backward()  # running statistics move away from their init
    module.eval()
    with torch.no_grad():
        together = module(plan.batch(np.arange(8)))
        alone = torch.cat([module(plan.batch(np.array([i]))) for i in range(8)])
        short = module(plan.batch(np.array([0, 1, 5])))  # padded to 3 frames instead of 30
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(short, together[[0, 1, 5]], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- learning


def test_ecapa_classifier_learns_from_all_layers():
    utts, y = layered_task()
    est = ECAPAClassifier(max_epochs=25, patience=8, **TINY).fit(utts[:120], y[:120])
    assert est.score(utts[120:], y[120:]) > 0.85
    assert est.layer_weights_.shape == (4,) and est.layer_weights_.sum() == pytest.approx(1.0)
    assert est.module_config_["kind"] == "ecapa" and est.module_config_["bottleneck"] == 8
    assert len(est.stream_layer_weights_) == 1


def test_ecapa_regressor_learns_with_the_ccc_loss():
    rng = np.random.default_rng(1)
    utts, _ = layered_task(n=160, seed=1)
    target = np.array([u[:, 2, :3].mean() for u in utts]) + 0.05 * rng.normal(size=160)
    est = ECAPARegressor(max_epochs=25, patience=8, **TINY).fit(utts[:120], target[:120])
    assert est.loss == "ccc"
    assert ccc_score(target[120:], est.predict(utts[120:])) > 0.6


def test_parameters_are_checked():
    utts, y = layered_task(n=20)
    with pytest.raises(ParameterError, match="channels.*multiple of scale"):
        ECAPAClassifier(channels=10, scale=4).fit(utts, y)
    with pytest.raises(ParameterError, match="batch_size.*>= 2"):
        ECAPAClassifier(batch_size=1, **TINY).fit(utts, y)
    with pytest.raises(ParameterError, match="fusion.*'early' or 'late'"):
        ECAPAClassifier(fusion="intermediate", **TINY).fit(utts, y)
    with pytest.raises(InputError, match="2 or more training utterances"):
        ECAPARegressor(validation_fraction=None, **TINY).fit(utts[:1], [0.5])


def test_grid_search_over_ecapa_sizes():
    utts, y = layered_task(n=48)
    search = GridSearchCV(ECAPAClassifier(max_epochs=2, **TINY), {"channels": [8, 16], "embedding_size": [4]}, cv=2)
    search.fit(list(utts), y)
    assert search.best_params_["channels"] in (8, 16)
    assert search.best_estimator_.module_config_["embedding_size"] == 4


# --------------------------------------------------------------------------- sizes and persistence


def test_paper_size_model_has_the_papers_shapes():
    with torch.device("meta"):
        module = build_module(_config(streams=[[13, 768]], channels=512, scale=8, embedding_size=192, bottleneck=128, n_outputs=4))
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes["layer1.conv.weight"] == (512, 768, 5)
    assert len(module.blocks) == 3 and [b.res2.convs[0].conv.dilation[0] for b in module.blocks] == [2, 3, 4]
    assert shapes["blocks.0.res2.convs.0.conv.weight"] == (64, 64, 3) and len(module.blocks[0].res2.convs) == 7
    assert shapes["mfa.conv.weight"] == (1536, 1536, 1)
    assert shapes["pool.tdnn.conv.weight"] == (128, 4608, 1) and shapes["pool.score.weight"] == (1536, 128, 1)
    assert shapes["embedding.weight"] == (192, 3072) and shapes["output.weight"] == (4, 192)
    assert 7e6 < sum(p.numel() for p in module.parameters()) < 9e6


def test_round_trip_and_untrusted_sizes(tmp_path, monkeypatch):
    utts, y = layered_task(n=40)
    est = ECAPAClassifier(max_epochs=2, **TINY).fit(utts, y)
    save_model(est, tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(utts), est.predict_proba(utts))
    np.testing.assert_array_equal(again.stream_layer_weights_[0], est.stream_layer_weights_[0])
    assert again.get_params() == est.get_params()
    cfg = json.loads((tmp_path / "m" / "model.json").read_text())["module_config"]
    for key, value, message in [("channels", 5000, "channels must be an integer in \\[1, 4096\\]"),
                                ("scale", 3, "multiple of scale"), ("bottleneck", 0, "bottleneck"),
                                ("n_outputs", None, "n_outputs")]:
        with pytest.raises(ModelFileError, match=message):
            check_module_config({**cfg, key: value}, "model.json")
    import estimators.persist as persist

    def spy(config):
        raise AssertionError("a module was built from an unchecked configuration")

    monkeypatch.setattr(persist, "build_module", spy)
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["module_config"]["channels"] = 4096
    doc.pop("checksum")
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="no checksum"), pytest.raises(ModelFileError, match="weights do not match.*4096"):
        load_model(tmp_path / "m")


# --------------------------------------------------------------------------- CLI


def test_cli_fit_ecapa_on_all_layers(built_cache, tmp_path):
    out = tmp_path / "ecapa"
    res = CliRunner().invoke(main, ["fit", "--cache", str(built_cache), "--features", "all_layers", "--model", "ecapa",
                                    "--cv", "groupkfold:2", "--max-epochs", "1", "--batch-size", "16", "--device", "cpu",
                                    "-q", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["model"]["class"] == "ECAPAClassifier" and rep["model"]["params"]["channels"] == 64
    assert len(rep["layer_weights"]) == 2 and len(rep["layer_weights"][0]) == 3
    est = load_model(out / "model")
    assert type(est).__name__ == "ECAPAClassifier"
    res = CliRunner().invoke(main, ["fit", "--cache", str(built_cache), "--features", "all_layers", "--model", "ecapa",
                                    "--pooling", "attentive", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 1 and "--pooling" in res.output and "dense" in res.output and "ecapa" in res.output
