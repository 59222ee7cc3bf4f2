"""Guarantee 1 (crash safety), short version: SIGKILL at each step of a commit, then resume.

The writer is stopped at exact points through ``FEATCACHE_FAULTS`` (see
:mod:`featcache.store`): inside the shard's HDF5 file, after the temporary shard is
complete, after it is renamed into place but before the manifest names it, and half-way
through writing the new manifest. MFCC only, to stay quick: the store code is the same for
every extractor. The long version (20+ kills, random ones included, the tiny wav2vec2 and
MFCC, bit-identical comparison of both) is ``benchmarks/stress_kill.py``.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.featcache import main
from featcache.errors import StoreError
from featcache.store import StoreReader, parse_faults
from stress.harness import Writer, check_against_reference, extract_cmd, in_flight

STORES = ["mfcc"]
LIMIT = 16


def _evidence(point: str, cache) -> bool:
    """The half-done state a kill at ``point`` must find (so the kill really hit there)."""
    states = [in_flight(cache / s) for s in STORES if (cache / s).exists()]
    if point in ("shard_mid_write", "shard_written"):
        return any(st["tmp_shards"] for st in states)
    if point == "shard_renamed":
        return any(st["orphans"] for st in states)
    for s in STORES:  # manifest_mid_write: half a JSON document next to the intact manifest
        tmp, manifest = cache / s / "manifest.json.tmp", cache / s / "manifest.json"
        if tmp.exists() and manifest.exists():
            json.loads(manifest.read_text())
            try:
                json.loads(tmp.read_text())
            except json.JSONDecodeError:
                return True
    return False


@pytest.mark.slow
def test_sigkill_at_each_commit_step_then_resume_gives_the_uninterrupted_cache(tmp_path, ravdess_dir, built_cache):
    cache_dir = tmp_path / "killed"
    cache = cache_dir / "ravdess"
    cmd = extract_cmd(ravdess_dir, cache_dir, features="mfcc", shard_size=2, extra=("--limit", LIMIT))
    kills = []
    for point, n in [("shard_mid_write", 2), ("shard_written", 3), ("shard_renamed", 2), ("manifest_mid_write", 3)]:
        w = Writer(cmd, faults=f"{point}=pause@{n}")
        stop = w.wait_pause()
        assert stop == (point, n), w.output
        assert _evidence(point, cache), (point, {s: in_flight(cache / s) for s in STORES})
        committed = sum(len(StoreReader(cache / s).ids) for s in STORES if (cache / s / "store.json").exists())
        w.kill()
        kills.append(committed)
    # every killed run had committed a shard before its kill, and kept what earlier runs did
    assert all(a < b for a, b in zip(kills, kills[1:])) and kills[0] > 0, kills
    # a shard renamed into place by a run killed before its manifest named it, with a number
    # no later run reuses: the resumed run must delete it, not leave it beside the cache
    stray = cache / "mfcc" / "shard-09999.h5"
    stray.write_bytes(b"a shard no manifest names")
    r = CliRunner().invoke(main, [str(a) for a in cmd[3:]], catch_exceptions=False)
    assert r.exit_code == 0 and "failed 0" in r.output, r.output
    assert not stray.exists()
    expected = list(StoreReader(built_cache / "mfcc").ids)[:LIMIT]
    assert check_against_reference(cache, built_cache, STORES, expected) == []
    v = CliRunner().invoke(main, ["verify", str(cache)])
    assert v.exit_code == 0 and "PROBLEM" not in v.output, v.output


def test_fault_spec_is_checked():
    assert parse_faults("") == {}
    f = parse_faults("shard_renamed=pause@2, manifest_mid_write=enospc@3-4")
    assert (f["shard_renamed"]["at"], f["shard_renamed"]["until"]) == (2, None)
    assert (f["manifest_mid_write"]["action"], f["manifest_mid_write"]["at"], f["manifest_mid_write"]["until"]) == ("enospc", 3, 4)
    for bad in ("nowhere=pause", "shard_written=explode", "shard_written=pause@x", "shard_written=pause@-2"):
        with pytest.raises(StoreError, match="FEATCACHE_FAULTS"):
            parse_faults(bad)
