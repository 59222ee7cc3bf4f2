"""Feature extractors: small callables ``(signal, sampling_rate) -> array``.

:func:`from_description` is the registry: it rebuilds the extractor a store (or a model
directory) recorded, from its recorded name and parameters, each class through its own
:meth:`~featcache.extractors.base.Extractor.from_params`; nothing reverse-engineers a
constructor.
"""

from __future__ import annotations

from typing import Any

from featcache.errors import ParameterError
from featcache.extractors.base import Extractor

__all__ = ["Extractor", "extractor_class", "from_description"]


def extractor_class(name: str) -> type[Extractor]:
    """The class of a recorded extractor name (``mfcc``, ``logmel``, ``spectrogram``, ``egemaps``,
    ``egemaps_functionals``, ``compare_functionals``, ``ssl``)."""
    from featcache.extractors.functionals import FUNCTIONALS
    from featcache.extractors.handcrafted import HANDCRAFTED

    if name == "ssl":
        from featcache.extractors.ssl import SSLExtractor

        return SSLExtractor
    if name in FUNCTIONALS:
        return FUNCTIONALS[name]
    if name not in HANDCRAFTED:
        raise ParameterError("extractor name", f"one of ssl, {', '.join([*HANDCRAFTED, *FUNCTIONALS])}", name)
    return HANDCRAFTED[name]


def from_description(name: str, params: dict[str, Any], **context: Any) -> Extractor:
    """Rebuild a recorded extractor (``store.json``'s ``extractor.name`` and ``.params``).

    ``context`` is what is not a parameter of the features: ``device`` and, for a
    self-supervised model, ``model`` (where the user says it is). The rebuilt extractor's
    parameters equal the recorded ones, or :class:`ParameterError` says which differ.
    """
    return extractor_class(name).from_params(params, **context)
