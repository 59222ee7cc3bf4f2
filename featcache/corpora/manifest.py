"""Any user corpus described by a CSV manifest."""

from __future__ import annotations

import math
import os
import posixpath
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from featcache.audio import not_regular_reason
from featcache.corpora.base import BASE_COLUMNS, Corpus, CorpusScan, CorpusWarning
from featcache.errors import CorpusError

__all__ = ["CsvCorpus"]


class CsvCorpus(Corpus):
    """A corpus listed in a CSV manifest.

    ``scan(path)`` takes the CSV file, or a folder holding ``manifest.csv`` or exactly one
    ``*.csv``. Columns:

    - ``path`` (required): audio file, relative to the CSV's folder (or absolute);
    - ``speaker`` (required);
    - ``label`` (optional when there is at least one numeric target column);
    - ``id`` (optional; default: ``path`` without its extension);
    - any other column: kept, as float64 when every non-empty cell is a number (numeric
      targets such as ``valence``, ``arousal``), else as str (an empty cell: missing).
      A ``duration`` column is ignored: durations are always read from the files.

    Each column name may appear once in the header (a repeated name is a
    :class:`~featcache.errors.CorpusError`). An empty ``path``, ``speaker`` or ``label``
    cell, or an empty (or ``nan``, ``inf``) cell of a numeric column, is a missing value:
    the row is left out and recorded in :attr:`CorpusScan.problems` with its line, as is
    a row whose file does not exist or is not a regular file. So ``label`` never holds
    an empty class and numeric columns stay float64 without NaN.

    In the table, ``path`` is relative to the CSV's folder (absolute when the file lies
    outside it); :meth:`resolve` turns it back into a file path, given the same
    ``data_dir`` as :meth:`scan`.
    """

    name = "csv"
    description = "any corpus listed in a CSV manifest (path, speaker, label, targets...)"
    pattern = (
        "a CSV file (or a folder with manifest.csv or a single *.csv) with columns "
        "path, speaker, label and optional id and numeric targets"
    )
    classes = ()

    def __init__(self) -> None:
        self._roots: dict[str, Path] = {}

    def manifest_file(self, data_dir: str | os.PathLike[str]) -> Path:
        """The CSV file that ``data_dir`` designates.

        Raises
        ------
        CorpusError
            ``data_dir`` does not exist, or is a folder without exactly one CSV.
        """
        path = Path(data_dir)
        try:
            return self._find_manifest(path)
        except OSError as exc:
            raise CorpusError(f"csv manifest {path} cannot be read ({exc.strerror or exc})") from exc

    def _find_manifest(self, path: Path) -> Path:
        if not path.exists():
            raise CorpusError(f"csv manifest {path} does not exist (expected {self.pattern})")
        if path.is_file():
            return path
        if not path.is_dir():
            raise CorpusError(f"csv manifest {path} is {not_regular_reason(path.stat().st_mode)}")
        if (path / "manifest.csv").is_file():
            return path / "manifest.csv"
        found = sorted(p for p in path.glob("*.csv") if p.is_file())
        if len(found) == 1:
            return found[0]
        if not found:
            raise CorpusError(f"no CSV manifest found in {path}; expected {self.pattern}")
        raise CorpusError(
            f"{len(found)} CSV files in {path} ({', '.join(p.name for p in found)}) and no "
            "manifest.csv; pass the manifest file itself"
        )

    def resolve(self, data_dir: str | os.PathLike[str], rel_path: str) -> Path:
        key = os.fspath(data_dir)
        root = self._roots.get(key)
        if root is None:  # memoised: a folder lookup globs *.csv, and this runs per file
            root = self._roots[key] = self.manifest_file(data_dir).parent
        return root / rel_path

    def scan(self, data_dir: str | os.PathLike[str]) -> CorpusScan:
        csv_path = self.manifest_file(data_dir)
        root = csv_path.parent
        raw = _read_manifest(csv_path)
        missing = [c for c in ("path", "speaker") if c not in raw.columns]
        if missing:
            raise CorpusError(
                f"csv manifest {csv_path} lacks column(s) {', '.join(missing)}; "
                f"found {', '.join(raw.columns)}; expected {self.pattern}"
            )
        if "duration" in raw.columns:
            warnings.warn(
                f"{csv_path}: the 'duration' column is ignored (read from the files)",
                CorpusWarning,
                stacklevel=2,
            )
            raw = raw.drop(columns="duration")
        extra = [c for c in raw.columns if c not in (*BASE_COLUMNS,)]
        numeric = [c for c in extra if _is_numeric(raw[c])]
        if "label" not in raw.columns and not numeric:
            raise CorpusError(
                f"csv manifest {csv_path} has neither a label column nor a numeric target "
                f"column; found {', '.join(raw.columns)}"
            )
        required = (["label"] if "label" in raw.columns else []) + numeric
        rows: list[dict[str, Any]] = []
        problems: list[tuple[str, str]] = []
        for line, record in enumerate(raw.to_dict("records"), start=2):
            where = f"{csv_path.name} line {line}"
            given = record["path"].strip()
            if not given:
                problems.append((f"{csv_path.name}:{line}", "empty path"))
                continue
            rel = _relative(given, root)
            empty = [c for c in ("speaker", *required) if _missing(record[c], numeric=c in numeric)]
            if empty:
                reason: str | None = f"missing value in column(s) {', '.join(empty)}"
            else:
                reason = _file_problem(root / rel)
            if reason is not None:
                problems.append((rel, f"{reason} ({where})"))
                continue
            rows.append(_row(record, rel, extra, numeric))
        if not rows:
            message = f"no usable row in csv manifest {csv_path}"
            if problems:
                message += f"; {len(problems)} problem(s), e.g. {problems[0][0]}: {problems[0][1]}"
            raise CorpusError(message)
        return self._finish(root, rows, problems, fields=tuple(extra))


def _read_manifest(csv_path: Path) -> pd.DataFrame:
    """The manifest as a table of str cells; CorpusError for a duplicate column name.

    The header is read as a row of its own: pandas would rename a second ``label`` to
    ``label.1``, and that column would be kept as an ordinary field, unnoticed.
    """
    try:
        raw = pd.read_csv(
            csv_path, header=None, dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise CorpusError(f"cannot read csv manifest {csv_path}: {exc}") from exc
    names = [str(c).strip() or f"Unnamed: {i}" for i, c in enumerate(raw.iloc[0])]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        shown = ", ".join(f"{c!r} ({names.count(c)} times)" for c in repeated)
        raise CorpusError(
            f"csv manifest {csv_path}: duplicate column name(s) in the header: {shown}; "
            "each column must have its own name"
        )
    table = raw.iloc[1:].reset_index(drop=True)
    table.columns = names
    return table


def _missing(cell: str, *, numeric: bool) -> bool:
    """Empty (or, in a numeric column, NaN or infinite) cells are missing values."""
    value = cell.strip()
    if not value:
        return True
    return numeric and not math.isfinite(float(value))


def _row(record: dict[str, str], rel: str, extra: list[str], numeric: list[str]) -> dict[str, Any]:
    """Table row of a checked manifest record."""
    row: dict[str, Any] = {
        "id": record.get("id", "").strip() or posixpath.splitext(rel)[0],
        "path": rel,
        "speaker": record["speaker"].strip(),
        "label": record.get("label", "").strip() or None,
    }
    for column in extra:
        value = record[column].strip()
        row[column] = float(value) if column in numeric else (value or None)
    return row


def _file_problem(path: Path) -> str | None:
    """Why the audio file ``path`` cannot be used; None for an existing regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file does not exist"
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    return not_regular_reason(st.st_mode)


def _is_numeric(column: pd.Series) -> bool:
    """Every cell that is not empty (nor ``nan``) is a number, and there is at least one."""
    values = column.str.strip()
    values = values[(values != "") & (values.str.lower() != "nan")]
    if values.empty:
        return False
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


def _relative(given: str, root: Path) -> str:
    """POSIX path of ``given`` relative to ``root`` (kept absolute if outside it)."""
    path = PurePosixPath(given.replace(os.sep, "/"))
    if path.is_absolute():
        try:
            return Path(given).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return posixpath.normpath(path.as_posix())
