"""A saved model directory is untrusted input (issue 18): paths stay inside it, no model is
loaded from a path it names, no code it ships runs, sizes are checked before anything is
allocated, every file is checksummed, and predict's windows are bounded and streamed.

Edits that should be *parsed* (not merely caught by a checksum) fix the file's checksum up
with :func:`estimators._modelfiles.doc_checksum`, as a deliberate attacker would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.estimators import main
from conftest import SR, synth_utterance
from estimators import ModelFileError, load_model
from estimators._modelfiles import doc_checksum
from estimators.predict import Predictor, build_extractor, load_preprocessing, windows
from featcache.errors import ModelError
from featcache.errors import ParameterError as FeatcacheParameterError


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error_line(res) -> str:
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error: "), res.output
    return line


def _wav(path: Path, seconds: float) -> Path:
    sf.write(path, synth_utterance(1, 3, 1, seconds, seed=7), SR)
    return path


def _fit(built_cache, out, features):
    res = CliRunner().invoke(main, ["fit", "--cache", str(built_cache), "--features", features, "--cv", "groupkfold:2",
                                    "--max-epochs", "1", "--hidden", "4", "--device", "cpu", "-q", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out / "model"


@pytest.fixture(scope="module")
def mfcc_model(built_cache, tmp_path_factory):
    return _fit(built_cache, tmp_path_factory.mktemp("sec") / "mfcc", "mfcc")


@pytest.fixture(scope="module")
def ssl_model_dir(built_cache, tmp_path_factory):
    return _fit(built_cache, tmp_path_factory.mktemp("sec") / "ssl", "all_layers")


@pytest.fixture
def model(mfcc_model, tmp_path):
    """A private copy of the mfcc model, in tmp_path/box/model, with a sentinel beside it."""
    d = tmp_path / "box" / "model"
    shutil.copytree(mfcc_model, d)
    (tmp_path / "box" / "sentinel.txt").write_text("do not touch")
    return d


def _edit(path: Path, change, fix: bool = True) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    if fix:
        doc["checksum"] = doc_checksum(doc)
    path.write_text(json.dumps(doc))


# --------------------------------------------------------------------------- 1. paths stay inside


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_weights_file_outside_the_directory_is_refused(model, how):
    outside = model.parent / "elsewhere.safetensors"
    shutil.copy(model / "weights.safetensors", outside)  # a valid file: the old code loaded it
    name = {"relative": "../elsewhere.safetensors", "absolute": str(outside), "symlink": "link.safetensors"}[how]
    if how == "symlink":
        (model / "link.safetensors").symlink_to(outside)
    _edit(model / "model.json", lambda d: d["weights"].update(file=name))
    with pytest.raises(ModelFileError, match="weights.file"):
        load_model(model)


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_statistics_file_outside_the_directory_is_refused(model, how):
    outside = model.parent / "stats.safetensors"
    shutil.copy(model / "normalizer.safetensors", outside)
    name = "../stats.safetensors" if how == "relative" else str(outside)
    _edit(model / "preprocessing.json", lambda d: d["normalization"].update(statistics=name))
    with pytest.raises(ModelFileError, match="normalization.statistics"):
        load_preprocessing(model)
    line = _error_line(run("predict", model, _wav(model.parent / "a.wav", 1.0)))
    assert "normalization.statistics" in line and "inside" in line


# --------------------------------------------------------------------------- 2. no model from a recorded path


def test_recorded_local_ssl_path_is_not_loaded(ssl_model_dir, tiny_model, tmp_path, monkeypatch):
    import featcache.extractors.ssl as ssl_mod

    d = tmp_path / "model"
    shutil.copytree(ssl_model_dir, d)

    def point_at_path(doc):
        for s in doc["features"]["streams"]:
            s["params"]["model"] = str(tiny_model)

    _edit(d / "preprocessing.json", point_at_path)
    stream = load_preprocessing(d).features["streams"][0]
    loaded = []
    real = ssl_mod.load_config
    monkeypatch.setattr(ssl_mod, "load_config", lambda r: loaded.append(r.source) or real(r))
    with pytest.raises(ModelFileError, match="--ssl-model"):
        build_extractor(stream, device="cpu")
    assert loaded == []  # the directory's path was never handed to transformers
    line = _error_line(run("predict", d, _wav(tmp_path / "a.wav", 1.0)))
    assert "--ssl-model" in line and "local path" in line
    # the user's own option may name a path
    ok = run("predict", d, _wav(tmp_path / "a.wav", 1.0), "--ssl-model", tiny_model, "--device", "cpu")
    assert ok.exit_code == 0, ok.output
    assert loaded == [str(Path(tiny_model).resolve())]


def test_recorded_hub_id_that_is_also_a_local_folder_is_refused(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, tmp_path / "facebook" / "wav2vec2-base")
    with pytest.raises(ModelFileError, match="--ssl-model"):
        build_extractor({"extractor": "ssl", "store": "x", "params": {"model": "facebook/wav2vec2-base"}}, device="cpu")


# --------------------------------------------------------------------------- 3. no remote code


def _evil_dir(root: Path, sentinel: Path, where: str, tiny_model: Path) -> Path:
    d = root / f"evil_{where}"
    shutil.copytree(tiny_model, d)
    (d / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evilnet'\n"
    )
    name = "config.json" if where == "config" else "preprocessor_config.json"
    doc = json.loads((d / name).read_text())
    if where == "config":
        doc.update(model_type="evilnet", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    else:
        doc.update(feature_extractor_type="EvilFeatureExtractor", auto_map={"AutoFeatureExtractor": "evil.EvilFeatureExtractor"})
    (d / name).write_text(json.dumps(doc))
    return d


@pytest.mark.parametrize("where", ["config", "preprocessor"])
@pytest.mark.parametrize("step", ["config", "weights"])
def test_model_code_is_never_run_even_when_stdin_says_yes(tmp_path, monkeypatch, tiny_model, where, step):
    from featcache import models

    monkeypatch.setattr("builtins.input", lambda *a, **k: "y")  # transformers' prompt would get "y"
    sentinel = tmp_path / "ran.txt"
    resolved = models.resolve_model(str(_evil_dir(tmp_path, sentinel, where, tiny_model)))
    with pytest.raises(ModelError, match="never runs such code"):
        if step == "config":
            models.load_config(resolved)
        else:
            models.load_model(resolved)
    assert not sentinel.exists()


# --------------------------------------------------------------------------- 4. sizes before allocation


def test_huge_module_config_is_refused_before_the_module_is_built(model, monkeypatch):
    import estimators.persist as persist

    built = []

    def spy(cfg):
        built.append(cfg)
        raise AssertionError("a module was built from an unchecked configuration")

    monkeypatch.setattr(persist, "build_module", spy)
    _edit(model / "model.json", lambda d: d["module_config"].update(branch_sizes=[40000, 40000]))
    with pytest.raises(ModelFileError, match="weights do not match the model.*40000"):
        load_model(model)
    assert built == []


def test_huge_extractor_parameters_are_refused_at_construction(model):
    def huge(doc):
        doc["features"]["streams"][0]["params"]["n_mels"] = 20_000_000

    _edit(model / "preprocessing.json", huge)
    stream = load_preprocessing(model).features["streams"][0]
    with pytest.raises(FeatcacheParameterError, match="n_mels"):
        build_extractor(stream)
    line = _error_line(run("predict", model, _wav(model.parent / "a.wav", 1.0)))
    assert "n_mels" in line and "at most 1024" in line


@pytest.mark.parametrize("file", ["model.json", "preprocessing.json"])
@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "[1, 2]", '"just a string"', "null"])
def test_deep_or_non_object_json_is_a_model_file_error(model, file, text):
    (model / file).write_text(text)
    with pytest.raises(ModelFileError):
        Predictor(model, device="cpu")
    assert file in _error_line(run("predict", model, _wav(model.parent / "a.wav", 1.0)))


# --------------------------------------------------------------------------- 5. every file checksummed


def _flip_last_byte(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[-1] ^= 0x01
    path.write_bytes(bytes(b))


def _change_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("file", ["model.json", "preprocessing.json", "weights.safetensors", "normalizer.safetensors"])
def test_corruption_of_any_file_is_detected(model, file):
    p = model / file
    if file == "model.json":
        _change_text(p, '"dropout": 0.2', '"dropout": 0.3')  # still valid JSON, still loadable
    elif file == "preprocessing.json":
        _change_text(p, '"eps": 1e-08', '"eps": 1e-07')
    else:
        _flip_last_byte(p)  # a bit of the last float stored
    line = _error_line(run("predict", model, _wav(model.parent / "a.wav", 1.0)))
    assert file in line and "checksum mismatch" in line


def test_file_without_checksum_loads_with_a_warning(model):
    _edit(model / "model.json", lambda d: d.pop("checksum"), fix=False)
    with pytest.warns(UserWarning, match="no checksum"):
        load_model(model)


# --------------------------------------------------------------------------- 6. bounded windows, streamed


def test_tiny_hop_is_refused(model, tmp_path):
    line = _error_line(run("predict", model, _wav(tmp_path / "a.wav", 1.2), "--segment", "1", "--hop", "0.0001"))
    assert "hop" in line and ">= 0.01" in line


def test_windows_per_file_are_bounded():
    assert len(windows(16000 * 100, 16000, 1.0, 0.01)) == 9901
    with pytest.raises(ValueError, match="at most 10000 windows per file"):
        windows(16000 * 3600, 16000, 1.0, 0.1)


@pytest.mark.parametrize("enrol", [False, True])
def test_predict_streams_windows_in_bounded_batches(model, tmp_path, enrol):
    files = [_wav(tmp_path / "long.wav", 20.5), _wav(tmp_path / "short.wav", 1.5)]
    pred = Predictor(model, device="cpu")
    sizes = []
    real = pred.estimator.predict_proba

    def spy(X):
        sizes.append(len(X))
        return real(X)

    pred.estimator.predict_proba = spy
    table, info = pred.predict_files(files, segment=1.0, hop=0.5, enrol=enrol)
    assert len(table) == 40 + 2 and max(sizes) <= 32 and len(sizes) >= 2
    sizes.clear()
    small, _ = pred.predict_files(files, segment=1.0, hop=0.5, enrol=enrol, chunk=5)
    assert max(sizes) <= 5 and sum(sizes) == 42
    big, _ = pred.predict_files(files, segment=1.0, hop=0.5, enrol=enrol, chunk=10_000)
    cols = [c for c in big.columns if c.startswith("p_")]
    np.testing.assert_allclose(small[cols].to_numpy(), big[cols].to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table[cols].to_numpy(), big[cols].to_numpy(), rtol=1e-5, atol=1e-6)
    assert list(small.file) == list(big.file) and info["normalization"] == ("enrol" if enrol else "training-global")
