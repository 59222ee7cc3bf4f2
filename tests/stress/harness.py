"""Drive ``featcache extract`` in subprocesses for the crash and concurrency tests.

Used by ``tests/test_reliability_crash.py``, ``tests/test_reliability_concurrency.py`` and
``benchmarks/stress_kill.py``. A :class:`Writer` is one ``featcache extract`` process;
with ``faults`` (``FEATCACHE_FAULTS``, see :mod:`featcache.store`) it stops at exact points
of a commit and announces them on stderr, so a test can look at the cache at that moment,
let it go on (:meth:`Writer.resume`) or SIGKILL it there (:meth:`Writer.kill`).
:func:`check_against_reference` is what "the resumed cache is right" means.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FAULT_POINTS = ("shard_mid_write", "shard_written", "shard_renamed", "manifest_mid_write")


def env_for(faults: str = "") -> dict[str, str]:
    """The environment of a featcache subprocess: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FEATCACHE_FAULTS", None)
    if faults:
        env["FEATCACHE_FAULTS"] = faults
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def featcache_cmd(*args: object) -> list[str]:
    """``featcache ARGS`` run from this checkout's sources."""
    return [sys.executable, "-c", "from cli.featcache import main; main()", *map(str, args)]


def extract_cmd(
    data: Path,
    cache: Path,
    *,
    features: str = "wav2vec2,mfcc",
    model: Path | None = None,
    shard_size: int = 4,
    corpus: str = "ravdess",
    extra: tuple = (),
) -> list[str]:
    """``featcache extract`` of ``data`` into ``cache`` (fp32 on the CPU when a model is given)."""
    args = ["extract", "--corpus", corpus, "--data-dir", data, "--cache-dir", cache, "--features", features,
            "--shard-size", shard_size, "--quiet"]
    if model is not None:
        args += ["--model", model, "--precision", "fp32", "--device", "cpu"]
    return featcache_cmd(*args, *extra)


class Writer:
    """One ``featcache extract`` subprocess whose fault-point pauses can be awaited.

    Parameters
    ----------
    cmd : list of str
    faults : str
        ``FEATCACHE_FAULTS`` value, e.g. ``"shard_renamed=pause@2"``.
    """

    def __init__(self, cmd: list[str], faults: str = "") -> None:
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env_for(faults), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._pauses: queue.Queue = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("featcache-fault: pause "):
                _, _, point, n = line.split()
                self._pauses.put((point, int(n)))
        self._pauses.put(None)

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.stdout.append(line)

    def wait_pause(self, timeout: float = 120.0) -> tuple[str, int] | None:
        """The next ``(point, n)`` the writer stopped at, or None when it exited first."""
        try:
            return self._pauses.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no fault point reached in {timeout} s; stderr: {''.join(self.stderr)[-2000:]}") from None

    def resume(self) -> None:
        """Let a paused writer go on."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL (no clean-up of any kind runs in the writer)."""
        self.proc.kill()
        self.proc.wait()
        self._join()

    def finish(self, timeout: float = 300.0) -> int:
        """Close stdin (later pauses return at once), wait for the exit; returns the status."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        rc = self.proc.wait(timeout=timeout)
        self._join()
        return rc

    def _join(self) -> None:
        for t in self._threads:
            t.join(timeout=10)

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)


def run_featcache(*args: object, faults: str = "", timeout: float = 600.0) -> subprocess.CompletedProcess:
    """``featcache ARGS`` to completion (stdin closed, output captured)."""
    return subprocess.run(featcache_cmd(*args), cwd=REPO, env=env_for(faults), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def in_flight(store: Path) -> dict[str, list[str]]:
    """What a commit leaves in a store folder before it completes.

    Returns ``tmp_shards`` (``shard-*.h5.tmp``), ``orphans`` (``shard-*.h5`` that the
    manifest does not name) and ``manifest_tmp`` (``manifest.json.tmp``, if any).
    """
    named = set()
    if (store / "manifest.json").exists():
        named = {s["file"] for s in json.loads((store / "manifest.json").read_text())["shards"]}
    return {
        "tmp_shards": sorted(p.name for p in store.glob("shard-*.h5.tmp")),
        "orphans": sorted(p.name for p in store.glob("shard-*.h5") if p.name not in named),
        "manifest_tmp": [p.name for p in store.glob("manifest.json.tmp")],
    }


def check_against_reference(cache: Path, reference: Path, stores: list[str], expected_ids: list[str]) -> list[str]:
    """Problems of a resumed corpus cache compared with an uninterrupted one (empty: fine).

    Checks, per store: the manifest names every expected utterance exactly once and nothing
    else; every frame equals the reference's bit for bit (same dtype, ``array_equal``);
    per-utterance lengths and stored sums are equal; the folder holds nothing but
    ``store.json``, ``manifest.json``, ``speakers.h5`` and the named shards; ``speakers.h5``
    matches the current manifest.
    """
    from featcache.stats import read_speaker_stats
    from featcache.store import StoreReader

    out: list[str] = []
    for name in stores:
        got, ref = StoreReader(cache / name), StoreReader(reference / name)
        ids = [i for s in got.manifest["shards"] for i in s["ids"]]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            out.append(f"{name}: utterances committed more than once: {dupes[:5]}")
        if sorted(set(ids)) != sorted(expected_ids):
            missing = sorted(set(expected_ids) - set(ids))
            extra = sorted(set(ids) - set(expected_ids))
            out.append(f"{name}: missing {missing[:5]} ({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
        if got.dtype != ref.dtype:
            out.append(f"{name}: dtype {got.dtype} != reference {ref.dtype}")
        differ = [u for u in set(ids) & set(expected_ids) if not np.array_equal(got.frames(u), ref.frames(u))]
        if differ:
            out.append(f"{name}: {len(differ)} utterance(s) differ from the uninterrupted run, e.g. {sorted(differ)[:3]}")
        gi, gn, gs, _ = got.utterance_stats()
        ri, rn, rs, _ = ref.utterance_stats()
        gpos, rpos = {u: k for k, u in enumerate(gi)}, {u: k for k, u in enumerate(ri)}
        common = sorted(set(gi) & set(ri))
        if common and not (
            np.array_equal(gn[[gpos[u] for u in common]], rn[[rpos[u] for u in common]])
            and np.array_equal(gs[[gpos[u] for u in common]], rs[[rpos[u] for u in common]])
        ):
            out.append(f"{name}: stored lengths or sums differ from the uninterrupted run")
        allowed = {"store.json", "manifest.json", "speakers.h5"} | {s["file"] for s in got.manifest["shards"]}
        left = sorted(p.name for p in (cache / name).iterdir() if p.name not in allowed)
        if left:
            out.append(f"{name}: leftover files {left}")
        try:
            read_speaker_stats(got)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out.append(f"{name}: speakers.h5 does not match the manifest ({e})")
    return out


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
