"""The confirmation drop folder: spectra placed in ``confirmed/<LABEL>/`` grow the library.

An analyst (or a script) drops confirmed spectra into one folder per label. Once
the folder has been quiet for ``quiet_seconds``, each label's readable spectra
become one library change (:meth:`~daemon.growth.library.LibraryGrowth.add_spectra`).
Added files move to ``.added/<LABEL>/``; unreadable ones to ``.refused/`` with a
note beside them, so nothing is offered twice and nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from daemon.growth.library import GrowthOutcome, LibraryGrowth
from daemon.intake.watcher import InboxWatcher
from daemon.pipeline.worker import move_into
from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import read_spectra

__all__ = ["DropFolder"]

logger = logging.getLogger(__name__)


class DropFolder:
    """Watches the drop folder and hands each quiet batch of files to the library's growth."""

    def __init__(self, root: Path, growth: LibraryGrowth, quiet_seconds: float) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.growth = growth
        self.quiet_seconds = quiet_seconds
        self.watcher = InboxWatcher(root, quiet_seconds=quiet_seconds)
        self._dropped: list[Path] = []
        self._dropped_at = 0.0

    @property
    def root(self) -> Path:
        return self.watcher.root

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()

    def collect(self) -> None:
        """Apply what arrived once the folder has been quiet, as one change per label."""
        ready = [stat.path for stat in self.watcher.poll_ready()]
        if ready:
            self._dropped.extend(ready)
            self._dropped_at = time.monotonic()
        if self._dropped and time.monotonic() - self._dropped_at >= self.quiet_seconds:
            dropped, self._dropped = self._dropped, []
            self.accept(dropped)

    def accept(self, paths: Sequence[Path]) -> list[GrowthOutcome]:
        """Files placed in ``root/<LABEL>/``: add each label's readable spectra as one change."""
        root = self.root
        by_label: dict[str, list[tuple[Path, list[Spectrum]]]] = {}
        for path in paths:
            try:
                label = path.relative_to(root).parts[0]
            except (ValueError, IndexError):
                continue
            if path.parent == root:
                logger.warning("%s is not in a label folder (confirmed/<LABEL>/); ignored", path)
                continue
            try:
                by_label.setdefault(label, []).append((path, read_spectra(path)))
            except SpectrumError as exc:
                move_into(path, root / ".refused", note=str(exc))
        outcomes = []
        for label, items in by_label.items():
            spectra = [s for _, got in items for s in got]
            outcomes.append(
                self.growth.add_spectra(spectra, label, confirmed_by=f"drop folder {root.name}/{label}")
            )
            for path, _ in items:
                move_into(path, root / ".added" / label)
        return outcomes
