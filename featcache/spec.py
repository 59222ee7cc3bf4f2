"""Feature specs: which stores and layers a spec such as ``all_layers+egemaps`` names.

Layers are named by their *model* layer number (``layer:6`` is hidden state 6 of the
model) and resolved to the position the store keeps them at: a store extracted with
``--layers 0,6-12`` holds model layer 6 at position 1 (:attr:`StoreReader.layer_numbers`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from featcache.errors import SpecError
from featcache.extractors._layers import format_layers
from featcache.store import StoreReader

__all__ = ["StreamSpec", "format_layers", "parse_spec"]


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a feature spec: a store and the layers taken from it (stored positions,
    what :meth:`StoreReader.frames` indexes)."""

    store: str
    layers: tuple[int, ...]
    name: str


def parse_spec(spec: str, stores: dict[str, StoreReader]) -> list[StreamSpec]:
    """Resolve a feature spec against the stores of a cache.

    Grammar: streams joined by ``+``; each stream is ``[STORE:]WHAT`` with WHAT one of
    ``all_layers``, ``layer:K``, ``layers:A-B`` (inclusive), ``local_encoder`` (layer 0),
    ``output`` (last layer), or a store name (``mfcc``, ``logmel``, ``spectrogram``,
    ``egemaps``, any store folder: all its layers). ``K``, ``A`` and ``B`` are model layer
    numbers; a layer the store did not keep is a :class:`SpecError` naming those it holds.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"feature spec must be a non-empty string; got {spec!r}")
    out = []
    for part in spec.split("+"):
        part = part.strip()
        tokens = part.split(":")
        store = None
        if len(tokens) > 1 and tokens[0] in stores:
            store, tokens = tokens[0], tokens[1:]
        what = ":".join(tokens)
        if store is None and what in stores:
            r = stores[what]
            out.append(StreamSpec(what, tuple(range(r.n_layers)), what))
            continue
        if store is None:
            layered = [n for n, r in stores.items() if r.model_layers > 1]
            if not layered:
                raise SpecError(
                    f"feature spec {part!r} needs a self-supervised model store, and this cache has none"
                    f" (stores: {', '.join(stores) or 'none'})"
                )
            if len(layered) > 1:
                raise SpecError(
                    f"feature spec {part!r} is ambiguous: several model stores ({', '.join(layered)});"
                    f" write MODEL:{what}, e.g. {layered[0]}:{what}"
                )
            store = layered[0]
        layers = _layers(what, stores[store], part, stores)
        out.append(StreamSpec(store, layers, part if ":" in part and part.split(":")[0] == store else f"{store}:{what}"))
    return out


def _layers(what: str, r: StoreReader, part: str, stores: dict) -> tuple[int, ...]:
    """Stored positions of the model layers ``what`` names in the store of ``r``."""
    n = r.model_layers
    if what == "all_layers":
        return tuple(range(r.n_layers))
    if what in ("local_encoder", "output"):
        return _positions(r, [0 if what == "local_encoder" else n - 1], part)
    m = re.fullmatch(r"layer:(\d+)", what)
    if m:
        k = int(m.group(1))
        if k >= n:
            raise SpecError(f"feature spec {part!r}: layer {k} does not exist (0..{n - 1})")
        return _positions(r, [k], part)
    m = re.fullmatch(r"layers:(\d+)-(\d+)", what)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if not (0 <= a <= b < n):
            raise SpecError(f"feature spec {part!r}: layers must satisfy 0 <= A <= B <= {n - 1}")
        return _positions(r, range(a, b + 1), part)
    raise SpecError(
        f"unknown feature spec {part!r}; allowed: all_layers, layer:K, layers:A-B, local_encoder, output,"
        f" a store name ({', '.join(stores)}), optionally MODEL:..., joined by '+'"
    )


def _positions(r: StoreReader, layers, part: str) -> tuple[int, ...]:
    """Where the store keeps each model layer of ``layers``; SpecError for one it did not keep."""
    where = {k: i for i, k in enumerate(r.layer_numbers)}
    missing = [k for k in layers if k not in where]
    if missing:
        which = f"layer {missing[0]} was" if len(missing) == 1 else f"layers {format_layers(missing)} were"
        raise SpecError(
            f"feature spec {part!r}: {which} not extracted; store {r.name!r} holds layers"
            f" {format_layers(r.layer_numbers)} (featcache extract --layers)"
        )
    return tuple(where[k] for k in layers)
