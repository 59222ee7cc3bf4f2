"""Fault injection for the crash, disk-full and concurrency tests: a test-only hook.

The reliability tests (``tests/test_reliability_*.py``) and ``benchmarks/stress_kill.py``
make a writer stop or fail at exact points of a commit. Nothing here acts unless a test asks:
either in-process, by setting :data:`ACTIVE` (``monkeypatch.setattr(faults, "ACTIVE",
parse_faults("shard_written=enospc"))``), or, for a child process, through the environment::

    FEATCACHE_FAULTS="point=action[@n],..."   (read once, when this module is imported)

point: one of :data:`FAULT_POINTS`; action: ``pause`` (write ``featcache-fault: pause POINT
N`` to stderr, then block until a line or EOF arrives on stdin: a killer aims at that moment)
or ``enospc`` (raise ``OSError(ENOSPC)``, as a full disk does); ``@n``: from the n-th time
the point is reached in this process on, ``@n-m``: the n-th to m-th times only (default:
every time). Unset (the normal case), each point costs one truth test of an empty dict.
"""

from __future__ import annotations

import errno
import os
import sys

from featcache.errors import StoreError

__all__ = ["ACTIVE", "FAULT_POINTS", "hit", "parse_faults"]

FAULT_POINTS = (
    "shard_mid_write",  # inside the shard's HDF5 file: first layer written, the rest not yet
    "shard_written",  # shard-NNNNN.h5.tmp complete and fsync'ed, not yet renamed
    "shard_renamed",  # shard-NNNNN.h5 in place, not yet named by manifest.json
    "manifest_mid_write",  # half of manifest.json.tmp written, not yet renamed over manifest.json
)
_ACTIONS = ("pause", "enospc")


def parse_faults(spec: str) -> dict[str, dict]:
    """Parse a ``FEATCACHE_FAULTS`` value into ``{point: {"action", "at", "until", "seen"}}``."""
    faults: dict[str, dict] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        point, _, rest = item.partition("=")
        action, _, when = (rest or "pause").partition("@")
        at, _, until = when.partition("-")
        if (
            point not in FAULT_POINTS
            or action not in _ACTIONS
            or not all(x.isdigit() for x in (at, until) if x)
            or (until and not at)
        ):
            raise StoreError(
                f"FEATCACHE_FAULTS must be point=action[@n[-m]] items with point in {', '.join(FAULT_POINTS)}"
                f" and action in {', '.join(_ACTIONS)}; got {item!r}"
            )
        faults[point] = {"action": action, "at": int(at) if at else None, "until": int(until) if until else None, "seen": 0}
    return faults


ACTIVE: dict[str, dict] = parse_faults(os.environ.get("FEATCACHE_FAULTS", ""))


def hit(point: str) -> None:
    """Act on ``point`` when :data:`ACTIVE` names it (call sites test ``ACTIVE`` first)."""
    f = ACTIVE.get(point)
    if f is None:
        return
    f["seen"] += 1
    if (f["at"] is not None and f["seen"] < f["at"]) or (f["until"] is not None and f["seen"] > f["until"]):
        return
    if f["action"] == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (injected at {point})")
    sys.stderr.write(f"featcache-fault: pause {point} {f['seen']}\n")
    sys.stderr.flush()
    sys.stdin.readline()
