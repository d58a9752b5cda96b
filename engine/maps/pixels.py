"""The served model's preprocessing for a block of pixels at once: one matrix, one axis, one unit.

Every pixel of a map shares the cube's wavenumber axis and y unit, so what
:class:`~engine.core.preprocess.Resample` does spectrum by spectrum is here one
precomputed interpolation (the two neighbouring bands and a weight per grid
point, NaN outside the measured range and inside gaps wider than its
``max_gap``) applied to the whole block. Absorbance comes first, as
:func:`engine.core.spectrum.to_absorbance` makes it (percent read per pixel);
the pipeline's steps after the grid (CO2 flattened, the derivative, the
normalisation, the missing points filled) run unchanged on the matrix. A pixel
with a run of exact zeros (zero-filled, unmeasured) is resampled by the
model's own step, one spectrum at a time, as any spectrum would be.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.pipeline import Pipeline

from engine.core.preprocess import (
    ZERO_RUN_MIN,
    Despike,
    Resample,
    SavitzkyGolay,
    ToAbsorbance,
    box_average_rows,
    box_points,
    remove_spikes,
    zero_filled,
)
from engine.core.spectrum import Spectrum, SpectrumError, mean_spacing, median_spacing

__all__ = ["PixelPreprocessor", "absorbance_rows"]

FloatMatrix = npt.NDArray[np.float32]


def absorbance_rows(values: FloatMatrix, y_unit: str, *, floor: float = 1e-4) -> FloatMatrix:
    """Pixels (rows) as absorbance: transmittance and reflectance converted, other units unchanged.

    As :func:`engine.core.spectrum.to_absorbance`: a row above 1.5 anywhere is percent.

    >>> absorbance_rows(np.array([[100.0, 10.0], [1.0, 0.1]], np.float32), "transmittance").round(3).tolist()
    [[-0.0, 1.0], [-0.0, 1.0]]
    """
    if y_unit not in ("transmittance", "reflectance"):
        return values
    with np.errstate(invalid="ignore"):
        percent = np.nanmax(values, axis=1, keepdims=True) > 1.5
    fraction = np.where(percent, values / np.float32(100.0), values)
    return np.asarray(-np.log10(np.clip(fraction, floor, None)), dtype=np.float32)


def _zero_runs(values: FloatMatrix, *, technique: str | None) -> npt.NDArray[np.bool_]:
    """Rows holding zero-filled points, as :func:`~engine.core.preprocess.zero_filled` finds them."""
    out = np.zeros(len(values), dtype=bool)
    for row in np.flatnonzero((values == 0).sum(axis=1) >= ZERO_RUN_MIN):
        out[row] = bool(zero_filled(values[row], technique=technique).any())
    return out


class PixelPreprocessor:
    """A model pipeline's steps for pixels on the axis ``wavenumbers`` (ascending) in ``y_unit``, of
    ``technique`` (which decides which runs of zeros were not measured, as for a spectrum).

    ``grid_rows`` gives absorbance on the model's grid (NaN where not measured), ``features``
    the model's features from those rows: what ``IdentificationModel.features`` gives for the
    same pixels as spectra.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        wavenumbers: npt.NDArray[np.float64],
        y_unit: str,
        technique: str | None = None,
    ) -> None:
        names = [name for name, _ in pipeline.steps]
        if "resample" not in names:
            raise ValueError("the model's pipeline has no resample step")
        at = names.index("resample")
        before = [step for _, step in pipeline.steps[:at]]
        if not all(isinstance(step, ToAbsorbance | Despike) for step in before):
            raise ValueError("only absorbance and despiking may come before the model's resample step")
        absorb = [step for step in before if isinstance(step, ToAbsorbance)]
        self.floor = absorb[0].floor if absorb else None
        spacing = mean_spacing(wavenumbers)
        #: Whether pixels are despiked first, as the Despike step treats a spectrum on this axis.
        self.despike_ = any(isinstance(step, Despike) and spacing <= step.max_spacing for step in before)
        self.resample: Resample = pipeline.steps[at][1]
        self.after: list[Any] = [step for _, step in pipeline.steps[at + 1 :]]
        self.wavenumbers = np.asarray(wavenumbers, dtype=np.float64)
        self.y_unit, self.technique = y_unit, technique
        self._plan()

    def _plan(self) -> None:
        """The interpolation of the axis onto the grid: left band, weight, points not measured."""
        x = self.wavenumbers
        target = self.resample.grid.wavenumbers
        left = np.clip(np.searchsorted(x, target, side="right") - 1, 0, x.size - 2)
        weight = (target - x[left]) / (x[left + 1] - x[left])
        missing = (target < x[0]) | (target > x[-1])
        for gap in np.flatnonzero(np.diff(x) > self.resample.max_gap):
            missing |= (target > x[gap]) & (target < x[gap + 1])
        self.left_ = left
        self.weight_ = np.clip(weight, 0.0, 1.0).astype(np.float32)
        self.missing_ = missing
        # How the smoothing step bridges the unmeasured grid points (as its own gap filling does, but
        # once for every row): each such point's measured neighbours and weight; ends take the edge value.
        measured = np.flatnonzero(~missing)
        self.gaps_ = np.flatnonzero(missing) if measured.size >= 2 else np.zeros(0, dtype=np.intp)
        after = np.clip(np.searchsorted(measured, self.gaps_), 1, max(measured.size - 1, 1))
        lo, hi = measured[after - 1], measured[np.minimum(after, measured.size - 1)]
        self.gap_lo_, self.gap_hi_ = lo, hi
        span = np.where(hi > lo, hi - lo, 1)
        self.gap_weight_ = np.clip((self.gaps_ - lo) / span, 0.0, 1.0).astype(np.float32)
        self.box_ = box_points(median_spacing(x), self.resample.step) if self.resample.average else 1

    def absorbance(self, values: FloatMatrix) -> FloatMatrix:
        """The block's pixels as absorbance on their own axis (despiked, where the pipeline says so)."""
        if self.despike_:
            values = remove_spikes(values)[0].astype(np.float32)
        if self.floor is None:
            return values
        return absorbance_rows(values, self.y_unit, floor=self.floor)

    def grid_rows(self, absorbance: FloatMatrix) -> FloatMatrix:
        """Absorbance on the model's grid, NaN where not measured (a pixel with zero-filled runs is
        resampled as a spectrum, which leaves them out)."""
        rows = box_average_rows(absorbance, self.box_).astype(np.float32, copy=False)
        left, weight = self.left_, self.weight_
        out = rows[:, left] * (np.float32(1.0) - weight)
        out += rows[:, left + 1] * weight
        out[:, self.missing_] = np.nan
        zeros = _zero_runs(absorbance, technique=self.technique)
        for row in np.flatnonzero(zeros):
            out[row] = self._one(absorbance[row])
        return out

    def _one(self, values: FloatMatrix) -> FloatMatrix:
        """One pixel through the model's own resample step (all NaN when it is no usable spectrum)."""
        try:
            s = Spectrum.create(self.wavenumbers, values, y_unit="absorbance", technique=self.technique)
        except SpectrumError:
            return np.full(self.missing_.size, np.nan, dtype=np.float32)
        return np.asarray(self.resample.transform([s])[0], dtype=np.float32)

    def _bridged(self, X: FloatMatrix) -> tuple[FloatMatrix, npt.NDArray[np.bool_]]:
        """``X`` with the grid points the axis does not measure bridged, in the rows missing exactly
        those (all but pixels with zero-filled runs); and which rows those are."""
        nan = np.isnan(X)
        measured_all = ~nan[:, ~self.missing_].any(axis=1)
        common = np.asarray(measured_all & nan[:, self.missing_].all(axis=1), dtype=bool)
        if self.gaps_.size == 0 or not common.any():
            return X, np.zeros(len(X), dtype=bool)
        out = X.copy()
        rows = np.flatnonzero(common)
        lo, hi = out[np.ix_(rows, self.gap_lo_)], out[np.ix_(rows, self.gap_hi_)]
        out[np.ix_(rows, self.gaps_)] = lo + (hi - lo) * self.gap_weight_
        return out, common

    def features(self, grid_rows: FloatMatrix) -> FloatMatrix:
        """The model's features from rows on its grid: the pipeline's steps after the resample.

        Before a Savitzky-Golay step the unmeasured points are bridged for all rows at once and
        restored after it, which is what the step does row by row.
        """
        X: Any = grid_rows
        for step in self.after:
            if isinstance(step, SavitzkyGolay):
                bridged, rows = self._bridged(np.asarray(X, dtype=np.float32))
                X = step.transform(bridged)
                X[np.ix_(np.flatnonzero(rows), self.gaps_)] = np.nan
            else:
                X = step.transform(X)
        return np.asarray(X, dtype=np.float32)
