"""Download of the RAVDESS audio archives from Zenodo (standard library ``urllib`` only).

Other corpora need a licence agreement or a manual step: download them by hand and pass
their folder with ``--data-dir``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from featcache.errors import DownloadError

__all__ = [
    "RAVDESS_ARCHIVES",
    "RAVDESS_URL",
    "Archive",
    "default_data_dir",
    "download_ravdess",
]

#: Default base URL of the RAVDESS files (Zenodo record 1188976); the environment
#: variable ``FEATCACHE_RAVDESS_URL`` overrides it.
RAVDESS_URL = "https://zenodo.org/records/1188976/files/"

#: Name of the file written in the target folder once everything is unpacked.
MARKER = ".featcache-download.json"

_CHUNK = 1 << 20
_HINT = (
    "download the archives by hand from https://zenodo.org/records/1188976, unzip them "
    "and pass the folder with --data-dir instead"
)


@dataclass(frozen=True)
class Archive:
    """What a downloaded archive must match.

    Attributes
    ----------
    md5 : str or None
        Expected MD5 (hex) of the whole file; None when unknown (then only the size is
        checked).
    size : int or None
        Expected size in bytes; None to trust the server's Content-Length.
    """

    md5: str | None = None
    size: int | None = None


#: The RAVDESS audio-only archives. The speech MD5 and size are the values Zenodo
#: publishes for the record. For the song archive only the size (225,505,317 bytes) is
#: known here: its MD5 is not checked (size and Content-Length are).
RAVDESS_ARCHIVES: dict[str, Archive] = {
    "Audio_Speech_Actors_01-24.zip": Archive(
        md5="bc696df654c87fed845eb13823edef8a", size=208_468_073
    ),
    "Audio_Song_Actors_01-24.zip": Archive(md5=None, size=225_505_317),
}


def default_data_dir(corpus: str) -> Path:
    """``$FEATCACHE_DATA/<corpus>`` (``data/<corpus>`` when the variable is not set)."""
    return Path(os.environ.get("FEATCACHE_DATA", "data")) / corpus


def download_ravdess(
    to: str | os.PathLike[str],
    *,
    url_base: str | None = None,
    progress: bool = True,
    archives: Mapping[str, Archive] | None = None,
    keep_archives: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download and unpack the RAVDESS audio archives into ``to``.

    Each archive is fetched into ``<to>/<name>.part`` (an interrupted download resumes
    from there with an HTTP ``Range`` request on the next call), checked (MD5 when known,
    size always when known or announced by the server), renamed, and unpacked into
    ``to``. When all are unpacked, a marker file (``.featcache-download.json``) records
    them, so a second call returns at once without touching the network. Load the
    result with ``get_corpus("ravdess").scan(to)``.

    Parameters
    ----------
    to : path
        Target folder (created if needed), e.g. :func:`default_data_dir` ``("ravdess")``.
    url_base : str, optional
        Folder URL the archive names are appended to. Default: the environment variable
        ``FEATCACHE_RAVDESS_URL``, else :data:`RAVDESS_URL` (Zenodo record 1188976).
    progress : bool
        Show a tqdm progress bar per archive.
    archives : mapping of str to Archive, optional
        Archive names and what they must match; default :data:`RAVDESS_ARCHIVES`
        (speech and song). Pass a subset to download fewer.
    keep_archives : bool
        Keep the zip files after unpacking (deleted by default).
    timeout : float
        Seconds to wait on the network before giving up.

    Returns
    -------
    pathlib.Path
        ``to``.

    Raises
    ------
    DownloadError
        Network or HTTP error, size or checksum mismatch (the bad file is deleted), or
        an archive that cannot be unpacked.
    """
    to = Path(to)
    archives = dict(RAVDESS_ARCHIVES if archives is None else archives)
    base = url_base or os.environ.get("FEATCACHE_RAVDESS_URL") or RAVDESS_URL
    if not base.endswith("/"):
        base += "/"
    done = _read_marker(to)
    if all(name in done for name in archives):
        return to
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {to}: {exc}") from exc
    for name, expected in archives.items():
        if name in done:
            continue
        archive = to / name
        if not archive.exists():
            url = base + urllib.parse.quote(name)
            part = to / (name + ".part")
            _fetch(url, part, expected, progress=progress, timeout=timeout)
            md5 = _verify(part, expected, url)
            part.replace(archive)
        else:
            md5 = _verify(archive, expected, str(archive))
        _unpack(archive, to)
        done[name] = {"md5": md5, "size": archive.stat().st_size}
        if not keep_archives:
            archive.unlink()
        _write_marker(to, done)
    return to


def _fetch(url: str, part: Path, expected: Archive, *, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming from its current size."""
    have = part.stat().st_size if part.exists() else 0
    if expected.size is not None and have > expected.size:
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "featcache (urllib)"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URL
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            total = _content_range_total(exc.headers.get("Content-Range"))
            if total == have:  # the .part file is already complete
                return
            part.unlink()
            raise DownloadError(
                f"{url}: the server refused to resume a partial download of {have} bytes "
                "(HTTP 416); it was deleted, call again to start over"
            ) from exc
        raise DownloadError(
            f"downloading {url} failed: HTTP {exc.code} {exc.reason}; {_HINT}"
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason}; {_HINT}") from exc

    with response:
        length = response.headers.get("Content-Length")
        if have and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:
                raise DownloadError(
                    f"{url}: asked to resume at byte {have}, the server sent byte {start}; "
                    f"delete {part} and call again"
                )
            total = _content_range_total(response.headers.get("Content-Range"))
            mode = "ab"
        else:  # 200: the server sends the whole file (no resume, or Range ignored)
            have = 0
            total = int(length) if length is not None else None
            mode = "wb"
        if total is not None and expected.size is not None and total != expected.size:
            raise DownloadError(
                f"{url} is {total} bytes, expected {expected.size}: not the expected file"
            )
        total = total if total is not None else expected.size
        bar = tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        )  # fmt: skip
        try:
            out = part.open(mode)
        except OSError as exc:
            bar.close()
            raise DownloadError(f"cannot write {part}: {exc}") from exc
        with out, bar:
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, disk full
                raise DownloadError(
                    f"download of {url} interrupted after {have} bytes ({exc}); "
                    "call again to resume"
                ) from exc
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(
            f"download of {url} stopped at {size} of {total} bytes; call again to resume"
        )


def _verify(path: Path, expected: Archive, source: str) -> str:
    """Check size and MD5 of ``path`` and return its MD5; delete it and raise on a mismatch."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        path.unlink()
        raise DownloadError(
            f"{source}: got {size} bytes, expected {expected.size}; the file was deleted, "
            "call again to download it anew"
        )
    actual = _md5(path)
    if expected.md5 is not None and actual != expected.md5.lower():
        path.unlink()
        raise DownloadError(
            f"{source}: MD5 checksum mismatch (expected {expected.md5}, got {actual}); "
            f"the file was deleted, call again to download it anew, or {_HINT}"
        )
    return actual


def _unpack(archive: Path, to: Path) -> None:
    """Extract ``archive`` into ``to``, refusing members that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                name = PurePosixPath(member.filename)
                if name.is_absolute() or ".." in name.parts or ":" in member.filename:
                    raise DownloadError(
                        f"{archive}: unsafe member path {member.filename!r}; not unpacked"
                    )
            for member in zf.infolist():
                target = to / member.filename
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                with zf.open(member) as src, tmp.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                tmp.replace(target)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        archive.unlink()
        raise DownloadError(
            f"{archive} is not a valid zip archive ({exc}); it was deleted, call again"
        ) from exc
    except OSError as exc:
        raise DownloadError(f"cannot unpack {archive} into {to}: {exc}") from exc


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(match.group(1)) if match else None


def _content_range_total(value: str | None) -> int | None:
    match = re.match(r"bytes (?:\d+-\d+|\*)/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _read_marker(to: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((to / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    archives = data.get("archives") if isinstance(data, dict) else None
    return dict(archives) if isinstance(archives, dict) else {}


def _write_marker(to: Path, done: Mapping[str, object]) -> None:
    tmp = to / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"archives": done}, indent=2, sort_keys=True))
    tmp.replace(to / MARKER)
