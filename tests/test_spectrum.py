"""Spectrum validation: every rejection carries its machine-readable reason."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from engine.core.spectrum import MIN_POINTS, Spectrum, SpectrumError, normalise_y_unit

X = np.linspace(400.0, 4000.0, 200)
Y = np.exp(-(((X - 2900.0) / 40.0) ** 2)) + 0.01 * np.sin(X / 50.0)


class TestSpectrumCreate:
    def test_valid_spectrum_keeps_values(self) -> None:
        s = Spectrum.create(X, Y, y_unit="absorbance", metadata={"source": "a.csv"})
        assert s.n_points == 200
        assert s.y_unit == "absorbance"
        np.testing.assert_array_equal(s.values, Y)
        assert s.metadata["source"] == "a.csv"

    def test_descending_axis_is_sorted_not_rejected(self) -> None:
        s = Spectrum.create(X[::-1], Y[::-1])
        np.testing.assert_array_equal(s.wavenumbers, X)
        np.testing.assert_array_equal(s.values, Y)

    def test_arrays_are_read_only(self) -> None:
        s = Spectrum.create(X, Y)
        with pytest.raises(ValueError):
            s.values[0] = 1.0

    @pytest.mark.parametrize(
        ("x", "y", "reason"),
        [
            (X, np.where(np.arange(200) == 5, np.nan, Y), "non_finite"),
            (X, np.where(np.arange(200) == 5, np.inf, Y), "non_finite"),
            (np.where(np.arange(200) == 5, np.nan, X), Y, "non_finite"),
            (X[: MIN_POINTS - 1], Y[: MIN_POINTS - 1], "too_few_points"),
            (np.concatenate([X[:100], X[:100]]), Y, "not_monotone"),
            (np.where(np.arange(200) == 50, X[49], X), Y, "not_monotone"),
            (X, Y[:-1], "length_mismatch"),
            (X, np.full(200, 3.0), "constant_signal"),
            (X * 100, Y, "implausible_range"),
            (X - 5000, Y, "implausible_range"),
        ],
    )
    def test_rejections_have_reasons(self, x: np.ndarray, y: np.ndarray, reason: str) -> None:
        with pytest.raises(SpectrumError) as info:
            Spectrum.create(x, y)
        assert info.value.reason == reason
        assert str(info.value).startswith(reason + ": ")

    def test_drop_missing_removes_nan_points(self) -> None:
        y = Y.copy()
        y[:20] = np.nan
        s = Spectrum.create(X, y, drop_missing=True)
        assert s.n_points == 180
        assert s.wavenumbers[0] == X[20]

    def test_non_numeric_input(self) -> None:
        with pytest.raises(SpectrumError) as info:
            Spectrum.create(["a"] * 20, ["b"] * 20)
        assert info.value.reason == "unreadable"

    def test_unknown_unit(self) -> None:
        with pytest.raises(SpectrumError) as info:
            Spectrum.create(X, Y, y_unit="furlongs")
        assert info.value.reason == "unknown_unit"


class TestSpectrumError:
    def test_unknown_reason_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="unknown SpectrumError reason"):
            SpectrumError("bogus", "x")

    def test_pickles_with_reason(self) -> None:
        err = pickle.loads(pickle.dumps(SpectrumError("truncated", "ends early")))
        assert err.reason == "truncated"
        assert err.message == "ends early"


class TestUnits:
    @pytest.mark.parametrize(
        ("raw", "unit"),
        [
            ("%T", "transmittance"),
            ("Transmittance", "transmittance"),
            ("ABSORBANCE", "absorbance"),
            ("Reflectance", "reflectance"),
            ("counts", "counts"),
            ("Raman intensity", "counts"),
            (None, "arbitrary"),
        ],
    )
    def test_aliases(self, raw: str | None, unit: str) -> None:
        assert normalise_y_unit(raw) == unit
