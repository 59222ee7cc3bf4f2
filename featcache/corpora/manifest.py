"""Any user corpus described by a CSV manifest."""

from __future__ import annotations

import os
import posixpath
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from featcache.corpora.base import BASE_COLUMNS, Corpus, CorpusScan, CorpusWarning
from featcache.errors import CorpusError

__all__ = ["CsvCorpus"]


class CsvCorpus(Corpus):
    """A corpus listed in a CSV manifest.

    ``scan(path)`` takes the CSV file, or a folder holding ``manifest.csv`` or exactly one
    ``*.csv``. Columns:

    - ``path`` (required): audio file, relative to the CSV's folder (or absolute);
    - ``speaker`` (required);
    - ``label`` (optional when there is at least one numeric target column; empty cells
      give a missing label);
    - ``id`` (optional; default: ``path`` without its extension);
    - any other column: kept, as float64 when every non-empty cell is a number (numeric
      targets such as ``valence``, ``arousal``), else as str. A ``duration`` column is
      ignored: durations are always read from the files.

    In the table, ``path`` is relative to the CSV's folder (absolute when the file lies
    outside it); :meth:`resolve` turns it back into a file path, given the same
    ``data_dir`` as :meth:`scan`. Rows whose file does not exist, or with an empty
    ``path`` or ``speaker``, are recorded in :attr:`CorpusScan.problems`.
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
        if not path.exists():
            raise CorpusError(f"csv manifest {path} does not exist (expected {self.pattern})")
        if path.is_file():
            return path
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
        try:
            raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise CorpusError(f"cannot read csv manifest {csv_path}: {exc}") from exc
        raw.columns = [str(c).strip() for c in raw.columns]
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
        rows: list[dict[str, Any]] = []
        problems: list[tuple[str, str]] = []
        for line, record in enumerate(raw.to_dict("records"), start=2):
            given = record["path"].strip()
            if not given:
                problems.append((f"{csv_path.name}:{line}", "empty path"))
                continue
            rel = _relative(given, root)
            if not record["speaker"].strip():
                problems.append((rel, f"empty speaker ({csv_path.name} line {line})"))
                continue
            if not (root / rel).is_file():
                problems.append((rel, f"file does not exist ({csv_path.name} line {line})"))
                continue
            row: dict[str, Any] = {
                "id": record.get("id", "").strip() or posixpath.splitext(rel)[0],
                "path": rel,
                "speaker": record["speaker"].strip(),
                "label": record.get("label", "").strip() or None,
            }
            for column in extra:
                value = record[column].strip()
                if column in numeric:
                    row[column] = float(value) if value else np.nan
                else:
                    row[column] = value or None
            rows.append(row)
        if not rows:
            message = f"no usable row in csv manifest {csv_path}"
            if problems:
                message += f"; {len(problems)} problem(s), e.g. {problems[0][0]}: {problems[0][1]}"
            raise CorpusError(message)
        return self._finish(root, rows, problems, fields=tuple(extra))


def _is_numeric(column: pd.Series) -> bool:
    values = column.str.strip()
    values = values[values != ""]
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
