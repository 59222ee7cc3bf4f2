"""Leakage guards of every evaluation: duplicates, speakers, validation; sentence overlap; confounding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from leakage_fixtures import SR, extract_mfcc, plant_duplicates, speechlike, write_clean, write_confounded

from estimators import run_experiment
from estimators.errors import LeakageError, ParameterError
from estimators.leakage import LeakageGuard, parse_allow_leakage
from estimators.protocols import PROTOCOL_REGISTRY, register_protocol

TINY = dict(features="mfcc", hidden="8", max_epochs=1, batch_size=64, refit=False, device="cpu")


@pytest.fixture(scope="module")
def dup_cache(tmp_path_factory):
    data = write_clean(tmp_path_factory.mktemp("leak_data") / "ravdess")
    ids = plant_duplicates(data)
    return extract_mfcc("ravdess", data, tmp_path_factory.mktemp("leak_cache")), ids


@pytest.fixture(scope="module")
def clean_cache(tmp_path_factory):
    data = write_clean(tmp_path_factory.mktemp("leak_clean") / "ravdess")
    return extract_mfcc("ravdess", data, tmp_path_factory.mktemp("leak_clean_cache"))


@pytest.fixture
def registered():
    names = []

    def add(name, fn):
        register_protocol(name, fn)
        names.append(name)

    yield add
    for n in names:
        PROTOCOL_REGISTRY.pop(n, None)


def test_duplicates_across_folds_stop_the_run_and_are_named(dup_cache):
    cache, ids = dup_cache
    with pytest.raises(LeakageError) as e:
        run_experiment(cache=cache, cv="logo", **TINY)
    msg = str(e.value)
    assert msg.startswith("duplicates leakage in fold")
    for k in ("exact_source", "exact_copy"):
        assert ids[k] in msg
    assert "(exact)" in msg and "--allow-leakage duplicates" in msg


def test_a_near_duplicate_alone_stops_the_run(dup_cache, registered):
    cache, ids = dup_cache

    def near_only(groups, y):  # speakers 01+02 (the exact pair) always on the same side
        g = np.asarray(groups)
        a = np.flatnonzero(np.isin(g, ["01", "02", "03"]))
        b = np.flatnonzero(g == "04")
        return [(a, b)]

    registered("near-only", near_only)
    with pytest.raises(LeakageError, match=r"near, distance 0\.0\d\d") as e:
        run_experiment(cache=cache, cv="near-only", **TINY)
    assert ids["near_source"] in str(e.value) and ids["near_copy"] in str(e.value) and ids["exact_copy"] not in str(e.value)


def test_allowed_duplicates_run_and_are_recorded(dup_cache, tmp_path):
    cache, ids = dup_cache
    notes = []
    res = run_experiment(cache=cache, cv="logo", allow_leakage="duplicates", echo=notes.append, **TINY)
    leak = res.report["leakage"]
    assert leak["allowed"] == ["duplicates"] and leak["checks"]["duplicates"] == "checked"
    # each pair is split by the two folds that test one of its speakers
    assert leak["n_allowed_violations"] == 4 and {v["kind"] for v in leak["allowed_violations"]} == {"duplicates"}
    assert sum(ids["exact_copy"] in v["what"] for v in leak["allowed_violations"]) == 2
    assert any("leakage allowed by allow_leakage (duplicates)" in n for n in notes)
    res.save(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["leakage"]["allowed"] == ["duplicates"]


def test_a_speaker_on_both_sides_of_a_user_split_stops_the_run(clean_cache, registered):
    def leaky(groups, y):  # a random split: every speaker on both sides
        perm = np.random.default_rng(0).permutation(len(groups))
        return [(np.sort(perm[::2]), np.sort(perm[1::2]))]

    registered("random-halves", leaky)
    with pytest.raises(LeakageError, match=r"speakers leakage in fold 0 \(random-halves\): speaker 01 is in the test part"):
        run_experiment(cache=clean_cache, cv="random-halves", **TINY)
    res = run_experiment(cache=clean_cache, cv="random-halves", allow_leakage=["speakers"], **TINY)
    assert sorted(v["what"].split()[1] for v in res.report["leakage"]["allowed_violations"]) == ["01", "02", "03", "04"]


def test_grid_search_inner_folds_are_checked(dup_cache, registered):
    cache, ids = dup_cache

    def outer(groups, y):  # each duplicated pair on one side: the outer fold is clean, the inner folds are not
        g = np.asarray(groups)
        return [(np.flatnonzero(np.isin(g, ["01", "02"])), np.flatnonzero(np.isin(g, ["03", "04"])))]

    registered("train-12", outer)
    run_experiment(cache=cache, cv="train-12", **TINY)  # no grid: clean
    with pytest.raises(LeakageError, match=r"duplicates leakage in fold 0 grid-search inner fold 0: ") as e:
        run_experiment(cache=cache, cv="train-12", grid="lr=1e-3,1e-2", **TINY)
    assert ids["exact_source"] in str(e.value) and ids["near_source"] not in str(e.value)


def test_validation_from_the_test_part_is_refused():
    from estimators.leakage import _Side

    S = _Side(np.array(["a", "b", "c", "d"]), np.array(["a.wav", "b.wav", "c.wav", "d.wav"]), np.array(["1", "2", "3", "4"]),
              np.array(["", "", "", ""], dtype=object), None)
    guard = LeakageGuard([])
    guard.check_split("fold 0", S, None, [0], [3], valid=[1])  # clean
    with pytest.raises(LeakageError, match=r"validation leakage in fold 1: validation utterance d \(d.wav\) is a test utterance"):
        LeakageGuard(["speakers"]).check_split("fold 1", S, None, [0], [2, 3], valid=[3])


def test_clean_corpus_passes_and_sentence_overlap_is_reported(clean_cache):
    notes = []
    res = run_experiment(cache=clean_cache, cv="groupkfold:2", echo=notes.append, **TINY)
    leak = res.report["leakage"]
    assert leak["allowed"] == [] and leak["allowed_violations"] == []
    assert leak["checks"]["duplicates"] == "checked" and leak["checks"]["speakers"] == "checked"
    s = leak["sentences"]
    assert s["column"] == "statement" and s["mean_test_share"] == 1.0 and len(s["per_fold"]) == 2
    assert s["per_fold"][0]["shared"] == ["Dogs are sitting by the door", "Kids are talking by the door"]
    assert any(n.startswith("sentence overlap (statement): on average 100%") for n in notes)
    assert not any("warning" in n for n in notes)  # no confounding, no duplicates: no false alarm


def test_speaker_normalisation_warns_on_a_confounded_corpus(tmp_path):
    cache = extract_mfcc("ravdess", write_confounded(tmp_path / "ravdess"), tmp_path / "cache")
    notes = []
    res = run_experiment(cache=cache, cv="groupkfold:2", normalize="speaker", echo=notes.append, **TINY)
    warn = [n for n in notes if n.startswith("warning:")]
    assert len(warn) == 1 and "4 speaker(s) carry one label" in warn[0] and "--normalize global" in warn[0]
    assert res.report["leakage"]["checks"]["confounded_speakers"].startswith("01 (neutral 100%)")
    notes.clear()
    run_experiment(cache=cache, cv="groupkfold:2", normalize="global", echo=notes.append, **TINY)
    assert not any(n.startswith("warning:") for n in notes)


def test_a_cache_without_fingerprints_is_run_with_a_note(tmp_path, monkeypatch):
    import featcache.pipeline as pipeline

    monkeypatch.setattr(pipeline, "FINGERPRINT_METHOD", None)  # shards as featcache 1.0 wrote them
    cache = extract_mfcc("ravdess", write_clean(tmp_path / "ravdess", actors=(1, 2, 3)), tmp_path / "cache")
    notes = []
    res = run_experiment(cache=cache, cv="groupkfold:3", echo=notes.append, **TINY)
    note = [n for n in notes if n.startswith("duplicates:")]
    assert len(note) == 1 and "24 utterance(s) have no content fingerprints" in note[0] and "re-extract" in note[0]
    assert res.report["leakage"]["checks"]["duplicates"].endswith("24 without fingerprints")


def test_cross_corpus_duplicates_are_refused(dup_cache, tmp_path):
    cache, ids = dup_cache
    root = tmp_path / "root"
    shutil.copytree(cache, root / "ravdess")
    other = tmp_path / "csvdata"
    other.mkdir()
    src = next((Path(json.loads((cache / "corpus.json").read_text())["data_dir"]) / "Actor_01").glob("03-01-01-*"))
    shutil.copy(src, other / "copy.flac")
    lines = ["path,speaker,label", "copy.flac,s1,neutral"]
    for k, lab in enumerate(["happy", "sad", "angry", "neutral", "happy", "sad"]):
        sf.write(other / f"f{k}.flac", speechlike(700 + k), SR, subtype="PCM_16")
        lines.append(f"f{k}.flac,s{2 + k % 2},{lab}")
    (other / "manifest.csv").write_text("\n".join(lines) + "\n")
    extract_mfcc("csv", other, root)
    with pytest.raises(LeakageError, match=rf"duplicates leakage in cross-corpus:ravdess->csv: training {src.stem} .* and test copy"):
        run_experiment(cache=root, cv="cross-corpus:ravdess->csv", **TINY)


def test_cli_fit_stops_and_allows(dup_cache, tmp_path):
    from cli.estimators import main

    cache, ids = dup_cache
    args = ["fit", "--cache", str(cache), "--features", "mfcc", "--cv", "logo", "--hidden", "8", "--max-epochs", "1",
            "--no-refit", "--device", "cpu", "-q"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 1 and "Error: duplicates leakage" in r.output and ids["exact_copy"] in r.output
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b"), "--allow-leakage", "duplicates"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["leakage"]["allowed"] == ["duplicates"] and "--allow-leakage duplicates" in rep["command"]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "c"), "--allow-leakage", "everything"])
    assert r.exit_code == 1 and "allow_leakage" in r.output


def test_parse_allow_leakage():
    assert parse_allow_leakage(None) == [] and parse_allow_leakage("") == []
    assert parse_allow_leakage(" speakers,duplicates ") == ["duplicates", "speakers"]
    assert parse_allow_leakage(("validation",)) == ["validation"]
    for bad in ("all", ["duplicate"], 3):
        with pytest.raises(ParameterError, match="duplicates, speakers, validation"):
            parse_allow_leakage(bad)
