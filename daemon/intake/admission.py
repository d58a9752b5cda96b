"""Admission: each inbox's stable files into the ledger, retries brought back, lost inboxes re-armed.

:class:`Intake` owns one :class:`~daemon.intake.watcher.InboxWatcher` per inbox.
Each turn of the main loop it admits the files that became stable (recorded,
hashed, queued unless their content was seen already), brings due retries back,
and re-arms the watcher of an inbox that vanished and came back. A file that is
plainly not a spectrum by its name (a photo, a spreadsheet) is recorded as ignored
at once, without being hashed or read. One file never makes it raise: a file that
cannot be read is recorded as failed and retried.
What cannot be admitted because the ledger cannot be written (the disk full)
goes back to its watcher, and the main loop's guard retries the whole step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon.config import Config, InboxConfig
from daemon.intake.scan import SpectrumFileFilter
from daemon.intake.stability import FileStat
from daemon.intake.watcher import InboxWatcher
from daemon.store.ledger import Admission, FileState, Ledger, LedgerError
from daemon.web.metrics import Metrics
from engine.core.conventions import AcquisitionProfile
from engine.io.candidates import NonSpectrumFilter
from engine.io.identity import content_sha256

__all__ = ["ADMIT_PER_TURN", "Intake"]

logger = logging.getLogger(__name__)

#: Stable files admitted per inbox per turn. A burst (or the catch-up after a long stop)
#: is hashed and queued a slice at a time, so the worker starts at once and the loop's
#: heartbeat, retries and result files keep going.
ADMIT_PER_TURN = 256


class Intake:
    """The inboxes' watchers and the way from a stable file to a pending ledger row."""

    def __init__(
        self,
        config: Config,
        *,
        ledger: Ledger,
        metrics: Metrics,
        on_settled: Callable[[Path], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        #: Called with each file settled at admission (a duplicate, or content already quarantined):
        #: its folder's result files change, as a result of its earlier content stops being current.
        self.on_settled = on_settled
        self.inboxes = list(config.inboxes)
        self.watchers = self._watchers(config)
        self.non_spectra = self._non_spectra()
        #: Inboxes whose folder is gone, said once each (see :meth:`rearm`).
        self._lost: set[str] = set()

    def _watchers(self, config: Config) -> dict[str, InboxWatcher]:
        return {
            inbox.name: InboxWatcher(
                inbox.path,
                file_filter=SpectrumFileFilter(include=inbox.include, exclude=inbox.exclude),
                quiet_seconds=config.watch.quiet_seconds,
                empty_seconds=config.watch.empty_file_seconds,
                polling=inbox.polling,
                poll_interval=inbox.poll_interval_seconds,
            )
            for inbox in self.inboxes
        }

    def _non_spectra(self) -> dict[str, NonSpectrumFilter | None]:
        return {inbox.name: inbox.non_spectrum_filter() for inbox in self.inboxes}

    def inbox_for(self, path: str | Path) -> InboxConfig | None:
        """The inbox holding ``path`` (None outside every inbox)."""
        target = Path(path)
        for inbox in self.inboxes:
            if target.is_relative_to(inbox.path):
                return inbox
        return None

    def profile_for(self, path: str | Path) -> AcquisitionProfile | None:
        """The profile of the inbox holding ``path`` (None outside every inbox)."""
        inbox = self.inbox_for(path)
        return None if inbox is None else inbox.profile()

    def non_spectrum_reason(self, path: Path) -> str | None:
        """Why ``path`` is plainly not a spectrum by its name, if its inbox ignores such files."""
        inbox = self.inbox_for(path)
        rule = None if inbox is None else self.non_spectra.get(inbox.name)
        kind = None if rule is None else rule.reason_for(path)
        return None if kind is None else f"not a spectrum: {kind}"

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for name, watcher in self.watchers.items():
            self._start_watcher(name, watcher)

    def stop(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()

    def reconfigure(self, config: Config) -> None:
        """Watch the inboxes of ``config`` instead: watchers stopped, replaced and started."""
        self.stop()
        self.inboxes = list(config.inboxes)
        self.metrics.set_inbox_roots(inbox.name for inbox in self.inboxes)
        self.watchers = self._watchers(config)
        self.non_spectra = self._non_spectra()
        self._lost.clear()
        self.start()

    def _start_watcher(self, name: str, watcher: InboxWatcher) -> None:
        try:
            found = watcher.start()
            logger.info("watching %s (%s): %d files found at start", watcher.root, name, found)
        except OSError as exc:
            logger.warning("cannot watch inbox %s at %s: %s; waiting for it", name, watcher.root, exc)
        self.metrics.set_watcher_up(name, up=watcher.is_alive)

    def watchers_up(self) -> dict[str, bool]:
        return {name: watcher.is_alive for name, watcher in self.watchers.items()}

    def seconds_to_next_ready(self) -> float:
        """How long until some inbox has a stable file (infinity: nothing is waiting)."""
        due = [s for w in self.watchers.values() if (s := w.seconds_to_next_ready()) is not None]
        return min(due, default=math.inf)

    def rearm(self) -> None:
        """A watcher whose inbox vanished is said to be lost once, and started again when it returns.

        An inbox missing at start is waited for the same way (with a warning), not refused:
        a network share may mount after the daemon starts.
        """
        for name, watcher in self.watchers.items():
            if watcher.is_alive:
                continue
            if not watcher.root.is_dir():
                if name not in self._lost:
                    self._lost.add(name)
                    logger.warning("inbox %s (%s) is gone; waiting for it to come back", name, watcher.root)
                continue
            watcher.stop()
            self._start_watcher(name, watcher)
            if watcher.is_alive:
                logger.info("inbox %s (%s) is back; watching it again", name, watcher.root)
                self._lost.discard(name)

    def rescan(self) -> int:
        """The safety net: look at every inbox for files no event announced."""
        found = sum(w.rescan() for w in self.watchers.values())
        if found:
            logger.info("rescan found %d files the watchers had not reported", found)
            self.metrics.rescan_recovered(found)
        return found

    # -- admission ------------------------------------------------------------------------------

    def admit_ready(self, now: float) -> None:
        """Admit each inbox's stable files; what cannot be admitted goes back to its watcher."""
        for watcher in self.watchers.values():
            stats = watcher.poll_ready(limit=ADMIT_PER_TURN)
            try:
                self.admit(stats, now=now)
            except BaseException:
                watcher.hand_back(stats)
                raise

    def admit(self, stats: Sequence[FileStat], *, now: float) -> dict[Path, Admission | None]:
        """Stable files: record them, hash them and queue each unless its content was seen already.

        A new file that is plainly not a spectrum by its name is recorded as ignored
        instead, with one log line. Two ledger batches (one fsync each), with the hashing
        between them. Returns each path's admission: None for a file already known, one
        ignored or one that could not be read.
        """
        admitted: dict[Path, Admission | None] = {stat.path: None for stat in stats}
        if not stats:
            return admitted
        with self.ledger.batch():
            seen = []
            for stat in stats:
                record = self.ledger.observe(stat.path, size=stat.size, mtime=stat.mtime, now=now)
                if record.state is not FileState.SEEN:
                    continue
                reason = self.non_spectrum_reason(stat.path)
                if reason is None:
                    seen.append(stat.path)
                else:
                    self.ledger.ignore(stat.path, reason, now=now)  # the ledger says so, once
                    self.metrics.file_finished("ignored", now=now)
        hashed = [(path, sha) for path in seen if (sha := self._hash(path, now=now)) is not None]
        with self.ledger.batch():
            for path, sha in hashed:
                try:
                    admitted[path] = self.ledger.mark_pending(path, sha, now=now)
                except LedgerError as exc:  # changed under us; its next event admits it again
                    logger.warning("%s not admitted: %s", path, exc)
        for path, admission in admitted.items():
            self._settled(path, admission, now=now)
        return admitted

    def _settled(self, path: Path, admission: Admission | None, *, now: float) -> None:
        """Count a file that admission settled (a duplicate, or content already quarantined), and say so."""
        if admission in (Admission.DUPLICATE, Admission.QUARANTINED):
            self.metrics.file_finished(str(admission), now=now)
            if self.on_settled is not None:
                self.on_settled(path)

    def _hash(self, path: Path, *, now: float) -> str | None:
        """The file's sha256, or None when it cannot be read now (recorded as failed, retried)."""
        try:
            return content_sha256(path)
        except OSError as exc:
            self._not_ready(path, exc, now=now)
            self.metrics.file_finished("failed", now=now)
            return None

    def _not_ready(self, path: Path, exc: OSError, *, now: float) -> None:
        """A file that cannot be read now (locked, vanished): failed, retried with backoff."""
        self.ledger.fail(path, f"not ready: {exc.strerror or exc}", now=now)

    def retry_due(self, now: float) -> None:
        """Failed files whose backoff has passed: looked at again and queued."""
        for record in self.ledger.due_retries(now=now):
            path = Path(record.path)
            try:
                stat = path.stat()
                self.ledger.observe(path, size=stat.st_size, mtime=stat.st_mtime, now=now)
                sha = content_sha256(path)
            except OSError as exc:
                self._not_ready(path, exc, now=now)
                continue
            self._settled(path, self.ledger.mark_pending(path, sha, now=now), now=now)
