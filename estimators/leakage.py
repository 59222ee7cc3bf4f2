"""Leakage guards: what every evaluation checks before it trains.

For every split an experiment runs (the outer folds of ``groupkfold``, ``logo``, a protocol
or a registered split callable; the inner folds of a grid search; cross-corpus train/test):

* ``duplicates`` -- no test utterance is an exact or near-duplicate of a training or
  validation one (content fingerprints stored at extraction, :mod:`featcache.fingerprint`);
* ``speakers`` -- no test speaker is among the training or validation speakers (not for
  cross-corpus, where the speakers are those of two different corpora);
* ``validation`` -- no fixed validation utterance is a test utterance.

A violation raises :class:`~estimators.errors.LeakageError` naming the files or speakers,
unless that kind is listed in ``allow_leakage`` (``--allow-leakage duplicates,speakers``):
then the run goes on and ``report.json`` records what was allowed and found. Only
reported (``report.json`` ``leakage.sentences`` and a note): sentences spoken in both
training and test (RAVDESS statements, IEMOCAP scripts), which many protocols accept; and
speaker-label confounding, a warning with speaker normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .errors import LeakageError, ParameterError

__all__ = ["LEAKAGE_KINDS", "LeakageGuard", "parse_allow_leakage", "guard_experiment"]

LEAKAGE_KINDS = ("duplicates", "speakers", "validation")
_SHOWN = 5  # violations named in an error message


def parse_allow_leakage(value: Any) -> list[str]:
    """``"duplicates,speakers"``, a list of kinds, or None -> the sorted kinds allowed.

    Raises
    ------
    ParameterError
        Anything else, or a kind not in :data:`LEAKAGE_KINDS`.
    """
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise ParameterError("allow_leakage", "a comma-separated list of " + ", ".join(LEAKAGE_KINDS), value)
    kinds = [str(v).strip() for v in items if str(v).strip()]
    if any(k not in LEAKAGE_KINDS for k in kinds):
        raise ParameterError("allow_leakage", "a comma-separated list of " + ", ".join(LEAKAGE_KINDS), value)
    return sorted(set(kinds))


@dataclass
class _Side:
    """One set of utterances: ids, files, speakers, sentences, and its duplicate pairs."""

    ids: np.ndarray
    paths: np.ndarray
    speakers: np.ndarray
    sentences: np.ndarray
    sentence_column: str | None


def _side(X) -> _Side:
    from featcache.audit import sentence_keys

    table = X.table
    col, keys = sentence_keys(table)
    return _Side(np.asarray(X.ids).astype(str), table["path"].astype(str).to_numpy(), np.asarray(X.speakers).astype(str), keys, col)


def _fingerprints(X):
    """``(Fingerprints of X, their positions in X, n without)``; None when X has no cache."""
    from featcache.fingerprint import read_fingerprints

    cache = getattr(X, "cache", None)
    if cache is None or not hasattr(cache, "stores"):
        return None
    fp = read_fingerprints(cache).subset(np.asarray(X.ids).astype(str))
    where = {u: i for i, u in enumerate(np.asarray(X.ids).astype(str))}
    return fp, np.array([where[u] for u in fp.ids], dtype=np.int64), len(fp.missing)


@dataclass
class LeakageGuard:
    """Checks splits of one experiment; collects what ``report.json`` records under ``leakage``."""

    allowed: list[str]
    checks: dict[str, str] = field(default_factory=dict)
    found: list[dict] = field(default_factory=list)  # allowed violations
    sentences: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict:
        return {"allowed": self.allowed, "checks": self.checks, "allowed_violations": self.found[:100],
                "n_allowed_violations": len(self.found), "sentences": self.sentences, "notes": self.notes}

    def _violate(self, kind: str, where: str, items: list[str]) -> None:
        if not items:
            return
        if kind in self.allowed:
            self.found += [{"kind": kind, "where": where, "what": s} for s in items]
            return
        more = f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
        raise LeakageError(
            f"{kind} leakage in {where}: " + "; ".join(items[:_SHOWN]) + more
            + f". Fix the split or the corpus (see `featcache audit`), or pass allow_leakage=['{kind}']"
            f" (--allow-leakage {kind}) to run anyway; it is recorded in report.json"
        )

    def dup_pairs(self, X, X_other=None) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """Duplicate pairs (positions in X, positions in X_other or X) with descriptions; None: not checkable."""
        from featcache.fingerprint import duplicate_pairs

        a = _fingerprints(X)
        b = a if X_other is None else _fingerprints(X_other)
        if a is None or b is None:
            self.checks["duplicates"] = "not checked: the features do not come from a corpus cache"
            return None
        missing = a[2] + (b[2] if X_other is not None else 0)
        if missing:
            self.notes.append(
                f"duplicates: {missing} utterance(s) have no content fingerprints (a cache extracted before featcache"
                " format 1.1) and could not be checked; re-extract into a new --cache-dir to check them"
            )
        pairs = duplicate_pairs(a[0], None if X_other is None else b[0])
        pa = np.array([a[1][p.a] for p in pairs], dtype=np.int64)
        pb = np.array([b[1][p.b] for p in pairs], dtype=np.int64)
        what = [f"{p.kind}" + (f", distance {p.distance:.3f}" if p.kind == "near" else "") for p in pairs]
        n_checked = len(a[0]) + (len(b[0]) if X_other is not None else 0)
        self.checks["duplicates"] = ("checked" if not missing else f"checked {n_checked} utterances, {missing} without fingerprints")
        return pa, pb, what

    def check_split(self, where: str, S: _Side, pairs, train, test, valid=None) -> None:
        """Speakers, validation and duplicates of one (train, test[, valid]) split of one set."""
        train, test = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
        valid = np.asarray([] if valid is None else valid, dtype=np.int64)
        rest = np.union1d(train, valid)
        both = sorted(set(S.speakers[test]) & set(S.speakers[rest]))
        self._violate("speakers", where, [f"speaker {s} is in the test part and in training/validation" for s in both])
        same = np.intersect1d(valid, test)
        self._violate("validation", where, [f"validation utterance {S.ids[i]} ({S.paths[i]}) is a test utterance" for i in same])
        if pairs is not None:
            pa, pb, what = pairs
            is_test, is_rest = np.zeros(len(S.ids), bool), np.zeros(len(S.ids), bool)
            is_test[test], is_rest[rest] = True, True
            hit = np.flatnonzero((is_test[pa] & is_rest[pb]) | (is_test[pb] & is_rest[pa]))
            self._violate("duplicates", where, [
                f"{S.ids[pa[k]]} ({S.paths[pa[k]]}, speaker {S.speakers[pa[k]]}) and {S.ids[pb[k]]} ({S.paths[pb[k]]},"
                f" speaker {S.speakers[pb[k]]}) are duplicates ({what[k]}), one in test, one in training/validation" for k in hit])

    def sentence_overlap(self, folds: Sequence[tuple[np.ndarray, np.ndarray]], train_side: _Side, test_side: _Side) -> None:
        """Record, per fold, the sentences spoken both in its test part and in its training part."""
        col = train_side.sentence_column if train_side.sentence_column == test_side.sentence_column else None
        if col is None:
            self.sentences = {"column": None, "note": "the utterance table says nothing about what was said"}
            return
        rows = []
        for i, (rest, test) in enumerate(folds):
            seen = set(train_side.sentences[rest]) - {""}
            t = test_side.sentences[test]
            shared = sorted(seen & set(t))
            rows.append({"fold": i, "shared": shared[:20], "n_shared": len(shared),
                         "test_share": round(float(np.isin(t, shared).mean()) if len(t) else 0.0, 4)})
        share = float(np.mean([r["test_share"] for r in rows])) if rows else 0.0
        self.sentences = {"column": col, "per_fold": rows, "mean_test_share": round(share, 4)}
        if share > 0:
            self.notes.append(
                f"sentence overlap ({col}): on average {share:.0%} of the test utterances say a sentence also spoken in"
                " training (lexical leakage: reported only, since many protocols accept it; scores then include"
                " recognising the sentence)"
            )


def _inner_splits(groups: np.ndarray, train: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The grid search's inner folds of one training part (:func:`estimators.cv.inner_cv`), as positions."""
    from .cv import inner_cv

    cv = inner_cv(groups[train])
    return [(train[a], train[b]) for a, b in cv.split(np.zeros(len(train)), None, groups[train])]


def guard_experiment(exp, data, splits: list, param_grid: dict | None, say: Callable[..., None]) -> dict:
    """Check every split of an experiment (raises :class:`LeakageError`); the ``leakage`` report.

    Parameters
    ----------
    exp : Experiment
    data : ExperimentData
    splits : list of (train, test) or (train, test, valid)
        The outer splits (one ``(all, empty)`` split for cross-corpus).
    param_grid : dict or None
        With a grid, the inner folds of every outer training part (and of the refit) too.
    say : callable
        ``say(message, always=True)`` for the notes.
    """
    guard = LeakageGuard(parse_allow_leakage(getattr(exp, "allow_leakage", None)))
    if data.cross is not None:
        c = data.cross
        tr, te = _side(c.X_train), _side(c.X_test)
        pairs = guard.dup_pairs(c.X_train, c.X_test)
        guard.checks["speakers"] = "not applicable: training and test speakers belong to two corpora"
        guard.checks["validation"] = "internal speaker-disjoint split of the training corpus"
        if pairs is not None:
            pa, pb, what = pairs
            guard._violate("duplicates", str(exp.cv), [
                f"training {tr.ids[a]} ({tr.paths[a]}) and test {te.ids[b]} ({te.paths[b]}) are duplicates ({w})"
                for a, b, w in zip(pa, pb, what)])
        guard.sentence_overlap([(np.arange(len(tr.ids)), np.arange(len(te.ids)))], tr, te)
    else:
        S = _side(data.X)
        pairs = guard.dup_pairs(data.X)
        groups = np.asarray(data.groups).astype(str)
        fixed = any(len(sp) > 2 and sp[2] is not None for sp in splits)
        for i, sp in enumerate(splits):
            guard.check_split(f"fold {i} ({exp.cv})", S, pairs, sp[0], sp[1], sp[2] if len(sp) > 2 else None)
            if param_grid and not (len(sp) > 2 and sp[2] is not None):
                for j, (a, b) in enumerate(_inner_splits(groups, np.asarray(sp[0]))):
                    guard.check_split(f"fold {i} grid-search inner fold {j}", S, pairs, a, b)
        if param_grid and exp.refit:
            for j, (a, b) in enumerate(_inner_splits(groups, np.arange(len(groups)))):
                guard.check_split(f"refit grid-search inner fold {j}", S, pairs, a, b)
        guard.checks["speakers"] = "checked"
        guard.checks["validation"] = "checked (fixed validation sets)" if fixed else "internal speaker-disjoint split of each training part"
        guard.sentence_overlap([(np.union1d(sp[0], sp[2] if len(sp) > 2 and sp[2] is not None else []).astype(np.int64),
                                 np.asarray(sp[1], dtype=np.int64)) for sp in splits], S, S)
    _confounding(exp, data, guard)
    if guard.found:
        kinds = sorted({f["kind"] for f in guard.found})
        guard.notes.append(f"leakage allowed by allow_leakage ({', '.join(kinds)}): {len(guard.found)} violation(s) found and"
                           " recorded in report.json; the scores are not those of a clean evaluation")
    for note in guard.notes:
        say(note, always=True)
    return guard.report()


def _confounding(exp, data, guard: LeakageGuard) -> None:
    """Warn when speaker normalisation meets speakers that each carry (nearly) one label."""
    from featcache.audit import CONFOUND_SHARE, confounded_speakers

    if data.task != "classification":
        return
    found = confounded_speakers(data.groups, data.y)
    guard.checks["confounded_speakers"] = ", ".join(f"{f['speaker']} ({f['label']} {f['share']:.0%})" for f in found) or "none"
    if found and exp.normalize == "speaker":
        guard.notes.append(
            f"warning: {len(found)} speaker(s) carry one label in at least {CONFOUND_SHARE:.0%} of their utterances"
            f" ({guard.checks['confounded_speakers'][:200]}): speaker normalisation removes the emotion itself with their"
            " voice; consider --normalize global"
        )
