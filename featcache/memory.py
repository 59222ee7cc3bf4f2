"""The memory budget that decides how stored frames are read (see :mod:`featcache.frames`).

One value per process, from (first that is set): the caller's parameter (an estimator's
``memory_budget``), the environment variable ``FEATCACHE_MEMORY_BUDGET``, else ``"auto"``:
half of the memory the system reports available (``MemAvailable``) when the budget is
resolved. Sizes are bytes (an int) or strings such as ``"2GB"``, ``"512MiB"``, ``"1.5G"``
(decimal ``kB/MB/GB/TB`` and binary ``KiB/MiB/GiB/TiB``; a bare ``K/M/G/T`` is binary).
"""

from __future__ import annotations

import numbers
import os
import re

from featcache.errors import ParameterError

__all__ = ["ENV_VAR", "parse_memory_budget", "resolve_memory_budget", "available_memory"]

ENV_VAR = "FEATCACHE_MEMORY_BUDGET"

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_memory_budget(value: object, name: str = "memory_budget") -> int | None:
    """Bytes of a budget (None for ``"auto"`` / None).

    Raises
    ------
    featcache.errors.ParameterError
        Not ``"auto"``, a positive int or a size string; the message names ``name``.
    """
    allowed = "'auto', a positive number of bytes or a size such as '2GB' or '512MiB'"
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if int(value) > 0:
            return int(value)
        raise ParameterError(name, allowed, value)
    if isinstance(value, str):
        m = _SIZE.fullmatch(value)
        if m and m.group(2).lower() in _UNITS:
            n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
            if n > 0:
                return n
    raise ParameterError(name, allowed, value)


def available_memory() -> int:
    """Bytes the system reports available (``MemAvailable``; total physical memory elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 4 * 2**30


def resolve_memory_budget(value: object = "auto") -> tuple[int, str]:
    """The budget in bytes and where it came from (``"parameter"``, ``"FEATCACHE_MEMORY_BUDGET"``
    or ``"auto"``)."""
    given = parse_memory_budget(value)
    if given is not None:
        return given, "parameter"
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        from_env = parse_memory_budget(env, name=f"${ENV_VAR}")
        if from_env is not None:
            return from_env, ENV_VAR
    return available_memory() // 2, "auto"
