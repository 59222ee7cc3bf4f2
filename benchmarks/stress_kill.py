"""Crash-safety stress test of ``featcache extract`` (guarantee 1; not part of the test suite).

Runs ``featcache extract`` (tiny random wav2vec2 in fp32 + MFCC, on a synthetic RAVDESS-named
corpus) in subprocesses and SIGKILLs them again and again: half of the kills aimed at exact
points of a commit (inside the shard's HDF5 file, temporary shard complete, shard renamed
but not yet in the manifest, half-way through the manifest; through ``FEATCACHE_FAULTS``,
see :mod:`featcache.store`), half at random moments (start-up, model loading, extraction,
commits, speaker statistics). After every kill the committed cache must verify clean. When a
run completes, the round is checked: ``featcache verify`` passes, every utterance is present
exactly once in every store, every feature equals the uninterrupted reference run's bit for
bit, nothing is left over; then a new round starts in a fresh cache until ``--kills`` kills.

Usage::

    python benchmarks/stress_kill.py --kills 24 [--seed 0] [--time-budget 900] [--workdir DIR]

Prints one line per kill and a summary; exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import write_ravdess_like  # noqa: E402
from ssl_fixtures import make_tiny_model  # noqa: E402
from stress.harness import FAULT_POINTS, Writer, check_against_reference, extract_cmd, in_flight, run_featcache  # noqa: E402

STORES = ("tiny_wav2vec2_0", "mfcc")


def committed(cache: Path) -> dict[str, int]:
    from featcache.store import StoreReader

    return {s: len(StoreReader(cache / s).ids) for s in STORES if (cache / s / "store.json").exists()}


def check_after_kill(cache: Path) -> list[str]:
    """The committed state a kill leaves must verify clean, each utterance at most once."""
    from featcache.store import StoreReader, verify_store

    out = []
    for s in STORES:
        if not (cache / s / "store.json").exists():
            continue
        out += [f"after kill: {p}" for p in verify_store(cache / s, deep=True)]
        ids = StoreReader(cache / s).ids
        if len(ids) != len(set(ids)):
            out.append(f"after kill: {s} names an utterance twice")
    return out


def evidence(point: str, cache: Path) -> str:
    """What the aimed kill found on disk (the half-done commit step)."""
    states = {s: in_flight(cache / s) for s in STORES if (cache / s).exists()}
    found = {s: {k: v for k, v in st.items() if v} for s, st in states.items()}
    found = {s: v for s, v in found.items() if v}
    expect = {"shard_mid_write": "tmp_shards", "shard_written": "tmp_shards", "shard_renamed": "orphans",
              "manifest_mid_write": "manifest_tmp"}[point]
    ok = any(expect in v for v in found.values())
    return ("" if ok else "NOT FOUND: ") + (", ".join(f"{s}: {v}" for s, v in found.items()) or "nothing in flight")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=24, help="SIGKILLs in total (default 24)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-budget", type=float, default=900.0, help="stop starting new runs after this many seconds")
    ap.add_argument("--shard-size", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed at the end")
    args = ap.parse_args()
    t_start = time.monotonic()
    rng = np.random.default_rng(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="stress_kill_"))
    work.mkdir(parents=True, exist_ok=True)
    data = write_ravdess_like(work / "corpus" / "ravdess")
    model = make_tiny_model(work / "models", "wav2vec2", seed=0)
    failures: list[str] = []

    t0 = time.monotonic()
    ref = run_featcache(*extract_cmd(data, work / "ref", model=model, shard_size=args.shard_size)[3:])
    run_seconds = time.monotonic() - t0
    if ref.returncode != 0:
        print(ref.stdout, ref.stderr)
        return 1
    from featcache.store import StoreReader

    expected = StoreReader(work / "ref" / "ravdess" / "mfcc").ids
    print(f"reference: uninterrupted run in {run_seconds:.1f} s, {len(expected)} utterances, stores {', '.join(STORES)}")

    kills = {"aimed": 0, "random": 0}
    by_point = dict.fromkeys(FAULT_POINTS, 0)
    rounds, round_kills, k = 0, 0, 0
    cache_dir = work / f"round{rounds}"
    while True:
        cache = cache_dir / "ravdess"
        cmd = extract_cmd(data, cache_dir, model=model, shard_size=args.shard_size)
        done = sum(kills.values()) >= args.kills or time.monotonic() - t_start > args.time_budget
        if done and round_kills == 0 and not cache.exists():
            break
        aimed = not done and k % 2 == 0
        k += 1
        before = committed(cache)
        if done:  # finish the round without a kill
            w = Writer(cmd)
            rc, killed = w.finish(timeout=600), False
        elif aimed:
            point = FAULT_POINTS[(k // 2) % len(FAULT_POINTS)]
            n = int(rng.integers(1, 4))
            w = Writer(cmd, faults=f"{point}=pause@{n}")
            stop = w.wait_pause(timeout=600)
            if stop is not None and stop != (point, n):
                failures.append(f"asked to stop at {point} #{n}, stopped at {stop}")
            if stop is None:
                rc, killed = w.finish(timeout=600), False
            else:
                found = evidence(point, cache)
                at_kill = committed(cache)
                w.kill()
                killed = True
                kills["aimed"] += 1
                by_point[point] += 1
                if found.startswith("NOT FOUND"):
                    failures.append(f"kill {sum(kills.values())}: {point}@{n}: {found}")
                what = f"aimed at {point} #{n}; on disk: {found}; committed {at_kill}"
        else:
            delay = float(rng.uniform(0.2, run_seconds))
            w = Writer(cmd)
            try:
                w.proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:  # still running: kill it now
                pass
            if w.proc.poll() is None:
                at_kill = committed(cache)
                w.kill()
                killed = True
                kills["random"] += 1
                what = f"random at {delay:.2f} s; committed {at_kill}"
            else:
                rc, killed = w.finish(timeout=60), False
        if killed:
            round_kills += 1
            problems = check_after_kill(cache)
            failures += problems
            print(f"kill {sum(kills.values()):3d} (round {rounds}): {what}{' PROBLEMS: ' + '; '.join(problems) if problems else ''}",
                  flush=True)
            continue
        # a run completed: check the round
        if rc != 0:
            failures.append(f"round {rounds}: the completing run exited {rc}: {w.output[-2000:]}")
        v = run_featcache("verify", cache)
        if v.returncode != 0:
            failures.append(f"round {rounds}: featcache verify failed: {v.stdout}{v.stderr}")
        problems = check_against_reference(cache, work / "ref" / "ravdess", list(STORES), expected)
        failures += [f"round {rounds}: {p}" for p in problems]
        summary_line = next((line for line in w.stdout if line.startswith("done")), "").strip()
        print(f"round {rounds} complete after {round_kills} kill(s) (last run: {summary_line}; before it {before}): "
              f"verify {'ok' if v.returncode == 0 else 'FAILED'}, exactly-once + bit-identical "
              f"{'ok' if not problems else 'FAILED: ' + '; '.join(problems)}", flush=True)
        rounds += 1
        round_kills = 0
        if done:
            break
        cache_dir = work / f"round{rounds}"

    total = sum(kills.values())
    print(f"\n{total} SIGKILLs ({kills['aimed']} aimed: "
          + ", ".join(f"{p} {c}" for p, c in by_point.items())
          + f"; {kills['random']} at random moments) in {rounds} round(s), {time.monotonic() - t_start:.0f} s")
    if total < args.kills:
        failures.append(f"only {total} kills within the time budget (asked for {args.kills})")
    for f in failures:
        print("FAILURE:", f)
    print("RESULT:", "all checks passed" if not failures else f"{len(failures)} failure(s)")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
