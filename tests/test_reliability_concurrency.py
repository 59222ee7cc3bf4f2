"""Guarantee 5 (concurrency): one writer per cache; readers see committed shards only.

A real ``featcache extract`` subprocess is stopped at every step of every commit (via
``FEATCACHE_FAULTS``, see :mod:`featcache.store`); while it is stopped a second
``featcache extract`` subprocess must be refused, and a reader opened at that moment must
see exactly the committed shards, whole and intact. Afterwards, several reader processes
read the finished cache at the same time.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np

import featcache
from featcache.store import StoreReader, verify_store
from stress.harness import FAULT_POINTS, REPO, Writer, env_for, extract_cmd, in_flight, run_featcache

N_UTTERANCES, SHARD = 16, 4


def test_second_writer_is_refused_and_readers_never_see_a_half_written_shard(tmp_path, ravdess_dir, built_cache):
    cache = tmp_path / "ravdess"
    store = cache / "mfcc"
    cmd = extract_cmd(ravdess_dir, tmp_path, features="mfcc", shard_size=SHARD, extra=("--limit", N_UTTERANCES))
    ref = StoreReader(built_cache / "mfcc")
    w = Writer(cmd, faults=",".join(f"{p}=pause" for p in FAULT_POINTS))
    stops, second = [], None
    try:
        while (stop := w.wait_pause()) is not None:
            stops.append(stop)
            point, n = stop
            if second is None:  # a second writer on the same cache while the first is mid-commit
                second = run_featcache(*cmd[3:], timeout=120)
            # a reader opened now: exactly the shards the manifest on disk names, all intact
            on_disk = json.loads((store / "manifest.json").read_text())["shards"] if (store / "manifest.json").exists() else []
            r = StoreReader(store)
            assert r.ids == [u for s in on_disk for u in s["ids"]]
            assert len(r.ids) == SHARD * (n - 1)  # commit n is in flight: n - 1 are complete
            assert verify_store(store, deep=True) == []
            for uid in r.ids:
                np.testing.assert_array_equal(r.frames(uid), ref.frames(uid))
            assert len(featcache.open(cache).select("mfcc")) == len(r.ids)
            # ... while the half-done files of commit n are on disk, unseen
            st = in_flight(store)
            if point in ("shard_mid_write", "shard_written"):
                assert st["tmp_shards"] == [f"shard-{n - 1:05d}.h5.tmp"], st
            elif point == "shard_renamed":
                assert st["orphans"] == [f"shard-{n - 1:05d}.h5"], st
            else:
                assert st["manifest_tmp"] == ["manifest.json.tmp"] and st["orphans"] == [f"shard-{n - 1:05d}.h5"], st
            w.resume()
        assert w.finish(timeout=120) == 0, w.output
    finally:
        if w.proc.poll() is None:
            w.kill()
    n_commits = N_UTTERANCES // SHARD
    assert stops == [(p, n) for n in range(1, n_commits + 1) for p in FAULT_POINTS]
    assert second.returncode == 1, second.stdout + second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith("Error:")
    assert f"another featcache process (pid {w.pid})" in second.stderr
    assert "Traceback" not in second.stderr

    # any number of readers at once while nothing writes: four processes plus verify
    reader = (
        "import math, sys, numpy as np, featcache; X = featcache.open(sys.argv[1]).select('mfcc');"
        "print(len(X), repr(math.fsum(math.fsum(np.asarray(X[i], np.float64).ravel()) for i in range(len(X)))))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", reader, str(cache)], cwd=REPO, env=env_for(), stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    verify = run_featcache("verify", cache, timeout=120)
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    expected = math.fsum(math.fsum(np.asarray(ref.frames(u), np.float64).ravel()) for u in StoreReader(store).ids)
    assert all(p.returncode == 0 for p in procs)
    assert [int(o[0]) for o in outs] == [N_UTTERANCES] * 4
    assert all(float(o[1]) == expected for o in outs)
    assert verify.returncode == 0 and "mfcc: ok" in verify.stdout
