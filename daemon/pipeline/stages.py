"""The two stages between the ledger and the record, each on its own thread.

The main loop claims pending files into a bounded queue (:meth:`Stages.fill`).
Stage one, the worker thread, drains the queue in batches, reads them (in the
helper processes) and classifies them. Stage two, the finisher thread, takes each
classified batch on: aging indices (in the helpers), one ledger commit, results
and metrics. So the model classifies the next batch while the helpers compute
the last one's aging indices. A batch that fails in either stage is given up
file by file (:meth:`~daemon.pipeline.worker.Worker.give_up`): each file is
recorded as failed and retried, none is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon.config import Config, InboxConfig
from daemon.pipeline.helpers import HelperPool, default_processes
from daemon.pipeline.maps import MapRoute
from daemon.pipeline.serving import ModelHolder
from daemon.pipeline.worker import Classified, Worker
from daemon.store.export import ResultsExporter
from daemon.store.ledger import Ledger, WorkItem
from daemon.web.metrics import Metrics
from engine.models.served import Result

__all__ = ["Stages", "stages_for"]

logger = logging.getLogger(__name__)


class Stages:
    """The claim queue and the worker and finisher threads around one :class:`Worker`."""

    def __init__(self, worker: Worker, ledger: Ledger, *, queue_size: int, batch_size: int) -> None:
        self.worker = worker
        self.ledger = ledger
        self.batch_size = batch_size
        self.queue: queue.Queue[WorkItem] = queue.Queue(maxsize=queue_size)
        #: Classified batches on their way to aging indices and the ledger (None: no more).
        self._classified: queue.Queue[list[Classified] | None] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._work, name="mpwatch-worker", daemon=True),
            threading.Thread(target=self._finish, name="mpwatch-finisher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def fill(self, now: float) -> None:
        """Claim pending files from the ledger into the room left in the queue."""
        room = self.queue.maxsize - self.queue.qsize()  # only the main loop puts, so the room stays
        if room > 0:
            for item in self.ledger.claim(room, now=now):
                self.queue.put_nowait(item)

    def stop(self, *, now: float, timeout: float = 60.0) -> None:
        """Finish the batch in hand, then give every claim still queued back to the ledger."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout)
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            self.ledger.release(item.path, now=now)

    def _next_batch(self) -> list[WorkItem] | None:
        try:
            batch = [self.queue.get(timeout=0.1)]
        except queue.Empty:
            return None
        while len(batch) < self.batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _work(self) -> None:
        """Stage one: read and classify batches from the queue."""
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                if batch is None:
                    continue
                try:
                    classified = self.worker.classify(batch)
                except Exception as exc:
                    logger.exception("classifying a batch of %d files failed", len(batch))
                    self.worker.give_up(batch, exc)
                    continue
                self._classified.put(classified)
        finally:
            self._classified.put(None)

    def _finish(self) -> None:
        """Stage two: aging indices, one ledger commit, results and metrics."""
        while (classified := self._classified.get()) is not None:
            try:
                self.worker.finish(classified)
            except Exception as exc:
                logger.exception("recording a batch of %d files failed", len(classified))
                self.worker.give_up([one.item for one, _ in classified], exc)


def stages_for(
    config: Config,
    *,
    ledger: Ledger,
    metrics: Metrics,
    exporter: ResultsExporter,
    models: ModelHolder,
    clock: Callable[[], float],
    on_result: Callable[[WorkItem, Sequence[Result]], None],
    inbox_for: Callable[[str | Path], InboxConfig | None],
) -> Stages:
    """The daemon's stages as ``config`` sets them: helper processes, the worker, queue and batch sizes."""
    settings, state = config.worker, config.state_dir
    processes = settings.helper_processes
    helpers = HelperPool(default_processes() if processes is None else processes)
    worker = Worker(
        ledger=ledger,
        helpers=helpers,
        metrics=metrics,
        exporter=exporter,
        models=models,
        quarantine_dir=state / "quarantine",
        processed_dir=state / "processed" if config.instrument_files.on_done == "move" else None,
        move_quarantined=config.instrument_files.on_quarantine == "move",
        clock=clock,
        on_result=on_result,
        inbox_for=inbox_for,
        maps=MapRoute(
            config.maps,
            state / "maps",
            inbox_for=inbox_for,
            quiet_seconds=config.watch.quiet_seconds,
            clock=clock,
        ),
    )
    return Stages(worker, ledger, queue_size=settings.queue_size, batch_size=settings.batch_size)
