"""Handcrafted extraction in worker processes (no model): the same cache as one thread, bit for bit.

The worker processes (featcache._procpool) decode and extract; the extracting process alone
writes the stores. Compared with the one-thread run: frames, ids and their order, per-store
failures and their reasons, statistics, content fingerprints; and resuming after a stop.
"""

from __future__ import annotations

import os
import threading
import shutil

import numpy as np
import pytest
import soundfile as sf

from featcache import _procpool
from featcache.errors import FeatcacheError, ParameterError
from featcache.extractors.handcrafted import MFCC
from featcache._loop import Runner as _Runner
from featcache.pipeline import build_extractors, extract
from featcache.store import StoreReader

FEATURES = ["mfcc", "logmel", "egemaps"]
STORES = ("mfcc", "logmel", "egemaps")


@pytest.fixture
def pools(monkeypatch):
    """Every PreparePool made during the test: (workers, processes)."""
    made: list[tuple[int, bool]] = []
    init = _procpool.PreparePool.__init__

    def spy(self, prepare, cheap, workers, processes=False):
        init(self, prepare, cheap, workers, processes)
        made.append((self.workers, self.processes))

    monkeypatch.setattr(_procpool.PreparePool, "__init__", spy)
    return made


def _same_cache(a, b) -> None:
    """Two corpus caches hold the same stores bit for bit (frames, ids, failures, stats, fingerprints)."""
    for store in STORES:
        ra, rb = StoreReader(a / store), StoreReader(b / store)
        assert ra.ids == rb.ids, store
        assert ra.failed == rb.failed, store
        assert [s["ids"] for s in ra.manifest["shards"]] == [s["ids"] for s in rb.manifest["shards"]]
        for uid in ra.ids:
            fa, fb = ra.frames(uid), rb.frames(uid)
            assert fa.dtype == fb.dtype and fa.tobytes() == fb.tobytes(), (store, uid)
        for x, y in zip(ra.utterance_stats()[1:], rb.utterance_stats()[1:]):
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), store
        for si in range(len(ra.manifest["shards"])):
            pa, pb = ra.shard(si).fingerprints(), rb.shard(si).fingerprints()
            assert pa[0] == pb[0] and pa[2] == pb[2] and np.array_equal(pa[1], pb[1], equal_nan=True)


@pytest.fixture(scope="module")
def serial(tmp_path_factory, ravdess_dir):
    """The reference: one decoding thread in this process (the default before worker processes)."""
    out = tmp_path_factory.mktemp("serial")
    s = extract("ravdess", ravdess_dir, out, build_extractors(FEATURES), workers=1, shard_size=8, progress=False)
    assert s.done == 64 and not s.failed
    return out / "ravdess"


def test_processes_give_the_serial_cache_bit_for_bit(tmp_path, ravdess_dir, serial, pools):
    s = extract("ravdess", ravdess_dir, tmp_path, build_extractors(FEATURES), workers=2, shard_size=8, progress=False)
    assert pools == [(2, True)]
    assert s.done == 64 and not s.failed and s.skipped == 0
    assert s.audio_seconds == pytest.approx(sum(StoreReader(serial / "mfcc").lengths().values()) / 100, rel=0.05)
    _same_cache(serial, tmp_path / "ravdess")


def test_threads_run_one_blas_thread_and_give_the_callers_back(tmp_path, ravdess_dir, serial, pools, monkeypatch):
    """In this process too the handcrafted features run their BLAS on one thread; the caller's count returns."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[int] = []
    call = MFCC.__call__

    def spy(self, signal, sampling_rate):
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        return call(self, signal, sampling_rate)

    monkeypatch.setattr(MFCC, "__call__", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        mine = _procpool.thread_counts()
        s = extract("ravdess", ravdess_dir, tmp_path, build_extractors(FEATURES), workers=1, shard_size=8, progress=False)
        assert _procpool.thread_counts() == mine
    assert s.done == 64 and pools == [(1, False)]
    # the first call is the warm-up that loads the libraries, before the limit; then one call per file
    assert len(seen) == 65 and set(seen[1:]) == {1}, seen
    _same_cache(serial, tmp_path / "ravdess")


def test_workers_run_one_blas_thread(pools):
    from featcache._loop import prepare as _prepare

    pool = _procpool.PreparePool(_prepare, build_extractors(["mfcc"]), 2, processes=True)
    try:
        theirs = pool.worker_threads()
    finally:
        pool.shutdown()
    assert len(theirs) == 2
    for counts in theirs:
        blas = {k: n for k, n in counts.items() if "openblas" in k or "mkl" in k}
        assert blas and set(blas.values()) == {1}, counts


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory, ravdess_dir):
    d = tmp_path_factory.mktemp("bad") / "ravdess"
    shutil.copytree(ravdess_dir / "Actor_01", d / "Actor_01")
    a = d / "Actor_01"
    (a / "03-01-01-01-01-02-01.wav").write_bytes(b"")
    (a / "03-01-02-01-01-02-01.wav").write_text("this is not audio")
    sf.write(a / "03-01-03-01-01-02-01.wav", np.zeros(320, np.float32), 16000)  # 20 ms: too short for eGeMAPS only
    sf.write(a / "03-01-05-01-01-02-01.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(a / "03-01-06-01-01-02-01.wav", np.zeros(32000, np.float32), 16000)  # silence
    return d


def test_bad_files_are_recorded_as_in_one_thread(tmp_path, bad_corpus, pools):
    one = extract("ravdess", bad_corpus, tmp_path / "one", build_extractors(FEATURES), workers=1, progress=False)
    many = extract("ravdess", bad_corpus, tmp_path / "many", build_extractors(FEATURES), workers=2, progress=False)
    assert pools == [(1, False), (2, True)]
    assert many.failed == one.failed
    assert {"03-01-01-01-01-02-01", "03-01-02-01-01-02-01", "03-01-05-01-01-02-01"} <= set(many.failed)
    assert "egemaps" in many.failed["03-01-03-01-01-02-01"]  # a per-store failure, the file itself is fine
    assert (many.done, many.skipped) == (one.done, one.skipped)
    assert "03-01-03-01-01-02-01" in StoreReader(tmp_path / "many" / "ravdess" / "mfcc").ids
    _same_cache(tmp_path / "one" / "ravdess", tmp_path / "many" / "ravdess")


def test_a_stopped_run_resumes_to_the_serial_cache(tmp_path, ravdess_dir, serial, monkeypatch, pools):
    ex = build_extractors(FEATURES)
    first = extract("ravdess", ravdess_dir, tmp_path, ex, workers=2, shard_size=8, limit=20, progress=False)
    assert first.done == 20
    record, seen = _Runner.record, []

    def stop_after_17(self, p):  # the extracting process stops mid-run (a shard half filled)
        if len(seen) == 17:
            raise KeyboardInterrupt
        seen.append(p.uid)
        record(self, p)

    monkeypatch.setattr(_Runner, "record", stop_after_17)
    with pytest.raises(KeyboardInterrupt):
        extract("ravdess", ravdess_dir, tmp_path, ex, workers=2, shard_size=8, progress=False)
    monkeypatch.setattr(_Runner, "record", record)
    kept = len(StoreReader(tmp_path / "ravdess" / "mfcc").ids)
    assert kept == 20 + 17  # what was recorded before the stop is committed (writers closed), nothing else
    last = extract("ravdess", ravdess_dir, tmp_path, ex, workers=2, shard_size=8, progress=False)
    assert (last.skipped, last.done) == (kept, 64 - kept)
    assert [w for w, _ in pools] == [2, 2, 2] and all(p for _, p in pools)
    for store in STORES:
        ids = [i for s in StoreReader(tmp_path / "ravdess" / store).manifest["shards"] for i in s["ids"]]
        assert sorted(ids) == sorted(StoreReader(serial / store).ids) and len(ids) == len(set(ids))
        ra, rb = StoreReader(serial / store), StoreReader(tmp_path / "ravdess" / store)
        for uid in ra.ids:
            assert ra.frames(uid).tobytes() == rb.frames(uid).tobytes(), (store, uid)


def test_progress_bar_counts_every_file(tmp_path, ravdess_dir, capsys):
    extract("ravdess", ravdess_dir, tmp_path, build_extractors(["mfcc"]), workers=2, progress=True)
    err = capsys.readouterr().err
    assert "extract" in err and "64/64" in err and "audio-s/s" in err


class DiesInAWorker(MFCC):
    """MFCC whose worker process dies on the first file (a crash in native code)."""

    def __call__(self, signal, sampling_rate):
        import multiprocessing

        if multiprocessing.parent_process() is not None and len(signal) > 8000:
            os._exit(3)
        return super().__call__(signal, sampling_rate)


def test_a_dead_worker_is_one_error_and_the_cache_resumes(tmp_path, ravdess_dir, serial):
    with pytest.raises(FeatcacheError, match="worker process .* died.*re-run"):
        extract("ravdess", ravdess_dir, tmp_path, [DiesInAWorker()], workers=2, progress=False)
    s = extract("ravdess", ravdess_dir, tmp_path, [MFCC()], workers=2, shard_size=8, progress=False)
    assert s.done + s.skipped == 64 and not s.failed
    ra, rb = StoreReader(serial / "mfcc"), StoreReader(tmp_path / "ravdess" / "mfcc")
    assert sorted(ra.ids) == sorted(rb.ids)
    assert all(ra.frames(u).tobytes() == rb.frames(u).tobytes() for u in ra.ids)


def test_plan_workers():
    cheap = build_extractors(["mfcc"])
    big = _procpool.MIN_PROCESS_AUDIO_SECONDS
    cores = _procpool.usable_cores()
    assert _procpool.plan_workers(None, cheap, False, big) == ((cores, True) if cores > 1 else (1, False))
    assert _procpool.plan_workers(None, cheap, False, big - 1) == (1, False)  # a small run: no start-up cost
    assert _procpool.plan_workers(None, cheap, True, big) == (1, False)  # alongside a model: one thread
    assert _procpool.plan_workers(3, cheap, False, 0.0) == (3, True)
    assert _procpool.plan_workers(3, cheap, True, big) == (3, False)
    assert _procpool.plan_workers(1, cheap, False, big) == (1, False)
    assert _procpool.plan_workers(3, cheap, False, big, processes=False) == (3, False)  # a Dask worker
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ParameterError, match="workers"):
            _procpool.plan_workers(bad, cheap, False, big)


def test_threads_where_processes_cannot_be_spawned(monkeypatch, tmp_path):
    cheap = build_extractors(["mfcc"])

    class Local(MFCC):  # not importable by a worker
        pass

    assert _procpool.plan_workers(2, [Local()], False, 1e6) == (2, False)
    import sys

    script = tmp_path / "script.py"
    script.write_text("from featcache.pipeline import extract\nextract('ravdess', 'x', 'y', [])\n")
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(script), raising=False)
    assert not _procpool.main_is_guarded() and _procpool.plan_workers(2, cheap, False, 1e6) == (2, False)
    script.write_text("def main():\n    pass\n\nif __name__ == '__main__':\n    main()\n")
    assert _procpool.main_is_guarded() and _procpool.plan_workers(2, cheap, False, 1e6) == (2, True)
    monkeypatch.setattr(sys.modules["__main__"], "__file__", "<stdin>")
    assert not _procpool.main_is_guarded()


class _HoldsALock(FeatcacheError):
    """An error that cannot be pickled whatever pickling support is installed (a lock in its state)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def test_exceptions_that_do_not_pickle_still_reach_the_caller():
    # (ParameterError alone is not enough: once Dask distributed is imported, tblib makes
    # every exception picklable, and then it is sent as it is)
    e = _procpool._sendable(_HoldsALock("x must be positive; got -1"))
    assert type(e) is FeatcacheError and "_HoldsALock" in str(e) and "x must be positive" in str(e)
    keep = FeatcacheError("plain")
    assert _procpool._sendable(keep) is keep


def test_bad_workers_are_refused_before_the_cache_is_touched(tmp_path, ravdess_dir):
    with pytest.raises(ParameterError, match="workers must be None .* or a positive number"):
        extract("ravdess", ravdess_dir, tmp_path, build_extractors(["mfcc"]), workers=0, progress=False)
    assert not (tmp_path / "ravdess").exists()


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_cli_killed_with_worker_processes_resumes_and_leaves_no_worker(tmp_path, ravdess_dir, serial):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-c", "from cli.featcache import main; main()", "extract", "--corpus", "ravdess",
           "--data-dir", str(ravdess_dir), "--cache-dir", str(tmp_path), "--features", ",".join(FEATURES),
           "--shard-size", "8", "--workers", "2", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(repo))
    p = subprocess.Popen(cmd, env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest, t0 = tmp_path / "ravdess" / "mfcc" / "manifest.json", time.time()
    while time.time() - t0 < 120 and p.poll() is None and not manifest.exists():
        time.sleep(0.01)
    workers = _children(p.pid)
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait()
    t0 = time.time()
    while time.time() - t0 < 30 and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "worker processes outlived the killed command"
    done = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for store in STORES:
        ids = [i for s in StoreReader(tmp_path / "ravdess" / store).manifest["shards"] for i in s["ids"]]
        assert len(ids) == len(set(ids)) == 64, store
    _same_cache_frames(serial, tmp_path / "ravdess")


def _same_cache_frames(a, b) -> None:
    for store in STORES:
        ra, rb = StoreReader(a / store), StoreReader(b / store)
        assert sorted(ra.ids) == sorted(rb.ids) and ra.failed == rb.failed, store
        for uid in ra.ids:
            assert ra.frames(uid).tobytes() == rb.frames(uid).tobytes(), (store, uid)
