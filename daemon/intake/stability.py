"""When a file is finished: the stability tracker, pure bookkeeping.

An instrument writes a spectrum file in several steps (create, grow, close, sometimes
rename from a temporary name), and a network copy can leave a zero-byte placeholder
for a while before the bytes arrive. A file is handed on only once it is *stable*.
:class:`StabilityTracker` is told each file's size and mtime together with the
current time, and answers which files have been quiet for ``quiet_seconds``. It
reads no clock and touches no disk.

>>> tracker = StabilityTracker(quiet_seconds=2.0)
>>> spectrum = Path("/inbox/particle_0001.spa")
>>> tracker.track(spectrum, size=0, mtime=10.0, now=100.0)  # placeholder
True
>>> tracker.track(spectrum, size=4096, mtime=10.5, now=100.5)  # bytes arrive
True
>>> tracker.ready(now=102.0)  # quiet for only 1.5 s
[]
>>> tracker.ready(now=102.5)
[FileStat(path=PosixPath('/inbox/particle_0001.spa'), size=4096, mtime=10.5)]
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

__all__ = ["FileStat", "StabilityTracker"]


class FileStat(NamedTuple):
    """A candidate file and the size (bytes) and mtime (epoch seconds) a stat saw."""

    path: Path
    size: int
    mtime: float


# --------------------------------------------------------------------------- stability


@dataclass
class _Observation:
    size: int
    mtime: float
    #: Tracker time at which this size and mtime were first seen.
    since: float


class StabilityTracker:
    """Which files have stopped changing, given stats and times the caller supplies.

    A file is *ready* when its size and mtime have not changed for at least
    ``quiet_seconds``. A zero-byte file waits ``empty_seconds`` instead: an instrument
    may create it long before its bytes arrive (their arrival restarts the quiet
    period), but one that stays empty is handed on at last, to be reported as
    ``empty_file`` rather than waited for forever. Every change of size or mtime
    restarts the quiet period.

    After the caller has handed a ready file on, :meth:`settle` moves it out of tracking
    and remembers its stat, so repeated events and rescans reporting the same stat are
    ignored; a different stat (the file was rewritten) is tracked afresh.

    Not thread-safe: :class:`InboxWatcher` guards it with a lock.
    """

    def __init__(self, *, quiet_seconds: float, empty_seconds: float = 60.0) -> None:
        if quiet_seconds < 0 or empty_seconds < 0:
            raise ValueError(f"quiet and empty seconds must be >= 0, got {quiet_seconds}, {empty_seconds}")
        self.quiet_seconds = quiet_seconds
        self.empty_seconds = max(empty_seconds, quiet_seconds)
        self._tracking: dict[Path, _Observation] = {}
        self._settled: dict[Path, tuple[int, float]] = {}

    def track(self, path: Path, *, size: int, mtime: float, now: float) -> bool:
        """Record a stat of ``path`` taken at ``now``.

        Returns:
            True if the file is waiting to become ready, False if this stat is the one
            already handed on (a duplicate event).
        """
        if self._settled.get(path) == (size, mtime):
            return False
        self._settled.pop(path, None)
        seen = self._tracking.get(path)
        if seen is None or seen.size != size or seen.mtime != mtime:
            self._tracking[path] = _Observation(size=size, mtime=mtime, since=now)
        return True

    def ready(self, now: float, *, limit: int | None = None) -> list[FileStat]:
        """Files that have been quiet long enough, quietest first (at most ``limit``).

        Ready files stay tracked until :meth:`settle` or :meth:`forget`.
        """
        quiet = [
            (observation.since, path, observation)
            for path, observation in self._tracking.items()
            if now - observation.since >= self.wait(observation.size)
        ]
        order = itemgetter(0, 1)  # since, then path
        quiet = sorted(quiet, key=order) if limit is None else heapq.nsmallest(limit, quiet, key=order)
        return [FileStat(path, observation.size, observation.mtime) for _, path, observation in quiet]

    def next_ready_at(self) -> float | None:
        """The tracker time at which the next file becomes ready if nothing changes; None if none will."""
        waiting = [o.since + self.wait(o.size) for o in self._tracking.values()]
        return min(waiting) if waiting else None

    def wait(self, size: int) -> float:
        """How long a file of ``size`` bytes must keep still before it is ready."""
        return self.quiet_seconds if size > 0 else self.empty_seconds

    def settle(self, path: Path, *, size: int, mtime: float) -> bool:
        """Stop tracking a file that was handed on with this size and mtime.

        Returns False (and keeps tracking) if the tracked stat is no longer this one,
        that is, the file changed after :meth:`ready` reported it.
        """
        seen = self._tracking.get(path)
        if seen is None or seen.size != size or seen.mtime != mtime:
            return False
        del self._tracking[path]
        self._settled[path] = (size, mtime)
        return True

    def forget(self, path: Path, *, recursive: bool = False) -> None:
        """Drop everything known about ``path`` (and, if ``recursive``, below it)."""
        self._tracking.pop(path, None)
        self._settled.pop(path, None)
        if recursive:
            for table in (self._tracking, self._settled):
                for known in [p for p in table if p.is_relative_to(path)]:
                    del table[known]

    def tracked(self) -> list[FileStat]:
        """Files still waiting to become ready (for health output and tests)."""
        return [FileStat(path, o.size, o.mtime) for path, o in self._tracking.items()]

    def __len__(self) -> int:
        return len(self._tracking)

    def __contains__(self, path: object) -> bool:
        return path in self._tracking


# --------------------------------------------------------------------------- filter
