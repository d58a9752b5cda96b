"""The daemon: wires the configuration to the rooms and runs the main loop. Nothing else.

Each tick of the main loop (:meth:`Daemon.tick`) turns every part once, each under
one guard (:mod:`daemon.pipeline.guard`): admission and retries (:mod:`daemon.intake`),
claims into the queue of the worker and finisher threads (:mod:`daemon.pipeline`), the
drop folder, library sync and challenger (:mod:`daemon.growth`), and the result files
(:mod:`daemon.store`). The HTTP server (:mod:`daemon.web`) runs on its own threads.

Signal handlers only note the signal; the main loop turns it into ``stop`` or ``reload``
(:mod:`daemon.pipeline.signals`). A stop finishes the batch in hand,
gives queued claims back to the ledger and flushes the result files; claims left by a
``kill -9`` are recovered at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from daemon.config import Config, ConfigError, load_config
from daemon.growth.challenger import Challengers
from daemon.growth.drift import DriftWatch
from daemon.growth.drop_folder import DropFolder
from daemon.growth.library import LibraryGrowth
from daemon.intake.admission import Intake
from daemon.pipeline import serving
from daemon.pipeline.guard import Guard
from daemon.pipeline.signals import SignalNotes
from daemon.pipeline.stages import stages_for
from daemon.store.export import ResultsExporter
from daemon.store.ledger import Ledger, RetryPolicy
from daemon.store.lock import StateLock
from daemon.web.http import Heartbeat
from daemon.web.metrics import Metrics
from daemon.web.site import hang_up, listen, site
from engine.core.conventions import AcquisitionProfile
from engine.core.library import LibraryError
from engine.models.served import IdentificationModel

__all__ = ["Daemon"]

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.05
#: The shortest pause between turns, when a file becomes ready sooner than the next tick.
MIN_PAUSE_SECONDS = 0.01
#: How often the main loop checks that every inbox is watched, and re-arms a lost one.
WATCH_CHECK_SECONDS = 1.0
#: How often the main loop checks whether the library changed on disk (a CLI rollback).
LIBRARY_SYNC_SECONDS = 1.0


class Daemon:
    """The service around the engine; :meth:`run` blocks until :attr:`stop` is set."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        registry: CollectorRegistry | None = None,
        model: IdentificationModel | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.config_path, self.clock = config, config_path, clock
        #: The command line's settings, which a reload applies over the file again.
        self.overrides = dict(overrides or {})
        self.stop, self.reload, self.signals = threading.Event(), threading.Event(), SignalNotes()
        self.registry = registry or CollectorRegistry()
        self.heartbeat = Heartbeat()
        state, worker = config.state_dir, config.worker
        for sub in ("results", "quarantine"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        #: Held from :meth:`start` to :meth:`shutdown`: one daemon per state folder.
        self.state_lock = StateLock(state)
        self.ledger = Ledger.in_state_dir(state, retry_policy=RetryPolicy(**worker.retry_settings()))
        self.models = serving.ModelHolder(model or serving.load_model(config))
        self.members = ["subknn", "cnn"] if config.cnn.enabled else ["subknn"]
        inboxes = [(inbox.name, inbox.path) for inbox in config.inboxes]
        self.metrics = Metrics(self.registry, inbox_roots=[name for name, _ in inboxes], members=self.members)
        self.metrics.attach_ledger(self.ledger)
        self.guard = Guard(self.metrics)
        self.exporter = ResultsExporter.for_config(self.ledger, config)
        self.intake = Intake(config, ledger=self.ledger, metrics=self.metrics, on_settled=self.exporter.mark)
        self.drift = DriftWatch(on_drift=self.metrics.drift_detected, on_accuracy=self._rolling_accuracy)
        self.growth = LibraryGrowth(
            models=self.models,
            ledger=self.ledger,
            library_dirs=serving.served_library_dirs(config),
            profile_for=self.profile_for,
            metrics=self.metrics,
            drift=self.drift,
            model_config=config.engine_model_config(),
            clock=clock,
            on_model_change=self._publish_model,
            on_decision=self.exporter.mark,
        )
        self.challenger = Challengers.for_daemon(self) if config.cnn.enabled else None
        self._publish_model()
        self.drop_folder = DropFolder(config.confirmed_dir, self.growth, config.watch.quiet_seconds)
        self.stages = stages_for(
            config,
            ledger=self.ledger,
            metrics=self.metrics,
            exporter=self.exporter,
            models=self.models,
            clock=clock,
            on_result=self.drift.observe_results,
            inbox_for=self.intake.inbox_for,
        )
        self.worker, self.helpers = self.stages.worker, self.stages.worker.helpers
        self.http = site(self, registry=self.registry, heartbeat_age=self.heartbeat.age)

    def profile_for(self, path: str | Path) -> AcquisitionProfile | None:
        """The profile of the inbox holding ``path`` (None outside every inbox)."""
        return self.intake.profile_for(path)

    def _publish_model(self) -> None:
        model = self.models.get()
        if self.challenger is not None:
            self.challenger.attach(model)  # a rebuilt model (rollback, reload) keeps the champion CNN
        serving.publish_model(model, self.metrics, members=self.members)

    def _rolling_accuracy(self, scope: str, accuracy: float) -> None:
        if scope == "overall" or scope in self.metrics.known_labels:
            self.metrics.set_rolling_accuracy(scope, accuracy)

    def readiness(self) -> dict[str, Any]:
        """The checks behind /readyz."""
        return {
            "model_loaded": self.models.get() is not None,
            "ledger_open": self.ledger.schema_version > 0,
            "watchers_up": self.intake.watchers_up(),
            "helpers_up": self.helpers.ready,
            "storage_ok": self.guard.storage_ok,
        }

    # -- life cycle -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT ask to stop, SIGHUP to reload; a handler only notes the signal (see :meth:`run`)."""
        self.signals.install()

    def start(self) -> None:
        """Lock the state folder, recover, start the HTTP server, the watchers and the stages.

        Raises:
            ConfigError: another daemon holds the state folder, or the HTTP port cannot be bound.
        """
        self.state_lock.acquire()
        if recovered := self.ledger.recover_interrupted(now=self.clock()):
            logger.info("recovered %d files interrupted by the last stop", recovered)
        listen(self.http, self.config, now=self.clock())
        self.helpers.start()
        self.intake.start()
        self.drop_folder.start()
        self.stages.start()

    def run(self) -> None:
        """Start, loop until :attr:`stop` is set, then shut down cleanly."""
        try:
            self.start()
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(self._pause())
                self.signals.heed(stop=self.stop, reload=self.reload)
        finally:
            self.shutdown()

    def _pause(self) -> float:
        """Until the next turn: one tick, or less when a file becomes ready sooner."""
        return max(MIN_PAUSE_SECONDS, min(TICK_SECONDS, self.intake.seconds_to_next_ready()))

    def tick(self) -> None:
        """One turn of the main loop: each part guarded, so one failing part stops nothing else."""
        self.heartbeat.beat()
        if self.reload.is_set():
            self.reload.clear()
            try:
                self.reload_config()
            except Exception:
                logger.exception("reload failed; the daemon goes on with what it had")
        now, run = self.clock(), self.guard.run
        run("admit", self.intake.admit_ready, now)
        run("retry", self.intake.retry_due, now)
        run("claim", self.stages.fill, now)
        run("rescan", self.intake.rescan, every=self.config.watch.rescan_interval_seconds)
        run("drop_folder", self.drop_folder.collect)
        run("library_sync", self.growth.sync_with_disk, every=LIBRARY_SYNC_SECONDS)
        if self.challenger is not None:
            run("challenger", self.challenger.poll)
        run("export", partial(self.exporter.flush, now=now))
        run("watchers", self.intake.rearm, every=WATCH_CHECK_SECONDS)
        for name, up in self.intake.watchers_up().items():
            self.metrics.set_watcher_up(name, up=up)
        self.metrics.set_queue_depth(self.stages.queue.qsize())

    def reload_config(self) -> None:
        """SIGHUP: re-read the configuration; apply inboxes, watching and the library, keep the rest."""
        if self.config_path is None:
            logger.warning("reload asked, but the daemon was not started from a configuration file")
            return
        try:
            new = load_config(self.config_path, overrides=self.overrides)
            if new.state_dir != self.config.state_dir or new.http != self.config.http:
                logger.warning("state_dir and http take effect at the next start, not on reload")
                new = new.model_copy(update={"state_dir": self.config.state_dir, "http": self.config.http})
            libraries = serving.served_library_dirs(new), new.engine_model_config()
            if libraries != (serving.served_library_dirs(self.config), self.config.engine_model_config()):
                self.models.swap(serving.load_model(new))
                self._publish_model()
        except (ConfigError, LibraryError) as exc:
            logger.error("reload refused, keeping the running configuration: %s", exc)
            return
        if new.inboxes != self.config.inboxes or new.watch != self.config.watch:
            self.intake.reconfigure(new)
            self.exporter.inboxes = [(inbox.name, inbox.path) for inbox in new.inboxes]
            logger.info("reload: watching %s", ", ".join(inbox.name for inbox in new.inboxes))
        self.config = new
        logger.info("configuration reloaded from %s", self.config_path)

    def shutdown(self) -> None:
        """Finish the batch in hand, give queued work back, flush results, close everything."""
        self.stop.set()
        if self.challenger is not None:
            self.challenger.close()
        self.intake.stop()
        self.drop_folder.stop()
        now = self.clock()
        self.stages.stop(now=now)
        self.helpers.close()
        if self.state_lock.held:  # a daemon that could not start writes nothing in another's state folder
            self.exporter.flush(now=now, force=True)
        hang_up(self.http, self.config)
        self.ledger.close()
        self.state_lock.release()
        logger.info("stopped")
