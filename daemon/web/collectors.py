"""Metrics read at scrape time rather than counted: the ledger's files per state and open reviews.

:class:`LedgerCollector` is a custom collector on the metrics registry (see
:mod:`daemon.web.metrics`, which creates and attaches it): at each scrape it asks
the attached ledger for its counts, so ``mpwatch_ledger_files{state}`` and
``mpwatch_review_queue_open`` are never stale.

>>> collector = LedgerCollector()
>>> [(family.name, [s.value for s in family.samples][:1]) for family in collector.collect()]
[('mpwatch_ledger_files', [0.0]), ('mpwatch_review_queue_open', [0.0])]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

from daemon.store.ledger import FileState, ReviewState

__all__ = ["LedgerCollector", "LedgerCounts"]

logger = logging.getLogger(__name__)


class LedgerCounts(Protocol):
    """What the ledger collector reads: :class:`daemon.store.ledger.Ledger` satisfies it."""

    def counts(self) -> Mapping[FileState, int]:
        """Number of files in each state."""
        ...

    def review_counts(self) -> Mapping[ReviewState, int]:
        """Number of reviews of results in each state."""
        ...

    def particle_review_counts(self) -> Mapping[ReviewState, int]:
        """Number of reviews of maps' particles in each state."""
        ...


class LedgerCollector:
    """Reads the ledger's counts at each scrape.

    Before a ledger is attached every state reads 0. If the ledger cannot be read (it
    was closed, the disk failed) the scrape still succeeds: these two metrics are left
    out of it, which ``absent()`` can alert on, and the error is logged.
    """

    def __init__(self) -> None:
        self._ledger: LedgerCounts | None = None
        self._lock = threading.Lock()

    def attach(self, ledger: LedgerCounts | None) -> None:
        with self._lock:
            self._ledger = ledger

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        files = GaugeMetricFamily(
            "mpwatch_ledger_files", "Files recorded in the ledger, by state.", labels=["state"]
        )
        reviews = GaugeMetricFamily(
            "mpwatch_review_queue_open", "Results and maps' particles waiting for an analyst's review."
        )
        return files, reviews

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields, without reading the ledger."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            ledger = self._ledger
        if ledger is None:
            counts: Mapping[FileState, int] = dict.fromkeys(FileState, 0)
            open_reviews = 0
        else:
            try:
                counts = ledger.counts()
                open_reviews = ledger.review_counts().get(ReviewState.OPEN, 0)
                open_reviews += ledger.particle_review_counts().get(ReviewState.OPEN, 0)
            except Exception as error:
                logger.warning("ledger counts unavailable for this scrape: %s", error)
                return
        files, reviews = self._families()
        for state in FileState:
            files.add_metric([str(state)], float(counts.get(state, 0)))
        reviews.add_metric([], float(open_reviews))
        yield files
        yield reviews
