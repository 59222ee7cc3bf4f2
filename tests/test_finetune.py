"""Fine-tuning estimators, checkpoint averaging, the audio selection, export back into the
cache, persistence, HF audio-classification checkpoints and the ``finetune`` command.

Tiny random wav2vec2 / HuBERT models (tests/ssl_fixtures.py) and synthetic audio whose
class is its pitch (learnable by a random upstream + trained head in a few epochs).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from sklearn.base import clone

from conftest import SR, synth_utterance, write_ravdess_like

FAST = dict(batch_seconds=4.0, device="cpu", spec_augment=False, random_state=0)


def _tone(f0: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def pitch_task():
    """24 waveforms of 0.5-0.8 s: class "lo" (200 Hz) or "hi" (800 Hz)."""
    rng = np.random.default_rng(0)
    X, y = [], []
    for i in range(24):
        c = i % 2
        X.append(_tone(200.0 if c == 0 else 800.0, 0.5 + 0.3 * rng.random(), i))
        y.append("lo" if c == 0 else "hi")
    return X, np.asarray(y)


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """16 RAVDESS-named files (4 actors x neutral/surprised x 2 statements), an mfcc store."""
    from featcache.pipeline import build_extractors, extract

    root = tmp_path_factory.mktemp("ft")
    data = write_ravdess_like(root / "ravdess", emotions=(1, 8))
    extract("ravdess", data, root / "cache", build_extractors(["mfcc"]), progress=False)
    return root / "cache" / "ravdess", data


def _upstream_state(model_dir) -> dict:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir)).state_dict()


# --------------------------------------------------------------------------- the audio selection


def test_select_audio_reads_the_table_files_as_extraction(small_cache):
    from featcache import open_cache
    from featcache.audio import load_audio

    cache_dir, data = small_cache
    fc = open_cache(cache_dir)
    X = fc.select("audio")
    assert len(X) == 16 and X.max_seconds == 15.0 and X.sampling_rate == 16000  # the store's crop
    assert set(X.labels) == {"neutral", "surprised"} and len(set(X.speakers)) == 4
    row = fc.utterances.set_index("id").loc[X.ids[3]]
    np.testing.assert_array_equal(X[3], load_audio(data / row["path"], max_seconds=15.0).signal)
    sub = X[np.array([1, 3])]
    assert list(sub.ids) == list(X.ids[[1, 3]]) and len(X[X.labels == "neutral"]) == 8
    again = pickle.loads(pickle.dumps(sub))
    np.testing.assert_array_equal(again[1], X[3])
    short = fc.select("audio", max_seconds=0.25)
    assert len(short[0]) == 4000 and short.describe()["streams"][0]["params"]["max_seconds"] == 0.25


def test_select_audio_errors(small_cache, tmp_path):
    from featcache import open_cache
    from featcache.errors import CorpusError, ParameterError, SpecError

    fc = open_cache(small_cache[0])
    with pytest.raises(SpecError, match="only for select"):
        fc.select("mfcc", max_seconds=3)
    with pytest.raises(ParameterError, match="max_seconds"):
        fc.select("audio", max_seconds=-1)
    with pytest.raises(CorpusError, match="data_dir"):
        fc.select("audio", data_dir=tmp_path / "gone")


# --------------------------------------------------------------------------- learning and freezing


@pytest.mark.parametrize("kind,head", [("wav2vec2", "mean"), ("hubert", "dense")])
def test_loss_falls_on_a_learnable_task(tiny_model_dir, pitch_task, kind, head):
    from estimators import FineTuneClassifier

    X, y = pitch_task
    est = FineTuneClassifier(model=str(tiny_model_dir(kind)), head=head, hidden_sizes=(16,), max_epochs=6, lr=1e-3,
                             head_lr=3e-3, validation_fraction=None, **FAST)
    assert est.fit(X, y) is est
    losses = [h["train_loss"] for h in est.history_]
    assert len(losses) == 6 and losses[-1] < 0.6 * losses[0], losses
    assert est.score(X, y) >= 0.9
    assert list(est.classes_) == ["hi", "lo"] and est.predict_proba(X[:3]).shape == (3, 2)
    if head == "dense":
        assert est.layer_weights_.shape == (3,) and np.isclose(est.layer_weights_.sum(), 1.0)


def test_frozen_parts_keep_their_weights_bit_for_bit(tiny_model_dir, pitch_task):
    from estimators import FineTuneClassifier

    X, y = pitch_task
    d = tiny_model_dir("wav2vec2")
    before = _upstream_state(d)
    est = FineTuneClassifier(model=str(d), freeze_layers=1, max_epochs=2, lr=1e-3, average_checkpoints=2, **FAST).fit(X, y)
    after = {k: v.cpu() for k, v in est.module_.upstream.state_dict().items()}
    frozen = [k for k in before if k.startswith(("feature_extractor.", "feature_projection.", "encoder.pos_conv_embed.",
                                                  "encoder.layers.0.", "encoder.layer_norm."))]
    trained = [k for k in before if k.startswith("encoder.layers.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_gradient_checkpointing_gives_the_same_training(tiny_model_dir, pitch_task):
    from estimators import FineTuneClassifier

    X, y = pitch_task
    kw = dict(model=str(tiny_model_dir("wav2vec2")), head="dense", hidden_sizes=(8,), max_epochs=2, lr=1e-3, **FAST)
    a = FineTuneClassifier(**kw).fit(X, y)
    b = FineTuneClassifier(gradient_checkpointing=True, **kw).fit(X, y)
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)
    assert not torch.equal(sa["mixers.0.alpha"], torch.ones(3))  # the layer weights trained


# --------------------------------------------------------------------------- checkpoint averaging


class _Recorder:
    """Callback keeping every epoch's full state dict and record."""

    def __init__(self):
        self.states, self.records = [], []

    def __call__(self, est, record):
        self.states.append({k: v.detach().clone() for k, v in est.module_.state_dict().items()})
        self.records.append(dict(record))


def _expected_average(rec: _Recorder, n: int) -> tuple[list[int], dict]:
    ranked = sorted(range(len(rec.records)), key=lambda i: (rec.records[i]["valid_score"], rec.records[i]["epoch"]), reverse=True)[:n]
    states = [rec.states[i] for i in ranked]
    mean = {k: torch.stack([s[k].double() for s in states]).mean(0) for k in states[0] if states[0][k].is_floating_point()}
    return sorted(rec.records[i]["epoch"] for i in ranked), mean


def test_averaging_fine_tuned_checkpoints_is_the_mean_of_the_best_state_dicts(tiny_model_dir, pitch_task):
    from estimators import FineTuneClassifier

    X, y = pitch_task
    rec = _Recorder()
    est = FineTuneClassifier(model=str(tiny_model_dir("wav2vec2")), max_epochs=5, patience=5, lr=1e-3, average_checkpoints=3,
                             callbacks=[rec], **FAST)
    est.fit(X[:16], y[:16], X_val=X[16:], y_val=y[16:])
    epochs, mean = _expected_average(rec, 3)
    assert est.averaged_epochs_ == epochs and len(epochs) == 3
    got = est.module_.state_dict()
    for k, v in mean.items():
        assert torch.allclose(got[k].double(), v, atol=1e-6), k
    assert not torch.equal(got["head.output.weight"], rec.states[-1]["head.output.weight"])  # not simply the last epoch
    assert [h.get("averaged", False) for h in est.history_] == [e in epochs for e in range(1, 6)]


def test_averaging_cache_trained_heads(pitch_task):
    from estimators import DenseClassifier, LSTMClassifier

    rng = np.random.default_rng(1)
    y = np.array([0, 1] * 20)
    X = rng.normal(size=(40, 6, 4)).astype(np.float32) + y[:, None, None]
    for cls in (DenseClassifier, LSTMClassifier):
        rec = _Recorder()
        est = cls(hidden_sizes=(8,), max_epochs=6, patience=6, average_checkpoints=4, callbacks=[rec], device="cpu", random_state=0)
        est.fit(X[:30], y[:30], X_val=X[30:], y_val=y[30:])
        epochs, mean = _expected_average(rec, 4)
        assert est.averaged_epochs_ == epochs
        got = est.module_.state_dict()
        assert all(torch.allclose(got[k].double(), v, atol=1e-6) for k, v in mean.items())
        assert clone(est).get_params()["average_checkpoints"] == 4
    with pytest.raises(ValueError, match="average_checkpoints"):
        DenseClassifier(average_checkpoints=0).fit(X, y)


# --------------------------------------------------------------------------- contract, input checks


def test_sklearn_contract(tiny_model_dir):
    from sklearn.utils.estimator_checks import (
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_set_params,
    )

    from estimators import FineTuneClassifier, FineTuneRegressor

    for cls in (FineTuneClassifier, FineTuneRegressor):
        est = cls(model=str(tiny_model_dir("wav2vec2")), head="dense", average_checkpoints=5)
        for check in (check_no_attributes_set_in_init, check_parameters_default_constructible, check_get_params_invariance, check_set_params):
            check(cls.__name__, est)
        c = clone(est.set_params(lr=1e-4, freeze_layers=1))
        assert c.get_params() == est.get_params() and c is not est and not hasattr(c, "module_")


def test_input_and_parameter_errors(tiny_model_dir, pitch_task, small_cache):
    from estimators import FineTuneClassifier
    from estimators.errors import InputError, ParameterError
    from featcache import open_cache

    X, y = pitch_task
    d = str(tiny_model_dir("wav2vec2"))
    with pytest.raises(ParameterError, match="precision"):
        FineTuneClassifier(model=d, precision="bf16", device="cpu").fit(X, y)
    with pytest.raises(ParameterError, match="head"):
        FineTuneClassifier(model=d, head="ecapa").fit(X, y)
    with pytest.raises(ParameterError, match="freeze_layers"):
        FineTuneClassifier(model=d, freeze_layers=3, device="cpu").fit(X, y)
    with pytest.raises(InputError, match="receptive field"):
        FineTuneClassifier(model=d, device="cpu").fit([*X[:3], np.zeros(100, np.float32)], y[:4])
    with pytest.raises(InputError, match="must be audio"):
        FineTuneClassifier(model=d, device="cpu").fit(np.zeros((4, 10)), y[:4])
    with pytest.raises(InputError, match="8000 Hz"):
        audio8k = open_cache(small_cache[0]).select("audio", sampling_rate=8000)
        FineTuneClassifier(model=d, device="cpu").fit(audio8k, audio8k.labels)


def test_regressor_with_ccc_loss(tiny_model_dir, pitch_task):
    from estimators import FineTuneRegressor

    X, _ = pitch_task
    y = np.array([float(i % 2) for i in range(len(X))]) + np.linspace(0, 0.2, len(X))
    est = FineTuneRegressor(model=str(tiny_model_dir("wav2vec2")), max_epochs=6, lr=1e-3, head_lr=3e-3, validation_fraction=None, **FAST)
    est.fit(X, y)
    losses = [h["train_loss"] for h in est.history_]
    assert losses[-1] < losses[0] and est.predict(X).shape == (len(X),)
    assert np.corrcoef(est.predict(X), y)[0, 1] > 0.8


def test_batches_hold_about_batch_seconds():
    from estimators._finetune_data import AudioPlan

    rng = np.random.default_rng(0)
    signals = [np.zeros(int(SR * s), np.float32) for s in rng.uniform(0.5, 3.0, 40)]
    plan = AudioPlan(signals, lambda x: x, SR, torch.device("cpu"), batch_seconds=4.0, min_items=2)
    groups = plan.groups(np.arange(40), rng)
    assert sorted(np.concatenate(groups).tolist()) == list(range(40))
    assert all(len(g) >= 2 for g in groups)
    assert all(plan.lengths[g].sum() <= 4 * SR or len(g) == 2 for g in groups)
    steps = list(plan.steps(np.arange(40), 3, rng))
    assert len(steps) == plan.n_steps(np.arange(40), 3) and all(len(s.micro) <= 3 for s in steps)


# --------------------------------------------------------------------------- persistence


@pytest.fixture(scope="module")
def fitted_on_cache(tiny_model_dir, small_cache):
    from estimators import FineTuneClassifier
    from featcache import open_cache

    X = open_cache(small_cache[0]).select("audio")
    est = FineTuneClassifier(model=str(tiny_model_dir("wav2vec2")), head="dense", hidden_sizes=(8,), max_epochs=3, lr=1e-3,
                             average_checkpoints=2, **FAST)
    return est.fit(X, X.labels), X


def test_persistence_round_trip_without_pickle(fitted_on_cache, tmp_path):
    from estimators import load_model, save_model
    from estimators.errors import ModelFileError

    est, X = fitted_on_cache
    save_model(est, tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["class"] == "FineTuneClassifier" and sorted(doc["upstream"]["files"]) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    back = load_model(tmp_path / "m")
    np.testing.assert_allclose(back.predict_proba(X), est.predict_proba(X), atol=1e-6)
    assert back.averaged_epochs_ == est.averaged_epochs_ and list(back.classes_) == list(est.classes_)
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "m", bad)
    (bad / "upstream" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelFileError, match="unlisted: pytorch_model.bin"):
        load_model(bad)
    (bad / "upstream" / "pytorch_model.bin").unlink()
    w = bad / "upstream" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(bad)


# --------------------------------------------------------------------------- back into the cache


def test_save_upstream_extract_then_dense(fitted_on_cache, small_cache, tmp_path):
    from cli.featcache import main as featcache_main
    from estimators import DenseClassifier
    from featcache import open_cache

    est, X = fitted_on_cache
    up = est.save_upstream(tmp_path / "ft_upstream")
    r = CliRunner().invoke(featcache_main, ["extract", "--corpus", "ravdess", "--data-dir", str(small_cache[1]), "--model", str(up),
                                            "--features", "wav2vec2", "--cache-dir", str(tmp_path / "cache"), "--precision", "fp32",
                                            "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    fs = open_cache(tmp_path / "cache" / "ravdess").select("all_layers")
    assert fs.shape[2:] == (3, 32)
    # the cached layers are the fine-tuned module's hidden states (float16 storage)
    net = est.module_.eval()
    i = list(fs.ids).index(X.ids[0])
    with torch.no_grad():
        states, _ = net.hidden_states([torch.from_numpy(net.feature_extractor(X[0], sampling_rate=SR, return_tensors="np")["input_values"][0])])
    want = torch.stack([s[0] for s in states], 1).numpy()
    np.testing.assert_allclose(fs[i], want, atol=2e-2 * np.abs(want).max())
    dense = DenseClassifier(hidden_sizes=(8,), max_epochs=2, device="cpu", random_state=0).fit(fs, fs.labels)
    assert set(dense.predict(fs)) <= {"neutral", "surprised"}


# --------------------------------------------------------------------------- HF checkpoints and the CLI


def _hf_checkpoint(tmp_path: Path) -> Path:
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    from ssl_fixtures import tiny_config

    cfg = tiny_config("wav2vec2")
    cfg.num_labels, cfg.id2label, cfg.label2id = 2, {0: "calm", 1: "angry"}, {"calm": 0, "angry": 1}
    torch.manual_seed(0)
    out = tmp_path / "hf_ser"
    Wav2Vec2ForSequenceClassification(cfg).eval().save_pretrained(out)
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(out)
    return out


def test_hf_sequence_classification_checkpoint_predicts_through_the_cli(tmp_path):
    from transformers import Wav2Vec2ForSequenceClassification

    from cli.estimators import main
    from estimators.predict import windows

    ckpt = _hf_checkpoint(tmp_path)
    x = synth_utterance(1, 5, 1, 2.2, 7)
    sf.write(tmp_path / "a.wav", x, SR)
    r = CliRunner().invoke(main, ["predict", str(ckpt), str(tmp_path / "a.wav"), "--segment", "1", "--hop", "0.5", "--device", "cpu"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(pd.io.common.StringIO(r.stdout))
    assert list(table.columns[:6]) == ["file", "start", "end", "label", "p_calm", "p_angry"]
    assert len(table) == len(windows(len(x), SR, 1.0, 0.5)) and set(table["label"]) <= {"calm", "angry"}
    np.testing.assert_allclose(table[["p_calm", "p_angry"]].sum(axis=1), 1.0, atol=1e-5)
    model = Wav2Vec2ForSequenceClassification.from_pretrained(str(ckpt)).eval()
    w = sf.read(tmp_path / "a.wav", dtype="float32")[0][:SR]
    w = (w - w.mean()) / np.sqrt(w.var() + 1e-7)
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(w[None])).logits, 1)[0].numpy()
    np.testing.assert_allclose(table.loc[0, ["p_calm", "p_angry"]].to_numpy(float), p, atol=1e-4)
    (ckpt / "pytorch_model.bin").write_bytes(b"x")
    r = CliRunner().invoke(main, ["predict", str(ckpt), str(tmp_path / "a.wav")])
    assert r.exit_code == 1 and "only safetensors" in r.output


def test_cli_finetune_writes_the_fit_files_and_predicts(tiny_model_dir, small_cache, tmp_path):
    from cli.estimators import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["finetune", "--cache", str(small_cache[0]), "--model", str(tiny_model_dir("wav2vec2")), "--cv", "groupkfold:2",
                                  "--average", "2", "--max-epochs", "2", "--batch-seconds", "4", "--lr", "1e-3", "--no-spec-augment",
                                  "--device", "cpu", "--out", str(out), "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["class"] == "FineTuneClassifier" and report["normalize"] == "none" and report["spec"] == "audio"
    assert 0 <= report["metrics"]["uar"]["mean"] <= 1 and len(report["per_fold"]) == 2
    assert (out / "confusion.png").is_file() and (out / "predictions.csv").is_file()
    assert (out / "model" / "upstream" / "config.json").is_file() and report["model"]["params"]["average_checkpoints"] == 2
    wav = next(small_cache[1].rglob("*.wav"))
    p = CliRunner().invoke(main, ["predict", str(out / "model"), str(wav), "--device", "cpu"], catch_exceptions=False)
    assert p.exit_code == 0, p.output
    table = pd.read_csv(pd.io.common.StringIO(p.stdout))
    assert table.loc[0, "label"] in {"neutral", "surprised"} and np.isclose(table.filter(like="p_").sum(axis=1)[0], 1.0)
    bad = CliRunner().invoke(main, ["fit", "--cache", str(small_cache[0]), "--features", "audio", "-q", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "audio" in bad.output
