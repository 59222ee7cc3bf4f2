"""featcache: extract self-supervised speech features once, read them fast many times.

Stage 1 of the toolkit. ``featcache extract`` writes, for every utterance of a corpus,
all hidden states of a wav2vec 2.0-family model, MFCC, log-mel, spectrogram and eGeMAPS
low-level descriptors into sharded HDF5 stores with per-speaker statistics;
:func:`featcache.open` reads them back as sklearn-indexable :class:`FeatureSet` objects.
"""

from featcache.errors import (
    AudioError,
    CorpusError,
    FeatcacheError,
    IncompleteStoreWarning,
    ModelError,
    ParameterError,
    SpecError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
)
from featcache.packed import Packed, Stream
from featcache.reader import FeatureCache, FeatureSet, find_caches, open_cache

open = open_cache  # noqa: A001  (featcache.open(path), like h5py.File / anndata.read_h5ad)

__version__ = "0.1.0"

__all__ = [
    "open",
    "open_cache",
    "find_caches",
    "FeatureCache",
    "FeatureSet",
    "Packed",
    "Stream",
    "FeatcacheError",
    "IncompleteStoreWarning",
    "ParameterError",
    "CorpusError",
    "AudioError",
    "ModelError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "SpecError",
    "__version__",
]
