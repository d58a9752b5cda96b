"""One daemon per state folder: an exclusive lock on ``<state_dir>/daemon.lock``.

A second daemon on the same state folder would take the first one's claimed
files over as "interrupted" and classify them again. The lock is an advisory
``flock``, so the operating system drops it when its holder exits, even by
``kill -9``: a stale lock file never keeps a daemon from starting.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> first = StateLock(folder)
>>> first.acquire()
>>> StateLock(folder).acquire()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
daemon.store.lock.StateDirInUse: state_dir ... is in use by another mpwatch daemon (pid ...)
>>> first.release()
>>> StateLock(folder).acquire()
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from daemon.config import ConfigError

__all__ = ["LOCK_FILE", "StateDirInUse", "StateLock"]

LOCK_FILE = "daemon.lock"


class StateDirInUse(ConfigError):
    """Another daemon holds the state folder; the message is one readable line."""


class StateLock:
    """The state folder's lock; :meth:`acquire` raises :class:`StateDirInUse` when it is held."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StateDirInUse(
                f"state_dir {self.path.parent} is in use by another mpwatch daemon (pid {holder})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    @property
    def held(self) -> bool:
        """Whether this process holds the lock now."""
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
