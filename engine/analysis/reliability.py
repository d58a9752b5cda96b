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

An ECE measured on few answers moves a lot with which answers they were:
:func:`ece_interval` gives the spread of the ECE over bootstrap resamples of the
answers, so that a table can show how far a bar such as 0.10 lies inside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Reliability", "ReliabilityBin", "ece_interval", "reliability"]


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


def _answers(
    confidence: npt.ArrayLike, right: npt.ArrayLike, n_bins: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """``confidence`` and ``right`` as flat arrays, checked."""
    p = np.asarray(confidence, dtype=np.float64).ravel()
    y = np.asarray(right, dtype=bool).ravel()
    if p.size != y.size:
        raise ValueError(f"{p.size} confidences but {y.size} outcomes")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("confidences must lie in [0, 1]")
    return p, y


def _bin_of(p: npt.NDArray[np.float64], n_bins: int) -> npt.NDArray[np.int64]:
    """The bin of each confidence: ``n_bins`` equal bins over [0, 1], 1.0 in the last."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)


def reliability(confidence: npt.ArrayLike, right: npt.ArrayLike, *, n_bins: int = 10) -> Reliability:
    """Bin ``confidence`` (probabilities in [0, 1]) against ``right`` (whether each answer was right)."""
    p, y = _answers(confidence, right, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = _bin_of(p, n_bins)
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


def ece_interval(
    confidence: npt.ArrayLike,
    right: npt.ArrayLike,
    *,
    n_bins: int = 10,
    level: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """The central ``level`` interval of the ECE over ``n_resamples`` bootstrap resamples of the answers.

    Each resample draws as many answers as there are, with replacement (seeded), and
    bins them as :func:`reliability` does; NaN, NaN when there is no answer.

    >>> low, high = ece_interval([0.9] * 10, [True] * 9 + [False])
    >>> bool(low < 0.01 < 0.1 < high)  # 9 of 10 right at 0.9: ECE 0, but 10 answers show little
    True
    """
    p, y = _answers(confidence, right, n_bins)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if p.size == 0:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, p.size, size=(n_resamples, p.size))
    cells = (np.arange(n_resamples)[:, None] * n_bins + _bin_of(p, n_bins)[draws]).ravel()
    size = n_resamples * n_bins
    # Per bin, n * |mean confidence - accuracy| is |sum of confidences - number right|.
    gap = np.bincount(cells, weights=p[draws].ravel(), minlength=size) - np.bincount(
        cells, weights=y[draws].ravel().astype(np.float64), minlength=size
    )
    ece = np.abs(gap.reshape(n_resamples, n_bins)).sum(axis=1) / p.size
    low, high = np.quantile(ece, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)
