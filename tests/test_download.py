"""Tests of featcache.download against a loopback HTTP server that supports Range."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile

from featcache.corpora import get_corpus
from featcache.download import (
    MARKER,
    RAVDESS_ARCHIVES,
    Archive,
    default_data_dir,
    download_ravdess,
)
from featcache.errors import DownloadError

SPEECH = "Audio_Speech_Actors_01-24.zip"
SONG = "Audio_Song_Actors_01-24.zip"


def _wav_bytes(seconds: float = 0.1) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(buf, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000,
                    format="WAV", subtype="PCM_16")  # fmt: skip
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


SPEECH_MEMBERS = {
    "Actor_01/03-01-05-01-01-01-01.wav": _wav_bytes(0.1),
    "Actor_02/03-01-02-02-02-01-02.wav": _wav_bytes(0.2),
}
SONG_MEMBERS = {"Actor_01/03-02-06-01-02-02-01.wav": _wav_bytes(0.15)}
SPEECH_ZIP = _zip(SPEECH_MEMBERS)
SONG_ZIP = _zip(SONG_MEMBERS)


def _archive(data: bytes) -> Archive:
    return Archive(md5=hashlib.md5(data).hexdigest(), size=len(data))


@dataclass
class Server:
    """State of the loopback server, shared with its handler threads."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    sent: list[int] = field(default_factory=list)  # body bytes sent per request
    honour_range: bool = True
    cut_after: int | None = None  # send only this many body bytes once, then hang up

    def reset(self) -> None:
        self.files.clear()
        self.requests.clear()
        self.sent.clear()
        self.honour_range = True
        self.cut_after = None


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            range_header = self.headers.get("Range")
            state.requests.append((unquote(self.path), range_header))
            data = state.files.get(unquote(self.path))
            if data is None:
                self._reply(404, b"not found", {})
                return
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if match and state.honour_range:
                start = int(match.group(1))
                if start >= len(data):
                    self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
                headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                self._reply(206, data[start:], headers)
            else:
                self._reply(200, data, {})

        def _reply(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if state.cut_after is not None and code in (200, 206):
                body, state.cut_after = body[: state.cut_after], None
                self.close_connection = True
            # recorded before the body goes out: once the client has it, the test may read or
            # reset the list (appending after the write raced with the next test's reset)
            state.sent.append(len(body))
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="module")
def http_server() -> Iterator[Server]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    host, port = httpd.server_address[:2]
    state.url = f"http://{host}:{port}"
    thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.fixture
def server(http_server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The loopback server, emptied, serving both archives under /files/."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("FEATCACHE_RAVDESS_URL", raising=False)
    http_server.reset()
    http_server.files[f"/files/{SPEECH}"] = SPEECH_ZIP
    http_server.files[f"/files/{SONG}"] = SONG_ZIP
    return http_server


def _get(server: Server, to: Path, **kwargs: object) -> Path:
    kwargs.setdefault("archives", {SPEECH: _archive(SPEECH_ZIP)})
    kwargs.setdefault("progress", False)
    return download_ravdess(to, url_base=f"{server.url}/files/", timeout=10, **kwargs)


def _assert_unpacked(to: Path, members: dict[str, bytes]) -> None:
    for name, data in members.items():
        assert (to / name).read_bytes() == data


def test_full_download_unpack_and_noop(server: Server, tmp_path: Path) -> None:
    to = tmp_path / "ravdess"
    assert _get(server, to, progress=True) == to
    assert server.requests == [(f"/files/{SPEECH}", None)]
    _assert_unpacked(to, SPEECH_MEMBERS)
    assert not (to / SPEECH).exists() and not (to / f"{SPEECH}.part").exists()
    marker = json.loads((to / MARKER).read_text())
    assert marker["archives"][SPEECH] == {
        "md5": hashlib.md5(SPEECH_ZIP).hexdigest(),
        "size": len(SPEECH_ZIP),
    }
    table = get_corpus("ravdess").scan(to).table
    assert table["id"].tolist() == ["03-01-02-02-02-01-02", "03-01-05-01-01-01-01"]
    # Second call: no request at all, even with an unreachable server.
    server.requests.clear()
    assert download_ravdess(to, url_base="http://127.0.0.1:9/", archives={SPEECH: Archive()}) == to
    assert _get(server, to) == to
    assert server.requests == []


def test_only_missing_archives_are_fetched(server: Server, tmp_path: Path) -> None:
    to = tmp_path / "ravdess"
    _get(server, to)
    server.requests.clear()
    both = {SPEECH: _archive(SPEECH_ZIP), SONG: _archive(SONG_ZIP)}
    _get(server, to, archives=both, keep_archives=True)
    assert server.requests == [(f"/files/{SONG}", None)]
    _assert_unpacked(to, {**SPEECH_MEMBERS, **SONG_MEMBERS})
    assert (to / SONG).read_bytes() == SONG_ZIP  # kept
    assert set(json.loads((to / MARKER).read_text())["archives"]) == {SPEECH, SONG}
    table = get_corpus("ravdess").scan(to).table
    assert table["vocal_channel"].tolist() == ["speech", "speech", "song"]


def test_resume_from_part_file(server: Server, tmp_path: Path) -> None:
    to = tmp_path / "ravdess"
    to.mkdir()
    have = len(SPEECH_ZIP) // 3
    (to / f"{SPEECH}.part").write_bytes(SPEECH_ZIP[:have])
    _get(server, to)
    assert server.requests == [(f"/files/{SPEECH}", f"bytes={have}-")]
    assert server.sent == [len(SPEECH_ZIP) - have]
    _assert_unpacked(to, SPEECH_MEMBERS)


def test_interrupted_download_resumes_on_next_call(server: Server, tmp_path: Path) -> None:
    to = tmp_path / "ravdess"
    server.cut_after = 1000
    with pytest.raises(DownloadError, match="call again to resume"):
        _get(server, to)
    assert (to / f"{SPEECH}.part").stat().st_size == 1000
    assert not (to / MARKER).exists()
    _get(server, to)
    assert server.requests[-1] == (f"/files/{SPEECH}", "bytes=1000-")
    _assert_unpacked(to, SPEECH_MEMBERS)


def test_server_ignoring_range_restarts(server: Server, tmp_path: Path) -> None:
    to = tmp_path / "ravdess"
    to.mkdir()
    (to / f"{SPEECH}.part").write_bytes(b"garbage that is not the zip")
    server.honour_range = False
    _get(server, to)
    assert server.requests == [(f"/files/{SPEECH}", "bytes=27-")]
    assert server.sent == [len(SPEECH_ZIP)]
    _assert_unpacked(to, SPEECH_MEMBERS)


def test_checksum_mismatch(server: Server, tmp_path: Path) -> None:
    to = tmp_path / "ravdess"
    bad = Archive(md5="0" * 32, size=len(SPEECH_ZIP))
    with pytest.raises(DownloadError, match="MD5 checksum mismatch.*--data-dir"):
        _get(server, to, archives={SPEECH: bad})
    assert sorted(p.name for p in to.iterdir()) == []  # bad file deleted, nothing unpacked


def test_size_mismatch_without_md5(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=f"is {len(SPEECH_ZIP)} bytes, expected 12345"):
        _get(server, tmp_path / "r", archives={SPEECH: Archive(size=12345)})


def test_http_error_mentions_data_dir(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404.*--data-dir"):
        _get(server, tmp_path / "r", archives={"nope.zip": Archive()})


def test_env_url_and_default_archives(server: Server, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("FEATCACHE_RAVDESS_URL", f"{server.url}/mirror")
    server.files[f"/mirror/{SPEECH}"] = SPEECH_ZIP
    # The default archive list expects the real Zenodo sizes: the tiny zip is refused.
    expected = RAVDESS_ARCHIVES[SPEECH].size
    with pytest.raises(DownloadError, match=f"expected {expected}"):
        download_ravdess(tmp_path / "r", progress=False, timeout=10)
    assert server.requests == [(f"/mirror/{SPEECH}", None)]
    assert RAVDESS_ARCHIVES[SPEECH].md5 == "bc696df654c87fed845eb13823edef8a"


def test_unsafe_zip_member(server: Server, tmp_path: Path) -> None:
    evil = _zip({"../escaped.txt": b"x"})
    server.files["/files/evil.zip"] = evil
    to = tmp_path / "deep" / "ravdess"
    with pytest.raises(DownloadError, match="unsafe member"):
        _get(server, to, archives={"evil.zip": _archive(evil)})
    assert not (to.parent / "escaped.txt").exists()


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEATCACHE_DATA", raising=False)
    assert default_data_dir("ravdess") == Path("data") / "ravdess"
    monkeypatch.setenv("FEATCACHE_DATA", str(tmp_path))
    assert default_data_dir("iemocap") == tmp_path / "iemocap"
