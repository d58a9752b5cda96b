"""The main loop's guard: one part failing is logged once, counted, and retried with backoff.

Every part of a turn of the main loop (admission, retries, claims, the rescan, the
drop folder, the library sync, the challenger, the result files, the watchers) runs
through :meth:`Guard.run`. A part that raises is tried again after 1, 2, 4 ... 60 s
while the others go on; the process never ends because of one part. A failure to
write the state folder (the disk full, I/O failing) also turns ``storage_ok`` off
in /readyz and the metrics until every part works again.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.store.ledger import LedgerError
from daemon.web.metrics import Metrics

__all__ = ["MAX_BACKOFF_SECONDS", "Guard", "is_storage_error"]

logger = logging.getLogger(__name__)

#: The longest wait before a failing part of the main loop is tried again.
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class _Failing:
    """A part that failed: why, how often, when to try again, whether it was storage."""

    error: str
    attempts: int
    retry_at: float
    storage: bool


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the state folder cannot be written (the disk full, I/O failing)."""
    if isinstance(exc, sqlite3.OperationalError | LedgerError):
        text = str(exc).lower()
        return any(w in text for w in ("disk", "full", "i/o", "readonly", "read-only"))
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)


class Guard:
    """Runs the parts of the main loop; remembers which are failing and since when."""

    def __init__(self, metrics: Metrics, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.monotonic = monotonic
        self._failing: dict[str, _Failing] = {}
        #: When each part that runs only every so often last ran.
        self._last_run: dict[str, float] = {}

    @property
    def storage_ok(self) -> bool:
        return not any(f.storage for f in self._failing.values())

    def failing(self) -> dict[str, str]:
        """Each part failing now, with its last error."""
        return {part: f.error for part, f in self._failing.items()}

    def run(self, part: str, step: Callable[..., object], *args: Any, every: float | None = None) -> None:
        """Run one part, unless it failed and its backoff has not passed.

        With ``every``, the part runs at most once in that many seconds (the first
        time one period after the guard was made).
        """
        if every is not None:
            last = self._last_run.setdefault(part, self.monotonic())
            if self.monotonic() - last < every:
                return
            self._last_run[part] = self.monotonic()
        failing = self._failing.get(part)
        if failing is not None and self.monotonic() < failing.retry_at:
            return
        try:
            step(*args)
        except Exception as exc:
            attempts = failing.attempts + 1 if failing else 1
            storage = is_storage_error(exc)
            backoff = min(MAX_BACKOFF_SECONDS, 2.0 ** (attempts - 1))
            self._failing[part] = _Failing(str(exc), attempts, self.monotonic() + backoff, storage)
            self.metrics.loop_error(part)
            if failing is None:
                logger.error("%s failed, retrying with backoff: %s", part, exc, exc_info=not storage)
            if storage:
                self.metrics.set_storage_ok(ok=False)
            return
        if failing is not None:
            del self._failing[part]
            logger.info("%s works again after %d failed attempts", part, failing.attempts)
            if self.storage_ok:
                self.metrics.set_storage_ok(ok=True)
