"""Named evaluation protocols: which utterances, which labels, which folds, which validation.

SER results are only comparable under the same protocol. Each :class:`Protocol` fixes the
utterances used, the label set, the train / validation / test speakers of every fold, and
how the validation data for early stopping is chosen. No protocol ever uses test speakers
for validation.

This module is the one place for named protocols: :data:`PROTOCOL_REGISTRY` holds every
``--cv NAME`` (the corpus protocols below and anything added with
:func:`register_protocol`); :func:`estimators.cv.make_cv`,
:func:`estimators.cv.describe_cv_forms` and the experiment only consult it
(:data:`estimators.cv.PROTOCOLS` is the same dict). The corpus facts the built-in
protocols use (which RAVDESS actors train, validate and test; IEMOCAP's sessions) are
written here, in the functions that make their folds.

Use ``estimators fit --cv NAME`` or :func:`get_protocol` from Python::

    proto = get_protocol("ravdess-pepino")
    X = X[proto.keep(X.table)]
    for fold in proto.folds(X.table):
        ...  # fold.train, fold.valid (or None: internal speaker-disjoint split), fold.test
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Any, Callable, Union

import numpy as np
import pandas as pd

from .errors import ParameterError

__all__ = ["Fold", "Protocol", "ProtocolEntry", "PROTOCOL_REGISTRY", "register_protocol", "get_protocol", "corpus_protocol", "list_protocols"]


@dataclass
class Fold:
    """Integer positions (into the kept utterances) of one fold.

    ``valid`` is None when the estimator's internal speaker-disjoint split of the training
    part chooses the validation data.
    """

    train: np.ndarray
    test: np.ndarray
    valid: np.ndarray | None = None


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol.

    Attributes
    ----------
    name : str
    description : str
        What it is and where it comes from.
    validation : str
        How validation data for early stopping is chosen.
    corpus : str or None
        The corpus it is defined for (checked against the cache), or None for any.
    label_map : str or None
        Label map applied before training (e.g. ``"ravdess7"``).
    keep : callable
        ``table -> bool mask`` of the utterances used.
    make_folds : callable
        ``table (kept rows) -> list of Fold``.
    """

    name: str
    description: str
    validation: str
    corpus: str | None
    label_map: str | None
    keep_fn: Callable[[pd.DataFrame], np.ndarray]
    make_folds: Callable[[pd.DataFrame], list[Fold]]

    def keep(self, table: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the utterances this protocol uses."""
        return np.asarray(self.keep_fn(table), dtype=bool)

    def folds(self, table: pd.DataFrame) -> list[Fold]:
        """The folds over the kept utterances' table (positions index that table)."""
        folds = self.make_folds(table.reset_index(drop=True))
        sp = table["speaker"].astype(str).to_numpy()
        for i, f in enumerate(folds):
            if len(f.train) == 0 or len(f.test) == 0:
                raise ParameterError("cv", f"protocol {self.name!r} on a corpus with the speakers it names", f"fold {i} has an empty train or test part")
            test_sp = set(sp[f.test])
            if test_sp & set(sp[f.train]) or (f.valid is not None and test_sp & set(sp[f.valid])):
                raise ParameterError("cv", "folds whose test speakers are not in train or validation", f"{self.name} fold {i}")
        return folds


def _all(table: pd.DataFrame) -> np.ndarray:
    return np.ones(len(table), dtype=bool)


def _need(table: pd.DataFrame, column: str, proto: str) -> np.ndarray:
    if column not in table.columns:
        raise ParameterError("cv", f"protocol {proto!r} on a cache whose table has a {column!r} column", f"columns {list(table.columns)}")
    return table[column].to_numpy()


def _by_values(values: np.ndarray, train: set, valid: set, test: set) -> Fold:
    pos = np.arange(len(values))
    return Fold(
        pos[np.isin(values, list(train))],
        pos[np.isin(values, list(test))],
        pos[np.isin(values, list(valid))] if valid else None,
    )


def _ravdess_pepino(table: pd.DataFrame) -> list[Fold]:
    actor = _need(table, "actor", "ravdess-pepino").astype(int)
    return [_by_values(actor, set(range(1, 21)), {21, 22}, {23, 24})]


def _ravdess_6fold(table: pd.DataFrame) -> list[Fold]:
    actor = _need(table, "actor", "ravdess-6fold").astype(int)
    folds = []
    for k in range(6):
        test = set(range(4 * k + 1, 4 * k + 5))
        folds.append(_by_values(actor, set(range(1, 25)) - test, set(), test))
    return folds


def _ravdess_speech(table: pd.DataFrame) -> np.ndarray:
    return _need(table, "vocal_channel", "ravdess-6fold").astype(str) == "speech"


def _iemocap_loso(table: pd.DataFrame) -> list[Fold]:
    session = _need(table, "session", "iemocap-loso").astype(int)
    folds = []
    for s in range(1, 6):
        valid = s % 5 + 1  # the next session validates, cyclically
        folds.append(_by_values(session, set(range(1, 6)) - {s, valid}, {valid}, {s}))
    return folds


def _loso(table: pd.DataFrame) -> list[Fold]:
    sp = table["speaker"].astype(str).to_numpy()
    return [_by_values(sp, set(sp) - {s}, set(), {s}) for s in sorted(set(sp))]


def _group_kfold(k: int, proto: str) -> Callable[[pd.DataFrame], list[Fold]]:
    """Folds of ``GroupKFold(k)`` over the speakers (deterministic: greedy size balancing)."""

    def make(table: pd.DataFrame) -> list[Fold]:
        from sklearn.model_selection import GroupKFold

        sp = table["speaker"].astype(str).to_numpy()
        if len(set(sp)) < k:
            raise ParameterError("cv", f"protocol {proto!r} on a corpus with at least {k} speakers", f"{len(set(sp))} speakers")
        return [Fold(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)) for a, b in GroupKFold(n_splits=k).split(sp, groups=sp)]

    return make


#: What a registry name stands for: a :class:`Protocol`, a split spec string (an alias such
#: as ``"groupkfold:5"``) or a callable ``f(groups, y)`` returning ``(train_index,
#: test_index)`` pairs or a scikit-learn splitter (an object with ``split(X, y, groups)``).
ProtocolEntry = Union[Protocol, str, Callable[..., Any]]

_BUILT_IN: list[Protocol] = [
    Protocol(
        "ravdess-pepino",
        "RAVDESS as Pepino et al. (2021): actors 1-20 train, 21-22 validation, 23-24 test; 7 classes "
        "(calm merged into neutral); speech and song when the cache holds both",
        "actors 21-22 (fixed)",
        "ravdess",
        "ravdess7",
        _all,
        _ravdess_pepino,
    ),
    Protocol(
        "ravdess-6fold",
        "RAVDESS speech only, 8 classes, 6 folds of 4 consecutive actors (1-4, 5-8, ..., 21-24), "
        "as EmoBox's speaker-independent folds",
        "internal speaker-disjoint split of the training actors",
        "ravdess",
        None,
        _ravdess_speech,
        _ravdess_6fold,
    ),
    Protocol(
        "iemocap-loso",
        "IEMOCAP, 4 classes (excited merged into happy), 5 folds leaving one session out",
        "the next session (cyclically) of the 4 training sessions",
        "iemocap",
        None,
        _all,
        _iemocap_loso,
    ),
    Protocol(
        "emodb-loso",
        "EmoDB, leave one speaker out (10 folds)",
        "internal speaker-disjoint split of the training speakers",
        "emodb",
        None,
        _all,
        _loso,
    ),
    Protocol(
        "emovo-loao",
        "EMOVO, 7 classes, leave one actor out (6 folds: f1, f2, f3, m1, m2, m3)",
        "internal speaker-disjoint split of the 5 training actors",
        "emovo",
        None,
        _all,
        _loso,
    ),
    Protocol(
        "urdu-5fold",
        "URDU, 4 classes, GroupKFold(5) over the speaker codes (scikit-learn's deterministic size "
        "balancing); the speakers are very uneven (SM5 has 80 of the 400 files), so fold sizes "
        "and class balance differ between folds; 26 of the 29 speakers have files of one "
        "emotion only, so per-speaker normalisation removes the label (use global normalisation)",
        "internal speaker-disjoint split of the training speakers",
        "urdu",
        None,
        _all,
        _group_kfold(5, "urdu-5fold"),
    ),
]


#: The one registry of named protocols, name -> :data:`ProtocolEntry`: the built-in corpus
#: protocols and whatever :func:`register_protocol` added. ``estimators.cv.PROTOCOLS`` is
#: this same dict.
PROTOCOL_REGISTRY: dict[str, ProtocolEntry] = {p.name: p for p in _BUILT_IN}

# names make_cv reads as split specs (or the experiment as cross-corpus): a protocol of that
# name would shadow them
_SPEC_NAME = re.compile(r"logo|groupkfold:\d+|cross-corpus.*", re.IGNORECASE | re.DOTALL)


def register_protocol(name: str, protocol: ProtocolEntry, *, replace: bool = False) -> ProtocolEntry:
    """Add a named protocol to :data:`PROTOCOL_REGISTRY` and return it.

    It is then accepted by ``--cv NAME``, :func:`estimators.cv.make_cv` (split
    protocols), :func:`get_protocol` and listed by :func:`list_protocols` and
    :func:`estimators.cv.describe_cv_forms`.

    Parameters
    ----------
    name : str
        The ``--cv`` name; not a split spec form (``logo``, ``groupkfold:K``,
        ``cross-corpus:...``) and without surrounding spaces.
    protocol : Protocol, str or callable
        A :class:`Protocol` named ``name`` (kept utterances, label map, folds over the
        utterance table, optional fixed validation speakers); a split spec string
        (``"groupkfold:K"`` or ``"logo"``) that ``name`` stands for; or a callable
        ``f(groups, y)`` returning ``(train_index, test_index)`` pairs or a
        scikit-learn splitter.
    replace : bool
        Allow replacing a protocol already registered under ``name``.

    Raises
    ------
    ParameterError
        A bad name, a name already taken (without ``replace``), a Protocol whose own name
        differs, a string that is not a split spec, or anything else.
    """
    if not isinstance(name, str) or not name or name != name.strip() or _SPEC_NAME.fullmatch(name):
        raise ParameterError("protocol name", "a non-empty name without surrounding spaces that is not a split spec form (logo, groupkfold:K, cross-corpus:...)", name)
    if name in PROTOCOL_REGISTRY and not replace:
        raise ParameterError("protocol name", "a name not registered yet (or pass replace=True)", name)
    if isinstance(protocol, Protocol):
        if protocol.name != name:
            raise ParameterError("protocol", f"a Protocol named {name!r}", f"a Protocol named {protocol.name!r}")
    elif isinstance(protocol, str):
        if not re.fullmatch(r"logo|groupkfold:\d+", protocol.strip().lower()):
            raise ParameterError("protocol", "a split spec string: 'groupkfold:K' or 'logo'", protocol)
    elif not callable(protocol):
        raise ParameterError("protocol", "a Protocol, a split spec string or a callable f(groups, y)", protocol)
    PROTOCOL_REGISTRY[name] = protocol
    return protocol


def list_protocols() -> list[str]:
    """The names in :data:`PROTOCOL_REGISTRY`, sorted."""
    return sorted(PROTOCOL_REGISTRY)


def get_protocol(name: str) -> ProtocolEntry:
    """The registered protocol ``name`` (ParameterError listing the names otherwise).

    A :class:`Protocol` for the corpus protocols; what was registered (split spec string
    or callable) for split protocols.
    """
    try:
        return PROTOCOL_REGISTRY[name]
    except KeyError:
        raise ParameterError("cv", "one of " + ", ".join(list_protocols()), name) from None


def corpus_protocol(name: str) -> Protocol | None:
    """The :class:`Protocol` registered as ``name``; None for split protocols and other names.

    The experiment applies such a protocol to the utterance table (selection, label map,
    folds with validation); everything else goes through :func:`estimators.cv.make_cv`.
    """
    entry = PROTOCOL_REGISTRY.get(name)
    return entry if isinstance(entry, Protocol) else None
