"""Command-line entry points (`featcache`, `estimators`).

Imported before either command module, so the setting below holds for both.
"""

import os

# torch's OpenMP threads spin after every parallel step by default; on a machine whose cores
# are shared (CI, a busy workstation, two jobs at once) that spinning starved the other
# threads: a training epoch took 10.2 s instead of 1.2 s (benchmarks/, docs/benchmarks.md).
# Must be set before torch is imported; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
