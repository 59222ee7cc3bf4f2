"""The EMOVO and URDU loaders on small synthetic corpora named like the real ones."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from emovo_urdu_fixtures import EMOVO_CODES, write_emovo_like, write_urdu_like
from featcache.corpora import CorpusWarning, get_corpus, list_corpora
from featcache.errors import CorpusError

BASE = ["id", "path", "speaker", "label"]


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not audio")


@pytest.fixture(scope="module")
def emovo(tmp_path_factory) -> Path:
    root = write_emovo_like(tmp_path_factory.mktemp("emovo") / "emovo", speakers=("f1", "m2"), sentences=("b1", "n3"))
    _touch(root / "f1" / "xyz-f1-b1.wav")  # no such emotion
    _touch(root / "f1" / "dis-f4-b1.wav")  # no such actor
    _touch(root / "f1" / "dis-f1-z9.wav")  # no such sentence
    _touch(root / "m2" / "dis-f1-l2.wav")  # actor of the name is not its folder's
    _touch(root / "f1" / "readme.txt")  # not audio: ignored
    return root


@pytest.fixture(scope="module")
def urdu(tmp_path_factory) -> Path:
    root = write_urdu_like(tmp_path_factory.mktemp("urdu") / "urdu", {"SM1": 2, "SF11": 1})
    _touch(root / "Happy" / "SM1_F9_A009.wav")  # an angry name in the Happy folder
    _touch(root / "Sad" / "SX1_F1_S001.wav")  # gender letter X
    _touch(root / "Sad" / "SM1_F1_Q001.wav")  # emotion letter Q
    return root


def test_both_loaders_are_registered():
    assert {"emovo", "urdu"} <= set(list_corpora())
    for name in ("emovo", "urdu"):
        c = get_corpus(name)
        assert c.name == name and c.pattern and c.description


def test_emovo_table(emovo):
    with pytest.warns(CorpusWarning, match=r"4 file\(s\) .* emovo"):
        scan = get_corpus("emovo").scan(emovo)
    t = scan.table
    assert list(t.columns) == [*BASE, "emotion_code", "sentence", "gender", "duration"]
    assert len(t) == 2 * 7 * 2 and set(t["speaker"]) == {"f1", "m2"}
    # labels in the loaders' shared vocabulary (as RAVDESS names them), raw codes kept
    assert set(t["label"]) == {"neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"}
    row = t.set_index("id").loc["pau-m2-n3"]
    assert (row["speaker"], row["label"], row["emotion_code"], row["sentence"], row["gender"]) == ("m2", "fearful", "pau", "n3", "male")
    assert row["path"].startswith("m2/pau-m2-n3.") and row["duration"] > 0.4
    assert set(t.loc[t["speaker"] == "f1", "gender"]) == {"female"}
    assert dict(zip(t["emotion_code"], t["label"]))["gio"] == "happy" and set(t["emotion_code"]) == set(EMOVO_CODES)
    reasons = dict(scan.problems)
    assert sorted(reasons) == ["f1/dis-f1-z9.wav", "f1/dis-f4-b1.wav", "f1/xyz-f1-b1.wav", "m2/dis-f1-l2.wav"]
    assert "emotion code 'xyz'" in reasons["f1/xyz-f1-b1.wav"]
    assert "speaker code 'f4'" in reasons["f1/dis-f4-b1.wav"]
    assert "sentence code 'z9'" in reasons["f1/dis-f1-z9.wav"]
    assert "speaker folder 'm2'" in reasons["m2/dis-f1-l2.wav"]


def test_urdu_table(urdu):
    with pytest.warns(CorpusWarning, match=r"3 file\(s\) .* urdu"):
        scan = get_corpus("urdu").scan(urdu)
    t = scan.table
    assert list(t.columns) == [*BASE, "emotion_code", "gender", "file_number", "emotion_number", "duration"]
    assert len(t) == 4 * 2 + 4 * 1
    assert t["speaker"].value_counts().to_dict() == {"SM1": 8, "SF11": 4}  # uneven speakers
    assert set(t["label"]) == {"angry", "happy", "neutral", "sad"}
    row = t.set_index("id").loc["SF11_F3_S003"]  # its 3rd file, the 3rd sad one of the corpus
    assert (row["speaker"], row["label"], row["emotion_code"], row["gender"]) == ("SF11", "sad", "S", "female")
    assert (row["file_number"], row["emotion_number"]) == (3, 3) and row["path"] == "Sad/SF11_F3_S003.flac"
    assert t["file_number"].dtype == np.int64
    reasons = dict(scan.problems)
    assert sorted(reasons) == ["Happy/SM1_F9_A009.wav", "Sad/SM1_F1_Q001.wav", "Sad/SX1_F1_S001.wav"]
    assert "differs from its folder 'Happy'" in reasons["Happy/SM1_F9_A009.wav"]
    assert "emotion code 'Q'" in reasons["Sad/SM1_F1_Q001.wav"]


def test_flat_folders_parse_too(tmp_path):
    # the file names alone carry everything (a copy without the speaker / emotion folders)
    src = write_emovo_like(tmp_path / "e", speakers=("f3",), sentences=("l4",))
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in src.rglob("*.*"):
        p.rename(flat / p.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = get_corpus("emovo").scan(flat).table
    assert len(e) == 7 and set(e["speaker"]) == {"f3"}
    write_urdu_like(tmp_path / "u", {"SM27": 1})
    for p in (tmp_path / "u").rglob("*.flac"):
        p.rename(flat / p.name)
    with pytest.warns(CorpusWarning):  # the EMOVO files do not parse as URDU names
        u = get_corpus("urdu").scan(flat).table
    assert len(u) == 4 and set(u["speaker"]) == {"SM27"} and set(u["gender"]) == {"male"}


def test_folder_without_corpus_files(tmp_path):
    _touch(tmp_path / "f1" / "take1.wav")
    with pytest.raises(CorpusError, match="no emovo audio files .* EMOTION-SPEAKER-SENTENCE"):
        get_corpus("emovo").scan(tmp_path)
