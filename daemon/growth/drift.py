"""Streaming quality watch with river: progressive validation and drift detection.

- **Progressive validation.** Each analyst confirmation is scored against what
  the served model said *before* the model learns from it (predict, then
  learn). river's rolling accuracy gives the recent accuracy overall and per class.
- **Drift.** ADWIN watches two streams: the unknown rate (1 for each unknown
  result, 0 otherwise) and the top-1 Pearson r of every judged spectrum. A
  detected change is logged, exported as a metric and raises
  :attr:`DriftWatch.retrain_requested`, which the scheduler may act on.

>>> watch = DriftWatch(window=10)
>>> watch.learn("PE", predicted="PE"); watch.learn("PP", predicted="PE")
>>> watch.accuracy()
0.5
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from river import drift, metrics, utils

from engine.models.served import Result

__all__ = ["STREAMS", "DriftWatch"]

logger = logging.getLogger(__name__)

STREAMS = ("unknown_rate", "top1_r")


class DriftWatch:
    """Rolling accuracy from confirmations and ADWIN on the result streams."""

    def __init__(
        self,
        *,
        window: int = 200,
        delta: float = 0.002,
        on_drift: Callable[[str], None] | None = None,
        on_accuracy: Callable[[str, float], None] | None = None,
    ) -> None:
        self.window = window
        self.delta = delta
        self.on_drift = on_drift
        self.on_accuracy = on_accuracy
        self._lock = threading.Lock()
        # river's Rolling proxies its metric's methods, which type checkers cannot see
        self.overall_: Any = utils.Rolling(metrics.Accuracy, window_size=window)
        self.per_class_: dict[str, Any] = {}
        self.detectors_ = {stream: drift.ADWIN(delta=delta) for stream in STREAMS}
        self.retrain_requested = threading.Event()

    def observe_results(self, item: object, results: Sequence[Result]) -> None:
        """A file's results, as the worker announces them after its commit."""
        for r in results:
            self.observe(status=r.status, top1_r=r.hits[0].r if r.hits else None)

    def observe(self, *, status: str, top1_r: float | None) -> list[str]:
        """Feed one result to the drift detectors; return the streams that drifted now."""
        drifted = []
        with self._lock:
            values = {"unknown_rate": 1.0 if status == "unknown" else 0.0}
            if status != "low_quality" and top1_r is not None:
                values["top1_r"] = float(top1_r)
            for stream, value in values.items():
                detector = self.detectors_[stream]
                detector.update(value)
                if detector.drift_detected:
                    drifted.append(stream)
        for stream in drifted:
            logger.warning(
                "drift detected in %s (ADWIN, delta %g): the instrument or the samples changed",
                stream,
                self.delta,
            )
            self.retrain_requested.set()
            if self.on_drift:
                self.on_drift(stream)
        return drifted

    def learn(self, label: str, *, predicted: str | None) -> None:
        """Score one confirmation against the served model's earlier prediction."""
        with self._lock:
            self.overall_.update(label, predicted)
            per = self.per_class_.setdefault(label, utils.Rolling(metrics.Accuracy, window_size=self.window))
            per.update(label, predicted)
            overall, mine = self.overall_.get(), per.get()
        if self.on_accuracy is not None:
            self.on_accuracy("overall", float(overall))
            self.on_accuracy(label, float(mine))

    def accuracy(self, label: str | None = None) -> float:
        """Rolling accuracy overall, or of one class (0 before any confirmation)."""
        with self._lock:
            metric = self.overall_ if label is None else self.per_class_.get(label)
            return float(metric.get()) if metric is not None else 0.0
