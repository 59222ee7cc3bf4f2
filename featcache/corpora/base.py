"""Base classes of the corpus loaders, the registry and the helpers they share.

A loader (:class:`Corpus`) turns a corpus folder into a :class:`CorpusScan`: a table with
one row per utterance, the files that look like corpus files but cannot be used, and the
utterances dropped on purpose (e.g. IEMOCAP labels outside the 4 standard classes).

Label vocabulary
----------------
Corpora whose emotion is coded in the file name (RAVDESS, EmoDB, TESS, SAVEE, CREMA-D)
use one shared vocabulary, so that cross-corpus experiments need no renaming:
``neutral``, ``calm``, ``happy``, ``sad``, ``angry``, ``fearful``, ``disgust``,
``surprised``, ``bored``. The code found in the file name is kept in the
``emotion_code`` column. IEMOCAP keeps its customary codes (``neu``, ``hap``, ``ang``,
``sad``).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from featcache.corpora.files import AUDIO_EXTENSIONS, audio_duration, display_name, iter_audio_files
from featcache.errors import CorpusError, ParameterError

__all__ = [
    "AUDIO_EXTENSIONS",
    "BASE_COLUMNS",
    "Corpus",
    "CorpusScan",
    "CorpusWarning",
    "FileNameCorpus",
    "Unparsable",
    "display_name",
    "get_corpus",
    "iter_audio_files",
    "list_corpora",
    "register_corpus",
]

#: The first columns of every corpus table, in this order.
BASE_COLUMNS: tuple[str, ...] = ("id", "path", "speaker", "label")

class CorpusWarning(UserWarning):
    """Some files of a corpus folder could not be used (see :attr:`CorpusScan.problems`)."""


class Unparsable(Exception):
    """Raised by a loader's file-name parser; the message is the reason recorded."""


@dataclass
class CorpusScan:
    """What a loader found in a corpus folder.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per usable utterance, sorted by ``id``. Columns, in this order:

        - ``id`` (str): unique within the corpus;
        - ``path`` (str): POSIX path of the audio file relative to the data folder; open
          it with :meth:`Corpus.resolve`;
        - ``speaker`` (str): speaker identifier (the grouping key for speaker-independent
          splits);
        - ``label`` (str): emotion class (missing for a manifest row with only numeric
          targets);
        - the corpus's own fields (see each loader's ``fields``);
        - ``duration`` (float): seconds, from the file header; NaN when the header cannot
          be read (the extraction stage reports such files).
    problems : list of (str, str)
        ``(relative path, reason)`` for every file that looks like a corpus file but
        cannot be used (name does not parse, no label, an empty label or target cell,
        not a regular file, a name that is not valid UTF-8...) and every sub-folder
        whose files were left out (cannot be listed, a name that is not UTF-8, a
        symbolic link). Paths are valid UTF-8: bytes that are not are shown as
        ``\\xff`` escapes (:func:`display_name`).
    dropped : dict of str to int
        Utterances left out on purpose, counted by original label (e.g. IEMOCAP
        ``{"fru": 1849, "xxx": 2507, ...}``).
    """

    table: pd.DataFrame
    problems: list[tuple[str, str]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)


class Corpus:
    """A corpus loader.

    Attributes
    ----------
    name : str
        Registry name (``"ravdess"``...).
    description : str
        One line about the corpus.
    pattern : str
        Human-readable description of the expected file layout (used in error messages).
    classes : tuple of str
        The label set (empty when the labels come from a manifest).
    fields : tuple of str
        The corpus's own columns, between ``label`` and ``duration`` in the table.
    """

    name: str = ""
    description: str = ""
    pattern: str = ""
    classes: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()

    def scan(self, data_dir: str | os.PathLike[str]) -> CorpusScan:
        """Find the utterances of this corpus under ``data_dir``.

        Raises
        ------
        CorpusError
            The folder does not exist, holds no file of this corpus, or two files have
            the same id.
        """
        raise NotImplementedError

    def resolve(self, data_dir: str | os.PathLike[str], rel_path: str) -> Path:
        """The file to open for table path ``rel_path`` of a scan of ``data_dir``."""
        return Path(data_dir) / rel_path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- helpers for subclasses ------------------------------------------------------

    def _check_folder(self, data_dir: Path) -> None:
        if not data_dir.exists():
            raise CorpusError(
                f"{self.name} data folder {data_dir} does not exist "
                f"(expected layout: {self.pattern})"
            )
        if not data_dir.is_dir():
            raise CorpusError(
                f"{self.name} data folder {data_dir} is not a folder "
                f"(expected layout: {self.pattern})"
            )

    def _nothing_found(self, data_dir: Path, problems: list[tuple[str, str]]) -> CorpusError:
        message = f"no {self.name} audio files found in {data_dir}; expected {self.pattern}"
        if problems:
            rel, reason = problems[0]
            message += (
                f". {len(problems)} file(s) looked like corpus files but did not parse, "
                f"e.g. {rel}: {reason}"
            )
        return CorpusError(message)

    def _finish(
        self,
        data_dir: Path,
        rows: list[dict[str, Any]],
        problems: list[tuple[str, str]],
        dropped: dict[str, int] | None = None,
        fields: tuple[str, ...] | None = None,
    ) -> CorpusScan:
        """Check ids, read durations, build the sorted table and warn about problems.

        ``data_dir`` is the folder the ``path`` of every row is relative to.
        """
        problems = sorted(problems)
        if not rows:
            raise self._nothing_found(data_dir, problems)
        counts = Counter(row["id"] for row in rows)
        duplicates = sorted(i for i, n in counts.items() if n > 1)
        if duplicates:
            paths: dict[str, list[str]] = {i: [] for i in duplicates}
            for row in rows:
                if row["id"] in paths:
                    paths[row["id"]].append(row["path"])
            shown = "; ".join(f"{i} ({', '.join(sorted(paths[i]))})" for i in duplicates[:5])
            raise CorpusError(
                f"{len(duplicates)} duplicate {self.name} id(s) in {data_dir}: {shown}"
                f"{' ...' if len(duplicates) > 5 else ''}; keep one file per utterance "
                "(e.g. not both a .wav and a .flac copy, nor two copies of the corpus)"
            )
        fields = self.fields if fields is None else fields
        for row in rows:
            row["duration"] = audio_duration(data_dir / row["path"])
        columns = [*BASE_COLUMNS, *fields, "duration"]
        table = pd.DataFrame(rows, columns=columns)
        table = table.sort_values("id", kind="stable").reset_index(drop=True)
        table["duration"] = table["duration"].astype("float64")
        if problems:
            rel, reason = problems[0]
            warnings.warn(
                f"{len(problems)} file(s) under {data_dir} look like {self.name} files but "
                f"were left out (see CorpusScan.problems); first: {rel}: {reason}",
                CorpusWarning,
                stacklevel=3,
            )
        return CorpusScan(table=table, problems=problems, dropped=dict(dropped or {}))


class FileNameCorpus(Corpus):
    """A corpus whose labels and fields are all coded in the audio file paths.

    Subclasses implement :meth:`parse`; :meth:`scan` searches ``data_dir`` recursively
    for ``.wav``/``.flac`` files (hidden files and ``__MACOSX`` folders skipped; see
    :func:`iter_audio_files` for what else is left out, and listed in the problems).
    """

    def parse(self, rel_path: PurePosixPath) -> dict[str, Any]:
        """Row of the file at ``rel_path`` (relative to the data folder).

        Returns a dict with ``id``, ``speaker``, ``label`` and every name of
        :attr:`fields`; raises :class:`Unparsable` with the reason otherwise.
        """
        raise NotImplementedError

    def scan(self, data_dir: str | os.PathLike[str]) -> CorpusScan:
        data_dir = Path(data_dir)
        self._check_folder(data_dir)
        rows: list[dict[str, Any]] = []
        problems: list[tuple[str, str]] = []
        for rel in iter_audio_files(data_dir, problems):
            try:
                row = self.parse(rel)
            except Unparsable as exc:
                problems.append((rel.as_posix(), str(exc)))
                continue
            row["path"] = rel.as_posix()
            rows.append(row)
        return self._finish(data_dir, rows, problems)


def decode(code: str, table: dict[str, str], what: str) -> str:
    """``table[code]``, or :class:`Unparsable` naming ``what`` and the allowed codes."""
    try:
        return table[code]
    except KeyError:
        raise Unparsable(
            f"{what} code {code!r} is not one of {', '.join(sorted(table))}"
        ) from None


# -- registry ------------------------------------------------------------------------

_REGISTRY: dict[str, Corpus] = {}


def register_corpus(corpus: Corpus, *, replace: bool = False) -> Corpus:
    """Add ``corpus`` to the registry under ``corpus.name`` and return it.

    Raises
    ------
    ParameterError
        ``corpus`` is not a :class:`Corpus` with a name, or the name is taken and
        ``replace`` is false.
    """
    if not isinstance(corpus, Corpus) or not corpus.name:
        raise ParameterError("corpus", "a Corpus instance with a non-empty name", corpus)
    if corpus.name in _REGISTRY and not replace:
        raise ParameterError(
            "corpus", "a name not registered yet (or pass replace=True)", corpus.name
        )
    _REGISTRY[corpus.name] = corpus
    return corpus


def get_corpus(name: str) -> Corpus:
    """The registered loader called ``name``.

    Raises
    ------
    ParameterError
        No loader has this name.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    from featcache.corpora.labels import LABEL_MAPS

    allowed = "one of " + ", ".join(list_corpora())
    if isinstance(name, str) and name in LABEL_MAPS:
        allowed += (
            f" ({name!r} is a label map: scan its corpus and use "
            f"apply_label_map(labels, {name!r}))"
        )
    raise ParameterError("corpus", allowed, name)


def list_corpora() -> list[str]:
    """Names of the registered loaders, sorted."""
    return sorted(_REGISTRY)
