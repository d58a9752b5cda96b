"""Intake: from a file landing in an inbox to a pending row in the ledger.

Watchers follow each inbox, a stability tracker waits for a file to be quiet,
admission records and hashes it, and retries bring failed files back. Nothing
here raises for one file.
"""

from daemon.intake.scan import SpectrumFileFilter, scan, stat_candidate
from daemon.intake.stability import FileStat, StabilityTracker
from daemon.intake.watcher import InboxEventHandler, InboxWatcher

__all__ = [
    "FileStat",
    "InboxEventHandler",
    "InboxWatcher",
    "SpectrumFileFilter",
    "StabilityTracker",
    "scan",
    "stat_candidate",
]
