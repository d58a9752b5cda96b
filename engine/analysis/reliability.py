"""Whether a confidence means what it says: reliability bins and the expected calibration error (ECE).

Confidences are put in ``n_bins`` equal bins over [0, 1] (1.0 in the last). In
each bin the mean confidence is compared with the share that was right; the
ECE is the mean of those gaps, each bin weighted by its share of the answers.
A model whose 0.8s are right 80 % of the time, and so on, has an ECE of 0.

>>> rel = reliability([0.95, 0.95, 0.95, 0.95, 0.55, 0.55], [True, True, True, False, True, False])
>>> [(b.n, round(b.confidence, 2), b.accuracy) for b in rel.bins if b.confidence is not None]
[(2, 0.55, 0.5), (4, 0.95, 0.75)]
>>> round(rel.ece, 4)  # (2 * 0.05 + 4 * 0.2) / 6
0.15
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Reliability", "ReliabilityBin", "reliability"]


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of confidences: its edges, how many answers fell in it, their mean confidence and accuracy."""

    lower: float
    upper: float
    n: int
    confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Reliability:
    """Confidence against accuracy, bin by bin."""

    bins: list[ReliabilityBin]

    @property
    def n(self) -> int:
        return sum(b.n for b in self.bins)

    @property
    def ece(self) -> float:
        """The expected calibration error; NaN when there is no answer to judge."""
        if not self.n:
            return float("nan")
        gaps = [
            b.n * abs(b.confidence - b.accuracy)
            for b in self.bins
            if b.confidence is not None and b.accuracy is not None
        ]
        return float(sum(gaps) / self.n)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "ece": self.ece, "bins": [dataclasses.asdict(b) for b in self.bins]}


def reliability(confidence: npt.ArrayLike, right: npt.ArrayLike, *, n_bins: int = 10) -> Reliability:
    """Bin ``confidence`` (probabilities in [0, 1]) against ``right`` (whether each answer was right)."""
    p = np.asarray(confidence, dtype=np.float64).ravel()
    y = np.asarray(right, dtype=bool).ravel()
    if p.size != y.size:
        raise ValueError(f"{p.size} confidences but {y.size} outcomes")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = which == b
        n = int(inside.sum())
        bins.append(
            ReliabilityBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                n=n,
                confidence=float(p[inside].mean()) if n else None,
                accuracy=float(y[inside].mean()) if n else None,
            )
        )
    return Reliability(bins)
