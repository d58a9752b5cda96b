"""The daemon: wires configuration to the parts and runs the main loop.

Threads:

- watchdog's observer threads feed each :class:`~daemon.intake.watcher.InboxWatcher`;
- the main loop (:meth:`Daemon.run`) admits stable files into the ledger,
  claims pending work into a bounded queue, retries due failures, rescans,
  flushes result files and acts on the stop and reload flags;
- the worker thread drains the queue in batches, reads them (in the helper
  processes) and classifies them (:meth:`~daemon.pipeline.worker.Worker.classify`);
- the finisher thread takes each classified batch on: aging indices (in the
  helpers), one ledger commit, results and metrics
  (:meth:`~daemon.pipeline.worker.Worker.finish`), while the next batch is classified;
- the HTTP server answers /metrics, /healthz and /readyz.

Processes: the helpers (:class:`~daemon.pipeline.helpers.HelperPool`, one per core by
default) do the model-free work of each batch.

Signal handlers only set flags (``stop``, ``reload``); the main loop acts on
them. A stop finishes the batch in hand, gives queued claims back to the
ledger and flushes the result files, so a restart redoes nothing and loses
nothing. A ``kill -9`` is covered by the ledger: claims left behind are
recovered at the next start.
"""

from __future__ import annotations

import errno
import logging
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from daemon.web.api import install_api
from daemon.growth.challenger import ChallengerScheduler
from daemon.config import LIBRARY_KEYS, Config, ConfigError, load_config
from daemon.web.console import install_console
from daemon.growth.drift import DriftWatch
from daemon.pipeline.helpers import HelperPool, default_processes
from daemon.web.http import Heartbeat, HttpServer
from daemon.store.ledger import Admission, FileState, Ledger, LedgerError, RetryPolicy, WorkItem
from daemon.web.metrics import Metrics
from daemon.store.export import ResultsExporter
from daemon.growth.library import LibraryGrowth
from daemon.store.lock import StateLock
from daemon.intake.watcher import FileStat, InboxWatcher, SpectrumFileFilter
from daemon.pipeline.worker import Classified, ModelHolder, Worker
from engine.core.conventions import TECHNIQUES, AcquisitionProfile
from engine.core.library import DEFAULT_LIBRARIES, HEAD, LibraryError, ReferenceLibrary
from engine.models.served import IdentificationModel, Result
from engine.core.spectrum import file_sha256

__all__ = ["Daemon", "load_model", "served_library_dir", "served_library_dirs"]

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.05

#: The shortest pause between turns, when a file becomes ready sooner than the next tick.
MIN_PAUSE_SECONDS = 0.01

#: Stable files admitted per inbox per turn. A burst (or the catch-up after a long stop)
#: is hashed and queued a slice at a time, so the worker starts at once and the loop's
#: heartbeat, retries and result files keep going.
ADMIT_PER_TURN = 256

#: The longest wait before a failing part of the main loop is tried again.
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class _Failing:
    """A part of the main loop that failed: why, how often, when to try again, whether it was storage."""

    error: str
    attempts: int
    retry_at: float
    storage: bool


def _is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the state folder cannot be written (the disk full, I/O failing)."""
    if isinstance(exc, sqlite3.OperationalError | LedgerError):
        text = str(exc).lower()
        return any(w in text for w in ("disk", "full", "i/o", "readonly", "read-only"))
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)


#: How often the main loop checks that every inbox is watched, and re-arms a lost one.
WATCH_CHECK_SECONDS = 1.0

#: How often the main loop checks whether the library changed on disk (a CLI rollback).
LIBRARY_SYNC_SECONDS = 1.0


#: Where the copy of each bundled library lives under the state folder.
BUNDLED_COPY = {"ir": "library", "raman": "library-raman"}


def served_library_dir(config: Config, technique: str = "ir") -> Path:
    """The library of ``technique`` the daemon serves and grows.

    The configured library, or, when none is configured, a copy of the bundled
    one under the state folder (the bundled one is read-only package data).
    """
    configured = config.library_for(technique)
    if configured is not None:
        return configured
    target = config.state_dir / BUNDLED_COPY[technique]
    if not (target / HEAD).exists():
        bundled = ReferenceLibrary.load(DEFAULT_LIBRARIES[technique])
        bundled.save(target, message=f"copy of the bundled default {technique} library")
    return target


def served_library_dirs(config: Config) -> dict[str, Path]:
    """The library folder of every technique, IR first."""
    return {technique: served_library_dir(config, technique) for technique in TECHNIQUES}


def load_library(path: Path, technique: str) -> ReferenceLibrary:
    """The library at ``path``, refused with one clear line when it holds another technique."""
    library = ReferenceLibrary.load(path)
    if library.technique != technique:
        raise ConfigError(
            f"{LIBRARY_KEYS[technique]}: {path} is a {library.technique} library, "
            f"but it is configured for {technique} spectra"
        )
    return library


def load_model(config: Config) -> IdentificationModel:
    """The served model: the IR library's, with the Raman library's model attached for Raman spectra."""
    settings = config.engine_model_config()
    dirs = served_library_dirs(config)
    model = IdentificationModel(load_library(dirs["ir"], "ir"), settings)
    for technique, path in dirs.items():
        if technique != model.technique:
            model.attach(IdentificationModel(load_library(path, technique), settings))
    return model


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
        self.config = config
        self.config_path = config_path
        #: The command line's settings, which a reload applies over the file again.
        self.overrides = dict(overrides or {})
        self.clock = clock
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.registry = registry or CollectorRegistry()
        self.heartbeat = Heartbeat()
        state = config.state_dir
        for sub in ("results", "quarantine"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        #: Held from :meth:`start` to :meth:`shutdown`: one daemon per state folder.
        self.state_lock = StateLock(state)
        self.ledger = Ledger.in_state_dir(
            state,
            retry_policy=RetryPolicy(
                base_seconds=config.worker.retry_base_seconds,
                cap_seconds=config.worker.retry_cap_seconds,
                max_attempts=config.worker.max_attempts,
            ),
        )
        self.models = ModelHolder(model or load_model(config))
        self.metrics = Metrics(
            self.registry, inbox_roots=[i.name for i in config.inboxes], members=self._members(config)
        )
        self.metrics.attach_ledger(self.ledger)
        self._publish_model()
        self.drift = DriftWatch(on_drift=self.metrics.drift_detected, on_accuracy=self._rolling_accuracy)
        self.growth = LibraryGrowth(
            models=self.models,
            ledger=self.ledger,
            library_dir=served_library_dir(config),
            companion_dirs={t: p for t, p in served_library_dirs(config).items() if t != "ir"},
            profile_for=self.profile_for,
            metrics=self.metrics,
            drift=self.drift,
            model_config=config.engine_model_config(),
            clock=clock,
            on_model_change=self._publish_model,
        )
        self.challenger: ChallengerScheduler | None = None
        if config.cnn.enabled:
            self.challenger = ChallengerScheduler(
                settings=config.cnn,
                work_dir=state / "cnn",
                library_dir=lambda: self.growth.library_dir,
                model_config=config.engine_model_config(),
                get_model=self.models.get,
                lock=self.models.lock,
                metrics=self.metrics,
                confirmations=lambda: self.growth.confirmations,
                retrain_requested=self.drift.retrain_requested,
                clock=clock,
            )
        config.confirmed_dir.mkdir(parents=True, exist_ok=True)
        self.confirm_watcher = InboxWatcher(config.confirmed_dir, quiet_seconds=config.watch.quiet_seconds)
        self.watchers = self._make_watchers(config)
        self.exporter = ResultsExporter(
            self.ledger, state / "results", [(i.name, i.path) for i in config.inboxes]
        )
        helpers = config.worker.helper_processes
        self.helpers = HelperPool(default_processes() if helpers is None else helpers)
        self.worker = Worker(
            ledger=self.ledger,
            helpers=self.helpers,
            metrics=self.metrics,
            exporter=self.exporter,
            models=self.models,
            quarantine_dir=state / "quarantine",
            processed_dir=state / "processed" if config.instrument_files.on_done == "move" else None,
            move_quarantined=config.instrument_files.on_quarantine == "move",
            clock=clock,
            on_result=self._observe_results,
            profile_for=self.profile_for,
        )
        self.queue: queue.Queue[WorkItem] = queue.Queue(maxsize=config.worker.queue_size)
        self.http = HttpServer(
            config.http.host,
            config.http.port,
            registry=self.registry,
            heartbeat_age=self.heartbeat.age,
            readiness=self.readiness,
        )
        install_api(
            self.http,
            ledger=self.ledger,
            growth=self.growth,
            token=config.http.token,
            library_dir=lambda: self.growth.library_dir,
            loopback_only=not config.http.exposed,
        )
        install_console(self.http, daemon=self)
        self._last_library_sync = 0.0
        self._last_watch_check = 0.0
        #: Parts of the main loop failing now (see :meth:`_guarded`).
        self._failing: dict[str, _Failing] = {}
        #: Inboxes whose folder is gone, said once each (see :meth:`_rearm_watchers`).
        self._lost_inboxes: set[str] = set()
        self._dropped: list[Path] = []
        self._dropped_at = 0.0
        self._worker_thread: threading.Thread | None = None
        self._finisher_thread: threading.Thread | None = None
        #: Classified batches on their way to aging indices and the ledger (None: no more).
        self._classified: queue.Queue[list[Classified] | None] = queue.Queue(maxsize=2)
        self._last_rescan = 0.0

    # -- wiring -------------------------------------------------------------------------------

    def _make_watchers(self, config: Config) -> dict[str, InboxWatcher]:
        return {
            inbox.name: InboxWatcher(
                inbox.path,
                file_filter=SpectrumFileFilter(include=inbox.include, exclude=inbox.exclude),
                quiet_seconds=config.watch.quiet_seconds,
                polling=inbox.polling,
                poll_interval=inbox.poll_interval_seconds,
            )
            for inbox in config.inboxes
        }

    def profile_for(self, path: str | Path) -> AcquisitionProfile | None:
        """The profile of the inbox holding ``path`` (None outside every inbox)."""
        target = Path(path)
        for inbox in self.config.inboxes:
            if target.is_relative_to(inbox.path):
                return inbox.profile()
        return None

    @staticmethod
    def _members(config: Config) -> list[str]:
        return ["subknn", "cnn"] if config.cnn.enabled else ["subknn"]

    def _publish_model(self) -> None:
        model = self.models.get()
        challenger = getattr(self, "challenger", None)
        if challenger is not None:
            challenger.attach(model)  # a rebuilt model (rollback, reload) keeps the champion CNN
        library = model.library
        self.metrics.set_known_labels(library.class_counts())
        self.metrics.set_library(library.class_counts(), version=library.version or 0)
        self.metrics.set_model(
            model_version=model.version,
            library_version=library.version or 0,
            members=self._members(self.config),
        )

    def _rolling_accuracy(self, scope: str, accuracy: float) -> None:
        if scope == "overall" or scope in self.metrics.known_labels:
            self.metrics.set_rolling_accuracy(scope, accuracy)

    def _observe_results(self, item: Any, results: Sequence[Result]) -> None:
        for r in results:
            if r.extra.get("disagreement"):
                self.metrics.member_disagreement()
            self.drift.observe(status=r.status, top1_r=r.hits[0].r if r.hits else None)

    def readiness(self) -> dict[str, Any]:
        """The checks behind /readyz."""
        return {
            "model_loaded": self.models.get() is not None,
            "ledger_open": self.ledger.schema_version > 0,
            "watchers_up": {name: w.is_alive for name, w in self.watchers.items()},
            "helpers_up": self.helpers.ready,
            "storage_ok": not any(f.storage for f in self._failing.values()),
        }

    # -- lifecycle ----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT set the stop flag, SIGHUP the reload flag; nothing else happens in a handler."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.stop.set()

        def on_reload(signum: int, frame: FrameType | None) -> None:
            self.reload.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_reload)

    def start(self) -> None:
        """Lock the state folder, recover, start the HTTP server, the watchers and the worker.

        Raises:
            ConfigError: another daemon holds the state folder, or the HTTP port cannot be bound.
        """
        self.state_lock.acquire()
        recovered = self.ledger.recover_interrupted(now=self.clock())
        if recovered:
            logger.info("recovered %d files interrupted by the last stop", recovered)
        try:
            self.http.start()
        except OSError as exc:
            host, port = self.config.http.host, self.config.http.port
            raise ConfigError(
                f"http.port: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "is another daemon running? Choose another port with --metrics-port"
            ) from None
        self.helpers.start()
        logger.info("metrics and health on http://%s:%d", self.config.http.host, self.http.port)
        for name, watcher in self.watchers.items():
            self._start_watcher(name, watcher)
        self.confirm_watcher.start()
        self._worker_thread = threading.Thread(target=self._work, name="mpwatch-worker", daemon=True)
        self._finisher_thread = threading.Thread(target=self._finish, name="mpwatch-finisher", daemon=True)
        self._worker_thread.start()
        self._finisher_thread.start()
        self._last_rescan = time.monotonic()

    def _start_watcher(self, name: str, watcher: InboxWatcher) -> None:
        try:
            found = watcher.start()
            logger.info("watching %s (%s): %d files found at start", watcher.root, name, found)
        except OSError as exc:
            logger.warning("cannot watch inbox %s at %s: %s; waiting for it", name, watcher.root, exc)
        self.metrics.set_watcher_up(name, up=watcher.is_alive)

    def run(self) -> None:
        """Start, loop until :attr:`stop` is set, then shut down cleanly."""
        try:
            self.start()
        except BaseException:
            self.helpers.close()
            self.http.shutdown()
            self.ledger.close()
            self.state_lock.release()
            raise
        try:
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(self._pause())
        finally:
            self.shutdown()

    def _pause(self) -> float:
        """Until the next turn: one tick, or less when a file becomes ready sooner."""
        due = [s for w in self.watchers.values() if (s := w.seconds_to_next_ready()) is not None]
        return max(MIN_PAUSE_SECONDS, min([TICK_SECONDS, *due]))

    def tick(self) -> None:
        """One turn of the main loop: each part guarded, so one failing part stops nothing else."""
        self.heartbeat.beat()
        if self.reload.is_set():
            self.reload.clear()
            try:
                self.reload_config()
            except Exception:
                logger.exception("reload failed; the daemon goes on with what it had")
        now = self.clock()
        self._guarded("admit", self._admit_ready, now)
        self._guarded("retry", self._retry_due, now)
        self._guarded("claim", self._fill_queue, now)
        if time.monotonic() - self._last_rescan >= self.config.watch.rescan_interval_seconds:
            self._last_rescan = time.monotonic()
            self._guarded("rescan", self.rescan)
        self._guarded("drop_folder", self._collect_dropped)
        if time.monotonic() - self._last_library_sync >= LIBRARY_SYNC_SECONDS:
            self._last_library_sync = time.monotonic()
            self._guarded("library_sync", self.growth.sync_with_disk)
        if self.challenger is not None:
            self._guarded("challenger", self.challenger.poll)
        self._guarded("export", partial(self.exporter.flush, now=now))
        if time.monotonic() - self._last_watch_check >= WATCH_CHECK_SECONDS:
            self._last_watch_check = time.monotonic()
            self._guarded("watchers", self._rearm_watchers)
        for name, watcher in self.watchers.items():
            self.metrics.set_watcher_up(name, up=watcher.is_alive)

    def _guarded(self, part: str, step: Callable[..., object], *args: Any) -> None:
        """Run one part of the main loop; a failure is logged once, counted, and retried with backoff.

        A part that keeps failing is tried again after 1, 2, 4 ... 60 s. A failure to
        write the state folder (the disk full) also turns ``storage_ok`` off in /readyz
        and the metrics until every part succeeds again.
        """
        failing = self._failing.get(part)
        if failing is not None and time.monotonic() < failing.retry_at:
            return
        try:
            step(*args)
        except Exception as exc:
            attempts = failing.attempts + 1 if failing else 1
            storage = _is_storage_error(exc)
            backoff = min(MAX_BACKOFF_SECONDS, 2.0 ** (attempts - 1))
            self._failing[part] = _Failing(str(exc), attempts, time.monotonic() + backoff, storage)
            self.metrics.loop_error(part)
            if failing is None:
                logger.error("%s failed, retrying with backoff: %s", part, exc, exc_info=not storage)
            if storage:
                self.metrics.set_storage_ok(ok=False)
            return
        if failing is not None:
            del self._failing[part]
            logger.info("%s works again after %d failed attempts", part, failing.attempts)
            if not any(f.storage for f in self._failing.values()):
                self.metrics.set_storage_ok(ok=True)

    def _admit_ready(self, now: float) -> None:
        """Admit each inbox's stable files; what cannot be admitted goes back to its watcher."""
        for watcher in self.watchers.values():
            stats = watcher.poll_ready(limit=ADMIT_PER_TURN)
            try:
                self.admit(stats, now=now)
            except BaseException:
                watcher.hand_back(stats)
                raise

    def _retry_due(self, now: float) -> None:
        for record in self.ledger.due_retries(now=now):
            self._retry(Path(record.path), now=now)

    def _rearm_watchers(self) -> None:
        """A watcher whose inbox vanished is said to be lost once, and started again when it returns.

        An inbox missing at start is waited for the same way (with a warning), not refused:
        a network share may mount after the daemon starts.
        """
        for name, watcher in self.watchers.items():
            if watcher.is_alive:
                continue
            if not watcher.root.is_dir():
                if name not in self._lost_inboxes:
                    self._lost_inboxes.add(name)
                    logger.warning("inbox %s (%s) is gone; waiting for it to come back", name, watcher.root)
                continue
            watcher.stop()
            self._start_watcher(name, watcher)
            if watcher.is_alive:
                logger.info("inbox %s (%s) is back; watching it again", name, watcher.root)
                self._lost_inboxes.discard(name)
        self.metrics.set_queue_depth(self.queue.qsize())

    def admit(self, stats: Sequence[FileStat], *, now: float) -> dict[Path, Admission | None]:
        """Stable files: record them, hash them and queue each unless its content was seen already.

        Two ledger batches (one fsync each), with the hashing between them. Returns each
        path's admission: None for a file already known or one that could not be read.
        """
        admitted: dict[Path, Admission | None] = {stat.path: None for stat in stats}
        if not stats:
            return admitted
        with self.ledger.batch():
            seen = [
                stat.path
                for stat in stats
                if self.ledger.observe(stat.path, size=stat.size, mtime=stat.mtime, now=now).state
                is FileState.SEEN
            ]
        hashed: list[tuple[Path, str]] = []
        for path in seen:
            try:
                hashed.append((path, file_sha256(path)))
            except OSError as exc:
                self.ledger.fail(path, f"not ready: {exc.strerror or exc}", now=now)
                self.metrics.file_finished("failed", now=now)
        with self.ledger.batch():
            for path, sha in hashed:
                try:
                    admitted[path] = self.ledger.mark_pending(path, sha, now=now)
                except LedgerError as exc:  # changed under us; its next event admits it again
                    logger.warning("%s not admitted: %s", path, exc)
        for admission in admitted.values():
            if admission is Admission.DUPLICATE:
                self.metrics.file_finished("duplicate", now=now)
            elif admission is Admission.QUARANTINED:
                self.metrics.file_finished("quarantined", now=now)
        return admitted

    def _retry(self, path: Path, *, now: float) -> None:
        try:
            stat = path.stat()
        except OSError as exc:
            self.ledger.fail(path, f"not ready: {exc.strerror or exc}", now=now)
            return
        self.ledger.observe(path, size=stat.st_size, mtime=stat.st_mtime, now=now)
        try:
            sha = file_sha256(path)
        except OSError as exc:
            self.ledger.fail(path, f"not ready: {exc.strerror or exc}", now=now)
            return
        self.ledger.mark_pending(path, sha, now=now)

    def _fill_queue(self, now: float) -> None:
        room = self.queue.maxsize - self.queue.qsize()  # only this thread puts, so the room stays
        if room > 0:
            for item in self.ledger.claim(room, now=now):
                self.queue.put_nowait(item)

    def _collect_dropped(self) -> None:
        """Confirmation drop folder: apply what arrived once it has been quiet, as one change per label."""
        ready = [stat.path for stat in self.confirm_watcher.poll_ready()]
        if ready:
            self._dropped.extend(ready)
            self._dropped_at = time.monotonic()
        if self._dropped and time.monotonic() - self._dropped_at >= self.config.watch.quiet_seconds:
            dropped, self._dropped = self._dropped, []
            self.growth.accept_dropped(dropped, root=self.confirm_watcher.root)

    def rescan(self) -> int:
        """The safety net: look at every inbox for files no event announced."""
        found = sum(w.rescan() for w in self.watchers.values())
        if found:
            logger.info("rescan found %d files the watchers had not reported", found)
            self.metrics.rescan_recovered(found)
        return found

    def _work(self) -> None:
        """Stage one, in the worker thread: read and classify batches from the queue.

        Stage two (:meth:`_finish`) takes each classified batch on, so the model
        classifies the next batch while the helpers compute the last one's aging indices.
        """
        batch_size = self.config.worker.batch_size
        try:
            while not self.stop.is_set():
                try:
                    batch = [self.queue.get(timeout=0.1)]
                except queue.Empty:
                    continue
                while len(batch) < batch_size:
                    try:
                        batch.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
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
        """Stage two, in the finisher thread: aging indices, one ledger commit, results and metrics."""
        while (classified := self._classified.get()) is not None:
            try:
                self.worker.finish(classified)
            except Exception as exc:
                logger.exception("recording a batch of %d files failed", len(classified))
                self.worker.give_up([one.item for one, _ in classified], exc)

    def reload_config(self) -> None:
        """SIGHUP: re-read the configuration; apply watcher settings and the library, keep the rest."""
        if self.config_path is None:
            logger.warning("reload asked, but the daemon was not started from a configuration file")
            return
        try:
            new = load_config(self.config_path, overrides=self.overrides)
        except ConfigError as exc:
            logger.error("reload refused, keeping the running configuration: %s", exc)
            return
        if new.state_dir != self.config.state_dir or new.http != self.config.http:
            logger.warning("state_dir and http take effect at the next start, not on reload")
            new = new.model_copy(update={"state_dir": self.config.state_dir, "http": self.config.http})
        if (
            served_library_dirs(new) != served_library_dirs(self.config)
            or new.engine_model_config() != self.config.engine_model_config()
        ):
            try:
                model = load_model(new)
            except (ConfigError, LibraryError) as exc:
                logger.error("reload refused, keeping the running configuration: %s", exc)
                return
            self.models.swap(model)
            self._publish_model()
        if new.inboxes != self.config.inboxes or new.watch != self.config.watch:
            for watcher in self.watchers.values():
                watcher.stop()
            self.metrics.set_inbox_roots(inbox.name for inbox in new.inboxes)
            self.exporter.inboxes = [(inbox.name, inbox.path) for inbox in new.inboxes]
            self.watchers = self._make_watchers(new)
            for name, watcher in self.watchers.items():
                self._start_watcher(name, watcher)
            logger.info("reload: watching %s", ", ".join(inbox.name for inbox in new.inboxes))
        self.config = new
        logger.info("configuration reloaded from %s", self.config_path)

    def shutdown(self) -> None:
        """Finish the batch in hand, give queued work back, flush results, close everything."""
        self.stop.set()
        if self.challenger is not None:
            self.challenger.close()
        for watcher in [*self.watchers.values(), self.confirm_watcher]:
            watcher.stop()
        if self._worker_thread is not None:
            self._worker_thread.join(timeout=60)
        if self._finisher_thread is not None:
            self._finisher_thread.join(timeout=60)
        self.helpers.close()
        now = self.clock()
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            self.ledger.release(item.path, now=now)
        self.exporter.flush(now=now, force=True)
        self.http.shutdown()
        self.ledger.close()
        self.state_lock.release()
        logger.info("stopped")
