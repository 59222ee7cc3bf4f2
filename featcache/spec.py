"""Feature specs: which stores and layers a spec such as ``all_layers+egemaps`` names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from featcache.errors import SpecError
from featcache.store import StoreReader

__all__ = ["StreamSpec", "parse_spec"]


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a feature spec: a store and the layers taken from it."""

    store: str
    layers: tuple[int, ...]
    name: str


def parse_spec(spec: str, stores: dict[str, StoreReader]) -> list[StreamSpec]:
    """Resolve a feature spec against the stores of a cache.

    Grammar: streams joined by ``+``; each stream is ``[STORE:]WHAT`` with WHAT one of
    ``all_layers``, ``layer:K``, ``layers:A-B`` (inclusive), ``local_encoder`` (layer 0),
    ``output`` (last layer), or a store name (``mfcc``, ``logmel``, ``spectrogram``,
    ``egemaps``, any store folder: all its layers).
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
            layered = [n for n, r in stores.items() if r.n_layers > 1]
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
        n = stores[store].n_layers
        layers = _layers(what, n, part, stores)
        out.append(StreamSpec(store, layers, part if ":" in part and part.split(":")[0] == store else f"{store}:{what}"))
    return out


def _layers(what: str, n: int, part: str, stores: dict) -> tuple[int, ...]:
    if what == "all_layers":
        return tuple(range(n))
    if what == "local_encoder":
        return (0,)
    if what == "output":
        return (n - 1,)
    m = re.fullmatch(r"layer:(\d+)", what)
    if m:
        k = int(m.group(1))
        if k >= n:
            raise SpecError(f"feature spec {part!r}: layer {k} does not exist (0..{n - 1})")
        return (k,)
    m = re.fullmatch(r"layers:(\d+)-(\d+)", what)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if not (0 <= a <= b < n):
            raise SpecError(f"feature spec {part!r}: layers must satisfy 0 <= A <= B <= {n - 1}")
        return tuple(range(a, b + 1))
    raise SpecError(
        f"unknown feature spec {part!r}; allowed: all_layers, layer:K, layers:A-B, local_encoder, output,"
        f" a store name ({', '.join(stores)}), optionally MODEL:..., joined by '+'"
    )
