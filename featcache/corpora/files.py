"""Finding the audio files of a corpus folder without hanging and without losing any silently.

A corpus folder is untrusted input: it may hold FIFOs, sockets or devices named like audio
files, names that are not valid UTF-8, sub-folders that cannot be listed, links. The scan
opens regular files only and lists everything else it leaves out, with the reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import soundfile

from featcache.audio import not_regular_reason
from featcache.errors import CorpusError

__all__ = ["AUDIO_EXTENSIONS", "audio_duration", "display_name", "iter_audio_files"]

#: Extensions (lower case) of the audio files the loaders look for; matched case-insensitively.
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac")

#: Folders never searched: hidden ones and the resource forks macOS adds to zip files.
_SKIPPED_DIRS = frozenset({"__MACOSX"})


def display_name(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 shown as ``\\xff`` escapes.

    File names on Linux are bytes; Python decodes the invalid ones to lone surrogates,
    which no UTF-8 file (``utterances.csv``, ``corpus.json``, a terminal) can hold.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_audio_files(data_dir: Path, problems: list[tuple[str, str]]) -> Iterator[PurePosixPath]:
    """Relative paths of the regular audio files under ``data_dir``, in sorted order.

    Hidden files and folders and ``__MACOSX`` folders are skipped. Whatever else would be
    silently missing is appended to ``problems`` as ``(relative path, reason)`` instead:
    a sub-folder that cannot be listed, a name that is not valid UTF-8 (a folder: its
    files are not searched), a symbolic link to a folder (not followed), and an entry
    with an audio extension that is not a regular file (FIFO, socket, device, a link to
    one, a broken link): nothing but regular files is ever opened.

    Raises
    ------
    CorpusError
        ``data_dir`` itself cannot be listed.
    """
    stack: list[tuple[Path, PurePosixPath]] = [(Path(data_dir), PurePosixPath("."))]
    while stack:
        folder, rel_folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if rel_folder == PurePosixPath("."):
                shown = display_name(str(data_dir))
                raise CorpusError(f"data folder {shown} cannot be read ({why})") from exc
            reason = f"folder cannot be read ({why}); its files were left out"
            problems.append((display_name(rel_folder.as_posix()), reason))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = rel_folder / entry.name
            kind = _entry_kind(entry)
            reason: str | None = None
            if kind == "dir":
                if entry.name in _SKIPPED_DIRS:
                    continue
                if _is_utf8(entry.name):
                    subfolders.append((Path(entry.path), rel))
                    continue
                reason = "folder name is not valid UTF-8; its files were left out"
            elif os.path.splitext(entry.name)[1].lower() not in AUDIO_EXTENSIONS:
                if kind != "link-dir":
                    continue
                reason = "symbolic link to a folder: not followed; its files were left out"
            else:
                reason = _file_problem(entry)
                if reason is None and not _is_utf8(entry.name):
                    reason = "file name is not valid UTF-8"
            if reason is None:
                yield rel
            else:
                problems.append((display_name(rel.as_posix()), reason))
        stack.extend(reversed(subfolders))  # depth-first, in sorted order


def _entry_kind(entry: os.DirEntry) -> str:
    """``"dir"`` (a real folder), ``"link-dir"`` (a link to one) or ``"other"``."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_symlink() and entry.is_dir():
            return "link-dir"
    except OSError:
        pass
    return "other"


def _file_problem(entry: os.DirEntry) -> str | None:
    """Why the audio file ``entry`` cannot be opened; None for a regular file (links followed)."""
    try:
        st = entry.stat(follow_symlinks=True)
    except FileNotFoundError:
        return "broken symbolic link" if entry.is_symlink() else "file vanished during the scan"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return not_regular_reason(st.st_mode)


def audio_duration(path: Path) -> float:
    """Duration in seconds from the header of ``path``; NaN when it cannot be read.

    Only a regular file is opened (a FIFO would block ``soundfile.info`` for ever).
    """
    try:
        if not_regular_reason(os.stat(path).st_mode) is not None:
            return math.nan
        info = soundfile.info(os.fsencode(path))  # bytes: any name, UTF-8 or not
    except Exception:  # noqa: BLE001 - any unreadable header; reported later by extraction
        return math.nan
    if not info.samplerate:
        return math.nan
    return info.frames / info.samplerate
