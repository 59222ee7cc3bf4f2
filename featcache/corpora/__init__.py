"""Corpus loaders: turn a corpus folder into a table of utterances.

>>> from featcache.corpora import get_corpus
>>> scan = get_corpus("ravdess").scan("data/ravdess")  # doctest: +SKIP
>>> scan.table.columns[:4].tolist()  # doctest: +SKIP
['id', 'path', 'speaker', 'label']

Registered loaders: ``ravdess``, ``iemocap``, ``emodb``, ``tess``, ``savee``, ``cremad``,
``emovo`` (Italian), ``urdu`` (natural Urdu speech) and ``csv`` (any corpus listed in a
CSV manifest). See :class:`CorpusScan` for the table columns shared by all corpora and
each loader class for its own columns. Class-set
variants (``ravdess7``: calm merged into neutral) are label maps, applied with
:func:`apply_label_map`; :data:`HARMONISE` / :func:`harmonise_labels` give the common label
names used to compare corpora (IEMOCAP's ``neu`` is ``neutral`` elsewhere).
"""

from __future__ import annotations

from featcache.corpora.acted import CremaD, EmoDB, Savee, Tess
from featcache.corpora.base import (
    AUDIO_EXTENSIONS,
    Corpus,
    CorpusScan,
    CorpusWarning,
    FileNameCorpus,
    get_corpus,
    list_corpora,
    register_corpus,
)
from featcache.corpora.emovo import Emovo
from featcache.corpora.iemocap import Iemocap
from featcache.corpora.labels import HARMONISE, LABEL_MAPS, apply_label_map, harmonise_labels
from featcache.corpora.manifest import CsvCorpus
from featcache.corpora.ravdess import Ravdess
from featcache.corpora.urdu import Urdu

__all__ = [
    "AUDIO_EXTENSIONS",
    "HARMONISE",
    "LABEL_MAPS",
    "Corpus",
    "CorpusScan",
    "CorpusWarning",
    "CremaD",
    "CsvCorpus",
    "EmoDB",
    "Emovo",
    "FileNameCorpus",
    "Iemocap",
    "Ravdess",
    "Savee",
    "Tess",
    "Urdu",
    "apply_label_map",
    "get_corpus",
    "harmonise_labels",
    "list_corpora",
    "register_corpus",
]

for _corpus in (Ravdess(), Iemocap(), EmoDB(), Tess(), Savee(), CremaD(), Emovo(), Urdu(), CsvCorpus()):
    register_corpus(_corpus, replace=True)
del _corpus
