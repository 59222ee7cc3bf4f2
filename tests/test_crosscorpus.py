"""Cross-corpus protocol: train on one cached corpus, test on another on the shared labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import SR, synth_utterance, write_ravdess_like
from estimators.crosscorpus import _harmonised_set, cross_corpus_sets, parse_cross_corpus, resolve_caches
from estimators.errors import ParameterError

# EmoDB letters and the RAVDESS emotion code whose synthetic voice they get (so the two
# synthetic corpora share acoustics per emotion); L (bored) has no RAVDESS counterpart.
EMODB = {"W": 5, "L": 2, "E": 7, "A": 6, "F": 3, "T": 4, "N": 1}
EMODB_SPEAKERS = ("03", "08", "09")


def write_emodb_like(root: Path) -> Path:
    (root / "wav").mkdir(parents=True, exist_ok=True)
    for sp in EMODB_SPEAKERS:
        for letter, code in EMODB.items():
            for text in ("a01", "b02"):
                seed = int(sp) * 100 + code * 10 + len(text)
                x = synth_utterance(int(sp) % 4 + 1, code, 1 + (text == "b02"), 0.7 + 0.05 * code, seed)
                sf.write(root / "wav" / f"{sp}{text}{letter}a.wav", x, SR)
    return root


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    """A cache root with a synthetic RAVDESS (4 actors) and a synthetic EmoDB (3 speakers), MFCC only."""
    from featcache.pipeline import build_extractors, extract

    data = tmp_path_factory.mktemp("xc_data")
    root = tmp_path_factory.mktemp("xc_cache")
    ex = build_extractors(["mfcc"], device="cpu")
    extract("ravdess", write_ravdess_like(data / "ravdess"), root, ex, progress=False)
    extract("emodb", write_emodb_like(data / "emodb"), root, ex, progress=False)
    return root


def test_parse_cross_corpus():
    spec = parse_cross_corpus("cross-corpus:ravdess->emodb")
    assert (spec.train, spec.test) == ("ravdess", "emodb") and str(spec) == "cross-corpus:ravdess->emodb"
    assert parse_cross_corpus("groupkfold:5") is None and parse_cross_corpus("ravdess-pepino") is None
    for bad in ("cross-corpus:ravdess", "cross-corpus:ravdess->", "cross-corpus:a-->b c"):
        with pytest.raises(ParameterError, match="cross-corpus:TRAIN->TEST"):
            parse_cross_corpus(bad)
    with pytest.raises(ParameterError, match="two different corpora"):
        parse_cross_corpus("cross-corpus:emodb->emodb")


def test_shared_labels_and_dropped_counts(cache_root):
    spec = parse_cross_corpus("cross-corpus:ravdess->emodb")
    tr, te = resolve_caches(cache_root / "ravdess", spec)  # a corpus cache: the other is found beside it
    assert (tr.corpus, te.corpus) == ("ravdess", "emodb")
    d = cross_corpus_sets(tr, te, "mfcc")
    assert d.labels == ["angry", "disgust", "fearful", "happy", "neutral", "sad"]
    assert d.dropped_train == {"calm": 8, "surprised": 8}  # 4 actors x 2 statements each
    assert d.dropped_test == {"bored": 2 * len(EMODB_SPEAKERS)}
    assert len(d.X_train) == 64 - 16 and len(d.X_test) == len(EMODB_SPEAKERS) * 6 * 2
    assert set(d.y_train) == set(d.y_test) == set(d.labels)
    # speakers are the corpora's own ids (EmoDB's 03 is not RAVDESS's actor 03: each corpus's
    # speaker statistics come from its own cache)
    assert set(d.groups_test) == set(EMODB_SPEAKERS) and set(d.groups_train) == {"01", "02", "03", "04"}
    # the test set is EmoDB's utterances, the training set RAVDESS's
    assert set(d.X_test.ids) <= set(te.utterances["id"]) and set(d.X_train.ids) <= set(tr.utterances["id"])
    assert not set(d.X_test.ids) & set(tr.utterances["id"])


def test_missing_corpus_names_what_the_root_holds(cache_root):
    with pytest.raises(ParameterError, match=r"emodb, ravdess.*missing iemocap"):
        resolve_caches(cache_root, parse_cross_corpus("cross-corpus:ravdess->iemocap"))


def test_harmonise_maps_iemocap_names():
    class FakeCache:
        utterances = pd.DataFrame({"label": ["neu", "hap", "ang", "sad", None]})

        def select(self, features, label_map=None):
            return label_map

    mapping = _harmonised_set(FakeCache(), "mfcc")
    assert mapping == {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad"}


def _run(*args):
    from cli.estimators import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_cross_corpus(cache_root, tmp_path):
    out = tmp_path / "xc"
    res = _run("fit", "--cache", cache_root, "--features", "mfcc", "--cv", "cross-corpus:ravdess->emodb",
               "--seeds", "2", "--max-epochs", "3", "--hidden", "8", "--device", "cpu", "--out", out, "-q")
    assert res.exit_code == 0, res.output
    assert "UAR" in res.output and "shared labels angry, disgust, fearful, happy, neutral, sad" in res.output
    rep = json.loads((out / "report.json").read_text())
    xc = rep["cross_corpus"]
    assert (xc["train"], xc["test"]) == ("ravdess", "emodb") and xc["n_test"] == 36 and xc["n_train"] == 48
    assert xc["dropped_test"] == {"bored": 6}
    assert rep["classes"] == xc["labels"]
    assert len(rep["metrics"]["uar"]["values"]) == 2
    pred = pd.read_csv(out / "predictions.csv", dtype={"speaker": str})
    assert len(pred) == 2 * 36 and set(pred.speaker) == set(EMODB_SPEAKERS)
    assert np.asarray(rep["confusion_matrix"]).sum() == 2 * 36
    # the saved final model was trained on RAVDESS only
    assert json.loads((out / "model" / "model.json").read_text())["extra"]["corpus"] == "ravdess"


def test_cli_cross_corpus_refuses_label_map(cache_root, tmp_path):
    res = _run("fit", "--cache", cache_root, "--features", "mfcc", "--cv", "cross-corpus:ravdess->emodb",
               "--label-map", "ravdess7", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "--label-map" in res.output and "cross-corpus:ravdess->emodb" in res.output
    assert not (tmp_path / "o").exists()
