"""Label maps: class-set variants of a corpus (e.g. RAVDESS with calm merged into neutral).

Also the common label vocabulary for comparing corpora: :data:`HARMONISE` renames the
corpus-specific label names (IEMOCAP's ``neu/hap/exc/ang/sad``) to the names every other
loader uses, and :func:`harmonise_labels` builds the label map that applies it (used by
cross-corpus evaluation, ``estimators fit --cv cross-corpus:A->B``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from featcache.errors import ParameterError

__all__ = ["HARMONISE", "LABEL_MAPS", "apply_label_map", "harmonise_labels"]

#: Named label maps. Each one lists every label of its corpus explicitly, so that a
#: label the map does not know is an error rather than a silent pass-through.
LABEL_MAPS: dict[str, dict[str, str]] = {
    # RAVDESS 7 classes: calm merged into neutral (the usual 7-class protocol).
    "ravdess7": {
        "neutral": "neutral",
        "calm": "neutral",
        "happy": "happy",
        "sad": "sad",
        "angry": "angry",
        "fearful": "fearful",
        "disgust": "disgust",
        "surprised": "surprised",
    },
}

#: Corpus-specific label names -> the common vocabulary (``neutral``, ``happy``, ``angry``,
#: ``sad``, ... as the RAVDESS, EmoDB, TESS, SAVEE and CREMA-D loaders name them). The
#: IEMOCAP loader keeps the corpus's codes (``exc`` already merged into ``hap``).
HARMONISE: dict[str, str] = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}


def harmonise_labels(labels: Iterable[str]) -> dict[str, str]:
    """The label map that renames ``labels`` to the common vocabulary of :data:`HARMONISE`.

    Parameters
    ----------
    labels : iterable of str
        The labels present (e.g. a cache's distinct labels).

    Returns
    -------
    dict of str to str
        Every given label -> its common name (itself when :data:`HARMONISE` does not list
        it), so that it can be passed as an explicit label map.
    """
    return {lab: HARMONISE.get(lab, lab) for lab in labels}


def apply_label_map(
    labels: Iterable[str] | pd.Series,
    name_or_mapping: str | Mapping[str, str],
    *,
    missing: str = "raise",
) -> pd.Series | list[str]:
    """Rename labels with a named map of :data:`LABEL_MAPS` or an explicit mapping.

    Parameters
    ----------
    labels : iterable of str or pandas.Series
        Labels to map (e.g. ``scan.table["label"]``). Missing values (None/NaN) are
        kept as they are.
    name_or_mapping : str or mapping
        A key of :data:`LABEL_MAPS` or a ``{old: new}`` mapping.
    missing : {"raise", "keep"}
        What to do with a label the map does not list: ``"raise"`` (default) raises
        :class:`~featcache.errors.ParameterError` naming the unknown labels, ``"keep"``
        keeps such labels unchanged.

    Returns
    -------
    pandas.Series (same index and name) when ``labels`` is a Series, else a list.

    Raises
    ------
    ParameterError
        Unknown map name, bad ``missing``, or (with ``missing="raise"``) labels not in
        the map.
    """
    if isinstance(name_or_mapping, str):
        if name_or_mapping not in LABEL_MAPS:
            raise ParameterError(
                "label map", "one of " + ", ".join(sorted(LABEL_MAPS)), name_or_mapping
            )
        mapping: Mapping[str, str] = LABEL_MAPS[name_or_mapping]
        map_name = name_or_mapping
    elif isinstance(name_or_mapping, Mapping):
        mapping = name_or_mapping
        map_name = "the given mapping"
    else:
        raise ParameterError("label map", "a name or a mapping", name_or_mapping)
    if missing not in ("raise", "keep"):
        raise ParameterError("missing", "'raise' or 'keep'", missing)

    series = labels if isinstance(labels, pd.Series) else pd.Series(list(labels), dtype=object)
    present = series.dropna()
    unknown = sorted({str(v) for v in present if v not in mapping})
    if unknown and missing == "raise":
        raise ParameterError(
            "labels",
            f"labels listed in {map_name} ({', '.join(sorted(mapping))}); "
            "pass missing='keep' to keep the others unchanged",
            unknown,
        )
    mapped = series.map(lambda v: v if pd.isna(v) or v not in mapping else mapping[v])
    if isinstance(labels, pd.Series):
        return mapped
    return mapped.tolist()
