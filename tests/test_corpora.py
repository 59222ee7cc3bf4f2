"""Tests of featcache.corpora on small synthetic corpora named like the real ones."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from featcache.corpora import (
    LABEL_MAPS,
    Corpus,
    CorpusScan,
    CorpusWarning,
    apply_label_map,
    get_corpus,
    list_corpora,
    register_corpus,
)
from featcache.corpora import base as corpora_base
from featcache.errors import CorpusError, ParameterError

SR = 16000
BASE = ["id", "path", "speaker", "label"]


def _write(path: Path, seconds: float = 0.25) -> None:
    """Short sine + noise; the format follows the extension (wav or flac)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    rng = np.random.default_rng(n)
    signal = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    soundfile.write(str(path), signal.astype(np.float32), SR, format=fmt, subtype="PCM_16")


def _touch(path: Path, content: bytes = b"not audio at all") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _scan_clean(name: str, folder: Path) -> CorpusScan:
    """Scan that must emit no warning at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return get_corpus(name).scan(folder)


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("corpora")
    # RAVDESS: speech and song, wav and flac, upper-case extension, one unreadable file.
    rav = r / "ravdess"
    _write(rav / "Actor_01" / "03-01-05-02-01-01-01.wav", 0.25)
    _write(rav / "Actor_02" / "03-02-02-01-02-02-02.flac", 0.5)
    _write(rav / "Actor_02" / "03-01-01-01-01-01-02.WAV", 0.125)
    _touch(rav / "Actor_01" / "03-01-03-01-01-01-01.wav")  # valid name, unreadable header
    _touch(rav / "Actor_01" / "03-01-09-01-01-01-01.wav")  # emotion 09 does not exist
    _touch(rav / "Actor_01" / "recording.wav")
    _touch(rav / "Actor_01" / "notes.txt")  # not audio: ignored
    _touch(rav / "Actor_01" / "._03-01-05-02-01-01-01.wav")  # macOS resource fork
    _touch(rav / "__MACOSX" / "Actor_01" / "03-01-05-02-01-01-01.wav")
    # RAVDESS as unpacked from the two official zips.
    zipped = r / "ravdess_zips"
    _write(zipped / "Audio_Speech_Actors_01-24" / "Actor_03" / "03-01-04-01-01-01-03.wav")
    _write(zipped / "Audio_Song_Actors_01-24" / "Actor_03" / "03-02-04-01-01-01-03.flac")
    # Same utterance twice.
    _write(r / "ravdess_dup" / "Actor_01" / "03-01-01-01-01-01-01.wav")
    _write(r / "ravdess_dup" / "Actor_01" / "03-01-01-01-01-01-01.flac")
    # Folders without corpus files.
    _touch(r / "empty" / "readme.txt")
    _touch(r / "only_bad" / "Actor_01" / "take1.wav")
    # EmoDB.
    _write(r / "emodb" / "wav" / "03a01Wa.wav", 0.25)
    _write(r / "emodb" / "wav" / "16b10Lb.flac", 0.5)
    _touch(r / "emodb" / "wav" / "08a02Xa.wav")
    # TESS (folder names vary; only the file name counts).
    _write(r / "tess" / "OAF_angry" / "OAF_back_angry.wav")
    _write(r / "tess" / "YAF_pleasant_surprised" / "YAF_date_ps.flac")
    _write(r / "tess" / "OAF_Fear" / "OAF_bite_fear.wav")
    _touch(r / "tess" / "OAF_Fear" / "XYZ_back_angry.wav")
    _touch(r / "tess" / "OAF_Fear" / "OAF_back_bored.wav")
    # SAVEE, both layouts in one folder.
    _write(r / "savee" / "DC_a01.wav")
    _write(r / "savee" / "JK_sa15.flac")
    _write(r / "savee" / "AudioData" / "KL" / "su03.wav")
    _write(r / "savee" / "AudioData" / "JE" / "n30.wav")
    _touch(r / "savee" / "AudioData" / "ZZ" / "a01.wav")
    _touch(r / "savee" / "DC_x01.wav")
    # CREMA-D.
    _write(r / "cremad" / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    _write(r / "cremad" / "AudioWAV" / "1091_IEO_HAP_HI.flac")
    _write(r / "cremad" / "AudioWAV" / "1002_TIE_NEU_LO.wav")
    _touch(r / "cremad" / "AudioWAV" / "1001_DFA_BOR_XX.wav")
    _touch(r / "cremad" / "AudioWAV" / "1001_DFA_ANG.wav")
    return r


# -- registry ---------------------------------------------------------------------------


def test_registry_lists_every_loader() -> None:
    assert list_corpora() == ["cremad", "csv", "emodb", "emovo", "iemocap", "ravdess", "savee", "tess", "urdu"]
    for name in list_corpora():
        corpus = get_corpus(name)
        assert isinstance(corpus, Corpus)
        assert corpus.name == name
        assert corpus.pattern and corpus.description


def test_unknown_corpus_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="one of cremad, csv, .*tess") as info:
        get_corpus("ravdes")
    assert info.value.name == "corpus" and info.value.given == "ravdes"
    with pytest.raises(ParameterError, match="label map"):
        get_corpus("ravdess7")


def test_register_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora_base, "_REGISTRY", dict(corpora_base._REGISTRY))

    class Mine(Corpus):
        name = "mine"

    mine = register_corpus(Mine())
    assert get_corpus("mine") is mine and "mine" in list_corpora()
    with pytest.raises(ParameterError, match="not registered yet"):
        register_corpus(Mine())
    other = register_corpus(Mine(), replace=True)
    assert get_corpus("mine") is other
    with pytest.raises(ParameterError):
        register_corpus("ravdess")  # type: ignore[arg-type]


# -- RAVDESS ----------------------------------------------------------------------------


def test_ravdess_table(root: Path) -> None:
    with pytest.warns(CorpusWarning, match=r"2 file\(s\) .* ravdess"):
        scan = get_corpus("ravdess").scan(root / "ravdess")
    t = scan.table
    ravdess = get_corpus("ravdess")
    assert list(t.columns) == [*BASE, *ravdess.fields, "duration"]
    assert ravdess.fields == (
        "modality", "vocal_channel", "emotion", "intensity", "statement", "repetition",
        "actor", "gender",
    )  # fmt: skip
    assert t["id"].tolist() == [
        "03-01-01-01-01-01-02",
        "03-01-03-01-01-01-01",
        "03-01-05-02-01-01-01",
        "03-02-02-01-02-02-02",
    ]
    by_id = t.set_index("id")
    row = by_id.loc["03-01-05-02-01-01-01"]
    assert row["path"] == "Actor_01/03-01-05-02-01-01-01.wav"
    assert (row["speaker"], row["label"], row["emotion"]) == ("01", "angry", "angry")
    assert (row["modality"], row["vocal_channel"], row["intensity"]) == (
        "audio-only", "speech", "strong",
    )  # fmt: skip
    assert row["statement"] == "Kids are talking by the door"
    assert (row["repetition"], row["actor"], row["gender"]) == (1, 1, "male")
    assert row["duration"] == pytest.approx(0.25)
    song = by_id.loc["03-02-02-01-02-02-02"]
    assert (song["vocal_channel"], song["label"], song["speaker"]) == ("song", "calm", "02")
    assert song["statement"] == "Dogs are sitting by the door"
    assert (song["repetition"], song["gender"]) == (2, "female")
    assert song["path"].endswith(".flac") and song["duration"] == pytest.approx(0.5)
    upper = by_id.loc["03-01-01-01-01-01-02"]
    assert upper["path"] == "Actor_02/03-01-01-01-01-01-02.WAV"
    assert upper["duration"] == pytest.approx(0.125)
    assert math.isnan(by_id.loc["03-01-03-01-01-01-01", "duration"])  # kept, duration NaN
    assert t["duration"].dtype == np.float64
    assert [p for p, _ in scan.problems] == [
        "Actor_01/03-01-09-01-01-01-01.wav",
        "Actor_01/recording.wav",
    ]
    assert "emotion code '09'" in scan.problems[0][1]
    assert "MM-VV-EE-II-SS-RR-AA" in scan.problems[1][1]
    assert scan.dropped == {}


def test_ravdess_official_zip_layout(root: Path) -> None:
    scan = _scan_clean("ravdess", root / "ravdess_zips")
    t = scan.table
    assert t["id"].tolist() == ["03-01-04-01-01-01-03", "03-02-04-01-01-01-03"]
    assert t["path"].tolist() == [
        "Audio_Speech_Actors_01-24/Actor_03/03-01-04-01-01-01-03.wav",
        "Audio_Song_Actors_01-24/Actor_03/03-02-04-01-01-01-03.flac",
    ]
    assert t["vocal_channel"].tolist() == ["speech", "song"]
    assert set(t["speaker"]) == {"03"} and scan.problems == []
    for rel in t["path"]:
        assert get_corpus("ravdess").resolve(root / "ravdess_zips", rel).is_file()


def test_duplicate_ids(root: Path) -> None:
    with pytest.raises(CorpusError, match="duplicate") as info:
        get_corpus("ravdess").scan(root / "ravdess_dup")
    message = str(info.value)
    assert "03-01-01-01-01-01-01" in message
    assert "Actor_01/03-01-01-01-01-01-01.flac" in message
    assert "Actor_01/03-01-01-01-01-01-01.wav" in message


@pytest.mark.parametrize("name", ["ravdess", "emodb", "tess", "savee", "cremad", "iemocap"])
def test_folder_without_corpus_files(root: Path, name: str) -> None:
    corpus = get_corpus(name)
    with pytest.raises(CorpusError) as info:
        corpus.scan(root / "empty")
    assert str(root / "empty") in str(info.value)
    assert corpus.pattern in str(info.value)
    with pytest.raises(CorpusError, match="does not exist") as info:
        corpus.scan(root / "no_such_folder")
    assert str(root / "no_such_folder") in str(info.value)


def test_only_unparsable_files_is_an_error(root: Path) -> None:
    with pytest.raises(CorpusError, match="did not parse, e.g. Actor_01/take1.wav"):
        get_corpus("ravdess").scan(root / "only_bad")


# -- EmoDB, TESS, SAVEE, CREMA-D ---------------------------------------------------------


def _scan_with_problems(name: str, folder: Path, count: int) -> CorpusScan:
    with pytest.warns(CorpusWarning, match=rf"^{count} file\(s\)"):
        scan = get_corpus(name).scan(folder)
    assert len(scan.problems) == count
    assert list(scan.table.columns) == [*BASE, *get_corpus(name).fields, "duration"]
    assert set(scan.table["label"]) <= set(get_corpus(name).classes)
    return scan


def test_emodb(root: Path) -> None:
    scan = _scan_with_problems("emodb", root / "emodb", 1)
    t = scan.table.set_index("id")
    assert t.index.tolist() == ["03a01Wa", "16b10Lb"]
    assert t.loc["03a01Wa", ["path", "speaker", "label", "emotion_code", "text", "version",
                             "gender"]].tolist() == [
        "wav/03a01Wa.wav", "03", "angry", "W", "a01", "a", "male",
    ]  # fmt: skip
    assert t.loc["16b10Lb", ["speaker", "label", "text", "gender"]].tolist() == [
        "16", "bored", "b10", "female",
    ]  # fmt: skip
    assert t.loc["16b10Lb", "duration"] == pytest.approx(0.5)
    assert scan.problems[0][0] == "wav/08a02Xa.wav"
    assert "emotion code 'X'" in scan.problems[0][1]


def test_tess(root: Path) -> None:
    scan = _scan_with_problems("tess", root / "tess", 2)
    t = scan.table.set_index("id")
    assert t.index.tolist() == ["OAF_back_angry", "OAF_bite_fear", "YAF_date_ps"]
    assert t["label"].tolist() == ["angry", "fearful", "surprised"]
    assert t["speaker"].tolist() == ["OAF", "OAF", "YAF"]
    assert t["age"].tolist() == ["older", "older", "younger"]
    assert t.loc["YAF_date_ps", ["emotion_code", "word", "path"]].tolist() == [
        "ps", "date", "YAF_pleasant_surprised/YAF_date_ps.flac",
    ]  # fmt: skip
    problems = dict(scan.problems)
    assert "OAF or YAF" in problems["OAF_Fear/XYZ_back_angry.wav"]
    assert "emotion code 'bored'" in problems["OAF_Fear/OAF_back_bored.wav"]


def test_savee_both_layouts(root: Path) -> None:
    scan = _scan_with_problems("savee", root / "savee", 2)
    t = scan.table.set_index("id")
    assert t.index.tolist() == ["DC_a01", "JE_n30", "JK_sa15", "KL_su03"]
    assert t["speaker"].tolist() == ["DC", "JE", "JK", "KL"]
    assert t["label"].tolist() == ["angry", "neutral", "sad", "surprised"]
    assert t["sentence"].tolist() == ["a01", "n30", "sa15", "su03"]
    assert t.loc["KL_su03", "path"] == "AudioData/KL/su03.wav"
    assert t.loc["DC_a01", "path"] == "DC_a01.wav"
    problems = dict(scan.problems)
    assert "speaker folder" in problems["AudioData/ZZ/a01.wav"]
    assert "emotion code 'x'" in problems["DC_x01.wav"]


def test_cremad(root: Path) -> None:
    scan = _scan_with_problems("cremad", root / "cremad", 2)
    t = scan.table.set_index("id")
    assert t.index.tolist() == ["1001_DFA_ANG_XX", "1002_TIE_NEU_LO", "1091_IEO_HAP_HI"]
    assert t["speaker"].tolist() == ["1001", "1002", "1091"]
    assert t["label"].tolist() == ["angry", "neutral", "happy"]
    assert t["level"].tolist() == ["unspecified", "low", "high"]
    assert t.loc["1001_DFA_ANG_XX", "statement"] == "Don't forget a jacket"
    assert t.loc["1091_IEO_HAP_HI", "sentence"] == "IEO"
    problems = dict(scan.problems)
    assert "emotion code 'BOR'" in problems["AudioWAV/1001_DFA_BOR_XX.wav"]
    assert "ACTOR_SENTENCE_EMOTION_LEVEL" in problems["AudioWAV/1001_DFA_ANG.wav"]


# -- IEMOCAP ----------------------------------------------------------------------------

_EMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _emo_block(start: float, end: float, utt: str, emo: str, vad: tuple[float, ...]) -> str:
    v, a, d = (f"{x:.4f}" for x in vad)
    return (
        f"[{start:.4f} - {end:.4f}]\t{utt}\t{emo}\t[{v}, {a}, {d}]\n"
        "C-E1:\tNeutral state;\t()\nA-E2:\tval 3; act 2; dom  2;\t()\n\n"
    )


@pytest.fixture(scope="session")
def iemocap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("iemocap")
    top = r / "IEMOCAP_full_release"  # Session folders one level below data_dir
    s1 = top / "Session1"
    wav1 = s1 / "sentences" / "wav"
    for utt in ("F000", "M001", "F002", "M003", "F009"):
        _write(wav1 / "Ses01F_impro01" / f"Ses01F_impro01_{utt}.wav", 0.25)
    _write(wav1 / "Ses01F_script01_1" / "Ses01F_script01_1_M010.wav", 0.5)
    emo = s1 / "dialog" / "EmoEvaluation"
    _touch(
        emo / "Ses01F_impro01.txt",
        (
            _EMO_HEADER
            + _emo_block(6.2901, 8.2357, "Ses01F_impro01_F000", "neu", (2.5, 2.5, 2.5))
            + _emo_block(10.01, 11.3925, "Ses01F_impro01_M001", "exc", (4.0, 3.5, 3.0))
            + _emo_block(14.8872, 18.0175, "Ses01F_impro01_F002", "sad", (1.5, 2.0, 2.5))
            + _emo_block(19.29, 20.88, "Ses01F_impro01_M003", "fru", (2.0, 3.5, 3.5))
            + _emo_block(21.0, 22.5, "Ses01F_impro01_F004", "ang", (2.0, 4.0, 4.0))
        ).encode(),
    )  # F004 has no wav; F009 has no label line
    _touch(
        emo / "Ses01F_script01_1.txt",
        (
            _EMO_HEADER
            + _emo_block(1.0, 2.0, "Ses01F_script01_1_M010", "hap", (4.0, 3.0, 3.0))
            + _emo_block(3.0, 4.0, "Ses01F_script01_1_F011", "xxx", (3.0, 3.0, 3.0))
        ).encode(),
    )
    _touch(emo / "Categorical" / "Ses01F_impro01_e1_cat.txt", b"Ses01F_impro01_F000 :Anger; ()\n")
    s2 = top / "Session2"
    _write(s2 / "sentences" / "wav" / "Ses02M_impro02" / "Ses02M_impro02_F000.flac", 0.125)
    _touch(
        s2 / "dialog" / "EmoEvaluation" / "Ses02M_impro02.txt",
        (_EMO_HEADER + _emo_block(0.5, 1.25, "Ses02M_impro02_F000", "ang", (1, 4.5, 4))).encode(),
    )
    return r


def test_iemocap(iemocap: Path) -> None:
    corpus = get_corpus("iemocap")
    assert set(corpus.classes) == {"neu", "hap", "ang", "sad"}
    with pytest.warns(CorpusWarning, match=r"^2 file\(s\)"):
        scan = corpus.scan(iemocap)
    t = scan.table
    assert list(t.columns) == [*BASE, *corpus.fields, "duration"]
    assert t["id"].tolist() == [
        "Ses01F_impro01_F000",
        "Ses01F_impro01_F002",
        "Ses01F_impro01_M001",
        "Ses01F_script01_1_M010",
        "Ses02M_impro02_F000",
    ]
    assert t["label"].tolist() == ["neu", "sad", "hap", "hap", "ang"]
    assert t["emotion_raw"].tolist() == ["neu", "sad", "exc", "hap", "ang"]
    assert t["speaker"].tolist() == ["Ses01F", "Ses01F", "Ses01M", "Ses01M", "Ses02F"]
    assert t["session"].tolist() == [1, 1, 1, 1, 2]
    assert t["mode"].tolist() == ["improvised"] * 3 + ["scripted", "improvised"]
    assert t["dialog"].tolist()[3] == "Ses01F_script01_1"
    row = t.set_index("id").loc["Ses01F_impro01_M001"]
    assert row["path"] == (
        "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav"
    )
    assert (row["valence"], row["activation"], row["dominance"]) == (4.0, 3.5, 3.0)
    assert (row["start"], row["end"], row["gender"]) == (10.01, 11.3925, "male")
    assert t["duration"].tolist() == pytest.approx([0.25, 0.25, 0.25, 0.5, 0.125])
    assert scan.dropped == {"fru": 1, "xxx": 1}
    problems = dict(scan.problems)
    assert set(problems) == {
        "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F004.wav",
        "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F009.wav",
    }
    assert "audio file is missing" in problems[min(problems)]
    assert "no label" in problems[max(problems)]


# -- CSV manifests ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("csvcorpus")
    _write(r / "audio" / "a.wav", 0.25)
    _write(r / "audio" / "b.flac", 0.5)
    _write(r / "sub" / "c.wav", 0.125)
    outside = tmp_path_factory.mktemp("elsewhere") / "d.wav"
    _write(outside, 0.25)
    (r / "manifest.csv").write_text(
        "path,speaker,label,valence,arousal,split\n"
        "./audio/a.wav,s1,happy,0.75,0.5,train\n"
        "audio/b.flac,s2,,0.25,,test\n"
        f"{r / 'sub' / 'c.wav'},s1,sad,-0.5,0.125,train\n"
        f"{outside},s3,happy,1,1,test\n"
        "audio/missing.wav,s2,sad,0,0,train\n"
    )
    return r


def test_csv_manifest(manifest: Path) -> None:
    corpus = get_corpus("csv")
    with pytest.warns(CorpusWarning, match=r"^2 file\(s\)"):
        scan = corpus.scan(manifest / "manifest.csv")
    t = scan.table
    assert list(t.columns) == [*BASE, "valence", "arousal", "split", "duration"]
    # Sorted by id; the file outside the manifest's folder keeps its absolute path (and id).
    outside = t["path"].iloc[0]
    assert Path(outside).is_absolute() and outside.endswith("/d.wav")
    assert t["id"].iloc[0] == outside.removesuffix(".wav")
    # b.flac (empty label and arousal cells) is left out and listed (issue 18)
    assert t["path"].tolist()[1:] == ["audio/a.wav", "sub/c.wav"]
    assert t["id"].tolist()[1:] == ["audio/a", "sub/c"]
    assert t["speaker"].tolist() == ["s3", "s1", "s1"]
    assert t["label"].tolist() == ["happy", "happy", "sad"]
    assert t["valence"].dtype == np.float64 and t["arousal"].dtype == np.float64
    assert t["valence"].tolist() == [1.0, 0.75, -0.5]
    assert t["arousal"].tolist() == [1.0, 0.5, 0.125]
    assert t["split"].tolist() == ["test", "train", "train"]
    assert t["duration"].tolist() == pytest.approx([0.25, 0.25, 0.125])
    for rel in t["path"]:
        assert corpus.resolve(manifest / "manifest.csv", rel).is_file()
        assert corpus.resolve(manifest, rel).is_file()
    assert scan.problems == [
        ("audio/b.flac", "missing value in column(s) label, arousal (manifest.csv line 3)"),
        ("audio/missing.wav", "file does not exist (manifest.csv line 6)"),
    ]
    # The folder designates its manifest.csv: same table.
    with pytest.warns(CorpusWarning):
        pd.testing.assert_frame_equal(corpus.scan(manifest).table, t)


def test_csv_numeric_targets_only_and_ids(tmp_path: Path) -> None:
    _write(tmp_path / "x.wav")
    _write(tmp_path / "y.wav")
    (tmp_path / "targets.csv").write_text("id,path,speaker,valence\nu1,x.wav,a,.5\nu2,y.wav,b,.1\n")
    t = _scan_clean("csv", tmp_path).table  # the only *.csv of the folder
    assert t["id"].tolist() == ["u1", "u2"]
    assert t["label"].isna().all() and t["valence"].tolist() == [0.5, 0.1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,label\nx.wav,happy\n", "lacks column.*speaker"),
        ("path,speaker,group\nx.wav,a,g1\n", "neither a label column nor a numeric"),
        ("id,path,speaker,label\nu,x.wav,a,happy\nu,y.wav,b,sad\n", "duplicate csv id.*u "),
        ("path,speaker,label\nnope.wav,a,happy\n", "no usable row.*nope.wav"),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    _write(tmp_path / "x.wav")
    _write(tmp_path / "y.wav")
    (tmp_path / "m.csv").write_text(content)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        with pytest.raises(CorpusError, match=message):
            get_corpus("csv").scan(tmp_path / "m.csv")


def test_csv_manifest_location_errors(tmp_path: Path) -> None:
    corpus = get_corpus("csv")
    with pytest.raises(CorpusError, match="does not exist"):
        corpus.scan(tmp_path / "absent.csv")
    with pytest.raises(CorpusError, match=f"no CSV manifest found in {tmp_path}"):
        corpus.scan(tmp_path)
    (tmp_path / "a.csv").write_text("path,speaker,label\n")
    (tmp_path / "b.csv").write_text("path,speaker,label\n")
    with pytest.raises(CorpusError, match="2 CSV files.*a.csv, b.csv"):
        corpus.scan(tmp_path)


# -- label maps -------------------------------------------------------------------------


def test_ravdess7_label_map(root: Path) -> None:
    assert set(LABEL_MAPS["ravdess7"]) == set(get_corpus("ravdess").classes)
    assert len(set(LABEL_MAPS["ravdess7"].values())) == 7
    labels = pd.Series(["calm", "neutral", "angry", None], index=[10, 11, 12, 13], name="label")
    mapped = apply_label_map(labels, "ravdess7")
    assert isinstance(mapped, pd.Series)
    assert mapped.index.tolist() == [10, 11, 12, 13] and mapped.name == "label"
    assert mapped.tolist()[:3] == ["neutral", "neutral", "angry"] and pd.isna(mapped.iloc[3])
    assert apply_label_map(["calm", "sad"], "ravdess7") == ["neutral", "sad"]
    with pytest.warns(CorpusWarning):
        table = get_corpus("ravdess").scan(root / "ravdess").table
    assert "calm" in set(table["label"])
    assert "calm" not in set(apply_label_map(table["label"], "ravdess7"))


def test_label_map_errors() -> None:
    with pytest.raises(ParameterError, match=r"\['bored'\]"):
        apply_label_map(["calm", "bored"], "ravdess7")
    assert apply_label_map(["calm", "bored"], "ravdess7", missing="keep") == ["neutral", "bored"]
    assert apply_label_map(["a", "b"], {"a": "x", "b": "x"}) == ["x", "x"]
    with pytest.raises(ParameterError, match="label map must be one of ravdess7"):
        apply_label_map(["calm"], "ravdess8")
    with pytest.raises(ParameterError, match="missing"):
        apply_label_map(["calm"], "ravdess7", missing="drop")
