"""Guarantee 2 (disk full / write errors): a clear message, a valid cache, a re-run completes.

Write errors are injected with ``FEATCACHE_FAULTS`` (``enospc``: ``OSError(ENOSPC)`` raised
inside the shard's HDF5 file, after the temporary shard is complete, or half-way through the
new manifest), and a nearly full disk is simulated through ``shutil.disk_usage``.
"""

from __future__ import annotations

import shutil
from collections import namedtuple

import numpy as np
import pytest
from click.testing import CliRunner

from cli.featcache import main
from featcache.store import StoreReader, faults, parse_faults
from stress.harness import in_flight

SHARD, LIMIT = 4, 16


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def extract_args(data, cache):
    return ["extract", "--corpus", "ravdess", "--data-dir", data, "--cache-dir", cache, "--features", "mfcc",
            "--shard-size", SHARD, "--limit", LIMIT, "--quiet"]


def check_stopped_cleanly(r, cache, committed, *phrases):
    """Exit 1 with one ``Error:`` line, committed shards intact and nothing half-written left."""
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("Error:") and "re-run" in line, r.output
    for phrase in phrases:
        assert phrase in line, line
    store = cache / "mfcc"
    assert len(StoreReader(store).ids) == committed
    assert in_flight(store) == {"tmp_shards": [], "orphans": [], "manifest_tmp": []}
    v = run("verify", cache)
    assert v.exit_code == 0, v.output


def check_rerun_completes(data, tmp_path, built_cache, committed):
    r = run(*extract_args(data, tmp_path))
    assert r.exit_code == 0, r.output
    assert f"done {LIMIT - committed}, skipped {committed}, failed 0" in r.output
    got, ref = StoreReader(tmp_path / "ravdess" / "mfcc"), StoreReader(built_cache / "mfcc")
    assert got.ids == ref.ids[:LIMIT]
    for uid in got.ids:
        np.testing.assert_array_equal(got.frames(uid), ref.frames(uid))
    assert run("verify", tmp_path / "ravdess").exit_code == 0


@pytest.mark.parametrize("point", ["shard_mid_write", "shard_written", "manifest_mid_write"])
def test_write_error_stops_with_a_clear_message_and_a_rerun_completes(tmp_path, ravdess_dir, built_cache, monkeypatch, point):
    monkeypatch.setattr(faults, "ACTIVE", parse_faults(f"{point}=enospc@3"))  # full from the 3rd commit on
    r = run(*extract_args(ravdess_dir, tmp_path))
    check_stopped_cleanly(r, tmp_path / "ravdess", 2 * SHARD, "No space left on device",
                          "shard-00002.h5" if point != "manifest_mid_write" else "manifest.json")
    monkeypatch.setattr(faults, "ACTIVE", {})  # space freed
    check_rerun_completes(ravdess_dir, tmp_path, built_cache, 2 * SHARD)


@pytest.mark.parametrize("point", ["shard_mid_write", "manifest_mid_write"])
def test_a_one_off_write_error_keeps_the_retried_shard_once(tmp_path, ravdess_dir, built_cache, monkeypatch, point):
    # the 3rd commit fails once; while stopping, the run commits what it holds (the retry works)
    monkeypatch.setattr(faults, "ACTIVE", parse_faults(f"{point}=enospc@3-3"))
    r = run(*extract_args(ravdess_dir, tmp_path))
    check_stopped_cleanly(r, tmp_path / "ravdess", 3 * SHARD, "No space left on device")
    monkeypatch.setattr(faults, "ACTIVE", {})
    check_rerun_completes(ravdess_dir, tmp_path, built_cache, 3 * SHARD)


def test_nearly_full_disk_is_refused_before_a_shard_is_started(tmp_path, ravdess_dir, built_cache, monkeypatch):
    usage = namedtuple("usage", "total used free")
    calls = []
    real = shutil.disk_usage

    def disk_usage(path):
        calls.append(path)
        return usage(10**9, 10**9 - 1000, 1000) if len(calls) > 2 else real(path)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    r = run(*extract_args(ravdess_dir, tmp_path))
    check_stopped_cleanly(r, tmp_path / "ravdess", 2 * SHARD, "not enough free disk space", "MiB free")
    monkeypatch.undo()
    check_rerun_completes(ravdess_dir, tmp_path, built_cache, 2 * SHARD)
