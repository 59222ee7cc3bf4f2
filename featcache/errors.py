"""The exception tree of :mod:`featcache`.

Every error raised on purpose by the package derives from :class:`FeatcacheError`, so a
caller (the CLI in particular) can turn any of them into one clear message.
"""

from __future__ import annotations

__all__ = [
    "FeatcacheError",
    "ParameterError",
    "CorpusError",
    "AudioError",
    "ModelError",
    "ModelSourceError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "SpecError",
    "DownloadError",
    "ClusterError",
    "IncompleteStoreWarning",
]


class FeatcacheError(Exception):
    """Base class of every error raised by featcache."""


class ParameterError(FeatcacheError, ValueError):
    """A parameter has a value that is not allowed.

    The message names the parameter, what is allowed and what was given.
    """

    def __init__(self, name: str, allowed: str, given: object) -> None:
        self.name = name
        self.allowed = allowed
        self.given = given
        super().__init__(f"{name} must be {allowed}; got {given!r}")

    def __reduce__(self):
        # rebuilt from its own arguments, so it crosses process pools (joblib, Dask) intact;
        # Exception's default rebuilds from the message alone, which this __init__ refuses
        return type(self), (self.name, self.allowed, self.given)


class CorpusError(FeatcacheError):
    """A corpus folder or manifest cannot be read (missing folder, no matching files...)."""


class AudioError(FeatcacheError):
    """One audio file cannot be used; ``reason`` is a short human-readable explanation.

    Raised per file: the orchestration records the reason and goes on with the others.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


class ModelError(FeatcacheError):
    """A self-supervised model cannot be resolved or loaded."""


class ModelSourceError(ModelError):
    """A model name read from a file (a cache, a model directory) that featcache will not load
    unless the user names the model: a local path, or a model recorded as ``local:<name>``."""


class StoreError(FeatcacheError):
    """A feature store is missing, corrupt or cannot be written."""


class StoreLockedError(StoreError):
    """Another process is writing to the same store."""


class StoreMismatchError(StoreError):
    """A store holds features made with other parameters than the ones asked for."""


class SpecError(FeatcacheError, ValueError):
    """A feature specification (``all_layers``, ``layer:3``, ``mfcc+egemaps``...) is invalid."""


class DownloadError(FeatcacheError):
    """A corpus download failed (network, checksum, archive)."""


class ClusterError(FeatcacheError):
    """The Dask cluster cannot be used: no scheduler there, a worker cannot see the data,
    workers keep dying on a unit of work."""


class IncompleteStoreWarning(UserWarning):
    """A store holds fewer utterances than the corpus table lists (and does not list them as failed)."""
