"""Content fingerprints (format 1.1) and ``featcache audit``: duplicates, confounding, sources, plots."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf
import soxr
from click.testing import CliRunner

from leakage_fixtures import SR, extract_mfcc, plant_duplicates, speechlike, write_clean, write_confounded

from featcache.audit import audit, audit_lines, confounded_speakers, sentence_keys, write_audit
from featcache.errors import StoreError
from featcache.fingerprint import (
    FINGERPRINT_DIM,
    NEAR_DUPLICATE_DISTANCE,
    duplicate_groups,
    duplicate_pairs,
    fingerprint,
    pcm_sha256,
    read_fingerprints,
)
from featcache.store import FORMAT_VERSION, Shard, StoreReader, StoreWriter


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A clean corpus plus an exact and a near-duplicate copy under other speakers; its cache."""
    data = write_clean(tmp_path_factory.mktemp("audit_data") / "ravdess")
    ids = plant_duplicates(data)
    cache = extract_mfcc("ravdess", data, tmp_path_factory.mktemp("audit_cache"))
    return data, cache, ids


@pytest.fixture(scope="module")
def clean_cache(tmp_path_factory):
    data = write_clean(tmp_path_factory.mktemp("clean_data") / "ravdess")
    return extract_mfcc("ravdess", data, tmp_path_factory.mktemp("clean_cache"))


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_matches_copies_and_separates_recordings():
    x = speechlike(11)
    fp = fingerprint(x, SR)
    assert fp.shape == (FINGERPRINT_DIM,) and fp.dtype == np.float32 and np.isclose(np.linalg.norm(fp), 1, atol=1e-5)
    copies = {
        "gain -14 dB": x * 0.2,
        "resampled to 8 kHz": soxr.resample(x, SR, 8000),
        "resampled to 44.1 kHz": soxr.resample(x, SR, 44100),
    }
    rates = {"resampled to 8 kHz": 8000, "resampled to 44.1 kHz": 44100}
    for what, y in copies.items():
        d = np.linalg.norm(fingerprint(y, rates.get(what, SR)) - fp)
        assert d < NEAR_DUPLICATE_DISTANCE / 2, (what, d)
    # another take: same generator, other timing and pitch
    assert np.linalg.norm(fingerprint(speechlike(12), SR) - fp) > 2 * NEAR_DUPLICATE_DISTANCE
    assert np.isnan(fingerprint(np.zeros(SR, np.float32), SR)).all()  # digital silence: never a near-duplicate


def test_pcm_hash_is_of_the_decoded_samples(tmp_path):
    x = np.round(speechlike(3) * 32767).astype(np.int16)  # one recording's samples, in two containers
    sf.write(tmp_path / "a.wav", x, SR, subtype="PCM_16")
    sf.write(tmp_path / "a.flac", x, SR, subtype="PCM_16")
    a, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    b, _ = sf.read(tmp_path / "a.flac", dtype="float32")
    assert pcm_sha256(a) == pcm_sha256(b) != pcm_sha256(a * 0.5)


def test_duplicate_groups_join_chains():
    assert duplicate_groups(5, [(0, 3), (3, 4)]) == [[0, 3, 4]]
    assert duplicate_groups(3, []) == []


# --------------------------------------------------------------------------- the store format


def test_shards_hold_fingerprints_since_version_1_1(planted):
    data, cache, ids = planted
    reader = StoreReader(cache / "mfcc")
    sha, vec, method = reader.shard(0).fingerprints()
    assert FORMAT_VERSION in ("1.1", "1.2") and reader.info["format_version"] == FORMAT_VERSION
    assert len(sha) == len(reader.shard(0).ids) and vec.shape == (len(sha), FINGERPRINT_DIM)
    fp = read_fingerprints(cache)
    assert len(fp) == len(reader.ids) and not fp.missing
    a = fp.ids.index(ids["exact_source"])
    assert fp.sha256[a] == fp.sha256[fp.ids.index(ids["exact_copy"])]


def test_a_1_0_shard_is_still_read_and_has_no_fingerprints(tmp_path):
    desc = {"name": "toy", "n_layers": 1, "dim": 2, "dtype": "float32", "frame_rate": 100.0, "params": {}}
    w = StoreWriter(tmp_path / "s", desc, {"max_seconds": None})  # no fingerprint method: none stored
    w.add("u1", np.ones((3, 2), np.float32), 1.0, 1.0, pcm_sha256="ab", fingerprint=np.ones(4))
    w.close()
    path = tmp_path / "s" / "shard-00000.h5"
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = "1.0"
    sh = Shard(path)
    assert sh.ids == ["u1"] and sh.fingerprints() is None


def test_fingerprints_of_unknown_utterances_are_nan_rows(tmp_path):
    desc = {"name": "toy", "n_layers": 1, "dim": 2, "dtype": "float32", "frame_rate": 100.0, "params": {}}
    w = StoreWriter(tmp_path / "s", desc, {"max_seconds": None}, fingerprint_method="m")
    w.add("u1", np.ones((3, 2), np.float32), 1.0, 1.0, pcm_sha256="ab", fingerprint=np.arange(4.0))
    w.add("u2", np.ones((3, 2), np.float32), 1.0, 1.0)
    with pytest.raises(StoreError, match="fingerprint of 3 values"):
        w.add("u3", np.ones((3, 2), np.float32), 1.0, 1.0, fingerprint=np.ones(3))
    w.close()
    sha, vec, method = Shard(tmp_path / "s" / "shard-00000.h5").fingerprints()
    assert sha == ["ab", ""] and method == "m" and vec[0].tolist() == [0, 1, 2, 3] and np.isnan(vec[1]).all()


# --------------------------------------------------------------------------- audit


def test_audit_names_the_planted_duplicates_and_nothing_else(planted):
    data, cache, ids = planted
    s = audit([cache])
    groups = s["duplicates"]["groups"]
    got = {g["kind"]: sorted(m["id"] for m in g["members"]) for g in groups}
    assert len(groups) == 2, groups  # the clean recordings: no false alarm
    assert got["exact"] == sorted([ids["exact_source"], ids["exact_copy"]])
    assert got["near"] == sorted([ids["near_source"], ids["near_copy"]])
    assert all(g["cross_speaker"] and not g["cross_corpus"] for g in groups)
    text = "\n".join(audit_lines(s))
    assert f"Actor_02/{ids['exact_copy']}.wav" in text and f"Actor_04/{ids['near_copy']}.wav" in text


def test_audit_tables_sources_and_levels(planted):
    data, cache, ids = planted
    c = audit([cache])["caches"][0]
    assert c["n_utterances"] == 34 and c["n_speakers"] == 4
    m = np.asarray(c["counts"]["matrix"])
    assert m.sum() == 34 and c["counts"]["speakers"] == ["01", "02", "03", "04"]
    assert c["labels"]["happy"] == 9 and c["labels"]["sad"] == 9
    assert c["sources"]["rates"] == {"16000": 33, "22050": 1} and c["sources"]["channels"] == {"1": 34}
    assert c["levels"]["n_files"] == 34 and c["levels"]["clipped_files"] == {}
    assert c["durations"]["per_label"]["happy"]["n"] == 9
    assert c["sentences"] == {"column": "statement", "n_distinct": 2, "n_known": 34}
    assert c["confounding"]["speakers"] == [] and c["failed"]["n"] == 0


def test_audit_finds_clipping_and_silence(tmp_path):
    data = write_clean(tmp_path / "ravdess", actors=(1, 2), emotions=(1, 3))
    loud = data / "Actor_01" / "03-01-03-01-01-01-01.flac"
    x, _ = sf.read(loud, dtype="float32")
    sf.write(loud, np.clip(4 * x, -1, 1), SR, subtype="PCM_16")
    sf.write(data / "Actor_02" / "03-01-01-02-01-01-02.flac", np.zeros(SR, np.float32), SR, subtype="PCM_16")
    lev = audit([extract_mfcc("ravdess", data, tmp_path / "cache")])["caches"][0]["levels"]
    assert list(lev["clipped_files"]) == ["03-01-03-01-01-01-01"] and lev["clipped_files"]["03-01-03-01-01-01-01"] > 0.01
    assert lev["digital_silence"] == ["03-01-01-02-01-01-02"] and lev["mostly_silent"]["03-01-01-02-01-01-02"] == 1.0


def test_speaker_label_confounding(tmp_path):
    cache = extract_mfcc("ravdess", write_confounded(tmp_path / "ravdess"), tmp_path / "cache")
    s = audit([cache])
    conf = s["caches"][0]["confounding"]
    assert [(c["speaker"], c["label"], c["share"]) for c in conf["speakers"]] == [
        ("01", "neutral", 1.0), ("02", "calm", 1.0), ("03", "happy", 1.0), ("04", "sad", 1.0)]
    assert "speaker normalisation" in conf["note"] and "split" in conf["note"]
    assert "SPEAKER-LABEL CONFOUNDING: 01 (neutral 100%)" in "\n".join(audit_lines(s))
    # 8 of 10 is under the share; a speaker with 2 utterances says nothing
    assert confounded_speakers(["a"] * 10 + ["b"] * 2, ["x"] * 8 + ["y"] * 2 + ["z"] * 2) == []


def test_duplicates_across_caches(tmp_path, planted):
    data, cache, ids = planted
    other = tmp_path / "csvdata"
    other.mkdir()
    shutil.copy(data / "Actor_03" / f"{ids['near_source']}.flac", other / "x.flac")
    x = speechlike(99)
    sf.write(other / "y.flac", x, SR, subtype="PCM_16")
    (other / "manifest.csv").write_text("path,speaker,label\nx.flac,s1,sad\ny.flac,s2,happy\n")
    cache2 = extract_mfcc("csv", other, tmp_path / "c2")
    groups = audit([cache, cache2])["duplicates"]["groups"]
    cross = [g for g in groups if g["cross_corpus"]]
    assert len(cross) == 1 and {(m["corpus"], m["id"]) for m in cross[0]["members"]} >= {("ravdess", ids["near_source"]), ("csv", "x")}
    assert len(groups) == 2  # the exact pair of the planted cache, and the near group now holding three files


def test_audit_says_what_it_cannot_do(tmp_path, monkeypatch):
    import featcache.pipeline as pipeline

    data = write_clean(tmp_path / "ravdess", actors=(1, 2), emotions=(1, 3))
    monkeypatch.setattr(pipeline, "FINGERPRINT_METHOD", None)  # as a 1.0 extraction: no fingerprints
    cache = extract_mfcc("ravdess", data, tmp_path / "cache")
    shutil.rmtree(data)
    c = audit([cache])["caches"][0]
    assert c["sources"] is None and c["levels"] is None and c["fingerprints"] == {"n": 0, "missing": 8}
    notes = " ".join(c["notes"])
    assert "is not there any more" in notes and "no content fingerprints" in notes and "re-extract" in notes


def test_sentence_keys_of_iemocap_scripts():
    import pandas as pd

    tab = pd.DataFrame({"mode": ["scripted", "scripted", "improvised"], "dialog": ["Ses01F_script01_1", "Ses03M_script01_1", "Ses01F_impro01"]})
    col, keys = sentence_keys(tab)
    assert col == "dialog (scripted)" and keys.tolist() == ["script01_1", "script01_1", ""]


def test_cli_audit_writes_plots_and_json(planted, tmp_path):
    from cli.featcache import main

    data, cache, ids = planted
    r = CliRunner().invoke(main, ["audit", str(cache), "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "2 group(s)" in r.output and "exact (across speakers)" in r.output
    for name in ("ravdess_counts.png", "ravdess_durations.png"):
        assert (tmp_path / "a" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert doc["duplicates"]["n_exact_pairs"] == 1 and doc["duplicates"]["n_near_pairs"] == 1
    r = CliRunner().invoke(main, ["audit", str(cache), "--json", "--no-audio"])
    assert r.exit_code == 0 and json.loads(r.output)["caches"][0]["levels"] is None
    r = CliRunner().invoke(main, ["audit", str(tmp_path)])
    assert r.exit_code == 1 and "Error:" in r.output and "no featcache corpus cache" in r.output


def test_clean_corpus_has_no_duplicates(clean_cache):
    fp = read_fingerprints(clean_cache)
    assert len(fp) == 32 and duplicate_pairs(fp) == []
    assert write_audit(audit([clean_cache], read_audio=False), clean_cache.parent / "out")[-1].name == "audit.json"
