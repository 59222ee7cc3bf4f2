"""A picture of one or more corpus caches before anyone trains on them (``featcache audit``).

:func:`audit` reports, per cache: label x speaker counts, durations per label, the source
files' sample rates, channels and formats, clipping and silence (both only while the corpus
folder is still there), the utterances the extractors refused (too short...), the
sentences, and **speaker-label confounding** (speakers whose utterances nearly all carry
one label); and over all the caches together, **exact and near-duplicate groups** from the
content fingerprints stored at extraction (:mod:`featcache.fingerprint`), so that ``audit
A B`` also finds recordings shared between corpora. :func:`write_audit` adds the PNG plots
(:mod:`featcache.audit_plots`) and ``audit.json``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from featcache.cache import FeatureCache, find_caches
from featcache.errors import StoreError
from featcache.fileio import atomic_write_json, resolve_inside
from featcache.fingerprint import NEAR_DUPLICATE_DISTANCE, Fingerprints, duplicate_groups, duplicate_pairs, read_fingerprints

__all__ = ["audit", "write_audit", "audit_lines", "confounded_speakers", "sentence_keys", "CONFOUND_SHARE", "SENTENCE_COLUMNS"]

#: A speaker is confounded with a label when at least this share of their utterances carry it.
CONFOUND_SHARE = 0.9
_CONFOUND_MIN = 3  # utterances a speaker needs before their share means anything
#: Table columns that hold what was said (RAVDESS/CREMA-D ``statement``, EmoDB ``text``...).
SENTENCE_COLUMNS = ("statement", "sentence", "text", "transcript", "word")
_IEMOCAP_SESSION = re.compile(r"^Ses\d\d[FM]_")
_SHOWN = 50  # most entries listed per section in the JSON (the counts are always complete)


def sentence_keys(table: pd.DataFrame) -> tuple[str | None, np.ndarray]:
    """What each utterance says, where the table tells it.

    Returns
    -------
    (column, keys)
        The column used (None when none) and per row the sentence, or ``""`` where unknown.
        IEMOCAP: scripted dialogs (``script01_1``: the same script in every session),
        improvised ones unknown.
    """
    if "mode" in table.columns and "dialog" in table.columns:
        scripted = table["mode"].astype(str).to_numpy() == "scripted"
        dialog = table["dialog"].astype(str).str.replace(_IEMOCAP_SESSION, "", regex=True).to_numpy()
        return "dialog (scripted)", np.where(scripted, dialog, "").astype(object)
    for col in SENTENCE_COLUMNS:
        if col in table.columns:
            return col, table[col].fillna("").astype(str).to_numpy(dtype=object)
    return None, np.full(len(table), "", dtype=object)


def confounded_speakers(speakers: Iterable, labels: Iterable, *, share: float = CONFOUND_SHARE) -> list[dict]:
    """Speakers (with at least 3 utterances) whose utterances nearly all carry one label.

    Returns
    -------
    list of dict
        ``speaker``, ``label`` (the majority one), ``share`` and ``n`` (utterances), by speaker.
    """
    sp = np.asarray(list(speakers)).astype(str)
    lab = np.asarray(list(labels)).astype(str)
    out = []
    for s in sorted(set(sp)):
        mine = lab[sp == s]
        top, n = Counter(mine).most_common(1)[0]
        if len(mine) >= _CONFOUND_MIN and n / len(mine) >= share:
            out.append({"speaker": s, "label": top, "share": round(n / len(mine), 4), "n": int(len(mine))})
    return out


def _confounding(table: pd.DataFrame) -> dict:
    labelled = table[table["label"].astype(str) != ""]
    found = confounded_speakers(labelled["speaker"], labelled["label"]) if len(labelled) else []
    n_utt = sum(f["n"] for f in found)
    out = {"speakers": found, "n_speakers": len(found), "share_of_utterances": round(n_utt / max(len(labelled), 1), 4)}
    if found:
        out["note"] = (
            f"{len(found)} of {labelled['speaker'].nunique()} speakers carry one label in at least {CONFOUND_SHARE:.0%} of"
            " their utterances: speaker normalisation (--normalize speaker) then removes the emotion itself with the"
            " speaker's voice, and any split that is not by speaker leaks the label through the speaker's identity."
            " Split by speaker and prefer --normalize global (or none)."
        )
    return out


def _stats(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"n": int(len(values)), "known": 0}
    return {"n": int(len(values)), "known": int(len(v)), "total_s": round(float(v.sum()), 3), "mean_s": round(float(v.mean()), 4),
            "min_s": round(float(v.min()), 4), "median_s": round(float(np.median(v)), 4), "max_s": round(float(v.max()), 4)}


def _source_paths(cache: FeatureCache) -> tuple[dict[str, Path], str | None]:
    """Utterance id -> source file, or a note why the sources cannot be read."""
    data_dir = cache.info.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        return {}, "corpus.json names no data folder"
    base = Path(data_dir)
    if not base.exists():
        return {}, f"the corpus folder {data_dir} is not there any more (rates, channels, clipping and silence skipped)"
    base = base if base.is_dir() else base.parent  # a csv manifest: paths are relative to its folder
    paths = {}
    for uid, rel in zip(cache.utterances["id"], cache.utterances["path"]):
        try:
            paths[uid] = resolve_inside(base, str(rel), "utterances.csv path", StoreError)
        except StoreError:
            continue  # an absolute or escaping path in a shared cache: never opened
    return paths, None


def _failed(cache: FeatureCache) -> dict:
    failed: dict[str, dict[str, str]] = {}
    for name, reader in cache.stores.items():
        for uid, reason in reader.failed.items():
            failed.setdefault(uid, {})[name] = reason
    short = sorted(u for u, r in failed.items() if any("short" in v for v in r.values()))
    return {"n": len(failed), "too_short": short[:_SHOWN], "n_too_short": len(short),
            "reasons": dict(sorted(failed.items())[:_SHOWN])}


def _one_cache(cache: FeatureCache, fp: Fingerprints, read_audio: bool) -> dict:
    from featcache.audit_sources import source_info, source_levels

    tab = cache.utterances
    labels = tab["label"].astype(str)
    counts = pd.crosstab(tab["speaker"].astype(str), labels)
    dur = pd.to_numeric(tab.get("duration", pd.Series(np.nan, index=tab.index)), errors="coerce").to_numpy(float)
    col, keys = sentence_keys(tab)
    said = keys != ""
    notes = []
    paths, why = _source_paths(cache)
    if why:
        notes.append(why)
    out = {
        "corpus": cache.corpus, "path": str(cache.path), "data_dir": cache.info.get("data_dir"),
        "n_utterances": int(len(tab)), "n_speakers": int(tab["speaker"].nunique()),
        "labels": {str(k): int(v) for k, v in labels.value_counts().sort_index().items()},
        "counts": {"speakers": [str(s) for s in counts.index], "labels": [str(c) for c in counts.columns],
                   "matrix": counts.to_numpy().astype(int).tolist()},
        "durations": {"all": _stats(dur), "per_label": {str(k): _stats(dur[(labels == k).to_numpy()]) for k in sorted(set(labels))}},
        "sentences": {"column": col, "n_distinct": int(len(set(keys[said]))), "n_known": int(said.sum())},
        "confounding": _confounding(tab),
        "failed": _failed(cache),
        "fingerprints": {"n": len(fp), "missing": len(fp.missing)},
        "sources": source_info(paths) if paths else None,
        "levels": source_levels(paths) if paths and read_audio else None,
        "notes": notes,
    }
    if fp.missing:
        notes.append(f"{len(fp.missing)} utterance(s) have no content fingerprints (extracted before featcache format 1.1):"
                     " duplicates among them cannot be found; re-extract into a new --cache-dir to add them")
    if paths and not read_audio:
        notes.append("clipping and silence not measured (--no-audio)")
    return out


def _duplicates(caches: Sequence[FeatureCache], fps: Sequence[Fingerprints], threshold: float) -> dict:
    """Exact and near-duplicate groups over all caches together."""
    owner, ids = [], []
    for k, fp in enumerate(fps):
        owner += [k] * len(fp)
        ids += fp.ids
    joined = Fingerprints("*", ids, np.concatenate([f.sha256 for f in fps]) if fps else np.zeros(0, object),
                          np.concatenate([f.vectors for f in fps]) if fps else np.zeros((0, 1), np.float32))
    pairs = duplicate_pairs(joined, threshold=threshold)
    rows = [caches[k].utterances.set_index("id") for k in range(len(caches))]
    groups = []
    for g in duplicate_groups(len(ids), [(p.a, p.b) for p in pairs]):
        members = [{"corpus": caches[owner[i]].corpus, "id": ids[i], "path": str(rows[owner[i]].at[ids[i], "path"]),
                    "speaker": str(rows[owner[i]].at[ids[i], "speaker"]), "label": str(rows[owner[i]].at[ids[i], "label"])} for i in g]
        inside = [p for p in pairs if p.a in g]
        groups.append({
            "kind": "exact" if len({str(joined.sha256[i]) for i in g}) == 1 else "near",
            "max_distance": round(max(p.distance for p in inside), 4), "members": members,
            "cross_speaker": len({(m["corpus"], m["speaker"]) for m in members}) > 1,
            "cross_corpus": len({m["corpus"] for m in members}) > 1,
        })
    return {"threshold": threshold, "n_exact_pairs": sum(p.kind == "exact" for p in pairs),
            "n_near_pairs": sum(p.kind == "near" for p in pairs), "n_groups": len(groups), "groups": groups}


def _expand(paths: Iterable) -> list[FeatureCache]:
    caches: list[FeatureCache] = []
    for p in paths:
        found = find_caches(Path(p))
        if not found:
            raise StoreError(f"{p} holds no featcache corpus cache (no corpus.json); run featcache extract first")
        caches += [FeatureCache(f) for f in found if all(c.path.resolve() != f.resolve() for c in caches)]
    return caches


def audit(paths: Iterable, *, read_audio: bool = True, threshold: float = NEAR_DUPLICATE_DISTANCE) -> dict:
    """Audit corpus caches (each path: a corpus cache or a root holding several).

    Parameters
    ----------
    paths : iterable of path
    read_audio : bool
        Decode the source files for clipping and silence (when the corpus folder is there).
    threshold : float
        Largest fingerprint distance called a near-duplicate.

    Returns
    -------
    dict
        ``caches`` (one summary per corpus cache) and ``duplicates`` (over all of them):
        what ``audit.json`` holds.

    Raises
    ------
    StoreError
        A path holds no corpus cache, or a cache cannot be read.
    """
    caches = _expand(paths)
    if not caches:
        raise StoreError("featcache audit needs at least one corpus cache")
    fps = [read_fingerprints(c) for c in caches]
    return {
        "format": "featcache.audit", "format_version": "1.0",
        "caches": [_one_cache(c, f, read_audio) for c, f in zip(caches, fps)],
        "duplicates": _duplicates(caches, fps, threshold),
    }


def write_audit(summary: dict, out_dir: Path) -> list[Path]:
    """Write ``audit.json`` and the plots of every cache into ``out_dir``; returns the files."""
    from featcache.audit_plots import plot_counts, plot_durations

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, c in enumerate(summary["caches"]):
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", c["corpus"]) + (f"-{i}" if i else "")
        cache = FeatureCache(Path(c["path"]))
        files.append(plot_counts(c["counts"], out / f"{stem}_counts.png", title=f"{c['corpus']}: utterances per speaker and label"))
        files.append(plot_durations(cache.utterances, out / f"{stem}_durations.png", title=f"{c['corpus']}: durations per label"))
    atomic_write_json(out / "audit.json", summary)
    return [*files, out / "audit.json"]


def _cache_lines(c: dict) -> list[str]:
    d = c["durations"]
    lines = [f"{c['corpus']} ({c['path']}): {c['n_utterances']} utterances, {c['n_speakers']} speakers, {len(c['labels'])} labels",
             "  labels: " + ", ".join(f"{k or '(none)'} {v}" for k, v in c["labels"].items())]
    if d["all"].get("known"):
        per = ", ".join(f"{k} {v['mean_s']:.2f}" for k, v in d["per_label"].items() if v.get("known"))
        lines.append(f"  durations: {d['all']['total_s'] / 3600:.2f} h, {d['all']['min_s']:.2f}-{d['all']['max_s']:.2f} s; mean per label (s): {per}")
    src, lev = c["sources"], c["levels"]
    if src:
        lines.append("  sources: rates " + ", ".join(f"{k} Hz x {v}" for k, v in src["rates"].items())
                     + "; channels " + ", ".join(f"{k} x {v}" for k, v in src["channels"].items())
                     + "; " + ", ".join(f"{k} x {v}" for k, v in src["formats"].items())
                     + (f"; {len(src['unreadable'])} unreadable" if src["unreadable"] else ""))
    if lev and lev.get("n_files"):
        lines.append(f"  levels: clipping in {len(lev['clipped_files'])} of {lev['n_files']} files; silent frames {lev['mean_silent_fraction']:.1%}"
                     f" on average, {len(lev['mostly_silent'])} files over 90 % silent, {len(lev['digital_silence'])} digitally silent;"
                     f" peak {lev['peak_dbfs']['median']:.1f} dBFS (median)")
    f = c["failed"]
    lines.append(f"  refused by the extractors: {f['n']} (too short: {f['n_too_short']}" + (f": {', '.join(f['too_short'][:5])}" if f["too_short"] else "") + ")")
    s = c["sentences"]
    lines.append(f"  sentences ({s['column']}): {s['n_distinct']} distinct" if s["column"] else "  sentences: not in the table")
    conf = c["confounding"]
    if conf["speakers"]:
        who = ", ".join(f"{x['speaker']} ({x['label']} {x['share']:.0%})" for x in conf["speakers"][:10])
        lines += [f"  SPEAKER-LABEL CONFOUNDING: {who}", "  " + conf["note"]]
    else:
        lines.append(f"  speaker-label confounding: none (no speaker has {CONFOUND_SHARE:.0%} of one label)")
    lines += [f"  note: {n}" for n in c["notes"]]
    return lines


def audit_lines(summary: dict) -> list[str]:
    """A human-readable report of :func:`audit`'s summary (what ``featcache audit`` prints)."""
    lines = [line for c in summary["caches"] for line in _cache_lines(c)]
    dup = summary["duplicates"]
    lines.append(f"duplicates (fingerprint distance <= {dup['threshold']:g}): {dup['n_exact_pairs']} exact pair(s),"
                 f" {dup['n_near_pairs']} near pair(s), in {dup['n_groups']} group(s)")
    for g in dup["groups"][:_SHOWN]:
        where = ", ".join(f"{m['corpus']}:{m['path']} (speaker {m['speaker']}, {m['label']})" for m in g["members"])
        flags = [w for w, on in (("across speakers", g["cross_speaker"]), ("across corpora", g["cross_corpus"])) if on]
        lines.append(f"  {g['kind']}{' (' + ', '.join(flags) + ')' if flags else ''}, distance <= {g['max_distance']:.3f}: {where}")
    if dup["n_groups"] > _SHOWN:
        lines.append(f"  ... and {dup['n_groups'] - _SHOWN} more group(s) (see --json)")
    return lines
