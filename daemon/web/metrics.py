"""Every Prometheus metric of the daemon, in one place.

:class:`Metrics` creates all of them on the :class:`~prometheus_client.CollectorRegistry`
it is given (the daemon passes one registry; each test passes a fresh one) and offers
one small method per event the daemon reports. Names follow the Prometheus conventions:
the ``mpwatch_`` prefix, base units (seconds, ratios from 0 to 1), ``_total`` on
counters, ``_seconds`` on durations, ``_timestamp_seconds`` on points in time.

Labels are bounded. Outcomes, statuses, kinds, streams and ledger states are fixed
sets; inbox roots and ensemble members come from the configuration; polymer labels come
from the reference library's class list (:meth:`Metrics.set_known_labels`), at most
``max_labels`` of them, and anything else is counted under ``"other"``. Every label
combination known at start is created at start, so its series exists (at 0, or NaN for a
ratio that has no data yet) before the first event.

Metrics
-------

============================================  =========  ==============================================
name                                          type       labels (values)
============================================  =========  ==============================================
``mpwatch_files_total``                       counter    outcome (done, duplicate, failed, quarantined,
                                                         ignored)
``mpwatch_classifications_total``             counter    status (known, unknown, low_quality),
                                                         label (polymer class, none, other)
``mpwatch_processing_seconds``                histogram  file read to result written
``mpwatch_queue_depth``                       gauge
``mpwatch_last_processed_timestamp_seconds``  gauge
``mpwatch_library_spectra``                   gauge      label (polymer class, other)
``mpwatch_library_version``                   gauge
``mpwatch_model_info``                        info       model_version, library_version, members
``mpwatch_watcher_up``                        gauge      root (configured inbox name)
``mpwatch_rescan_recovered_files_total``      counter
``mpwatch_ledger_files``                      gauge      state (seen, pending, done, failed, quarantined,
                                                         ignored)
``mpwatch_review_queue_open``                 gauge
``mpwatch_confirmations_total``               counter    kind (new_class, added, positive, rejected)
``mpwatch_time_to_serve_seconds``             histogram  confirmation to updated model serving
``mpwatch_rolling_accuracy_ratio``            gauge      scope (overall, polymer class)
``mpwatch_drift_detected_total``              counter    stream (unknown_rate, top1_r)
``mpwatch_drift_active``                      gauge      stream (unknown_rate, top1_r)
``mpwatch_retrain_seconds``                   histogram  one CNN challenger training
``mpwatch_retrain_total``                     counter    outcome (promoted, kept_champion, failed)
``mpwatch_member_accuracy_ratio``             gauge      member (ensemble member)
``mpwatch_member_disagreements_total``        counter
``mpwatch_carbonyl_index``                    histogram  polymer (polymer class, other)
``mpwatch_build_info``                        info       version
``mpwatch_storage_ok``                        gauge
``mpwatch_main_loop_errors_total``            counter    part (admit, retry, claim, rescan, drop_folder,
                                                         library_sync, challenger, export, watchers)
============================================  =========  ==============================================

``mpwatch_ledger_files`` and ``mpwatch_review_queue_open`` are read from the ledger
(:meth:`~daemon.store.ledger.Ledger.counts`, :meth:`~daemon.store.ledger.Ledger.review_counts`) at
each scrape by a custom collector (:class:`daemon.web.collectors.LedgerCollector`), so they are
never stale.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = Metrics(registry, inbox_roots=["ftir"], known_labels=["PE", "PP"])
>>> registry.get_sample_value("mpwatch_files_total", {"outcome": "done"})
0.0
>>> metrics.file_finished("done", now=1_700_000_000.0, seconds=0.042)
>>> registry.get_sample_value("mpwatch_files_total", {"outcome": "done"})
1.0
>>> metrics.observe_result("known", "Nylon 6,6")  # not a library class
>>> registry.get_sample_value("mpwatch_classifications_total", {"status": "known", "label": "other"})
1.0
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from daemon.store.ledger import CLASSIFIER_STATUSES, ResultStatus
from daemon.web.collectors import LedgerCollector, LedgerCounts

__all__ = [
    "CARBONYL_INDEX_BUCKETS",
    "CONFIRMATION_KINDS",
    "DEFAULT_MAX_LABELS",
    "DRIFT_STREAMS",
    "FILE_OUTCOMES",
    "LOOP_PARTS",
    "NO_LABEL",
    "OTHER_LABEL",
    "OVERALL_SCOPE",
    "PROCESSING_BUCKETS",
    "RETRAIN_BUCKETS",
    "RETRAIN_OUTCOMES",
    "TIME_TO_SERVE_BUCKETS",
    "LedgerCounts",
    "Metrics",
]

logger = logging.getLogger(__name__)

#: How a file left the queue (``mpwatch_files_total{outcome}``).
FILE_OUTCOMES: Final = ("done", "duplicate", "failed", "quarantined", "ignored")
#: What an analyst's confirmation did (``mpwatch_confirmations_total{kind}``).
CONFIRMATION_KINDS: Final = ("new_class", "added", "positive", "rejected")

#: The parts of the daemon's main loop, each guarded on its own (``mpwatch_main_loop_errors_total``).
LOOP_PARTS: Final = (
    "admit",
    "retry",
    "claim",
    "rescan",
    "drop_folder",
    "library_sync",
    "challenger",
    "export",
    "watchers",
)
#: The streams watched for drift (``mpwatch_drift_*{stream}``).
DRIFT_STREAMS: Final = ("unknown_rate", "top1_r")
#: How a CNN challenger training ended (``mpwatch_retrain_total{outcome}``).
RETRAIN_OUTCOMES: Final = ("promoted", "kept_champion", "failed")

#: The label value of a result that carries no polymer label (unknown, low quality).
NO_LABEL: Final = "none"
#: The label value for every polymer label outside the bounded set.
OTHER_LABEL: Final = "other"
#: The ``scope`` of the rolling accuracy over all classes.
OVERALL_SCOPE: Final = "overall"
#: At most this many polymer labels get their own series.
DEFAULT_MAX_LABELS: Final = 200

#: File read to result written: 1 ms to 10 s.
PROCESSING_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Analyst confirmation to the new model serving: 10 ms to 30 s.
TIME_TO_SERVE_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
#: One CNN challenger training: 10 s to 2 h (the study's CNN trained in about 5 min).
RETRAIN_BUCKETS: Final = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
#: Carbonyl index (band area ratio, ~1715 cm-1 over a reference band): 0 to 3.
CARBONYL_INDEX_BUCKETS: Final = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)

_PREFIX: Final = "mpwatch"
_NO_MODEL: Final = "none"


def _build_version() -> str:
    try:
        return metadata.version("mpwatch")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_choice(value: str, choices: Sequence[str], what: str) -> str:
    text = str(value)
    if text not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
    return text


def _check_ratio(value: float, what: str) -> float:
    ratio = float(value)
    if not (math.isnan(ratio) or 0.0 <= ratio <= 1.0):
        raise ValueError(f"{what} is a ratio from 0 to 1 (or NaN for no data), got {value!r}")
    return ratio


class Metrics:
    """All of the daemon's Prometheus metrics, created on ``registry``.

    Args:
        registry: where the metrics are registered; one per daemon, a fresh one per test.
        inbox_roots: the configured inbox names (``mpwatch_watcher_up{root}``); each
            starts at 0 (down) until :meth:`set_watcher_up` says otherwise.
        known_labels: the reference library's classes; see :meth:`set_known_labels`.
        members: the ensemble's members (``mpwatch_member_accuracy_ratio{member}``); see
            :meth:`set_members`.
        version: the daemon's version for ``mpwatch_build_info``; the installed
            distribution's version by default.
        max_labels: the most polymer labels that get their own series.

    All methods are thread-safe: the watcher, worker, retrain and HTTP threads share one
    instance. Methods that take a value from a fixed set raise ValueError for anything
    else (a programming error, caught by tests); polymer labels never raise, they fall
    into ``"other"``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        inbox_roots: Iterable[str] = (),
        known_labels: Iterable[str] = (),
        members: Iterable[str] = (),
        version: str | None = None,
        max_labels: int = DEFAULT_MAX_LABELS,
    ) -> None:
        if max_labels < 1:
            raise ValueError(f"max_labels must be at least 1, got {max_labels}")
        self.registry = registry
        self.max_labels = max_labels
        self._lock = threading.RLock()
        #: Every polymer label that has its own series (only grows, up to max_labels).
        self._labels: set[str] = set()
        self._members: set[str] = set()
        self._library_labels: set[str] = set()
        self._roots: tuple[str, ...] = tuple(dict.fromkeys(str(root) for root in inbox_roots))

        def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(f"{_PREFIX}_{name}", documentation, labelnames=labels, registry=registry)

        def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(f"{_PREFIX}_{name}", documentation, labelnames=labels, registry=registry)

        def histogram(
            name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()
        ) -> Histogram:
            return Histogram(
                f"{_PREFIX}_{name}", documentation, labelnames=labels, buckets=buckets, registry=registry
            )

        # -- files and classifications
        self._files = counter("files", "Inbox files finished, by outcome.", ["outcome"])
        self._classifications = counter(
            "classifications",
            "Spectra classified, by status and polymer label ('none' without a label, "
            "'other' outside the library's classes).",
            ["status", "label"],
        )
        self._processing_seconds = histogram(
            "processing_seconds",
            "Time from reading a file to writing its result.",
            PROCESSING_BUCKETS,
        )
        self._queue_depth = gauge("queue_depth", "Files waiting to be classified.")
        self._last_processed = gauge(
            "last_processed_timestamp_seconds", "When the last file was finished (Unix time)."
        )
        self._carbonyl_index = histogram(
            "carbonyl_index",
            "Carbonyl index of classified particles (weathering), by polymer.",
            CARBONYL_INDEX_BUCKETS,
            ["polymer"],
        )
        # -- library and model
        self._library_spectra = gauge(
            "library_spectra", "Reference spectra in the library, by polymer label.", ["label"]
        )
        self._library_version = gauge("library_version", "Version number of the reference library in use.")
        self._storage_ok = gauge(
            "storage_ok", "Whether the state folder takes writes (0: disk full or failing; retried)."
        )
        self._loop_errors = counter(
            "main_loop_errors", "Failures of one part of the main loop, which goes on.", ["part"]
        )
        self._model_info = Info(f"{_PREFIX}_model", "The model being served.", registry=registry)
        self._build_info = Info(f"{_PREFIX}_build", "The running mpwatch build.", registry=registry)
        # -- watching
        self._watcher_up = gauge(
            "watcher_up", "Whether the inbox watcher is running (1) or not (0).", ["root"]
        )
        self._rescan_recovered = counter(
            "rescan_recovered_files", "Files found by a periodic rescan that the watcher never reported."
        )
        # -- online growth
        self._confirmations = counter(
            "confirmations", "Analyst confirmations applied to the library, by kind.", ["kind"]
        )
        self._time_to_serve = histogram(
            "time_to_serve_seconds",
            "Time from an analyst's confirmation to the updated model serving.",
            TIME_TO_SERVE_BUCKETS,
        )
        self._rolling_accuracy = gauge(
            "rolling_accuracy_ratio",
            "Rolling accuracy on confirmed labels (predict, then learn), overall or per polymer.",
            ["scope"],
        )
        self._drift_detected = counter(
            "drift_detected", "Drift detections (ADWIN), by monitored stream.", ["stream"]
        )
        self._drift_active = gauge(
            "drift_active", "Whether drift is currently flagged on the stream (1) or not (0).", ["stream"]
        )
        # -- CNN member
        self._retrain_seconds = histogram(
            "retrain_seconds", "Duration of one CNN challenger training.", RETRAIN_BUCKETS
        )
        self._retrains = counter("retrain", "CNN challenger trainings, by outcome.", ["outcome"])
        self._member_accuracy = gauge(
            "member_accuracy_ratio", "Held-out accuracy of each ensemble member.", ["member"]
        )
        self._member_disagreements = counter(
            "member_disagreements", "Spectra on which the ensemble's members disagreed on the top label."
        )
        # -- read from the ledger at scrape time
        self._ledger_collector = LedgerCollector()
        registry.register(self._ledger_collector)

        self._initialise(version=version or _build_version())
        self.set_known_labels(known_labels)
        self.set_members(members)

    def _initialise(self, *, version: str) -> None:
        for outcome in FILE_OUTCOMES:
            self._files.labels(outcome=outcome)
        for status in CLASSIFIER_STATUSES:
            self._classifications.labels(status=str(status), label=NO_LABEL)
        self._classifications.labels(status=str(ResultStatus.KNOWN), label=OTHER_LABEL)
        self._carbonyl_index.labels(polymer=OTHER_LABEL)
        self._library_spectra.labels(label=OTHER_LABEL)
        self._model_info.info(
            {"model_version": _NO_MODEL, "library_version": _NO_MODEL, "members": _NO_MODEL}
        )
        self._build_info.info({"version": version})
        for root in self._roots:
            self._watcher_up.labels(root=root).set(0)
        for kind in CONFIRMATION_KINDS:
            self._confirmations.labels(kind=kind)
        self._storage_ok.set(1)
        for part in LOOP_PARTS:
            self._loop_errors.labels(part=part)
        self._rolling_accuracy.labels(scope=OVERALL_SCOPE).set(math.nan)
        for stream in DRIFT_STREAMS:
            self._drift_detected.labels(stream=stream)
            self._drift_active.labels(stream=stream).set(0)
        for outcome in RETRAIN_OUTCOMES:
            self._retrains.labels(outcome=outcome)

    # ------------------------------------------------------------------ bounded labels

    @property
    def known_labels(self) -> frozenset[str]:
        """The polymer labels that have their own series."""
        with self._lock:
            return frozenset(self._labels)

    def set_inbox_roots(self, roots: Iterable[str]) -> None:
        """The configured inbox names after a reload: new ones get their series, removed ones lose them."""
        new = tuple(dict.fromkeys(str(root) for root in roots))
        with self._lock:
            old, self._roots = self._roots, new
        for root in old:
            if root not in new:
                self._watcher_up.remove(root)
        for root in new:
            if root not in old:
                self._watcher_up.labels(root=root).set(0)

    @property
    def inbox_roots(self) -> tuple[str, ...]:
        """The configured inbox names."""
        return self._roots

    def set_known_labels(self, labels: Iterable[str]) -> frozenset[str]:
        """Admit the library's classes as label values (at start and at each model swap).

        The admitted set only grows, so the series of a class that leaves the library
        stay (counters never reset) and the total stays within ``max_labels``: labels
        beyond it are logged once and counted as ``"other"``. New labels get their series
        created at once (at 0).

        Returns:
            Every label that now has its own series.
        """
        with self._lock:
            refused: list[str] = []
            for raw in labels:
                label = str(raw)
                if not label or label in self._labels or label in (NO_LABEL, OTHER_LABEL):
                    continue
                if len(self._labels) >= self.max_labels:
                    refused.append(label)
                    continue
                self._labels.add(label)
                self._classifications.labels(status=str(ResultStatus.KNOWN), label=label)
                self._carbonyl_index.labels(polymer=label)
            if refused:
                logger.warning(
                    "metrics keep at most %d polymer labels; %d more (e.g. %s) are counted as %r",
                    self.max_labels,
                    len(refused),
                    refused[0],
                    OTHER_LABEL,
                )
            return frozenset(self._labels)

    def bounded_label(self, label: str | None) -> str:
        """The label value a polymer label is recorded under: itself, ``"none"`` or ``"other"``."""
        if label is None or label == "" or label == NO_LABEL:
            return NO_LABEL
        with self._lock:
            return label if label in self._labels else OTHER_LABEL

    def set_members(self, members: Iterable[str]) -> None:
        """Declare the ensemble's members; each gets an accuracy series (NaN until measured)."""
        with self._lock:
            for raw in members:
                member = str(raw)
                if member and member not in self._members:
                    self._members.add(member)
                    self._member_accuracy.labels(member=member).set(math.nan)

    # ------------------------------------------------------------------ files

    def file_finished(self, outcome: str, *, now: float, seconds: float | None = None) -> None:
        """A file left the queue.

        Args:
            outcome: ``done``, ``duplicate``, ``failed``, ``quarantined`` or ``ignored`` (not a spectrum).
            now: epoch seconds; becomes ``mpwatch_last_processed_timestamp_seconds``.
            seconds: time from reading the file to writing its result, when it was read.
        """
        self._files.labels(outcome=_check_choice(outcome, FILE_OUTCOMES, "file outcome")).inc()
        if seconds is not None:
            self._processing_seconds.observe(max(0.0, float(seconds)))
        self._last_processed.set(now)

    def observe_result(self, status: str, label: str | None = None) -> None:
        """One spectrum classified: ``known`` with its polymer label, ``unknown`` or ``low_quality``.

        Only a known result carries a label; the others are counted under ``"none"``
        whatever nearest label they came with.
        """
        checked = ResultStatus(status)
        value = self.bounded_label(label) if checked is ResultStatus.KNOWN else NO_LABEL
        self._classifications.labels(status=str(checked), label=value).inc()

    def observe_carbonyl_index(self, polymer: str, value: float) -> None:
        """The carbonyl index measured on a particle of ``polymer``."""
        self._carbonyl_index.labels(polymer=self.bounded_label(polymer)).observe(float(value))

    def member_disagreement(self) -> None:
        """The ensemble's members disagreed on one spectrum's top label."""
        self._member_disagreements.inc()

    def set_queue_depth(self, depth: int) -> None:
        """Files waiting to be classified."""
        if depth < 0:
            raise ValueError(f"queue depth must be >= 0, got {depth}")
        self._queue_depth.set(depth)

    # ------------------------------------------------------------------ the main loop

    def set_storage_ok(self, *, ok: bool) -> None:
        """Whether the state folder takes writes."""
        self._storage_ok.set(1 if ok else 0)

    def loop_error(self, part: str) -> None:
        """One part of the main loop failed (and the loop went on)."""
        self._loop_errors.labels(part=_check_choice(part, LOOP_PARTS, "main loop part")).inc()

    # ------------------------------------------------------------------ watching

    def set_watcher_up(self, root: str, *, up: bool) -> None:
        """Whether the watcher of the configured inbox ``root`` runs."""
        self._watcher_up.labels(root=_check_choice(root, self._roots, "inbox root")).set(1 if up else 0)

    def rescan_recovered(self, count: int = 1) -> None:
        """A rescan found ``count`` files the watcher never reported."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._rescan_recovered.inc(count)

    def attach_ledger(self, ledger: LedgerCounts | None) -> None:
        """Read ``mpwatch_ledger_files`` and ``mpwatch_review_queue_open`` from ``ledger`` at each scrape.

        ``None`` detaches it (the counts read 0 again).
        """
        self._ledger_collector.attach(ledger)

    # ------------------------------------------------------------------ library and model

    def set_library(self, spectra_per_label: Mapping[str, int], *, version: int) -> None:
        """The reference library in use: spectra per class and its version number.

        Classes outside the bounded label set are summed under ``"other"``; the series of
        a class no longer in the library are removed.
        """
        per_series: dict[str, int] = {OTHER_LABEL: 0}
        for label, count in spectra_per_label.items():
            key = self.bounded_label(label)
            if key == NO_LABEL:
                key = OTHER_LABEL
            per_series[key] = per_series.get(key, 0) + int(count)
        with self._lock:
            for stale in self._library_labels - per_series.keys():
                self._library_spectra.remove(stale)
            for label, count in per_series.items():
                self._library_spectra.labels(label=label).set(count)
            self._library_labels = set(per_series)
        self._library_version.set(version)

    def set_model(self, *, model_version: str, library_version: int | str, members: Sequence[str]) -> None:
        """A model started serving (at start, or after a hot swap)."""
        self.set_members(members)
        self._model_info.info(
            {
                "model_version": str(model_version),
                "library_version": str(library_version),
                "members": ",".join(str(member) for member in members),
            }
        )

    # ------------------------------------------------------------------ online growth

    def confirmation(self, kind: str) -> None:
        """An analyst's confirmation was applied: ``new_class``, ``added``, ``positive`` or ``rejected``."""
        self._confirmations.labels(kind=_check_choice(kind, CONFIRMATION_KINDS, "confirmation kind")).inc()

    def observe_time_to_serve(self, seconds: float) -> None:
        """Seconds from a confirmation to the updated model serving."""
        self._time_to_serve.observe(max(0.0, float(seconds)))

    def set_rolling_accuracy(self, scope: str, accuracy: float) -> None:
        """Rolling accuracy, ``scope`` being ``"overall"`` or a polymer label.

        A polymer outside the bounded label set is not recorded (an accuracy cannot be
        summed into ``"other"``).
        """
        ratio = _check_ratio(accuracy, "accuracy")
        with self._lock:
            if scope != OVERALL_SCOPE and scope not in self._labels:
                logger.debug("rolling accuracy for %r not recorded: not a tracked label", scope)
                return
        self._rolling_accuracy.labels(scope=scope).set(ratio)

    def drift_detected(self, stream: str) -> None:
        """The drift detector fired on ``stream``; it stays active until cleared."""
        checked = _check_choice(stream, DRIFT_STREAMS, "drift stream")
        self._drift_detected.labels(stream=checked).inc()
        self._drift_active.labels(stream=checked).set(1)

    def set_drift_active(self, stream: str, *, active: bool) -> None:
        """Flag or clear drift on ``stream`` without counting a detection."""
        self._drift_active.labels(stream=_check_choice(stream, DRIFT_STREAMS, "drift stream")).set(
            1 if active else 0
        )

    # ------------------------------------------------------------------ CNN member

    def retrain_finished(self, outcome: str, *, seconds: float) -> None:
        """A CNN challenger training ended: ``promoted``, ``kept_champion`` or ``failed``."""
        self._retrains.labels(outcome=_check_choice(outcome, RETRAIN_OUTCOMES, "retrain outcome")).inc()
        self._retrain_seconds.observe(max(0.0, float(seconds)))

    def set_member_accuracy(self, member: str, accuracy: float) -> None:
        """Held-out accuracy of one ensemble member (declared by :meth:`set_members`)."""
        ratio = _check_ratio(accuracy, "accuracy")
        with self._lock:
            members = tuple(sorted(self._members))
        self._member_accuracy.labels(member=_check_choice(member, members, "ensemble member")).set(ratio)
