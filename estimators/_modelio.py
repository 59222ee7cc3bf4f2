"""Reading the files of a saved model directory: checksums and contained, bounded reads.

Part of the checks of :mod:`estimators._modelfiles` (a model directory is untrusted input):
every JSON file carries the checksum of its own content (``checksum``, over the canonical
JSON of the document without that key) and names the SHA-256 of the binary files it refers
to; binary files are read only when they are regular files inside the directory, under a
size limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Any

from featcache.fileio import read_json, resolve_inside

from .errors import ModelFileError

__all__ = ["CHECKSUM_KEY", "doc_checksum", "short_repr", "read_inside", "read_model_json", "verify_doc_checksum", "with_checksum"]

CHECKSUM_KEY = "checksum"
_SHA = set("0123456789abcdef")


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to 80 characters (values from untrusted files go into messages)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- checksums


def doc_checksum(doc: dict) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``doc`` without its ``checksum`` key."""
    body = {k: v for k, v in doc.items() if k != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def with_checksum(doc: dict) -> dict:
    """``doc`` plus its ``checksum`` (see :func:`doc_checksum`)."""
    return {**doc, CHECKSUM_KEY: doc_checksum(doc)}


def read_model_json(path: Path, what: str) -> dict:
    """Read one JSON file of a model directory within :func:`featcache.fileio.read_json`'s limits."""
    return read_json(path, lambda m: ModelFileError(f"{what} cannot be read: {m}"))


def verify_doc_checksum(doc: dict, path: Path) -> bool:
    """Check the ``checksum`` of a parsed JSON document.

    Returns False (with a warning) for a file written before checksums existed.

    Raises
    ------
    ModelFileError
        When the checksum is not a string or does not match.
    """
    if CHECKSUM_KEY not in doc:
        warnings.warn(
            f"{path}: no checksum (written by an older version): corruption of this file cannot be detected",
            UserWarning,
            stacklevel=3,
        )
        return False
    if doc[CHECKSUM_KEY] != doc_checksum(doc):
        raise ModelFileError(f"{path}: checksum mismatch (file corrupted or modified)")
    return True


def _sha256_hex(value: Any, what: str) -> str:
    if not (isinstance(value, str) and len(value) == 64 and set(value) <= _SHA):
        raise ModelFileError(f"{what} must be a SHA-256 (64 lowercase hex digits); got {short_repr(value)}")
    return value


def read_inside(directory: Path, name: Any, what: str, sha256: Any, max_bytes: int) -> tuple[Path, bytes]:
    """Read a binary file named in a model file: inside ``directory``, regular, bounded, checked.

    Parameters
    ----------
    directory : Path
    name : Any
        The name read from JSON.
    what : str
        Where the name comes from (for messages).
    sha256 : str or None
        Expected SHA-256 hex digest; None skips the check (files of older versions).
    max_bytes : int

    Returns
    -------
    path, data
    """
    path = resolve_inside(directory, name, what, ModelFileError)
    if sha256 is not None:
        sha256 = _sha256_hex(sha256, f"the SHA-256 of {what}")
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path}: missing") from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{path}: not a regular file")
    if st.st_size > max_bytes:
        raise ModelFileError(f"{path}: {st.st_size} bytes, more than the {max_bytes} allowed here")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if len(data) > max_bytes:
        raise ModelFileError(f"{path}: more than the {max_bytes} bytes allowed here")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ModelFileError(f"{path} cannot be read: checksum mismatch (file truncated or modified)")
    return path, data


# --------------------------------------------------------------------------- small checks
