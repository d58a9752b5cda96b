"""Preprocessing as scikit-learn transformers, and the named pipelines built from them.

The first two steps take a list of :class:`~engine.core.spectrum.Spectrum`
(each on its own axis, in its own unit); :class:`Resample` turns that list
into a matrix on one common wavenumber grid. From there every step works on
a float32 matrix in which NaN means "not measured", so a gap is never
mistaken for signal. :class:`FillMissing` ends every pipeline, making the
matrix finite for the models.

>>> import numpy as np
>>> from engine.core.spectrum import Spectrum
>>> x = np.linspace(600.0, 3800.0, 801)
>>> s = Spectrum.create(x, 50 + 40 * np.cos(x / 300.0), y_unit="%T")
>>> X = build_pipeline("default").fit_transform([s])
>>> X.shape, bool(np.isfinite(X).all())
((1, 901), True)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.ndimage import convolve1d, median_filter
from scipy.signal import savgol_coeffs
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from engine.core.spectrum import CO2_REGION, MIN_POINTS, Spectrum, median_spacing, to_absorbance

__all__ = [
    "CO2_REGION",
    "FINE_STEP",
    "PIPELINES",
    "Absolute",
    "BaselineCorrection",
    "Despike",
    "FillMissing",
    "FlattenRegion",
    "Grid",
    "Normalise",
    "Resample",
    "SavitzkyGolay",
    "ToAbsorbance",
    "box_average_rows",
    "box_points",
    "build_pipeline",
    "coarsely_sampled",
    "pipeline_grid",
    "remove_spikes",
    "savgol_coefficients",
    "transform",
    "zero_filled",
]

FloatMatrix = npt.NDArray[np.float32]

#: A run of at least this many exact zeros inside a spectrum marks a gap, not signal.
ZERO_RUN_MIN = 5


@dataclass(frozen=True)
class Grid:
    """An evenly spaced wavenumber grid, ``start`` to ``stop`` inclusive.

    >>> Grid(400.0, 4000.0, 4.0).wavenumbers.size
    901
    """

    start: float
    stop: float
    step: float

    @property
    def wavenumbers(self) -> npt.NDArray[np.float64]:
        """The grid's points (cm-1)."""
        n = round((self.stop - self.start) / self.step) + 1
        return self.start + self.step * np.arange(n, dtype=np.float64)


def _as_matrix(X: Any) -> FloatMatrix:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D matrix of spectra, got shape {X.shape}")
    return X


def _fill_gaps(X: FloatMatrix) -> tuple[FloatMatrix, npt.NDArray[np.bool_]]:
    """Linear interpolation inside each row and nearest-value extension at its ends.

    Returns the filled copy and the NaN mask, so a step can work on the full
    matrix at once and then restore the missing points.
    """
    mask = np.isnan(X)
    if not mask.any():
        return X.copy(), mask
    out = X.copy()
    idx = np.arange(X.shape[1])
    for row in np.flatnonzero(mask.any(axis=1)):
        good = ~mask[row]
        if good.any():
            out[row] = np.interp(idx, idx[good], X[row, good])
        else:
            out[row] = 0.0
    return out, mask


class _Stateless(TransformerMixin, BaseEstimator):
    """A transformer that learns nothing: ``fit`` only checks parameters.

    A step's parameters are the fields of a keyword-only dataclass (``eq=False, repr=False``
    keep scikit-learn's identity and repr): ``get_params`` reads them off the ``__init__``
    that the dataclass writes, and a step inherits the parameters of its base.
    """

    def fit(self, X: Any, y: Any = None) -> _Stateless:
        self._check_params()
        return self

    def _check_params(self) -> None:
        """Raise ValueError for a parameter no data could make valid."""

    def __sklearn_is_fitted__(self) -> bool:
        return True


@dataclass(kw_only=True, eq=False, repr=False)
class ToAbsorbance(_Stateless):
    """%T, transmittance and reflectance as absorbance (:func:`engine.core.spectrum.to_absorbance`)."""

    floor: float = 1e-4

    def transform(self, X: Sequence[Spectrum]) -> list[Spectrum]:
        return [to_absorbance(s, floor=self.floor) for s in X]


def remove_spikes(
    values: npt.ArrayLike, *, sigma: float = 8.0, fraction: float = 0.05
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Each row of ``values`` with cosmic-ray spikes replaced by a running median, and how many
    points of each row were.

    A spike is a run of one or two points above a 9-point running median by more than
    ``sigma`` noise levels and ``fraction`` of the row's range, that also stands clear
    of its neighbours (its lowest point exceeds both of them by half its height). On an
    axis sampled every 1.5 cm-1 or finer (see :class:`Despike`) a Raman band is at least
    four points wide and rises gradually, so it is never one. Rows are judged together
    (a map's block of pixels in one pass).

    >>> x = np.linspace(0, 6, 200)
    >>> y = np.sin(x) + 2.0
    >>> y[[50, 120, 121]] += [5.0, 4.0, 4.5]
    >>> clean, n = remove_spikes(y)
    >>> n.tolist(), bool(np.abs(clean - (np.sin(x) + 2.0)).max() < 0.1)
    ([3], True)
    """
    Y = np.atleast_2d(np.asarray(values, dtype=np.float64)).copy()
    if Y.shape[1] < 16:
        return Y, np.zeros(len(Y), dtype=np.int64)
    med = median_filter(Y, size=(1, 9), mode="nearest")
    excess = Y - med
    centre = np.median(excess, axis=1, keepdims=True)
    noise = 1.4826 * np.median(np.abs(excess - centre), axis=1, keepdims=True)
    high = excess > np.maximum(sigma * noise, fraction * np.ptp(med, axis=1, keepdims=True))
    pad = np.full((len(Y), 2), -np.inf)
    padded = np.hstack([pad, Y, pad])  # neighbours beyond the ends never stand in the way
    flags = np.hstack([np.zeros((len(Y), 2), bool), high, np.zeros((len(Y), 2), bool)])
    at = slice(2, -2)
    before1, after1, after2 = padded[:, 1:-3], padded[:, 3:-1], padded[:, 4:]
    one = high & ~flags[:, 1:-3] & ~flags[:, 3:-1]
    one &= padded[:, at] - np.maximum(before1, after1) > 0.5 * excess
    two = high & flags[:, 3:-1] & ~flags[:, 1:-3] & ~flags[:, 4:]  # the first point of a pair
    lowest = np.minimum(padded[:, at], after1)
    tallest = np.maximum(excess, np.hstack([excess[:, 1:], np.zeros((len(Y), 1))]))
    two &= lowest - np.maximum(before1, after2) > 0.5 * tallest
    spike = one | two | np.hstack([np.zeros((len(Y), 1), bool), two[:, :-1]])
    Y[spike] = med[spike]
    return Y, spike.sum(axis=1)


@dataclass(kw_only=True, eq=False, repr=False)
class Despike(_Stateless):
    """Cosmic-ray spikes out of finely sampled spectra (:func:`remove_spikes`), before the grid.

    Sampled onto the grid, a spike that falls on a grid point dominates the derivative
    (r 1.00 to 0.45 for a PE reference), one between grid points vanishes. Spectra
    sampled more coarsely than ``max_spacing`` cm-1 are left as they are: there a band
    can be two points wide (the bundled Raman library, at 2 cm-1, is never changed).
    """

    max_spacing: float = 1.5

    def transform(self, X: Sequence[Spectrum]) -> list[Spectrum]:
        out = []
        for s in X:
            if s.spacing > self.max_spacing:
                out.append(s)
                continue
            clean, removed = remove_spikes(s.values)
            out.append(s.with_values(clean[0]) if removed[0] else s)
        return out


@dataclass(kw_only=True, eq=False, repr=False)
class _GridStep(_Stateless):
    """A step that knows the grid its matrix lies on: :class:`Resample` makes it, later steps work on it."""

    start: float = 400.0
    stop: float = 4000.0
    step: float = 4.0

    @property
    def grid(self) -> Grid:
        return Grid(self.start, self.stop, self.step)


@dataclass(kw_only=True, eq=False, repr=False)
class Resample(_GridStep):
    """Linear interpolation of each spectrum onto one grid; unmeasured points become NaN.

    A point is missing when it lies outside the spectrum's axis, inside a gap
    wider than ``max_gap`` cm-1 between two measured points, or inside a run
    of exact zeros (instruments zero-fill what they did not measure). With
    ``average`` each spectrum is first averaged over ``step`` cm-1 (a box, where
    its points lie closer than that): a spectrum sampled every 1 cm-1 keeps a
    quarter of its noise's variance on a 4 cm-1 grid instead of all of it, and a
    finely sampled reference looks as a coarse instrument would have measured it.
    """

    max_gap: float = 24.0
    average: bool = False

    def _check_params(self) -> None:
        if self.step <= 0 or self.stop <= self.start:
            raise ValueError(f"bad grid {self.start}..{self.stop} step {self.step}")

    def transform(self, X: Sequence[Spectrum]) -> FloatMatrix:
        target = self.grid.wavenumbers
        out = np.full((len(X), target.size), np.nan, dtype=np.float32)
        for row, s in enumerate(X):
            x, y = _measured_points(s)
            if x.size < 2:
                continue
            if self.average:
                y = _box_average(x, y, self.step)
            values = np.interp(target, x, y, left=np.nan, right=np.nan)
            gaps = np.flatnonzero(np.diff(x) > self.max_gap)
            for g in gaps:
                values[(target > x[g]) & (target < x[g + 1])] = np.nan
            out[row] = values
        return out


def box_points(spacing: float, width: float) -> int:
    """How many points ``spacing`` cm-1 apart a box ``width`` cm-1 wide averages (1: none).

    >>> box_points(1.0, 4.0), box_points(1.93, 4.0), box_points(4.0, 4.0), box_points(4.0, 16.0)
    (4, 2, 1, 4)
    """
    return max(1, round(width / spacing)) if spacing > 0 else 1


def box_average_rows(rows: npt.NDArray[Any], n: int) -> npt.NDArray[Any]:
    """Each row's running mean over ``n`` points (``np.convolve(row, ones(n) / n, "same")``), the
    ends averaged over the points they have; rows unchanged when ``n`` < 2.

    >>> box_average_rows(np.array([[0.0, 4.0, 0.0, 0.0, 8.0]]), 2).tolist()
    [[0.0, 2.0, 2.0, 0.0, 4.0]]
    """
    if n < 2:
        return rows
    rows = np.asarray(rows, dtype=np.float64)
    width = rows.shape[1]
    cumulative = np.zeros((rows.shape[0], width + 1))
    np.cumsum(rows, axis=1, out=cumulative[:, 1:])
    after = (n - 1) // 2
    at = np.arange(width)
    lo, hi = np.maximum(at - (n - 1 - after), 0), np.minimum(at + after, width - 1) + 1
    return np.asarray((cumulative[:, hi] - cumulative[:, lo]) / (hi - lo))


def _box_average(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], width: float
) -> npt.NDArray[np.float64]:
    """``y`` averaged over ``width`` cm-1 around each point: a spectrum seen at a coarser resolution."""
    return box_average_rows(y[None, :], box_points(median_spacing(x), width))[0]


def coarsely_sampled(s: Spectrum, step: float) -> Spectrum:
    """``s`` as an instrument that samples every ``step`` cm-1 writes it: averaged over ``step`` cm-1
    around each multiple of ``step`` within its axis, and only those points kept (``s`` itself when
    it is sampled about as coarsely already, or too short to be a spectrum at that step).

    >>> s = Spectrum.create(np.arange(400.0, 464.0), np.arange(64.0), y_unit="absorbance")
    >>> coarse = coarsely_sampled(s, 4.0)
    >>> coarse.wavenumbers[:3].tolist(), coarse.values[:3].tolist(), coarse.n_points
    ([400.0, 404.0, 408.0], [0.5, 3.5, 7.5], 16)
    >>> coarsely_sampled(s, 8.0) is s  # 8 points: too few for a spectrum
    True
    """
    x, y = _measured_points(s)
    if x.size < 2 or 1.5 * median_spacing(x) >= step:
        return s
    at = np.arange(np.ceil(x[0] / step) * step, x[-1] + step * 1e-9, step)
    averaged = np.interp(at, x, _box_average(x, y, step))
    if at.size < MIN_POINTS:  # fewer points than a spectrum needs
        return s
    return Spectrum.create(at, averaged, y_unit=s.y_unit, technique=s.technique, metadata=s.metadata)


def zero_filled(values: npt.ArrayLike, *, technique: str | None) -> npt.NDArray[np.bool_]:
    """The points of a spectrum's ``values`` in runs of at least :data:`ZERO_RUN_MIN` zeros: not measured.

    Inside a Raman spectrum a run of zeros is a baseline subtracted and clipped at zero, as some
    exports write it between bands: measured, so only its zero-filled ends count.

    >>> zero_filled([0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 2], technique="ir").astype(int).tolist()
    [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0]
    >>> zero_filled([0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 2], technique="raman").astype(int).tolist()
    [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    """
    zero = np.asarray(values) == 0
    out = np.zeros(zero.size, dtype=bool)
    if zero.sum() < ZERO_RUN_MIN:
        return out
    edges = np.flatnonzero(np.diff(np.concatenate(([0], zero.astype(np.int8), [0]))))
    for begin, end in zip(edges[::2], edges[1::2], strict=True):
        if end - begin >= ZERO_RUN_MIN and not (technique == "raman" and begin > 0 and end < zero.size):
            out[begin:end] = True
    return out


def _measured_points(s: Spectrum) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The spectrum's points without its zero-filled runs (:func:`zero_filled`)."""
    keep = ~zero_filled(s.values, technique=s.technique)
    return (s.wavenumbers, s.values) if keep.all() else (s.wavenumbers[keep], s.values[keep])


@dataclass(kw_only=True, eq=False, repr=False)
class FlattenRegion(_GridStep):
    """Replace bands that carry no sample information (default: CO2) by a straight line."""

    regions: Sequence[tuple[float, float]] = (CO2_REGION,)

    def transform(self, X: Any) -> FloatMatrix:
        X = _as_matrix(X).copy()
        wn = self.grid.wavenumbers
        if X.shape[1] != wn.size:
            raise ValueError(f"matrix has {X.shape[1]} columns, grid has {wn.size}")
        for lo, hi in self.regions:
            inside = np.flatnonzero((wn >= lo) & (wn <= hi))
            if inside.size == 0 or inside[0] == 0 or inside[-1] == wn.size - 1:
                continue
            left, right = inside[0] - 1, inside[-1] + 1
            t = (wn[inside] - wn[left]) / (wn[right] - wn[left])
            X[:, inside] = X[:, [left]] + (X[:, [right]] - X[:, [left]]) * t[None, :].astype(np.float32)
        return X


@dataclass(kw_only=True, eq=False, repr=False)
class BaselineCorrection(_GridStep):
    """Subtract a baseline estimated by pybaselines (default: asymmetrically reweighted PLS).

    ``method`` names a pybaselines ``Baseline`` method (``arpls``, ``asls``,
    ``imodpoly``, ``snip``...); ``method_params`` are passed to it. Each
    row's measured stretch is corrected on its own; missing points stay NaN.
    """

    DEFAULT_PARAMS: ClassVar[Mapping[str, Mapping[str, Any]]] = {"arpls": {"lam": 1e5}, "asls": {"lam": 1e5}}

    method: str = "arpls"
    method_params: Mapping[str, Any] | None = None

    def transform(self, X: Any) -> FloatMatrix:
        from pybaselines import Baseline

        X = _as_matrix(X)
        out = np.full_like(X, np.nan)
        wn = self.grid.wavenumbers
        params = dict(self.method_params or self.DEFAULT_PARAMS.get(self.method, {}))
        for row in range(X.shape[0]):
            good = np.flatnonzero(~np.isnan(X[row]))
            if good.size < 8:
                continue
            lo, hi = good[0], good[-1] + 1
            segment = X[row, lo:hi].astype(np.float64)
            holes = np.isnan(segment)
            if holes.any():
                idx = np.arange(segment.size)
                segment[holes] = np.interp(idx[holes], idx[~holes], segment[~holes])
            fitter = Baseline(x_data=wn[lo:hi])
            baseline, _ = getattr(fitter, self.method)(segment, **params)
            corrected = (segment - baseline).astype(np.float32)
            corrected[holes] = np.nan
            out[row, lo:hi] = corrected
        return out


@lru_cache(maxsize=16)
def savgol_coefficients(window: int, polyorder: int, deriv: int = 0) -> npt.NDArray[np.float64]:
    """Savitzky-Golay filter coefficients, computed once per shape (a least-squares fit each time)."""
    coefficients = savgol_coeffs(window, polyorder, deriv=deriv)
    coefficients.setflags(write=False)  # shared by every caller
    return coefficients


@dataclass(kw_only=True, eq=False, repr=False)
class SavitzkyGolay(_Stateless):
    """Savitzky-Golay smoothing (``deriv=0``) or derivative, NaN-aware.

    Gaps are bridged for the filter and restored afterwards, so a missing
    stretch stays missing; the ends are extended with their edge values.
    Derivatives are per grid point, not per cm-1.
    """

    window: int = 11
    polyorder: int = 3
    deriv: int = 0

    def _check_params(self) -> None:
        if self.window % 2 == 0 or self.window <= self.polyorder:
            raise ValueError(f"window {self.window} must be odd and larger than polyorder {self.polyorder}")

    def transform(self, X: Any) -> FloatMatrix:
        X = _as_matrix(X)
        if X.shape[0] == 0:
            return X
        filled, mask = _fill_gaps(X)
        coeffs = savgol_coefficients(self.window, self.polyorder, self.deriv).astype(np.float32)
        out = convolve1d(filled, coeffs, axis=1, mode="nearest")
        out[mask] = np.nan
        return out


class Absolute(_Stateless):
    """Absolute values, as Open Specy takes of the first derivative."""

    def transform(self, X: Any) -> FloatMatrix:
        return np.abs(_as_matrix(X))


@dataclass(kw_only=True, eq=False, repr=False)
class Normalise(_Stateless):
    """Row normalisation ignoring missing points: ``snv``, ``minmax`` or ``l2``."""

    METHODS: ClassVar[tuple[str, ...]] = ("snv", "minmax", "l2")

    method: str = "l2"

    def _check_params(self) -> None:
        if self.method not in self.METHODS:
            raise ValueError(f"normalisation {self.method!r} is not one of {self.METHODS}")

    def transform(self, X: Any) -> FloatMatrix:
        X = _as_matrix(X)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows with no measured point
            if self.method == "snv":
                centre = np.nanmean(X, axis=1, keepdims=True)
                scale = np.nanstd(X, axis=1, keepdims=True)
                out = (X - centre) / scale
            elif self.method == "minmax":
                low = np.nanmin(X, axis=1, keepdims=True)
                out = (X - low) / (np.nanmax(X, axis=1, keepdims=True) - low)
            else:
                out = X / np.sqrt(np.nansum(X * X, axis=1, keepdims=True))
        out[~np.isfinite(out) & ~np.isnan(X)] = 0.0
        return out.astype(np.float32)


@dataclass(kw_only=True, eq=False, repr=False)
class FillMissing(_Stateless):
    """Replace missing (NaN) points with ``value``, so models see finite features."""

    value: float = 0.0

    def transform(self, X: Any) -> FloatMatrix:
        return np.nan_to_num(_as_matrix(X), nan=self.value, posinf=self.value, neginf=self.value)


#: The grid step (cm-1) the default and Raman pipelines are made for; a library built on a coarser grid
#: narrows the derivative (a coarse instrument's range model samples the references instead).
FINE_STEP = 4.0


def _derivative_window(step: float) -> int:
    """Savitzky-Golay window points: 9 on the 4 cm-1 grid, about 36 cm-1 wide on coarser ones, at least 3.

    >>> [_derivative_window(step) for step in (2.0, 4.0, 8.0, 16.0, 32.0)]
    [9, 9, 5, 3, 3]
    """
    return 9 if step <= FINE_STEP else max(3, round(36.0 / step) | 1)


def _derivative_l2(start: float, stop: float, step: float, *, flatten_co2: bool) -> Pipeline:
    """Absorbance, the grid (each spectrum averaged over a step), (CO2 flattened), SG first derivative,
    L2: the default and Raman pipelines; the Raman one despikes first (no CO2 to flatten, cosmic rays
    instead)."""
    grid: dict[str, Any] = {"start": start, "stop": stop, "step": step}
    steps: list[tuple[str, Any]] = [("absorbance", ToAbsorbance())]  # Raman counts pass unchanged
    if not flatten_co2:
        steps.append(("despike", Despike()))
    steps.append(("resample", Resample(**grid, average=True)))
    if flatten_co2:
        steps.append(("flatten", FlattenRegion(**grid)))
    steps += [
        ("derivative", SavitzkyGolay(window=_derivative_window(step), polyorder=2, deriv=1)),
        ("normalise", Normalise(method="l2")),
        ("fill", FillMissing()),
    ]
    return Pipeline(steps)


def _default(start: float, stop: float, step: float) -> Pipeline:
    return _derivative_l2(start, stop, step, flatten_co2=True)


def _openspecy(start: float, stop: float, step: float) -> Pipeline:
    grid: dict[str, Any] = {"start": start, "stop": stop, "step": step}
    return Pipeline(
        [
            ("absorbance", ToAbsorbance()),
            ("resample", Resample(**grid)),
            ("derivative", SavitzkyGolay(window=11, polyorder=3, deriv=1)),
            ("absolute", Absolute()),
            ("normalise", Normalise(method="minmax")),
            ("fill", FillMissing()),
        ]
    )


def _baseline(start: float, stop: float, step: float) -> Pipeline:
    grid: dict[str, Any] = {"start": start, "stop": stop, "step": step}
    return Pipeline(
        [
            ("absorbance", ToAbsorbance()),
            ("resample", Resample(**grid)),
            ("flatten", FlattenRegion(**grid)),
            ("baseline", BaselineCorrection(**grid)),
            ("smooth", SavitzkyGolay(window=9, polyorder=2, deriv=0)),
            ("normalise", Normalise(method="snv")),
            ("fill", FillMissing()),
        ]
    )


def _raman(start: float, stop: float, step: float) -> Pipeline:
    return _derivative_l2(start, stop, step, flatten_co2=False)  # no atmospheric CO2 in Raman


#: Named pipelines and their default grid (start, stop, step in cm-1).
PIPELINES: dict[str, tuple[Any, tuple[float, float, float]]] = {
    "default": (_default, (400.0, 4000.0, 4.0)),
    "raman": (_raman, (100.0, 3500.0, 4.0)),
    "openspecy": (_openspecy, (400.0, 4000.0, 5.0)),
    "baseline": (_baseline, (400.0, 4000.0, 4.0)),
}


def build_pipeline(name: str = "default", *, grid: tuple[float, float, float] | None = None) -> Pipeline:
    """A fresh, unfitted pipeline by name, optionally on another grid.

    ``default``: absorbance, 4 cm-1 grid (each spectrum averaged over a step), CO2 flattened,
    SG first derivative, L2.
    ``openspecy``: Open Specy's recipe: 5 cm-1 grid, SG order 3 window 11 first
    derivative, absolute value, min-max. ``baseline``: arPLS baseline, smoothing, SNV.
    ``raman``: cosmic-ray spikes replaced on axes of 1.5 cm-1 or finer (:class:`Despike`),
    Raman shift 100-3500 cm-1 on a 4 cm-1 grid (averaged over a step), SG first derivative
    (which takes off a slow fluorescence background), L2.
    """
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    factory, default_grid = PIPELINES[name]
    start, stop, step = grid or default_grid
    pipeline: Pipeline = factory(start, stop, step)
    for _, step in pipeline.steps:
        step.fit(None)
    return pipeline


def pipeline_grid(pipeline: Pipeline) -> Grid:
    """The grid a pipeline resamples onto."""
    return pipeline.named_steps["resample"].grid


def transform(pipeline: Pipeline, spectra: Sequence[Spectrum]) -> FloatMatrix:
    """Run a built pipeline's steps on ``spectra``, skipping scikit-learn's per-call overhead.

    This is the hot path of classification (about 1 ms per spectrum less than
    ``Pipeline.transform`` on one spectrum); the result is identical.
    """
    X: Any = list(spectra)
    for _, step in pipeline.steps:
        X = step.transform(X)
    return _as_matrix(X)
