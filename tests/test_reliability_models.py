"""Guarantee 8 (safe model files): what ``estimators fit`` saves loads without unpickling, and
a tampered or truncated model directory is refused with a clear message.

(Pickle/joblib files of estimators execute code when loaded; that is documented, not tested:
the README, section Guarantees.)
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys

import joblib
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from cli.estimators import main
from estimators import ModelFileError, load_model
from estimators.predict import Predictor, load_preprocessing
from ssl_fixtures import speechlike

_unpickled: list | None = None  # set to a list while a load is watched
_hooked = False


def _audit(event: str, args: tuple) -> None:
    if _unpickled is not None and event == "pickle.find_class":
        _unpickled.append(args)


def _watch_unpickling() -> None:
    """Record every global an unpickler resolves (audit event ``pickle.find_class``, raised by
    the C and Python unpicklers alike) while ``_unpickled`` is a list."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)  # cannot be removed; does nothing while _unpickled is None
        _hooked = True


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_dir(built_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    r = CliRunner().invoke(main, ["fit", "--cache", str(built_cache), "--features", "mfcc", "--cv", "groupkfold:2",
                                  "--max-epochs", "1", "--hidden", "4", "--device", "cpu", "-q", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out / "model"


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    sf.write(path, speechlike(16000, seed=5), 16000)
    return path


def test_saved_model_is_json_and_safetensors_and_loads_without_unpickling(model_dir, wav, monkeypatch):
    global _unpickled
    _watch_unpickling()
    assert {p.suffix for p in model_dir.iterdir()} == {".json", ".safetensors"}
    expected = run("predict", model_dir, wav, "--format", "json")
    assert expected.exit_code == 0, expected.output

    def refuse(*a, **k):
        raise AssertionError("a model file was unpickled")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"), (joblib, "load")):
        monkeypatch.setattr(mod, name, refuse)
    _unpickled = []
    try:
        est = load_model(model_dir)
        load_preprocessing(model_dir)
        Predictor(model_dir, device="cpu")
        seen = list(_unpickled)
    finally:
        _unpickled = None
    assert seen == [] and hasattr(est, "classes_")
    r = run("predict", model_dir, wav, "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout) == json.loads(expected.stdout)
    # the watch works: a pickle that names a global is seen
    _unpickled = []
    try:
        pickle.Unpickler(__import__("io").BytesIO(pickle.dumps(np.float64(1.0)))).load()
        seen = list(_unpickled)
    finally:
        _unpickled = None
    assert seen


def _truncate(path, n=100):
    path.write_bytes(path.read_bytes()[:-n])


def _flip(path):
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0x10
    path.write_bytes(bytes(b))


def _edit(path, **changes):
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "damage, file, phrase",
    [
        (_truncate, "weights.safetensors", "checksum mismatch"),
        (_flip, "weights.safetensors", "checksum mismatch"),
        (lambda p: p.unlink(), "weights.safetensors", "missing"),
        (_truncate, "model.json", "not valid JSON"),
        (lambda p: _edit(p, format_version=99), "model.json", "format version 99 is not supported"),
        (lambda p: _edit(p, **{"class": "os.system"}), "model.json", "unknown estimator class 'os.system'"),
        (_truncate, "normalizer.safetensors", "cannot be read"),
        (_truncate, "preprocessing.json", "cannot be read"),
        (lambda p: _edit(p, format_version="2.0"), "preprocessing.json", "version '2.0'"),
    ],
)
def test_tampered_or_truncated_model_directory_is_refused_with_a_clear_message(model_dir, wav, tmp_path, damage, file, phrase):
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    damage(bad / file)
    r = run("predict", bad, wav)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("Error:") and file in line and phrase in line, line
    if file in ("weights.safetensors", "model.json"):
        with pytest.raises(ModelFileError, match=phrase):
            load_model(bad)
