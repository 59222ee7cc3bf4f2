"""One protocol registry: what is registered once is seen by make_cv, the error texts,
get_protocol and the experiment; corpus label names live beside the corpora."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from estimators import cv, run_experiment
from estimators.errors import ParameterError
from estimators.protocols import (
    PROTOCOL_REGISTRY,
    Fold,
    Protocol,
    corpus_protocol,
    get_protocol,
    list_protocols,
    register_protocol,
)


@pytest.fixture
def registry():
    """The registry, restored to what it held after the test."""
    saved = dict(PROTOCOL_REGISTRY)
    yield PROTOCOL_REGISTRY
    PROTOCOL_REGISTRY.clear()
    PROTOCOL_REGISTRY.update(saved)


def last_speaker_out(groups, y):
    last = sorted(set(groups))[-1]
    return [(np.flatnonzero(groups != last), np.flatnonzero(groups == last))]


def test_a_registered_split_protocol_is_seen_everywhere(registry):
    groups = np.repeat(["a", "b", "c"], 4)
    assert register_protocol("last-out", last_speaker_out) is last_speaker_out
    ((tr, te),) = cv.make_cv("last-out", groups)
    assert set(groups[te]) == {"c"} and set(groups[tr]) == {"a", "b"}
    assert "last-out" in list_protocols() and get_protocol("last-out") is last_speaker_out
    assert "last-out" in cv.describe_cv_forms()
    assert cv.PROTOCOLS["last-out"] is last_speaker_out  # the old name is the same registry
    assert corpus_protocol("last-out") is None  # not applied to the utterance table
    register_protocol("two", "groupkfold:2")
    assert len(cv.make_cv("two", groups)) == 2


def test_what_is_put_into_cv_protocols_is_a_registered_protocol(registry):
    cv.PROTOCOLS["by-hand"] = "logo"
    assert get_protocol("by-hand") == "logo" and "by-hand" in list_protocols()
    assert len(cv.make_cv("by-hand", np.repeat(["a", "b", "c"], 2))) == 3


def test_a_registered_corpus_protocol_needs_the_table(registry):
    def folds(table):
        return [Fold(np.flatnonzero(table.speaker != "c"), np.flatnonzero(table.speaker == "c"))]

    p = Protocol("c-out", "speaker c tests", "internal split", None, None, lambda t: np.ones(len(t), bool), folds)
    register_protocol("c-out", p)
    assert get_protocol("c-out") is p and corpus_protocol("c-out") is p
    assert "c-out" in cv.describe_cv_forms()
    (f,) = p.folds(pd.DataFrame({"speaker": ["a", "b", "c", "c"]}))
    assert f.test.tolist() == [2, 3]
    with pytest.raises(ParameterError, match="utterance table"):
        cv.make_cv("c-out", np.array(["a", "b", "c"]))


@pytest.mark.parametrize(
    "name, entry, match",
    [
        ("ravdess-pepino", "logo", "not registered yet"),
        ("logo", last_speaker_out, "split spec form"),
        ("GroupKFold:3", last_speaker_out, "split spec form"),
        ("cross-corpus:a->b", last_speaker_out, "split spec form"),
        (" padded", last_speaker_out, "surrounding spaces"),
        ("", last_speaker_out, "non-empty"),
        ("alias", "kfold:3", "split spec string"),
        ("alias", "ravdess-pepino", "split spec string"),
        ("number", 3, "callable"),
    ],
)
def test_register_protocol_refuses_bad_entries(registry, name, entry, match):
    before = dict(registry)
    with pytest.raises(ParameterError, match=match):
        register_protocol(name, entry)
    assert registry == before


def test_register_protocol_checks_the_protocols_own_name_and_replace(registry):
    pepino = get_protocol("ravdess-pepino")
    with pytest.raises(ParameterError, match="a Protocol named 'mine'"):
        register_protocol("mine", pepino)
    register_protocol("ravdess-pepino", "groupkfold:2", replace=True)
    assert get_protocol("ravdess-pepino") == "groupkfold:2" and corpus_protocol("ravdess-pepino") is None


def test_the_experiment_runs_a_registered_split_protocol(registry, built_cache):
    """A split protocol goes through make_cv (not taken for a corpus protocol)."""
    seen = []

    def speaker_04_out(groups, y):
        seen.append(sorted(set(groups)))
        return [(np.flatnonzero(groups != "04"), np.flatnonzero(groups == "04"))]

    register_protocol("04-out", speaker_04_out)
    res = run_experiment(cache=built_cache, features="mfcc", cv="04-out", refit=False, max_epochs=1, hidden="8", batch_size=16, device="cpu")
    assert seen == [["01", "02", "03", "04"]]
    assert [(r["seed"], r["fold"], r["n_train"]) for r in res.per_fold] == [(0, 0, 48)]


def test_harmonised_label_names_live_with_the_corpora():
    import featcache.corpora as corpora
    from estimators import crosscorpus

    assert crosscorpus.HARMONISE is corpora.HARMONISE
    assert corpora.harmonise_labels(["neu", "exc", "bored"]) == {"neu": "neutral", "exc": "happy", "bored": "bored"}
    assert {"HARMONISE", "harmonise_labels"} <= set(corpora.__all__)
