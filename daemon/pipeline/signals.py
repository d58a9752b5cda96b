"""Signals to the daemon: noted by their handler, acted on by the main loop.

SIGTERM and SIGINT ask the daemon to stop, SIGHUP to reload its configuration. A
Python signal handler runs in the main thread, between two of its bytecodes, and
the main thread spends its idle time in ``stop.wait()``. That wait holds the
Event's lock at its start and end, so a handler that called ``stop.set()`` there
waited for a lock its own thread held: the daemon hung on SIGTERM now and then
(once in some twenty stops of the daemon benchmark). A :class:`SignalNotes` handler only appends the
signal to a list, which takes no lock; :meth:`SignalNotes.heed` turns the notes
into ``stop`` and ``reload`` on the main loop's next turn, at most one tick later.

>>> stop, reload = threading.Event(), threading.Event()
>>> notes = SignalNotes()
>>> notes.note(signal.SIGHUP, None)
>>> notes.heed(stop=stop, reload=reload)
>>> stop.is_set(), reload.is_set()
(False, True)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["HANDLED", "SignalNotes"]

#: The signals the daemon handles: stop (SIGTERM, SIGINT) and reload (SIGHUP).
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalNotes:
    """The signals received and not yet acted on."""

    def __init__(self) -> None:
        self.pending: list[int] = []

    def install(self) -> None:
        """Make :meth:`note` the handler of every signal in :data:`HANDLED` (from the main thread)."""
        for signum in HANDLED:
            signal.signal(signum, self.note)

    def note(self, signum: int, frame: FrameType | None) -> None:
        """The handler: note the signal and nothing else (``list.append`` takes no lock)."""
        self.pending.append(signum)

    def heed(self, *, stop: threading.Event, reload: threading.Event) -> None:
        """Act on the noted signals, from the main loop: SIGHUP sets ``reload``, the others ``stop``."""
        while self.pending:
            (reload if self.pending.pop(0) == signal.SIGHUP else stop).set()
