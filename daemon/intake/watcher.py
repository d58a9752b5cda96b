"""Watching an inbox: the watchdog wiring around a filter and a stability tracker.

:class:`InboxEventHandler` turns watchdog events into calls on an
:class:`InboxWatcher`, which only wires one inbox root to a watchdog observer (native,
or polling for network shares), a filter (:mod:`daemon.intake.scan`) and a
lock-guarded tracker (:mod:`daemon.intake.stability`).

Events arrive on watchdog's threads; the daemon's main loop calls
:meth:`InboxWatcher.poll_ready` to drain stable files, and :meth:`InboxWatcher.rescan`
now and then as the safety net for watchers that miss events (SMB and NFS shares,
inotify queue overflows, folders created and filled faster than a watch is added).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Self

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

from daemon.intake.scan import SpectrumFileFilter, scan, stat_candidate
from daemon.intake.stability import FileStat, StabilityTracker

__all__ = ["InboxEventHandler", "InboxWatcher"]

logger = logging.getLogger(__name__)


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
        empty_seconds: how long an empty file must stay so before it is handed on (as empty).
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
        empty_seconds: float = 60.0,
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
        self._tracker = StabilityTracker(quiet_seconds=quiet_seconds, empty_seconds=empty_seconds)
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

    def __exit__(self, *exc_info: object) -> None:
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
                quiet_since = moment - self._tracker.wait(stat.size)
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
