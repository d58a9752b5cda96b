"""Three outcomes, never a forced label: ``known``, ``unknown`` or ``low_quality``.

:class:`QualityGate` judges the spectrum itself, in the spirit of Open
Specy's ``assess_spec``: too little of the range measured, too noisy, flat,
saturated, or full of spikes. Such a spectrum is ``low_quality`` whatever it
matches.

:class:`RejectCalibrator` decides ``unknown``. Its thresholds come from the
library itself, per class: for every reference, the Pearson r to its nearest
*other* reference of the same class (leave-one-out) shows how closely that
class's spectra agree. A query is accepted as class c only when its best r
to c's references reaches c's threshold and the ensemble's vote share for c
reaches ``min_vote``. Classes with too few references to calibrate share a
threshold pooled over all classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.ndimage import convolve1d, median_filter

from engine.core.preprocess import Despike, savgol_coefficients

__all__ = [
    "MAX_SNR",
    "QualityGate",
    "QualityReport",
    "RejectCalibrator",
    "clipped_fraction",
    "pearson_rows",
    "signal_to_noise",
]


#: S/N is reported at most this high: a noiseless spectrum is "very clean", never infinite.
MAX_SNR = 1e6


def _noise_and_signal(
    Y: npt.NDArray[np.float64], *, despike: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per row of ``Y``: the robust noise level of the residual from a smooth, and the signal range.

    With ``despike`` the signal is measured with single-point spikes taken out (a running
    median of 5 first), so a flat line with one spike has no signal, however clean it is.
    """
    smoothing = savgol_coefficients(15, 3)
    smooth = convolve1d(Y, smoothing, axis=-1, mode="nearest")
    residual = Y - smooth
    centre = np.median(residual, axis=-1, keepdims=True)
    noise = 1.4826 * np.median(np.abs(residual - centre), axis=-1)
    if despike:
        smooth = convolve1d(median_filter(Y, size=(1, 5), mode="nearest"), smoothing, axis=-1, mode="nearest")
    low, high = np.percentile(smooth, [0.5, 99.5], axis=-1)
    return noise, high - low


def signal_to_noise(signal: npt.ArrayLike, noise: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``signal / noise``, always finite: 0 for no signal, :data:`MAX_SNR` at most.

    >>> signal_to_noise([1.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.5, np.nan]).tolist()
    [1000000.0, 0.0, 2.0, 0.0]
    """
    signal = np.nan_to_num(np.asarray(signal, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    noise = np.nan_to_num(np.asarray(noise, dtype=np.float64), nan=np.inf, posinf=np.inf, neginf=np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(noise > 0, signal / noise, np.where(signal > 0, MAX_SNR, 0.0))
    return np.clip(np.nan_to_num(ratio, nan=0.0, posinf=MAX_SNR), 0.0, MAX_SNR)


def clipped_fraction(
    segment: npt.NDArray[np.float64], *, tolerance: float, min_run: int
) -> npt.NDArray[np.float64]:
    """Per row: the share of points on a flat top, runs of ``min_run`` or more points within
    ``tolerance`` (a share of the row's range) of the row's maximum.

    A detector or an opaque band clips absorbance at one level, so a saturated band
    is a plateau at the top; a real band peaks at one point.

    >>> x = np.linspace(-3, 3, 61)
    >>> peak = np.exp(-x**2)
    >>> rows = np.vstack([peak, np.minimum(peak, 0.6)])
    >>> clipped_fraction(rows, tolerance=0.005, min_run=4).round(2).tolist()
    [0.0, 0.25]
    """
    top = segment.max(axis=1, keepdims=True)
    span = top - segment.min(axis=1, keepdims=True)
    near = segment >= top - tolerance * np.where(span > 0, span, 1.0)
    edges = np.diff(np.pad(near.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    out = np.zeros(len(segment))
    for row in range(len(segment)):
        starts = np.flatnonzero(edges[row] == 1)
        ends = np.flatnonzero(edges[row] == -1)
        runs = ends - starts
        out[row] = runs[runs >= min_run].sum() / max(segment.shape[1], 1)
    return out


def _groups(rows: Sequence[npt.NDArray[Any]], key: Any) -> dict[Any, list[int]]:
    """Indices of ``rows`` grouped by ``key(row)``: rows alike enough to be judged as one matrix."""
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(key(row), []).append(i)
    return groups


def pearson_rows(X: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Mean-centred, L2-normalised rows: their inner products are Pearson r.

    >>> A = pearson_rows([[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.5]])
    >>> round(float(A[0] @ A[1]), 3)
    0.998
    """
    X = np.asarray(X, dtype=np.float32)
    centred = X - X.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(centred / norms, dtype=np.float32)


@dataclass(frozen=True)
class QualityReport:
    """Why a spectrum is (or is not) good enough to identify."""

    flags: tuple[str, ...]
    snr: float
    coverage: float
    n_spikes: int

    @property
    def ok(self) -> bool:
        return not self.flags

    def as_dict(self) -> dict[str, Any]:
        return {
            "flags": list(self.flags),
            "snr": round(self.snr, 2),
            "coverage": round(self.coverage, 3),
            "n_spikes": self.n_spikes,
        }


@dataclass
class QualityGate:
    """Judge a spectrum on the common grid, before identification.

    ``row`` is the spectrum in absorbance on the model's grid with NaN where it
    was not measured (the output of the pipeline's first two steps). Every
    judgement is relative, as the spectrum's scale is whatever its instrument
    chose: S/N is a ratio, and a spectrum is ``saturated`` when more than
    ``saturated_fraction`` of its points sit on a flat top (runs of at least
    ``plateau_points`` within ``plateau_tolerance`` of the range below the
    maximum), as an opaque band clipped at zero transmittance or a detector's
    limit does. Absorbance 100 is no more saturated than absorbance 1.
    """

    min_coverage: float = 0.25
    min_snr: float = 10.0
    flat_snr: float = 3.0
    max_spikes: int = 8
    spike_sigma: float = 12.0
    spike_fraction: float = 0.05
    saturated_fraction: float = 0.02
    plateau_tolerance: float = 0.005
    plateau_points: int = 4
    #: Spikes are counted only on a native axis this fine (cm-1 between points) or finer:
    #: sampled more coarsely, a real band can be a single point.
    spike_max_spacing: float = 4.0

    @classmethod
    def for_technique(cls, technique: str) -> QualityGate:
        """The gate for spectra of ``technique``. A Raman CCD saturates at one count, so only points
        exactly at the maximum make a plateau: the broad, smooth maximum of a fluorescence background
        is flat to within 0.5 % (and to within its noise) over tens of cm-1, and is no saturation.

        >>> [QualityGate.for_technique(t).plateau_tolerance for t in ("raman", "ir")]
        [0.0, 0.005]
        """
        return (
            cls(plateau_tolerance=0.0, spike_max_spacing=Despike.max_spacing)
            if technique == "raman"
            else cls()
        )

    def assess(
        self, row: npt.ArrayLike, *, native: npt.ArrayLike | None = None, spacing: float | None = None
    ) -> QualityReport:
        """Judge one spectrum; ``native``: its values on its own axis, ``spacing`` apart (for spikes)."""
        natives = None if native is None else [np.asarray(native, dtype=np.float64)]
        spacings = None if spacing is None else [spacing]
        return self.assess_many(
            np.asarray(row, dtype=np.float64)[None, :], natives=natives, spacings=spacings
        )[0]

    def assess_many(
        self,
        rows: npt.ArrayLike,
        *,
        natives: Sequence[npt.ArrayLike] | None = None,
        spacings: Sequence[float] | None = None,
    ) -> list[QualityReport]:
        """Judge a batch: one report per row, exactly as :meth:`assess` would judge each alone.

        Rows measured over the same points (the usual batch from one instrument)
        are judged together as one matrix, and so are native spectra of equal length.
        ``spacings`` (cm-1 between native points, one per native) leave the natives
        sampled more coarsely than ``spike_max_spacing`` out of spike counting.
        """
        Y = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        measured = ~np.isnan(Y)
        snr = np.zeros(len(Y))
        saturated = np.zeros(len(Y), dtype=bool)
        coverage = measured.mean(axis=1) if Y.shape[1] else np.zeros(len(Y))
        narrow = (coverage < self.min_coverage) | (measured.sum(axis=1) < 32)
        usable = [i for i in range(len(Y)) if not narrow[i]]
        for pattern, members in _groups([measured[i] for i in usable], lambda m: m.tobytes()).items():
            index = [usable[j] for j in members]
            segment = _filled_segment(Y[index], np.frombuffer(pattern, dtype=bool))
            noise, signal = _noise_and_signal(segment, despike=True)
            snr[index] = signal_to_noise(signal, noise)
            clipped = clipped_fraction(segment, tolerance=self.plateau_tolerance, min_run=self.plateau_points)
            saturated[index] = clipped > self.saturated_fraction
        spikes = np.zeros(len(Y), dtype=int)
        if natives is not None:
            native_rows = [np.asarray(n, dtype=np.float64) for n in natives]
            fine = (
                [True] * len(native_rows)
                if spacings is None
                else [s <= self.spike_max_spacing for s in spacings]
            )
            for size, members in _groups(native_rows, len).items():
                members = [i for i in members if fine[i]]
                if size >= 16 and members:
                    spikes[members] = self._spikes(np.vstack([native_rows[i] for i in members]))
        reports = []
        for i in range(len(Y)):
            if narrow[i]:
                reports.append(QualityReport(("narrow_range",), 0.0, float(coverage[i]), 0))
                continue
            flags: list[str] = []
            if snr[i] < self.flat_snr:
                flags.append("flat")
            elif snr[i] < self.min_snr:
                flags.append("low_snr")
            if saturated[i]:
                flags.append("saturated")
            if spikes[i] > self.max_spikes:
                flags.append("spikes")
            reports.append(QualityReport(tuple(flags), float(snr[i]), float(coverage[i]), int(spikes[i])))
        return reports

    def _spikes(self, Y: npt.NDArray[np.float64]) -> npt.NDArray[np.int_]:
        """Per row: single-point excursions far above the noise on the native axis (cosmic rays, glitches).

        On an axis sampled finely enough (``spike_max_spacing``) a real band spans several
        native points, so it never counts; an excursion must exceed ``spike_sigma`` noise
        levels and ``spike_fraction`` of the signal range.
        """
        noise, signal = _noise_and_signal(Y)
        limit = np.maximum(self.spike_sigma * noise, self.spike_fraction * signal)[:, None]
        excess = np.abs(Y - median_filter(Y, size=(1, 5), mode="nearest")) > limit
        isolated = excess.copy()
        isolated[:, 1:-1] &= ~excess[:, :-2] & ~excess[:, 2:]
        return np.count_nonzero(isolated, axis=1)


def _filled_segment(Y: npt.NDArray[np.float64], measured: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Rows from their first to their last measured point, inner gaps filled linearly."""
    first, last = np.flatnonzero(measured)[[0, -1]]
    segment = Y[:, first : last + 1].copy()
    holes = ~measured[first : last + 1]
    if holes.any():
        idx = np.arange(segment.shape[1])
        for row in segment:
            row[holes] = np.interp(idx[holes], idx[~holes], row[~holes])
    return segment


@dataclass
class RejectCalibrator:
    """Per-class acceptance thresholds on the best Pearson r, calibrated leave-one-out.

    ``quantile`` of each class's leave-one-out nearest-neighbour r, less
    ``margin``, clipped to [``r_floor``, ``r_ceiling``], is that class's
    threshold; classes with fewer than ``min_class_size`` references use the
    same statistic pooled over all classes.

    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(2, 50))
    >>> X = np.vstack([base[0] + 0.1 * rng.normal(size=(5, 50)), base[1] + 0.1 * rng.normal(size=(5, 50))])
    >>> cal = RejectCalibrator().fit(X, ["a"] * 5 + ["b"] * 5)
    >>> sorted(cal.thresholds_)
    ['a', 'b']
    >>> cal.accept("a", r=0.99, vote_share=1.0), cal.accept("a", r=0.2, vote_share=1.0)
    (True, False)
    """

    quantile: float = 0.1
    margin: float = 0.15
    r_floor: float = 0.65
    r_ceiling: float = 0.95
    min_vote: float = 0.5
    min_class_size: int = 3
    thresholds_: dict[str, float] = field(default_factory=dict)
    pooled_: float = 0.7
    loo_r_: dict[str, list[float]] = field(default_factory=dict)

    def fit(self, X: npt.ArrayLike, y: Sequence[str]) -> RejectCalibrator:
        A = pearson_rows(X)
        labels = np.asarray(list(y))
        if not np.all(np.isfinite(A)):
            raise ValueError("features contain NaN or infinity")
        self.loo_r_ = {}
        for label in dict.fromkeys(labels.tolist()):
            self._fit_class(A[labels == label], label)
        self._update_thresholds()
        return self

    def update_class(self, X: npt.ArrayLike, label: str) -> None:
        """Recalibrate one class from all of its references (an incremental library change)."""
        self._fit_class(pearson_rows(X), label)
        self._update_thresholds()

    def drop_class(self, label: str) -> None:
        self.loo_r_.pop(label, None)
        self._update_thresholds()

    def _fit_class(self, A: npt.NDArray[np.float32], label: str) -> None:
        if A.shape[0] < 2:
            self.loo_r_[label] = []
            return
        r = A @ A.T
        np.fill_diagonal(r, -np.inf)
        self.loo_r_[label] = r.max(axis=1).astype(float).tolist()

    def _update_thresholds(self) -> None:
        pooled = [v for values in self.loo_r_.values() for v in values]
        self.pooled_ = self._threshold(pooled) if pooled else self.r_floor
        self.thresholds_ = {
            label: self._threshold(values) if len(values) >= self.min_class_size else self.pooled_
            for label, values in self.loo_r_.items()
        }

    def _threshold(self, values: Sequence[float]) -> float:
        t = float(np.quantile(values, self.quantile)) - self.margin
        return float(np.clip(t, self.r_floor, self.r_ceiling))

    def threshold(self, label: str) -> float:
        return self.thresholds_.get(label, self.pooled_)

    def accept(self, label: str, *, r: float, vote_share: float) -> bool:
        """Whether a query whose best r to ``label``'s references is ``r`` counts as ``label``."""
        return r >= self.threshold(label) and vote_share >= self.min_vote
