"""Distributed extraction (featcache.distributed) on a loopback LocalCluster of 2 worker processes.

The same features bit for bit as a local run; a worker killed with SIGKILL mid-run changes
nothing (every utterance once, verify clean, a re-run resumes); a worker that cannot see the
corpus is named in one clear error; the CLI's --scheduler runs the same extraction.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install -e '.[dask]')")
pytest.importorskip("transformers")

from conftest import SR, synth_utterance, write_ravdess_like  # noqa: E402
from featcache import distributed  # noqa: E402
from featcache.pipeline import build_extractors, extract  # noqa: E402
from featcache.store import Shard, StoreReader, verify_cache  # noqa: E402

FEATURES = ["wav2vec2", "mfcc", "egemaps"]
KW = dict(shard_size=4, batch_seconds=1.0, progress=False)  # units of 4, model batches of 1-2 files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """18 files: 16 synthetic utterances, one that is not audio, one too short for the model."""
    import soundfile as sf

    root = write_ravdess_like(tmp_path_factory.mktemp("dcorpus") / "ravdess", actors=(1, 2), emotions=range(1, 5))
    (root / "Actor_01" / "03-01-01-01-01-02-01.wav").write_bytes(b"not audio at all")
    sf.write(root / "Actor_02" / "03-01-02-01-01-02-02.wav", synth_utterance(2, 2, 1, 0.012, 7), SR)
    return root


@pytest.fixture(scope="module")
def client():
    with distributed.connect(cluster="local:2") as c:  # LocalCluster(2 processes, 1 thread each, no dashboard)
        yield c


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, tiny_model) -> Path:
    """The local run of the same extraction."""
    out = tmp_path_factory.mktemp("dlocal")
    extract("ravdess", corpus, out, _extractors(tiny_model), **KW)
    return out / "ravdess"


def _extractors(model: Path) -> list:
    return build_extractors(FEATURES, model=str(model), precision="fp32", device="cpu")


def _content(cache: Path) -> dict:
    """Everything a store holds, per utterance and per store, for an exact comparison."""
    out = {}
    for store in sorted(p.name for p in cache.iterdir() if (p / "store.json").exists()):
        r = StoreReader(cache / store)
        rows = {}
        for entry in r.manifest["shards"]:
            sh = Shard(cache / store / entry["file"])
            sums, sqs = sh.stats()
            fp = sh.fingerprints()
            for i, uid in enumerate(sh.ids):
                a, b = sh.offsets[i], sh.offsets[i + 1]
                rows[uid] = ([np.asarray(sh.layer(k)[a:b]) for k in range(sh.n_layers)], sums[i], sqs[i],
                             sh.original_seconds[i], sh.used_seconds[i], fp[0][i], fp[1][i])
        out[store] = (r.ids, rows, r.failed)
    return out


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for store, (ids, rows, failed) in want.items():
        gids, grows, gfailed = got[store]
        assert gids == ids and gfailed == failed, store
        for uid, values in rows.items():
            for g, w in zip(grows[uid], values):
                if isinstance(w, list):
                    assert all(np.array_equal(x, y) for x, y in zip(g, w)), (store, uid)
                else:
                    assert np.array_equal(g, w, equal_nan=np.asarray(w).dtype.kind == "f"), (store, uid)


def test_distributed_equals_local_bit_for_bit(client, corpus, tiny_model, reference, tmp_path):
    summary = distributed.extract("ravdess", corpus, tmp_path, _extractors(tiny_model), client=client, **KW)
    want = _content(reference)
    assert len(want["mfcc"][0]) == 17 and len(want["tiny_wav2vec2_0"][1]) == 16  # the two bad files failed
    _same(_content(tmp_path / "ravdess"), want)
    assert summary.done == 17 and len(summary.failed) == 2
    import h5py

    for store in want:  # per-speaker statistics too
        with h5py.File(reference / store / "speakers.h5") as a, h5py.File(tmp_path / "ravdess" / store / "speakers.h5") as b:
            assert all(np.array_equal(a[k][()], b[k][()]) for k in ("sum", "sumsq", "mean", "std", "count"))
    assert not list((tmp_path / "ravdess").rglob("*.tmp"))
    again = distributed.extract("ravdess", corpus, tmp_path, _extractors(tiny_model), client=client, **KW)
    assert (again.done, again.skipped) == (0, 18)


def _hide(prefix: str) -> None:
    """On one worker: every path under ``prefix`` is missing (as on a node without that disk)."""
    real = os.stat, os.listdir

    def stat(p, *a, **k):
        if os.fspath(p).startswith(prefix):
            raise FileNotFoundError(2, "No such file or directory", os.fspath(p))
        return real[0](p, *a, **k)

    def listdir(p="."):
        if os.fspath(p).startswith(prefix):
            raise FileNotFoundError(2, "No such file or directory", os.fspath(p))
        return real[1](p)

    os._featcache_real = real
    os.stat, os.listdir = stat, listdir


def _unhide() -> None:
    os.stat, os.listdir = os._featcache_real


def test_worker_that_cannot_see_the_corpus_is_named(client, corpus, tiny_model, tmp_path):
    workers = sorted(client.scheduler_info()["workers"])
    client.run(_hide, str(corpus), workers=[workers[1]])
    try:
        with pytest.raises(distributed.ClusterError) as e:
            distributed.extract("ravdess", corpus, tmp_path, _extractors(tiny_model), client=client, **KW)
    finally:
        client.run(_unhide, workers=[workers[1]])
    msg = str(e.value)
    assert workers[1] in msg and workers[0] not in msg and str(corpus) in msg and "No such file" in msg, msg
    assert not (tmp_path / "ravdess" / "mfcc").exists()  # checked before anything was written
    assert not list((tmp_path / "ravdess").glob(".featcache-probe-*"))


def _kill_a_worker_mid_unit(client, killed: list) -> None:
    """Kill (SIGKILL) a worker that has reported progress on a unit it is still running."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for topic, events in client.get_events().items():
            if not topic.startswith("featcache-extract-"):
                continue
            for _, msg in events:
                key = f"featcache-unit-{topic[len('featcache-extract-'):]}-{msg['unit']:05d}"
                if key in client.processing(workers=[msg["worker"]]).get(msg["worker"], ()):
                    os.kill(pids[msg["worker"]], signal.SIGKILL)
                    killed.append((msg["worker"], msg["unit"]))
                    return
        time.sleep(0.01)


def test_worker_killed_mid_run(client, corpus, tiny_model, reference, tmp_path):
    killed: list = []
    t = threading.Thread(target=_kill_a_worker_mid_unit, args=(client, killed))
    t.start()
    summary = distributed.extract("ravdess", corpus, tmp_path, _extractors(tiny_model), client=client, **KW)
    t.join()
    assert killed, "no worker was killed"
    attempts = {}
    for topic, events in client.get_events().items():
        if topic.startswith("featcache-extract-"):
            for _, msg in events:
                attempts.setdefault(msg["unit"], set()).add(msg["attempt"])
    assert len(attempts[killed[0][1]]) >= 2  # the killed unit ran again
    assert summary.done == 17 and len(summary.failed) == 2
    cache = tmp_path / "ravdess"
    assert all(not problems for problems in verify_cache(cache).values())
    _same(_content(cache), _content(reference))  # every utterance once, as locally
    assert not list(cache.rglob("*.tmp"))
    again = distributed.extract("ravdess", corpus, tmp_path, _extractors(tiny_model), client=client, **KW)
    assert (again.done, again.skipped) == (0, 18)


def test_cli_scheduler_option(client, corpus, reference, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli.featcache import main

    args = ["extract", "--corpus", "ravdess", "--data-dir", str(corpus), "--features", "mfcc", "--cache-dir", str(tmp_path),
            "--shard-size", "8", "--quiet"]
    res = CliRunner().invoke(main, args + ["--scheduler", client.scheduler.address])
    assert res.exit_code == 0, res.output
    want = StoreReader(reference / "mfcc")
    assert f"done 17, skipped 0, failed {len(want.failed)}" in res.output
    assert StoreReader(tmp_path / "ravdess" / "mfcc").ids == want.ids
    bad = CliRunner().invoke(main, args + ["--cluster", "local:0"])
    assert bad.exit_code == 2 and "local:N" in bad.output
    both = CliRunner().invoke(main, args + ["--cluster", "local:1", "--scheduler", "tcp://127.0.0.1:1"])
    assert both.exit_code == 2 and "not both" in both.output
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", "1s")
    gone = CliRunner().invoke(main, args + ["--scheduler", "tcp://127.0.0.1:9"])
    assert gone.exit_code == 1 and "no Dask scheduler answers" in gone.output


def test_extractors_built_on_a_worker(client, corpus, reference, tmp_path):
    """A factory instead of extractors: built on a worker (a client without the GPU the workers have)."""
    import functools

    build = functools.partial(build_extractors, ["mfcc"])
    distributed.extract("ravdess", corpus, tmp_path, build, client=client, **KW)
    want = _content(reference)
    _same(_content(tmp_path / "ravdess"), {"mfcc": want["mfcc"]})


def test_parse_cluster():
    assert distributed.parse_cluster("local:3") == 3
    for bad in ("local:0", "local", "remote:2", 3, None):
        with pytest.raises(ValueError, match="local:N"):
            distributed.parse_cluster(bad)
