"""Untrusted caches: a crafted or damaged store never deletes, reads or writes outside itself.

Each test is one finding of the adversarial probe (issue 18); each failed on the code before
the fix (a crafted manifest entry deleted ``../../../victim.txt``; a deleted or cut manifest
passed ``verify`` and made ``fit`` train on part of the corpus without a word; a corrupt
manifest could not be repaired; a full disk at start gave a traceback).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import featcache
from cli.featcache import main
from featcache.errors import IncompleteStoreWarning, StoreError
from featcache.store import StoreReader, load_manifest, verify_store

SHARD, LIMIT = 2, 12  # 6 shards


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def extract(data, cache_dir, *extra):
    return run("extract", "--corpus", "ravdess", "--data-dir", data, "--cache-dir", cache_dir, "--features", "mfcc",
               "--shard-size", SHARD, "--limit", LIMIT, "--quiet", *extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ravdess_dir):
    d = tmp_path_factory.mktemp("reference")
    r = extract(ravdess_dir, d)
    assert r.exit_code == 0, r.output
    return d / "ravdess"


@pytest.fixture
def cache(tmp_path, reference):
    """A copy of the reference cache, with a victim file beside it (outside the cache)."""
    dst = tmp_path / "c" / "ravdess"
    shutil.copytree(reference, dst)
    (tmp_path / "victim.txt").write_text("precious")
    return dst


def edit_manifest(store, change):
    m = json.loads((store / "manifest.json").read_text())
    change(m)
    (store / "manifest.json").write_text(json.dumps(m))


def same_as_reference(cache, reference):
    got, ref = StoreReader(cache / "mfcc"), StoreReader(reference / "mfcc")
    assert sorted(got.ids) == sorted(ref.ids) and len(got.ids) == LIMIT
    for uid in ref.ids:
        np.testing.assert_array_equal(got.frames(uid), ref.frames(uid))


@pytest.mark.parametrize("name", ["../../../victim.txt", "{abs}", "shard-00000.h5/../../../../victim.txt", "victim.txt"])
def test_a_crafted_shard_name_deletes_nothing_outside_and_is_one_error(cache, ravdess_dir, name):
    victim = cache.parent.parent / "victim.txt"
    name = name.format(abs=str(victim))
    edit_manifest(cache / "mfcc", lambda m: m["shards"][0].update(file=name, size=1))
    r = extract(ravdess_dir, cache.parent)
    assert victim.read_text() == "precious"
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith("Error:"), r.output
    assert "shard-00000.h5" in r.output and "--repair" in r.output
    assert len(list((cache / "mfcc").glob("shard-*.h5"))) == LIMIT // SHARD  # nothing deleted in the store either


def test_repair_rebuilds_a_crafted_manifest_from_the_shards(cache, ravdess_dir, reference):
    victim = cache.parent.parent / "victim.txt"
    edit_manifest(cache / "mfcc", lambda m: m["shards"][0].update(file="../../../victim.txt", size=1))
    r = extract(ravdess_dir, cache.parent, "--repair")
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious"
    assert f"manifest.json rebuilt from {LIMIT // SHARD} shard(s)" in r.output
    assert "done 0, skipped 12" in r.output  # every utterance adopted from its shard, none redone
    same_as_reference(cache, reference)
    assert run("verify", cache).exit_code == 0


def test_a_shard_symlink_leading_outside_is_refused(cache):
    outside = cache.parent.parent / "elsewhere.h5"
    shutil.copy(cache / "mfcc" / "shard-00000.h5", outside)
    (cache / "mfcc" / "shard-00000.h5").unlink()
    (cache / "mfcc" / "shard-00000.h5").symlink_to(outside)
    with pytest.raises(StoreError, match="outside"):
        StoreReader(cache / "mfcc")


@pytest.mark.parametrize("how", ["deleted", "cut", "garbage"])
def test_a_lost_cut_or_corrupt_manifest_is_found_kept_and_repaired(cache, ravdess_dir, reference, how):
    mpath = cache / "mfcc" / "manifest.json"
    if how == "deleted":
        mpath.unlink()
    elif how == "cut":
        edit_manifest(cache / "mfcc", lambda m: m.update(shards=m["shards"][: len(m["shards"]) // 2]))
    else:
        mpath.write_text('{"format": "featcache.manifest", "shards": [')
    v = run("verify", cache)
    assert v.exit_code == 1 and "PROBLEM mfcc/" in v.output, v.output
    r = extract(ravdess_dir, cache.parent)  # without --repair: refused, the shards are kept
    assert r.exit_code == 1 and "--repair" in r.output.strip().splitlines()[-1], r.output
    assert len(list((cache / "mfcc").glob("shard-*.h5"))) == LIMIT // SHARD
    r = extract(ravdess_dir, cache.parent, "--repair")
    assert r.exit_code == 0 and "done 0, skipped 12" in r.output, r.output
    same_as_reference(cache, reference)
    assert run("verify", cache).exit_code == 0


def test_select_warns_when_a_store_covers_less_than_the_table(cache):
    edit_manifest(cache / "mfcc", lambda m: m.update(shards=m["shards"][:3]))
    for p in sorted((cache / "mfcc").glob("shard-*.h5"))[3:]:
        p.unlink()  # as if the run had been interrupted: no damage verify could see
    with pytest.warns(IncompleteStoreWarning, match="holds 6 of the 64 utterances"):
        X = featcache.open(cache).select("mfcc")
    assert len(X) == 6
    v = run("verify", cache)
    assert v.exit_code == 0 and "incomplete: 6 of 64" in v.output, v.output


def test_a_complete_store_selects_without_warning(reference, tmp_path, ravdess_dir):
    r = run("extract", "--corpus", "ravdess", "--data-dir", ravdess_dir, "--cache-dir", tmp_path, "--features", "mfcc", "--quiet")
    assert r.exit_code == 0, r.output
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompleteStoreWarning)
        assert len(featcache.open(tmp_path / "ravdess").select("mfcc")) == 64
    assert run("verify", tmp_path / "ravdess").output.strip() == "mfcc: ok"


@pytest.mark.parametrize(
    "change, phrase",
    [
        (lambda m: m.update(shards="x"), "'shards' must be a list"),
        (lambda m: m["shards"][0].update(ids=[1, 2]), "ids must be a non-empty list"),
        (lambda m: m["shards"][0].update(size=-5), "size must be a non-negative integer"),
        (lambda m: m["shards"][0].update(sha256="../x"), "sha256 must be 64"),
        (lambda m: m["shards"][1].update(ids=m["shards"][0]["ids"]), "already committed"),
        (lambda m: m.update(failed=["a"]), "'failed' must map"),
    ],
)
def test_manifest_fields_are_validated_before_use(cache, change, phrase):
    edit_manifest(cache / "mfcc", change)
    with pytest.raises(StoreError, match=phrase):
        load_manifest(cache / "mfcc")
    assert verify_store(cache / "mfcc")[0].where == "store.json/manifest.json"


def test_deep_or_huge_json_is_a_store_error_not_a_crash(cache):
    (cache / "mfcc" / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(StoreError, match="nested more than"):
        StoreReader(cache / "mfcc")
    info = json.loads((cache / "mfcc" / "store.json").read_text())
    info["extractor"]["n_layers"] = 10**9
    (cache / "mfcc" / "store.json").write_text(json.dumps(info))
    with pytest.raises(StoreError, match="n_layers must be an integer from 1 to"):
        StoreReader(cache / "mfcc")
    r = run("info", cache)
    assert r.exit_code == 1 and r.output.startswith("Error:") and "Traceback" not in r.output, r.output


def test_a_lock_planted_as_a_symlink_truncates_nothing(cache, ravdess_dir):
    victim = cache.parent.parent / "victim.txt"
    (cache / ".lock").unlink(missing_ok=True)
    (cache / ".lock").symlink_to(victim)
    r = extract(ravdess_dir, cache.parent)
    assert victim.read_text() == "precious"
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith("Error:") and ".lock" in r.output, r.output


def test_a_full_disk_at_start_is_one_error_line(cache, ravdess_dir, monkeypatch):
    def full(fd, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "ftruncate", full)
    r = extract(ravdess_dir, cache.parent)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("Error:") and "No space left on device" in last and "re-run" in last, r.output
