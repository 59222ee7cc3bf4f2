"""An exclusive, non-blocking lock on a corpus cache (one writer at a time)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from featcache.errors import StoreError, StoreLockedError

__all__ = ["CacheLock"]


class CacheLock:
    """``fcntl.flock`` on ``<corpus cache>/.lock``; released when the process dies.

    Examples
    --------
    >>> with CacheLock(path):  # doctest: +SKIP
    ...     write()
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreLockedError` naming the holder's pid.

        Raises
        ------
        StoreError
            The cache folder or its ``.lock`` cannot be created or written (full disk,
            read-only file system, a ``.lock`` that is not a regular file).
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a .lock planted as a symbolic link must not make us truncate its target
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the cache lock ({e.strerror or e})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise StoreLockedError(
                f"{self.path.parent} is being written by another featcache process (pid {holder}); "
                "wait for it to finish, or stop it and re-run (finished work is kept)"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError as e:
            os.close(fd)
            raise StoreError(
                f"{self.path}: cannot write the cache lock ({e.strerror or e}); free disk space and re-run"
            ) from e
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "CacheLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
