"""Watching an inbox: which files are candidates, when a file is finished, and the watchdog wiring.

An instrument writes a spectrum file in several steps (create, grow, close, sometimes
rename from a temporary name), and a network copy can leave a zero-byte placeholder
for a while before the bytes arrive. A file is handed on only once it is *stable*.
The work is split into small parts, each testable on its own:

- :class:`StabilityTracker` is pure bookkeeping: it is told each file's size and mtime
  together with the current time, and answers which files have been quiet for
  ``quiet_seconds``. It reads no clock and touches no disk.
- :class:`SpectrumFileFilter` decides by name whether a path is a candidate: temporary
  and partial files, system clutter and hidden or excluded folders are not. Its
  defaults are class constants; configured patterns extend them.
- :func:`stat_candidate` accepts one path (filter, then stat) and :func:`scan` walks a
  tree; neither ever raises: a vanished file or a folder without permission is logged
  and skipped.
- :class:`InboxEventHandler` turns watchdog events into calls on an
  :class:`InboxWatcher`, which only wires one inbox root to a watchdog observer (native,
  or polling for network shares), a filter and a lock-guarded tracker.

Events arrive on watchdog's threads; the daemon's main loop calls
:meth:`InboxWatcher.poll_ready` to drain stable files, and :meth:`InboxWatcher.rescan`
now and then as the safety net for watchers that miss events (SMB and NFS shares,
inotify queue overflows, folders created and filled faster than a watch is added).

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

import fnmatch
import heapq
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path, PurePath
from types import TracebackType
from typing import ClassVar, NamedTuple, Self

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

__all__ = [
    "FileStat",
    "InboxEventHandler",
    "InboxWatcher",
    "SpectrumFileFilter",
    "StabilityTracker",
    "scan",
    "stat_candidate",
]

logger = logging.getLogger(__name__)


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

    A file is *ready* when it has content (``size > 0``) and its size and mtime have not
    changed for at least ``quiet_seconds``. A zero-byte placeholder is never ready; when
    its bytes arrive, its quiet period starts then. Every change of size or mtime
    restarts the quiet period.

    After the caller has handed a ready file on, :meth:`settle` moves it out of tracking
    and remembers its stat, so repeated events and rescans reporting the same stat are
    ignored; a different stat (the file was rewritten) is tracked afresh.

    Not thread-safe: :class:`InboxWatcher` guards it with a lock.
    """

    def __init__(self, *, quiet_seconds: float) -> None:
        if quiet_seconds < 0:
            raise ValueError(f"quiet_seconds must be >= 0, got {quiet_seconds}")
        self.quiet_seconds = quiet_seconds
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
        """Files that have content and have been quiet long enough, quietest first (at most ``limit``).

        Ready files stay tracked until :meth:`settle` or :meth:`forget`.
        """
        quiet = [
            (observation.since, path, observation)
            for path, observation in self._tracking.items()
            if observation.size > 0 and now - observation.since >= self.quiet_seconds
        ]
        order = itemgetter(0, 1)  # since, then path
        quiet = sorted(quiet, key=order) if limit is None else heapq.nsmallest(limit, quiet, key=order)
        return [FileStat(path, observation.size, observation.mtime) for _, path, observation in quiet]

    def next_ready_at(self) -> float | None:
        """The tracker time at which the next file becomes ready if nothing changes; None if none will."""
        waiting = [o.since for o in self._tracking.values() if o.size > 0]
        return min(waiting) + self.quiet_seconds if waiting else None

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


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for a set of glob patterns (None when there are none)."""
    translated = [fnmatch.translate(pattern) for pattern in patterns]
    if not translated:
        return None
    return re.compile("|".join(f"(?:{t})" for t in translated), re.IGNORECASE)


def _check_patterns(kind: str, patterns: Iterable[str]) -> tuple[str, ...]:
    checked = tuple(patterns)
    for pattern in checked:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError(f"{kind} patterns must be non-empty strings, got {pattern!r}")
    return checked


class SpectrumFileFilter:
    """Decides by name whether a path under an inbox is a candidate spectrum file.

    Matching is case-insensitive (instrument PCs run Windows). A pattern without ``/``
    matches the file name; a pattern with ``/`` matches the path relative to the inbox
    root in POSIX form (``"archive/*.spa"``). Folder patterns match any folder name
    between the root and the file; files below a matching folder are never candidates.

    Suffixes are not restricted by default, since spectrum formats vary (OPUS files end
    in ``.0``, ``.1``, ...); configured ``include`` patterns restrict them. Configured
    ``exclude`` and ``exclude_dirs`` patterns extend the defaults, never replace them.

    >>> inbox = Path("/inbox")
    >>> spectra = SpectrumFileFilter(exclude=["*.log"])
    >>> [spectra.accepts(inbox / name, root=inbox) for name in ["a.0", "~$a.spa", "run.LOG"]]
    [True, False, False]
    >>> spectra.accepts(inbox / "quarantine" / "a.spa", root=inbox)
    False
    """

    #: Temporary, partial and lock files that instruments, browsers, copy tools and
    #: editors leave while writing, and operating-system clutter.
    DEFAULT_IGNORE_PATTERNS: ClassVar[tuple[str, ...]] = (
        ".*",  # hidden: .DS_Store, ._AppleDouble, .~lock.x#, .nfs000123, rsync's .name.XXXXXX
        "~$*",  # Office owner files
        "*.tmp",
        "*.temp",
        "*.part",
        "*.partial",
        "*.crdownload",
        "*.download",
        "*.opdownload",
        "*.filepart",
        "*.!ut",
        "*.$$$",
        "*.lock",
        "*.lck",
        "*.swp",
        "*.swo",
        "*~",
        "Thumbs.db",
        "ehthumbs.db",
        "desktop.ini",
    )
    #: Folders never descended into: the daemon's own, quarantine, trash and NAS metadata.
    DEFAULT_IGNORE_DIRS: ClassVar[tuple[str, ...]] = (
        ".*",
        "_mpwatch",
        "quarantine",
        "$RECYCLE.BIN",
        "System Volume Information",
        "@eaDir",
        "#recycle",
        "#snapshot",
        "lost+found",
    )

    def __init__(
        self,
        *,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        exclude_dirs: Iterable[str] = (),
    ) -> None:
        self.include = _check_patterns("include", include)
        self.exclude = (*self.DEFAULT_IGNORE_PATTERNS, *_check_patterns("exclude", exclude))
        self.exclude_dirs = (*self.DEFAULT_IGNORE_DIRS, *_check_patterns("exclude_dirs", exclude_dirs))
        self._include = _compile(self.include)
        self._exclude_names = _compile(p for p in self.exclude if "/" not in p)
        self._exclude_paths = _compile(p for p in self.exclude if "/" in p)
        self._include_names = _compile(p for p in self.include if "/" not in p)
        self._include_paths = _compile(p for p in self.include if "/" in p)
        self._exclude_dirs = _compile(self.exclude_dirs)

    def _relative(self, path: PurePath, root: PurePath) -> PurePath | None:
        try:
            return path.relative_to(root)
        except ValueError:
            return None

    def _folder_excluded(self, name: str) -> bool:
        return self._exclude_dirs is not None and self._exclude_dirs.match(name) is not None

    def accepts(self, path: PurePath, *, root: PurePath) -> bool:
        """Whether ``path`` (a file under ``root``) is a candidate, judged by name only."""
        relative = self._relative(path, root)
        if relative is None or not relative.parts:
            return False
        if any(self._folder_excluded(folder) for folder in relative.parts[:-1]):
            return False
        name, posix = relative.name, relative.as_posix()
        if self._exclude_names is not None and self._exclude_names.match(name):
            return False
        if self._exclude_paths is not None and self._exclude_paths.match(posix):
            return False
        if self._include is None:
            return True
        return bool(
            (self._include_names is not None and self._include_names.match(name))
            or (self._include_paths is not None and self._include_paths.match(posix))
        )

    def accepts_directory(self, path: PurePath, *, root: PurePath) -> bool:
        """Whether files below the folder ``path`` can be candidates (the root itself can)."""
        relative = self._relative(path, root)
        if relative is None:
            return False
        return not any(self._folder_excluded(folder) for folder in relative.parts)


# --------------------------------------------------------------------------- accepting files


def _through_a_link(path: Path, *, root: Path) -> bool:
    """Whether ``path``'s folder is reached through a link to a folder (out of the inbox, or a loop).

    Such a path names a file that lives elsewhere, or a second name of one already in the
    inbox; links to folders are not followed. A link to a file is a file like any other.
    """
    try:
        folder = path.parent.relative_to(root)
    except ValueError:
        return True
    return Path(os.path.realpath(path.parent)) != Path(os.path.realpath(root)) / folder


def stat_candidate(path: Path, *, root: Path, file_filter: SpectrumFileFilter) -> FileStat | None:
    """Filter and stat one path; None if it is not a candidate regular file. Never raises.

    A path that vanished, cannot be stat'ed (permission denied, a share that went away)
    or is not a regular file is logged and answered with None.
    """
    try:
        if not file_filter.accepts(path, root=root) or _through_a_link(path, root=root):
            return None
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            return None
        return FileStat(path, status.st_size, status.st_mtime)
    except FileNotFoundError:
        logger.debug("%s vanished before it could be examined", path)
    except OSError as error:  # permission denied, a share that went away, ...
        logger.warning("cannot examine %s: %s", path, error)
    except Exception:
        logger.exception("unexpected error examining %s", path)
    return None


def _list_directory(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except FileNotFoundError:
        logger.debug("%s vanished during a scan", directory)
    except OSError as error:
        logger.warning("cannot list %s: %s", directory, error)
    return []


def scan(
    root: str | Path, *, file_filter: SpectrumFileFilter, under: str | Path | None = None
) -> Iterator[FileStat]:
    """Every candidate file below ``root`` (or below ``under``, a folder inside it). Never raises.

    Used for the catch-up scan at start, for folders moved into the inbox and as the
    periodic safety net. Excluded folders are not descended into, symbolic links to
    folders are not followed, and unreadable folders are logged and skipped.
    """
    base = Path(root)
    start = base if under is None else Path(under)
    if not file_filter.accepts_directory(start, root=base):
        return
    folders = [start]
    while folders:
        folder = folders.pop()
        for entry in _list_directory(folder):
            path = Path(entry.path)
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError as error:
                logger.warning("cannot examine %s: %s", path, error)
                continue
            if is_folder:
                if file_filter.accepts_directory(path, root=base):
                    folders.append(path)
                continue
            candidate = stat_candidate(path, root=base, file_filter=file_filter)
            if candidate is not None:
                yield candidate


# --------------------------------------------------------------------------- watchdog wiring


def _event_path(raw: bytes | str) -> Path:
    return Path(os.fsdecode(raw))


class InboxEventHandler(FileSystemEventHandler):
    """Turns watchdog events into :class:`InboxWatcher` calls; never lets an error escape.

    A created, modified, closed-after-write or moved-in file is accepted; a folder
    created or moved into the inbox is walked and every file inside accepted; a deleted
    or moved-away path is forgotten. Folder "modified" events carry no information and,
    like opens and reads, are not asked for (:attr:`EVENTS`).
    """

    #: The events handled; the observer asks the kernel for these only. Without it every
    #: open and close-without-write, the daemon's own reads included, would be an event.
    EVENTS: ClassVar[tuple[type[FileSystemEvent], ...]] = (
        FileCreatedEvent,
        DirCreatedEvent,
        FileModifiedEvent,
        FileClosedEvent,
        FileMovedEvent,
        DirMovedEvent,
        FileDeletedEvent,
        DirDeletedEvent,
    )

    def __init__(self, inbox: InboxWatcher) -> None:
        super().__init__()
        self._inbox = inbox

    def dispatch(self, event: FileSystemEvent) -> None:
        # An exception here would end watchdog's dispatch thread and silence the inbox.
        try:
            super().dispatch(event)
        except Exception:
            logger.exception("error handling %s", event)

    def _arrived(self, raw: bytes | str, *, is_directory: bool) -> None:
        path = _event_path(raw)
        if is_directory:
            self._inbox.accept_tree(path)
        else:
            self._inbox.accept(path)

    def on_created(self, event: FileSystemEvent) -> None:
        self._arrived(event.src_path, is_directory=event.is_directory)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._inbox.accept(_event_path(event.src_path))

    def on_closed(self, event: FileClosedEvent) -> None:
        self._inbox.accept(_event_path(event.src_path))

    def on_moved(self, event: DirMovedEvent | FileMovedEvent) -> None:
        self._inbox.forget(_event_path(event.src_path), recursive=event.is_directory)
        self._arrived(event.dest_path, is_directory=event.is_directory)

    def on_deleted(self, event: FileSystemEvent) -> None:
        self._inbox.forget(_event_path(event.src_path), recursive=event.is_directory)


class InboxWatcher:
    """One watched inbox: a recursive watchdog observer, a filter and a stability tracker.

    Args:
        root: the inbox folder.
        file_filter: which paths are candidates (defaults only if None).
        quiet_seconds: how long a file's size and mtime must hold still.
        polling: use watchdog's PollingObserver (SMB/NFS shares deliver no native events).
        poll_interval: seconds between polls when ``polling``.
        clock: the time source for event times; :meth:`poll_ready` must be given times
            from the same clock. Monotonic by default, so wall-clock jumps cannot
            shorten or stretch a quiet period.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        file_filter: SpectrumFileFilter | None = None,
        quiet_seconds: float = 2.0,
        polling: bool = False,
        poll_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        self.root = Path(root).absolute()
        self.file_filter = file_filter if file_filter is not None else SpectrumFileFilter()
        self.polling = polling
        self.poll_interval = poll_interval
        self._clock = clock
        self._tracker = StabilityTracker(quiet_seconds=quiet_seconds)
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Start watching, then catch up with a full scan of what is already there.

        The observer is started first, so a file arriving during the scan is seen by
        one or the other (or both; the tracker collapses them).

        Returns:
            The number of files the catch-up scan found waiting.

        Raises:
            NotADirectoryError: the inbox is missing (the service fails fast at start).
            RuntimeError: already started.
        """
        if self._observer is not None:
            raise RuntimeError(f"the watcher of {self.root} is already started")
        if not self.root.is_dir():
            raise NotADirectoryError(f"inbox {self.root} is not an existing folder")
        observer: BaseObserver = (
            # lstat: links to folders are not walked into (a link back into the inbox is a loop)
            PollingObserverVFS(os.lstat, os.scandir, polling_interval=self.poll_interval)
            if self.polling
            else Observer()
        )
        handler = InboxEventHandler(self)
        observer.schedule(handler, str(self.root), recursive=True, event_filter=list(handler.EVENTS))
        observer.start()
        self._observer = observer
        logger.info(
            "watching %s (%s)",
            self.root,
            f"polling every {self.poll_interval:g} s" if self.polling else "native",
        )
        return self.rescan()

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the observer and wait up to ``timeout`` seconds for its threads."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()
        observer.join(timeout)
        if observer.is_alive():
            logger.warning("the watcher of %s did not stop within %.1f s", self.root, timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def is_alive(self) -> bool:
        """Whether the observer and all its emitters run (the ``watcher_up`` signal).

        False before :meth:`start`, after :meth:`stop`, and when an emitter has died, for
        example because the inbox folder was removed or a share was unmounted.
        """
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        emitters = observer.emitters
        return bool(emitters) and all(emitter.is_alive() for emitter in emitters)

    # ------------------------------------------------------------------ accepting files

    def accept(self, path: Path) -> bool:
        """Hand one path to the tracker if it is a candidate. Never raises.

        Returns:
            True if the file is now waiting to become ready.
        """
        candidate = stat_candidate(path, root=self.root, file_filter=self.file_filter)
        if candidate is None:
            return False
        try:
            with self._lock:
                return self._tracker.track(
                    candidate.path, size=candidate.size, mtime=candidate.mtime, now=self._clock()
                )
        except Exception:
            logger.exception("could not track %s", path)
            return False

    def accept_tree(self, folder: Path) -> int:
        """Accept every candidate file below ``folder``. Never raises.

        Returns:
            How many files are now waiting to become ready.
        """
        waiting = 0
        try:
            for candidate in scan(self.root, file_filter=self.file_filter, under=folder):
                with self._lock:
                    if self._tracker.track(
                        candidate.path, size=candidate.size, mtime=candidate.mtime, now=self._clock()
                    ):
                        waiting += 1
        except Exception:
            logger.exception("error while scanning %s", folder)
        return waiting

    def rescan(self) -> int:
        """Scan the whole inbox: the catch-up at start and the periodic safety net.

        Files already handed on with an unchanged stat are ignored.

        Returns:
            How many files are waiting to become ready after the scan.
        """
        return self.accept_tree(self.root)

    def forget(self, path: Path, *, recursive: bool = False) -> None:
        """Stop tracking a path that was deleted or moved away (and, if ``recursive``, below it)."""
        with self._lock:
            self._tracker.forget(path, recursive=recursive)

    def hand_back(self, stats: Sequence[FileStat], now: float | None = None) -> None:
        """Files :meth:`poll_ready` handed on that could not be taken (the disk full): ready again at once."""
        moment = self._clock() if now is None else now
        with self._lock:
            for stat in stats:
                self._tracker.forget(stat.path)
                quiet_since = moment - self._tracker.quiet_seconds
                self._tracker.track(stat.path, size=stat.size, mtime=stat.mtime, now=quiet_since)

    def poll_ready(self, now: float | None = None, *, limit: int | None = None) -> list[FileStat]:
        """Drain the files that are stable, each exactly once per content change.

        Each ready file is stat'ed again before it is handed on: a file that changed
        since its last event is tracked afresh, and one that vanished is forgotten.

        Args:
            now: the current time on the watcher's clock (read from it when None).
            limit: look at most at this many ready files, the quietest; the others wait
                for the next call.
        """
        moment = self._clock() if now is None else now
        with self._lock:
            candidates = self._tracker.ready(moment, limit=limit)
        handed_on: list[FileStat] = []
        for candidate in candidates:
            current = stat_candidate(candidate.path, root=self.root, file_filter=self.file_filter)
            with self._lock:
                if current is None:
                    self._tracker.forget(candidate.path)
                elif (current.size, current.mtime) != (candidate.size, candidate.mtime):
                    self._tracker.track(candidate.path, size=current.size, mtime=current.mtime, now=moment)
                elif self._tracker.settle(candidate.path, size=candidate.size, mtime=candidate.mtime):
                    handed_on.append(candidate)
        return handed_on

    def seconds_to_next_ready(self) -> float | None:
        """How long until :meth:`poll_ready` can hand on a file (0 if now); None if none is waiting."""
        with self._lock:
            due = self._tracker.next_ready_at()
        return None if due is None else max(0.0, due - self._clock())

    def tracked_files(self) -> list[FileStat]:
        """Files waiting to become ready, as last stat'ed."""
        with self._lock:
            return self._tracker.tracked()

    @property
    def waiting(self) -> int:
        """How many files are waiting to become ready (a gauge for metrics)."""
        with self._lock:
            return len(self._tracker)
