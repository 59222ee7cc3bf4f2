"""Property test: whatever is written into store.json or manifest.json, featcache either works
or raises its own error, and never deletes, reads or writes outside the cache.

Hypothesis mutates the two files of a small real store (types, sizes, paths, nesting, missing
keys); each mutated cache is then read (``StoreReader``, ``featcache.open().select``, frames),
verified, and written to by a re-run of ``featcache extract`` (with and without ``--repair``).
A sentinel file beside the cache must stay as it was, and no exception but a
:class:`featcache.FeatcacheError` (or the CLI's one ``Error:`` line) may come out.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import featcache
from cli.featcache import main
from featcache.errors import FeatcacheError
from featcache.store import StoreReader, verify_store

LIMIT = 6

nasty_strings = st.sampled_from(
    ["../../victim.txt", "/etc/passwd", "", "shard-00000.h5", "shard-99999.h5", "..", "a\x00b", "x" * 300, "float128", "object"]
)
nasty_numbers = st.sampled_from([0, -1, 1, 2**31, 10**12, 2**63, 1e308, float("nan"), 0.5, True])
leaves = st.one_of(st.none(), nasty_strings, nasty_numbers, st.text(max_size=5), st.integers(-3, 3))
values = st.recursive(leaves, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=3), c, max_size=3)), max_leaves=6)


def _paths(obj, prefix=()):
    """Every key path of a JSON document (to pick one to change)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, path, op, value):
    if not path:
        return value if op != "nest" else [[[doc]]] * 2
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    k = path[-1]
    if op == "delete":
        del parent[k]
    elif op == "nest":
        parent[k] = json.loads("[" * 40 + json.dumps(parent[k]) + "]" * 40)
    else:
        parent[k] = value
    return doc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ravdess_dir):
    d = tmp_path_factory.mktemp("props-ref")
    r = CliRunner().invoke(main, ["extract", "--corpus", "ravdess", "--data-dir", str(ravdess_dir), "--cache-dir", str(d),
                                  "--features", "mfcc", "--shard-size", "2", "--limit", str(LIMIT), "--quiet"])
    assert r.exit_code == 0, r.output
    return d / "ravdess"


def _exercise(cache: Path, data: Path) -> None:
    """Read, verify and re-extract; only featcache's own errors are allowed."""
    try:
        r = StoreReader(cache / "mfcc")
        for uid in r.ids:
            r.frames(uid)
    except FeatcacheError:
        pass
    verify_store(cache / "mfcc")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            X = featcache.open(cache).select("mfcc")
        for i in range(len(X)):
            X[i]
    except FeatcacheError:
        pass
    for extra in ([], ["--repair"]):
        res = CliRunner().invoke(main, ["extract", "--corpus", "ravdess", "--data-dir", str(data), "--cache-dir", str(cache.parent),
                                        "--features", "mfcc", "--shard-size", "2", "--limit", str(LIMIT), "--quiet", *extra])
        assert res.exit_code in (0, 1), res.output
        if res.exit_code == 1:
            assert isinstance(res.exception, SystemExit), repr(res.exception)
            assert any(line.startswith("Error:") for line in res.output.splitlines()), res.output
            assert "Traceback" not in res.output, res.output


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    which=st.sampled_from(["manifest.json", "store.json"]),
    pick=st.integers(0, 10**6),
    op=st.sampled_from(["set", "delete", "nest"]),
    value=values,
)
def test_any_edit_of_store_json_or_manifest_is_safe(tmp_path_factory, reference, ravdess_dir, which, pick, op, value):
    root = tmp_path_factory.mktemp("mut")
    cache = root / "c" / "ravdess"
    shutil.copytree(reference, cache)
    sentinel = root / "victim.txt"
    sentinel.write_text("precious")
    f = cache / "mfcc" / which
    doc = json.loads(f.read_text())
    paths = list(_paths(doc))
    path = paths[pick % len(paths)]
    if op == "delete" and not path:
        op = "set"
    doc = _mutate(doc, path, op, value)
    f.write_text(json.dumps(doc, allow_nan=True))
    _exercise(cache, ravdess_dir)
    assert sentinel.read_text() == "precious"
    assert sorted(p.name for p in root.iterdir()) == ["c", "victim.txt"]
    assert sorted(p.name for p in (root / "c").iterdir()) == ["ravdess"]
