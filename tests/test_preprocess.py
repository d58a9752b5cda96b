"""Preprocessing transformers: units, resampling with gaps, derivatives, normalisation, pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import savgol_filter

from engine.core.preprocess import (
    Absolute,
    BaselineCorrection,
    FillMissing,
    FlattenRegion,
    Grid,
    Normalise,
    Resample,
    SavitzkyGolay,
    ToAbsorbance,
    build_pipeline,
    transform,
)
from engine.core.spectrum import Spectrum
from engine.io import read_spectra
from tests.conftest import SHARED_DATA

X = np.linspace(400.0, 4000.0, 1801)


def band(centre: float, width: float = 20.0) -> np.ndarray:
    return np.exp(-((X - centre) / width) ** 2)


class TestToAbsorbance:
    def test_percent_transmittance(self) -> None:
        s = Spectrum.create(X, 100 * 10 ** (-band(2900)), y_unit="%T")
        (a,) = ToAbsorbance().transform([s])
        assert a.y_unit == "absorbance"
        np.testing.assert_allclose(a.values, band(2900), atol=1e-9)

    def test_fractional_transmittance(self) -> None:
        s = Spectrum.create(X, 10 ** (-band(1700)), y_unit="transmittance")
        (a,) = ToAbsorbance().transform([s])
        np.testing.assert_allclose(a.values, band(1700), atol=1e-9)

    def test_reflectance_is_log_inverse(self) -> None:
        s = Spectrum.create(X, 0.2 + 0.5 * band(1000), y_unit="reflectance")
        (a,) = ToAbsorbance().transform([s])
        np.testing.assert_allclose(a.values, np.log10(1 / (0.2 + 0.5 * band(1000))))

    def test_zero_transmittance_is_clipped_not_infinite(self) -> None:
        s = Spectrum.create(X, np.where(band(2900) > 0.5, 0.0, 80.0) + band(1000), y_unit="%T")
        (a,) = ToAbsorbance().transform([s])
        assert np.isfinite(a.values).all()

    def test_absorbance_and_counts_pass_through(self) -> None:
        s = Spectrum.create(X, band(1000), y_unit="counts")
        assert ToAbsorbance().transform([s])[0] is s


class TestResample:
    def test_interpolates_onto_the_grid(self) -> None:
        s = Spectrum.create(X, band(2000, 100))
        row = Resample(start=500, stop=3500, step=5).transform([s])[0]
        grid = Grid(500, 3500, 5).wavenumbers
        np.testing.assert_allclose(row, np.exp(-((grid - 2000) / 100) ** 2), atol=1e-4)

    def test_outside_the_measured_range_is_missing(self) -> None:
        s = Spectrum.create(X[X > 1000], band(2000)[X > 1000] + 0.01)
        row = Resample().transform([s])[0]
        grid = Grid(400, 4000, 4).wavenumbers
        assert np.isnan(row[grid < 1000]).all()
        assert np.isfinite(row[grid > 1002]).all()

    def test_wide_gaps_are_missing_not_bridged(self) -> None:
        keep = (X < 1800) | (X > 2000)
        s = Spectrum.create(X[keep], band(2500)[keep] + 0.1)
        row = Resample().transform([s])[0]
        grid = Grid(400, 4000, 4).wavenumbers
        assert np.isnan(row[(grid > 1802) & (grid < 1998)]).all()

    def test_zero_filled_stretches_are_missing(self) -> None:
        y = band(2500) + 0.1
        y[X < 700] = 0.0
        row = Resample().transform([Spectrum.create(X, y)])[0]
        grid = Grid(400, 4000, 4).wavenumbers
        assert np.isnan(row[grid < 698]).all()
        assert np.isfinite(row[grid > 702]).all()

    def test_flopp_zero_edges_do_not_become_signal(self, shared_data: object) -> None:
        spectra = read_spectra(SHARED_DATA / "flopp_frond2021")
        rows = build_pipeline("default")[:2].transform(spectra[:20])
        grid = Grid(400, 4000, 4).wavenumbers
        assert np.isnan(rows[:, grid < 670]).all()


class TestMatrixSteps:
    def test_savgol_matches_scipy_away_from_edges(self) -> None:
        M = np.vstack([band(1000), band(2000, 50)]).astype(np.float32)
        ours = SavitzkyGolay(window=11, polyorder=3, deriv=1).transform(M)
        ref = savgol_filter(M, 11, 3, deriv=1, axis=1)
        np.testing.assert_allclose(ours[:, 10:-10], ref[:, 10:-10], atol=1e-6)

    def test_savgol_keeps_gaps_missing(self) -> None:
        M = band(1000)[None, :].astype(np.float32).copy()
        M[0, 100:200] = np.nan
        out = SavitzkyGolay(window=9, polyorder=2, deriv=1).transform(M)
        assert np.isnan(out[0, 100:200]).all()
        assert np.isfinite(out[0, :100]).all()

    def test_savgol_rejects_even_window(self) -> None:
        with pytest.raises(ValueError, match="odd"):
            SavitzkyGolay(window=10).fit(None)

    @pytest.mark.parametrize("method", ["snv", "minmax", "l2"])
    def test_normalise_ignores_missing(self, method: str) -> None:
        M = np.vstack([band(1000), 3 * band(1000) + 1]).astype(np.float32)
        M[:, :50] = np.nan
        out = Normalise(method=method).transform(M)
        assert np.isnan(out[:, :50]).all()
        if method == "snv":
            np.testing.assert_allclose(out[0, 50:], out[1, 50:], atol=1e-4)
        if method == "minmax":
            assert np.nanmin(out) == pytest.approx(0.0) and np.nanmax(out) == pytest.approx(1.0)
        if method == "l2":
            np.testing.assert_allclose(np.nansum(out**2, axis=1), 1.0, rtol=1e-5)

    def test_normalise_rejects_unknown_method(self) -> None:
        with pytest.raises(ValueError, match="not one of"):
            Normalise(method="max").fit(None)

    def test_flatten_co2_is_a_straight_line(self) -> None:
        grid = Grid(400, 4000, 4)
        wn = grid.wavenumbers
        M = (np.exp(-((wn - 2350) / 15) ** 2) + wn / 4000)[None, :].astype(np.float32)
        out = FlattenRegion().transform(M)
        inside = (wn >= 2280) & (wn <= 2400)
        np.testing.assert_allclose(np.diff(out[0, inside], 2), 0, atol=1e-5)
        np.testing.assert_array_equal(out[0, ~inside], M[0, ~inside])

    def test_baseline_removes_a_slope(self) -> None:
        grid = Grid(400, 4000, 4)
        wn = grid.wavenumbers
        bands = np.exp(-((wn - 1700) / 15) ** 2) + np.exp(-((wn - 2900) / 20) ** 2)
        M = (bands + 0.5 + wn / 2000)[None, :].astype(np.float32)
        out = BaselineCorrection().transform(M)[0]
        far = np.abs(wn - 1700) > 200
        far &= np.abs(wn - 2900) > 200
        assert np.abs(out[far]).max() < 0.05
        assert out[np.argmin(np.abs(wn - 1700))] > 0.8

    def test_absolute_and_fill(self) -> None:
        M = np.array([[-1.0, np.nan, 2.0]], dtype=np.float32)
        np.testing.assert_array_equal(FillMissing().transform(Absolute().transform(M)), [[1.0, 0.0, 2.0]])


class TestPipelines:
    @pytest.mark.parametrize("name", ["default", "openspecy", "baseline"])
    def test_real_library_gives_finite_features(self, name: str, shared_data: object) -> None:
        spectra = read_spectra(SHARED_DATA / "openspecy_ftir_2023")[:40]
        pipe = build_pipeline(name)
        Xf = transform(pipe, spectra)
        assert Xf.shape == (40, pipe.named_steps["resample"].grid.wavenumbers.size)
        assert np.isfinite(Xf).all()

    def test_fast_path_equals_sklearn_pipeline(self, shared_data: object) -> None:
        spectra = read_spectra(SHARED_DATA / "flopp_frond2021")[:10]
        pipe = build_pipeline("default")
        np.testing.assert_array_equal(transform(pipe, spectra), pipe.transform(spectra))

    def test_openspecy_preset_is_the_documented_recipe(self) -> None:
        pipe = build_pipeline("openspecy")
        assert pipe.named_steps["resample"].step == 5.0
        sg = pipe.named_steps["derivative"]
        assert (sg.window, sg.polyorder, sg.deriv) == (11, 3, 1)
        assert "absolute" in pipe.named_steps
        assert pipe.named_steps["normalise"].method == "minmax"

    def test_unknown_pipeline(self) -> None:
        with pytest.raises(ValueError, match="unknown pipeline"):
            build_pipeline("magic")

    def test_units_do_not_matter_after_preprocessing(self) -> None:
        absorbance = 0.05 + band(2900) + 0.5 * band(1460)
        a = Spectrum.create(X, absorbance, y_unit="absorbance")
        t = Spectrum.create(X, 100 * 10 ** (-absorbance), y_unit="%T")
        pipe = build_pipeline("default")
        np.testing.assert_allclose(transform(pipe, [a]), transform(pipe, [t]), atol=1e-5)
