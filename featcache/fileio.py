"""Safe file I/O: the one place for atomic writes, bounded JSON reads and contained paths.

Caches and model directories are shared between people and machines, so everything read
from them is untrusted input:

* :func:`read_json` refuses files over a size limit, nesting deeper than a limit and a top
  level of the wrong type, raising the caller's own error class (never ``RecursionError``
  or ``JSONDecodeError``).
* :func:`resolve_inside` turns a name read from such a file into a path that is guaranteed
  to lie inside its directory (no absolute path, no ``..``, no symlink leading out).
* :func:`atomic_write_bytes` / :func:`atomic_write_json` write a temporary file, fsync it,
  rename it over the target and fsync the folder, so a crash leaves the old file or the new
  one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "atomic_write_bytes",
    "atomic_write_json",
    "dumps_json",
    "fsync_dir",
    "read_json",
    "resolve_inside",
    "sha256_file",
]

MAX_JSON_BYTES = 64 << 20  # a manifest of a 200 h corpus is a few MB
MAX_JSON_DEPTH = 32  # our own files nest at most ~6 deep


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps_json(obj: Any) -> str:
    """JSON text as every featcache/estimators file is written (indent 1, sorted keys)."""
    return json.dumps(obj, indent=1, sort_keys=True, default=_json_default)


def fsync_dir(path: Path) -> None:
    """fsync a folder so that a rename inside it survives a power loss (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, midway: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync of the folder).

    Parameters
    ----------
    path : Path
        The target file.
    data : bytes
        Its new content.
    midway : callable, optional
        Called after half of ``data`` is written and flushed (the test-only fault hook).

    Notes
    -----
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            if midway is not None:
                f.write(data[: len(data) // 2])
                f.flush()
                midway()
                f.write(data[len(data) // 2 :])
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any, *, midway: Callable[[], None] | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, dumps_json(obj).encode("utf-8"), midway=midway)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside strings (a linear scan: no recursion)."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def read_json(
    path: Path,
    error: Callable[[str], Exception],
    *,
    expect: type = dict,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Read a JSON file from an untrusted folder, within limits.

    Parameters
    ----------
    path : Path
        The file. Only a regular file is opened (a FIFO or device would block or never end).
    error : callable
        Makes the exception to raise from a message, e.g. ``StoreError`` or ``ModelFileError``.
    expect : type
        Type the top level must have (``dict`` by default).
    max_bytes, max_depth : int
        Largest file size and deepest nesting accepted.

    Returns
    -------
    The parsed value.

    Raises
    ------
    Exception
        ``error(message)``, naming the file and what is wrong.
    """
    path = Path(path)
    try:
        st = os.stat(path)
        if not _is_regular(st.st_mode):
            raise error(f"{path}: not a regular file")
        if st.st_size > max_bytes:
            raise error(f"{path}: {st.st_size} bytes, more than the {max_bytes} a JSON file may have here")
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if _depth(text) > max_depth:
        raise error(f"{path}: JSON nested more than {max_depth} levels deep")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, expect):
        raise error(f"{path}: the top level must be a JSON {_json_name(expect)}; got {_json_name(type(obj))}")
    return obj


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _json_name(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        t, "null" if t is type(None) else t.__name__
    )


def resolve_inside(base: Path, name: Any, what: str, error: Callable[[str], Exception]) -> Path:
    """Resolve a file name read from an untrusted file so that it stays inside ``base``.

    Parameters
    ----------
    base : Path
        The folder the name must stay in (a store, a model directory).
    name : Any
        The value read from JSON; must be a non-empty relative path string.
    what : str
        What the name is, for the message (``"manifest.json shards[3].file"``).
    error : callable
        Makes the exception to raise from a message.

    Returns
    -------
    Path
        ``base / name``, resolved (symlinks followed), inside ``base``.

    Raises
    ------
    Exception
        ``error(message)`` when ``name`` is not a string, is absolute, holds ``..``, a NUL
        byte or a backslash, or resolves (through a symlink) outside ``base``.
    """
    if not isinstance(name, str) or not name:
        raise error(f"{what} must be a non-empty relative file name; got {name!r}")
    pure = PurePosixPath(name)
    if "\x00" in name or "\\" in name or pure.is_absolute() or ".." in pure.parts:
        raise error(f"{what} must be a relative file name inside {base}; got {name!r}")
    root = Path(base).resolve()
    target = (root / pure).resolve()
    if target != root and root not in target.parents:
        raise error(f"{what} = {name!r} leads outside {base} (through a symbolic link)")
    return target
