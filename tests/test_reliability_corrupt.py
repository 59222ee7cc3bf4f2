"""Guarantee 3 (corrupt cache): verify names each problem; re-runs redo exactly what is lost.

One cache, four kinds of damage in four shards: a truncated shard, a flipped byte in a
shard's ``offsets`` index (a plausible value: the reader cannot tell, only the checksum
can), a deleted shard, and a manifest entry naming a file that is not there (its real
file left as an orphan).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
from click.testing import CliRunner

from cli.featcache import main
from featcache.fileio import sha256_file as _sha256
from featcache.store import Shard, StoreReader, verify_store

SHARD = 4


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def flip_offsets_byte(path, k=2):
    """Flip the lowest bit of ``offsets[k]`` in the file (the value moves by one frame)."""
    with h5py.File(path, "r") as f:
        d = f["offsets"]
        at, old = d.id.get_offset(), d[()]
    raw = bytearray(path.read_bytes())
    raw[at + 8 * k] ^= 0x01  # little-endian int64: the lowest byte comes first
    path.write_bytes(bytes(raw))
    return old


def test_each_damage_is_named_and_only_the_affected_utterances_are_re_extracted(tmp_path, ravdess_dir, built_cache):
    args = ["extract", "--corpus", "ravdess", "--data-dir", ravdess_dir, "--cache-dir", tmp_path, "--features", "mfcc",
            "--shard-size", SHARD, "--quiet"]
    assert run(*args).exit_code == 0
    cache, store = tmp_path / "ravdess", tmp_path / "ravdess" / "mfcc"
    manifest = json.loads((store / "manifest.json").read_text())
    ids_of = {s["file"]: s["ids"] for s in manifest["shards"]}
    assert len(ids_of) == 64 // SHARD

    truncated = store / "shard-00001.h5"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    flipped = store / "shard-00003.h5"
    old_offsets = flip_offsets_byte(flipped)
    new_offsets = Shard(flipped).offsets  # the reader accepts it: a plausible index
    assert np.sum(new_offsets != old_offsets) == 1 and np.all(np.diff(new_offsets) >= 1)
    (store / "shard-00005.h5").unlink()
    manifest["shards"][7]["file"] = "shard-00099.h5"  # names a file that is not there
    (store / "manifest.json").write_text(json.dumps(manifest))
    untouched = {p.name: (p.stat().st_mtime_ns, _sha256(p)) for p in store.glob("shard-*.h5")
                 if p.name not in ("shard-00001.h5", "shard-00003.h5", "shard-00007.h5")}

    problems = {p.where: p for p in verify_store(store)}
    assert set(problems) == {"shard-00001.h5", "shard-00003.h5", "shard-00005.h5", "shard-00099.h5"}
    assert "truncated" in problems["shard-00001.h5"].message
    assert "checksum" in problems["shard-00003.h5"].message
    assert "missing" in problems["shard-00005.h5"].message and "missing" in problems["shard-00099.h5"].message
    for where, p in problems.items():
        assert p.ids == ids_of["shard-00007.h5" if where == "shard-00099.h5" else where]
    v = run("verify", cache)
    lines = [x for x in v.output.splitlines() if x.startswith("PROBLEM")]
    assert v.exit_code == 1 and len(lines) == 4
    for name in problems:
        assert any(f"mfcc/{name}:" in x and "(4 utterances affected)" in x for x in lines), (name, lines)

    def new_shard_ids(before: set) -> list:
        m = json.loads((store / "manifest.json").read_text())
        return sorted(u for s in m["shards"] if s["file"] not in before for u in s["ids"])

    # the plain re-run redoes what is missing or truncated (a size check); the flipped byte
    # keeps the size, so only --repair (which verifies every checksum) finds it
    before = {s["file"] for s in json.loads((store / "manifest.json").read_text())["shards"]}
    r = run(*args)
    lost = sorted(ids_of["shard-00001.h5"] + ids_of["shard-00005.h5"] + ids_of["shard-00007.h5"])
    assert f"done {len(lost)}, skipped {64 - len(lost)}, failed 0, re-extracted after damage {len(lost)}" in r.output
    assert new_shard_ids(before) == lost
    assert [p.where for p in verify_store(store)] == ["shard-00003.h5"]

    before = {s["file"] for s in json.loads((store / "manifest.json").read_text())["shards"]}
    r = run(*args, "--repair")
    assert "done 4, skipped 60, failed 0, re-extracted after damage 4" in r.output
    assert new_shard_ids(before) == sorted(ids_of["shard-00003.h5"])
    assert not flipped.exists() and not (store / "shard-00007.h5").exists()  # damaged and orphan files gone
    assert {p.name: (p.stat().st_mtime_ns, _sha256(p)) for p in store.glob("shard-*.h5") if p.name in untouched} == untouched
    v = run("verify", cache)
    assert v.exit_code == 0 and "mfcc: ok" in v.output
    got, ref = StoreReader(store), StoreReader(built_cache / "mfcc")
    assert sorted(got.ids) == sorted(ref.ids) and len(got.ids) == len(set(got.ids))
    for uid in got.ids:
        np.testing.assert_array_equal(got.frames(uid), ref.frames(uid))
