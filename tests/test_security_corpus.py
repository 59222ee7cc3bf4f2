"""Issue 18: an untrusted corpus folder never hangs the scan and never loses a file silently.

FIFOs, sockets and devices named like audio files, names that are not UTF-8, sub-folders that
cannot be listed, WAV headers that promise more than the file holds and CSV manifests with
empty or repeated cells: each is either one clear error or listed with its reason while the
other files go on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from cli.featcache import main
from featcache.audio import load_audio
from featcache.corpora import CorpusWarning, get_corpus
from featcache.errors import AudioError, CorpusError

SR = 16000
GOOD = "03-01-05-01-01-01-01.wav"  # RAVDESS: actor 1, angry
FIFO_REASON = "not a regular file: a FIFO (named pipe)"
NOT_UTF8 = "file name is not valid UTF-8"


def _tone(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _write(path: Path, seconds: float = 0.3, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # bytes: soundfile cannot encode a str name that is not UTF-8
    sf.write(os.fsencode(path), _tone(seconds, seed), SR, subtype="PCM_16")
    return path


def _write_truncated(path: Path, seconds: float = 1.1, claims: float = 3.3) -> Path:
    """A valid 16-bit WAV of ``seconds`` whose RIFF and data sizes claim ``claims`` seconds."""
    _write(path, seconds)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    held = struct.unpack("<I", raw[at + 4 : at + 8])[0]
    claimed = int(round(claims * SR)) * 2
    raw[at + 4 : at + 8] = struct.pack("<I", claimed)
    raw[4:8] = struct.pack("<I", len(raw) - 8 + claimed - held)
    path.write_bytes(bytes(raw))
    return path


def _bad_name(folder: Path, name: bytes) -> Path:
    """Path of a file or folder whose name holds bytes that are not UTF-8 (Linux: names are bytes)."""
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


def _scan(name: str, folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        return get_corpus(name).scan(folder)


def _utf8_safe(problems) -> None:
    """Every recorded path and reason can be written to a UTF-8 file or terminal."""
    for path, reason in problems:
        path.encode("utf-8")
        reason.encode("utf-8")


# -- 1. FIFOs, sockets, devices --------------------------------------------------------

_SCAN_IN_CHILD = """
import json, sys, warnings
from featcache.corpora import get_corpus
warnings.simplefilter("ignore")
scan = get_corpus(sys.argv[1]).scan(sys.argv[2])
print(json.dumps({"ids": scan.table["id"].tolist(), "problems": scan.problems}))
"""


def _scan_in_child(name: str, folder: Path) -> dict:
    """Scan in a child process: a scan that blocks on a FIFO fails the test instead of hanging it."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCAN_IN_CHILD, name, str(folder)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {name} scan of {folder} did not finish within 60 s (blocked on a FIFO?)")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fifo_socket_and_device_named_wav_are_listed_not_opened(tmp_path):
    actor = tmp_path / "Actor_01"
    _write(actor / GOOD)
    os.mkfifo(actor / "03-01-01-01-01-01-01.wav")
    os.symlink(actor / "03-01-01-01-01-01-01.wav", actor / "03-01-02-01-01-01-01.wav")
    os.symlink("/dev/null", actor / "03-01-03-01-01-01-01.wav")
    os.symlink(actor / "gone.wav", actor / "03-01-04-01-01-01-01.wav")
    expected = {
        "Actor_01/03-01-01-01-01-01-01.wav": FIFO_REASON,
        "Actor_01/03-01-02-01-01-01-01.wav": FIFO_REASON,  # a link to the FIFO
        "Actor_01/03-01-03-01-01-01-01.wav": "not a regular file: a character device",
        "Actor_01/03-01-04-01-01-01-01.wav": "broken symbolic link",
    }
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(actor / "03-01-06-01-01-01-01.wav"))
        expected["Actor_01/03-01-06-01-01-01-01.wav"] = "not a regular file: a socket"
    except OSError:  # path too long for AF_UNIX: the other cases still run
        pass
    try:
        got = _scan_in_child("ravdess", tmp_path)
    finally:
        sock.close()
    assert got["ids"] == [GOOD.removesuffix(".wav")]
    assert dict(map(tuple, got["problems"])) == expected


def test_fifo_label_file_of_iemocap_is_listed_not_read(tmp_path):
    session = tmp_path / "Session1"
    _write(session / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav")
    labels = session / "dialog" / "EmoEvaluation"
    labels.mkdir(parents=True)
    (labels / "Ses01F_impro01.txt").write_text("[1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[2.5, 2.5, 2.5]\n")
    os.mkfifo(labels / "Ses01F_impro02.txt")
    got = _scan_in_child("iemocap", tmp_path)
    assert got["ids"] == ["Ses01F_impro01_F000"]
    assert got["problems"] == [
        ["Session1/dialog/EmoEvaluation/Ses01F_impro02.txt", f"label file is {FIFO_REASON}"]
    ]


def test_load_audio_refuses_a_fifo_without_opening_it(tmp_path):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match="not a regular file: a FIFO") as info:
        load_audio(fifo)
    assert info.value.path == str(fifo)


def test_csv_row_naming_a_fifo_is_listed(tmp_path):
    _write(tmp_path / "a.wav")
    os.mkfifo(tmp_path / "b.wav")
    (tmp_path / "m.csv").write_text("path,speaker,label\na.wav,s1,happy\nb.wav,s2,sad\n")
    scan = _scan("csv", tmp_path / "m.csv")
    assert scan.table["path"].tolist() == ["a.wav"]
    assert scan.problems == [("b.wav", f"{FIFO_REASON} (m.csv line 3)")]


# -- 2. names that are not UTF-8 ---------------------------------------------------------


def test_names_that_are_not_utf8_are_listed_and_the_scan_goes_on(tmp_path):
    _write(tmp_path / "OAF_back_angry.wav")
    _write(_bad_name(tmp_path, b"OAF_b\xffck_sad.wav"))  # parses, but cannot be written to a table
    bad_dir = _bad_name(tmp_path, b"Actor_\xfe")
    bad_dir.mkdir()
    _write(bad_dir / "YAF_dog_happy.wav")
    scan = _scan("tess", tmp_path)
    assert scan.table["id"].tolist() == ["OAF_back_angry"]
    assert scan.problems == [
        ("Actor_\\xfe", "folder name is not valid UTF-8; its files were left out"),
        ("OAF_b\\xffck_sad.wav", NOT_UTF8),
    ]
    _utf8_safe(scan.problems)


# -- 3. folders that cannot be listed -----------------------------------------------------


def _deny(monkeypatch, denied: Path) -> None:
    """os.scandir raises PermissionError for ``denied`` (what chmod 000 does, also for root)."""
    real = os.scandir

    def scandir(path="."):
        if Path(os.fsdecode(path)) == denied:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def _two_actors(root: Path) -> None:
    _write(root / "Actor_01" / GOOD)
    _write(root / "Actor_02" / "03-01-05-01-01-01-02.wav")


def test_unreadable_sub_folder_is_listed(tmp_path, monkeypatch):
    _two_actors(tmp_path)
    _deny(monkeypatch, tmp_path / "Actor_02")
    scan = _scan("ravdess", tmp_path)
    assert scan.table["id"].tolist() == [GOOD.removesuffix(".wav")]
    assert scan.problems == [
        ("Actor_02", "folder cannot be read (Permission denied); its files were left out")
    ]


def test_unreadable_data_folder_is_one_clear_error(tmp_path, monkeypatch):
    _two_actors(tmp_path)
    _deny(monkeypatch, tmp_path)
    with pytest.raises(CorpusError, match=r"data folder .* cannot be read \(Permission denied\)"):
        get_corpus("ravdess").scan(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_chmod_000_sub_folder_is_listed(tmp_path):
    _two_actors(tmp_path)
    (tmp_path / "Actor_02").chmod(0)
    try:
        scan = _scan("ravdess", tmp_path)
    finally:
        (tmp_path / "Actor_02").chmod(0o755)
    assert scan.problems == [
        ("Actor_02", "folder cannot be read (Permission denied); its files were left out")
    ]


def test_symlinked_folder_is_listed_not_silently_skipped(tmp_path):
    _write(tmp_path / "real" / "Actor_01" / GOOD)
    data = tmp_path / "data"
    _write(data / "Actor_02" / "03-01-05-01-01-01-02.wav")
    os.symlink(tmp_path / "real" / "Actor_01", data / "Actor_01")
    scan = _scan("ravdess", data)
    assert scan.table["id"].tolist() == ["03-01-05-01-01-01-02"]
    assert scan.problems == [
        ("Actor_01", "symbolic link to a folder: not followed; its files were left out")
    ]


# -- 4. a header that claims more than the file holds ------------------------------------


@pytest.mark.parametrize("max_seconds", [None, 15.0, 0.5])
def test_truncated_wav_is_an_audio_error_whatever_the_crop(tmp_path, max_seconds):
    path = _write_truncated(tmp_path / "t.wav", seconds=1.1, claims=3.3)
    with pytest.raises(AudioError) as info:
        load_audio(path, max_seconds=max_seconds)
    assert info.value.reason == (
        "header says 3.30 s (52800 frames) but the data holds 1.10 s (17600 frames) (truncated file?)"
    )


def test_wav_of_unknown_length_or_with_trailing_chunks_is_not_flagged(tmp_path):
    streamed = _write(tmp_path / "streamed.wav", 1.1)
    raw = bytearray(streamed.read_bytes())
    at = raw.find(b"data")
    raw[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)  # what a streaming writer leaves
    streamed.write_bytes(bytes(raw))
    tagged = _write(tmp_path / "tagged.wav", 1.1)
    raw = bytearray(tagged.read_bytes()) + b"LIST" + struct.pack("<I", 4) + b"INFO"
    raw[4:8] = struct.pack("<I", len(raw) - 8)
    tagged.write_bytes(bytes(raw))
    for path in (streamed, tagged):
        audio = load_audio(path, sampling_rate=None, max_seconds=None)
        assert audio.signal.shape == (17600,) and audio.original_seconds == pytest.approx(1.1)


# -- 5. CSV manifests ----------------------------------------------------------------------


def _manifest(tmp_path: Path, text: str, files=("a.wav", "b.wav", "c.wav")) -> Path:
    for i, name in enumerate(files):
        _write(tmp_path / name, 0.3, seed=i)
    (tmp_path / "m.csv").write_text(text)
    return tmp_path / "m.csv"


def test_csv_empty_label_leaves_the_row_out_with_a_reason(tmp_path):
    m = _manifest(tmp_path, "path,speaker,label\na.wav,s1,happy\nb.wav,s2,  \nc.wav,s1,sad\n")
    scan = _scan("csv", m)
    assert scan.table["label"].tolist() == ["happy", "sad"]
    assert scan.problems == [("b.wav", "missing value in column(s) label (m.csv line 3)")]


def test_csv_numeric_target_with_empty_cell_stays_float(tmp_path):
    m = _manifest(tmp_path, "path,speaker,valence,note\na.wav,s1,0.5,x\nb.wav,s2,,\nc.wav,s1,nan,\n")
    scan = _scan("csv", m)
    t = scan.table
    assert t["path"].tolist() == ["a.wav"] and t["valence"].dtype == np.float64
    assert t["valence"].tolist() == [0.5]
    assert scan.problems == [
        ("b.wav", "missing value in column(s) valence (m.csv line 3)"),
        ("c.wav", "missing value in column(s) valence (m.csv line 4)"),
    ]


@pytest.mark.parametrize(
    ("header", "name"),
    [("path,speaker,label,label", "label"), ("path,speaker,label, label", "label"), ("path,path,speaker,label", "path")],
)
def test_csv_duplicate_column_is_an_error_naming_it(tmp_path, header, name):
    m = _manifest(tmp_path, f"{header}\na.wav,a.wav,s1,happy\n")
    with pytest.raises(CorpusError, match=f"duplicate column name.*'{name}' \\(2 times\\)"):
        get_corpus("csv").scan(m)


def test_csv_empty_cells_never_reach_the_cache(tmp_path):
    """End to end: no class "" and a float target column in the cache's utterance table."""
    from featcache import open as open_cache
    from featcache.pipeline import build_extractors, extract

    text = "path,speaker,label,valence\na.wav,s1,happy,0.5\nb.wav,s2,,0.25\nc.wav,s1,sad,\n"
    m = _manifest(tmp_path, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        extract("csv", m, tmp_path / "cache", build_extractors(["mfcc"]), progress=False)
    table = open_cache(tmp_path / "cache" / "csv").utterances
    assert table["label"].tolist() == ["happy"] and table["valence"].dtype == np.float64
    info = json.loads((tmp_path / "cache" / "csv" / "corpus.json").read_text())
    assert [p[0] for p in info["problems"]] == ["b.wav", "c.wav"]


# -- 6. the command line: problems listed, the run goes on ---------------------------------


class _Alarm:
    """Fail (instead of hanging) when the block takes more than ``seconds``."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self):
        def ring(signum, frame):
            raise TimeoutError(f"still running after {self.seconds} s (blocked on a FIFO?)")

        self.old = signal.signal(signal.SIGALRM, ring)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def test_cli_extract_lists_fifo_bad_name_and_truncated_file_and_exits_0(tmp_path):
    data = tmp_path / "tess"
    _write(data / "OAF_back_angry.wav", 0.5)
    os.mkfifo(data / "OAF_bath_angry.wav")
    _write(_bad_name(data, b"OAF_b\xffne_sad.wav"), 0.5)
    _write_truncated(data / "OAF_bean_sad.wav", seconds=0.5, claims=1.5)
    with _Alarm(120):
        r = CliRunner().invoke(
            main,
            ["extract", "--corpus", "tess", "--data-dir", str(data), "--features", "mfcc",
             "--cache-dir", str(tmp_path / "cache")],
        )  # fmt: skip
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert f"skipped OAF_bath_angry.wav: {FIFO_REASON}" in r.output
    assert f"skipped OAF_b\\xffne_sad.wav: {NOT_UTF8}" in r.output
    assert "done 1, skipped 0, failed 1" in r.output
    assert "failed: OAF_bean_sad: header says 1.50 s (24000 frames) but the data holds 0.50 s" in r.output
    cache = tmp_path / "cache" / "tess"
    table = pd.read_csv(cache / "utterances.csv")
    assert table["id"].tolist() == ["OAF_back_angry", "OAF_bean_sad"]
    info = CliRunner().invoke(main, ["info", str(cache), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["problems"] == [
        ["OAF_b\\xffne_sad.wav", NOT_UTF8],
        ["OAF_bath_angry.wav", FIFO_REASON],
    ]


def test_cli_unreadable_data_folder_is_one_error_line(tmp_path, monkeypatch):
    _two_actors(tmp_path / "data")
    _deny(monkeypatch, tmp_path / "data")
    r = CliRunner().invoke(
        main,
        ["extract", "--corpus", "ravdess", "--data-dir", str(tmp_path / "data"), "--features", "mfcc",
         "--cache-dir", str(tmp_path / "cache")],
    )  # fmt: skip
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Permission denied" in lines[0]


def test_data_folder_whose_name_is_not_utf8_extracts(tmp_path):
    """Only names inside the corpus end up in its tables; the folder's own name may be any bytes."""
    from featcache.pipeline import build_extractors, extract

    data = _bad_name(tmp_path, b"corpus\xff")
    _write(data / "OAF_back_angry.wav", 0.5)
    summary = extract("tess", data, tmp_path / "cache", build_extractors(["mfcc"]), progress=False)
    assert summary.failed == {} and summary.done == 1
    scan = get_corpus("tess").scan(data)
    assert scan.table["duration"].tolist() == pytest.approx([0.5])
