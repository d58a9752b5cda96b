"""Weathering indices: known values on synthetic spectra, the not-applicable rules, FLOPP vs FLOPP-e."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.analysis.aging_report import ENVIRONMENTAL, PRISTINE, aging_report, compare_groups
from engine.analysis.plots import plot_distributions
from engine.core.aging import INDICES, REFERENCE_BANDS, AgingIndices, aging_indices
from engine.core.spectrum import Spectrum

AXIS = np.arange(600.0, 4000.5, 2.0)
SQRT_PI = math.sqrt(math.pi)


def band(centre: float, height: float, width: float, x: np.ndarray = AXIS) -> np.ndarray:
    """A Gaussian band exp(-((x - c) / w)^2); its area is height * width * sqrt(pi)."""
    return height * np.exp(-(((x - centre) / width) ** 2))


def polyethylene(carbonyl: float = 0.0, *, hydroxyl: float = 0.0, seed: int = 0) -> np.ndarray:
    """Absorbance of a PE-like particle: C-H stretch, CH2 scissoring (reference), optional C=O and O-H."""
    rng = np.random.default_rng(seed)
    return (
        band(2915.0, 0.30, 12.0)
        + band(2848.0, 0.25, 10.0)
        + band(1466.0, 0.50, 10.0)
        + band(720.0, 0.20, 6.0)
        + band(1715.0, carbonyl, 18.0)
        + band(3400.0, hydroxyl, 120.0)
        + rng.normal(0.0, 2e-4, AXIS.size)
    )


def spectrum(values: np.ndarray, *, y_unit: str = "absorbance", technique: str | None = "ir") -> Spectrum:
    return Spectrum.create(AXIS, values, y_unit=y_unit, technique=technique)


REFERENCE_AREA = 0.50 * 10.0 * SQRT_PI


class TestKnownValues:
    def test_carbonyl_index_matches_the_hand_computed_ratio(self) -> None:
        result = aging_indices(spectrum(polyethylene(0.10)), "PE")
        expected = (0.10 * 18.0 * SQRT_PI) / REFERENCE_AREA
        assert result.carbonyl == pytest.approx(expected, rel=0.02)

    def test_hydroxyl_index_matches_the_hand_computed_ratio(self) -> None:
        result = aging_indices(spectrum(polyethylene(hydroxyl=0.02)), "PE")
        # a 120 cm-1 wide Gaussian centred at 3400 cm-1 lies within 3700-3100 cm-1 to 2.5 widths
        expected = (0.02 * 120.0 * SQRT_PI * math.erf(2.5)) / REFERENCE_AREA
        assert result.hydroxyl == pytest.approx(expected, rel=0.05)

    def test_percent_transmittance_gives_the_same_index_as_absorbance(self) -> None:
        absorbance = polyethylene(0.10)
        as_percent_t = 100.0 * 10.0 ** (-absorbance)
        from_a = aging_indices(spectrum(absorbance), "PE").carbonyl
        from_t = aging_indices(spectrum(as_percent_t, y_unit="%T"), "PE").carbonyl
        assert from_a is not None and from_t is not None
        assert from_t == pytest.approx(from_a, rel=1e-6)

    def test_raw_labels_are_canonicalised(self) -> None:
        assert aging_indices(spectrum(polyethylene(0.1)), "HDPE").polymer == "PE"
        assert aging_indices(spectrum(polyethylene(0.1)), "polypropylene").polymer == "PP"


class TestMonotone:
    def test_carbonyl_index_increases_with_band_height(self) -> None:
        heights = [0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4]
        spectra = [spectrum(polyethylene(h, seed=i)) for i, h in enumerate(heights)]
        values = [aging_indices(s, "PE").carbonyl for s in spectra]
        assert all(v is not None for v in values)
        assert np.all(np.diff(np.asarray(values, dtype=float)) > 0)

    def test_index_scales_linearly_with_band_area(self) -> None:
        low = aging_indices(spectrum(polyethylene(0.05)), "PE").carbonyl
        high = aging_indices(spectrum(polyethylene(0.20)), "PE").carbonyl
        assert low is not None and high is not None
        assert high / low == pytest.approx(4.0, rel=0.05)


class TestBaselineRobustness:
    @pytest.mark.parametrize(
        ("name", "background"),
        [
            ("offset", np.full(AXIS.size, 0.05)),
            ("slope", 2e-5 * (AXIS - 600.0)),
            ("falling slope", 0.08 - 2e-5 * (AXIS - 600.0)),
            ("ATR-like curve", 0.04 * (600.0 / AXIS) ** 2 + 1e-5 * AXIS),
        ],
    )
    def test_background_barely_moves_the_index(self, name: str, background: np.ndarray) -> None:
        flat = aging_indices(spectrum(polyethylene(0.10)), "PE")
        tilted = aging_indices(spectrum(polyethylene(0.10) + background), "PE")
        assert flat.carbonyl is not None and tilted.carbonyl is not None
        assert tilted.carbonyl == pytest.approx(flat.carbonyl, rel=0.05), name

    def test_co2_artefact_does_not_leak_into_the_index(self) -> None:
        co2 = band(2340.0, -0.03, 10.0) + band(2360.0, 0.03, 10.0)
        clean = aging_indices(spectrum(polyethylene(0.10)), "PE").carbonyl
        with_co2 = aging_indices(spectrum(polyethylene(0.10) + co2), "PE").carbonyl
        assert clean is not None and with_co2 is not None
        assert with_co2 == pytest.approx(clean, rel=0.02)


class TestNotApplicable:
    @pytest.mark.parametrize("polymer", ["PET", "PA", "PMMA", "EVA", "PU", "CA", "PC", "PLA"])
    def test_polymers_with_their_own_carbonyl_have_no_carbonyl_index(self, polymer: str) -> None:
        result = aging_indices(spectrum(polyethylene(0.1)), polymer)
        assert result.carbonyl is None
        assert "C=O" in result.not_applicable["carbonyl"]

    @pytest.mark.parametrize("polymer", ["PET", "PS", "PVC", "fur", "ABS"])
    def test_undefined_is_none_with_a_reason_never_zero(self, polymer: str) -> None:
        result = aging_indices(spectrum(polyethylene(0.1)), polymer)
        for index in INDICES:
            assert getattr(result, index) is None
            assert result.not_applicable[index].strip()

    def test_pp_has_no_vinyl_index_but_has_the_others(self) -> None:
        result = aging_indices(spectrum(polyethylene(0.1)), "PP")
        assert result.vinyl is None and "vinyl" in result.not_applicable
        assert result.carbonyl is not None and result.hydroxyl is not None

    def test_raman_spectra_are_not_applicable(self) -> None:
        result = aging_indices(spectrum(polyethylene(0.1), y_unit="counts", technique="raman"), "PE")
        assert (result.carbonyl, result.hydroxyl, result.vinyl) == (None, None, None)
        assert all("Raman" in result.not_applicable[index] for index in INDICES)

    def test_counts_are_not_applicable(self) -> None:
        result = aging_indices(spectrum(polyethylene(0.1), y_unit="counts", technique=None), "PE")
        assert result.carbonyl is None and "counts" in result.not_applicable["carbonyl"]

    def test_uncovered_window_is_not_applicable_the_rest_is_computed(self) -> None:
        keep = AXIS <= 2000.0
        s = Spectrum.create(AXIS[keep], polyethylene(0.1)[keep], y_unit="absorbance", technique="ir")
        result = aging_indices(s, "PE")
        assert result.hydroxyl is None and "does not cover" in result.not_applicable["hydroxyl"]
        assert result.carbonyl is not None and result.vinyl is not None

    def test_gap_inside_a_window_is_not_applicable(self) -> None:
        keep = (AXIS < 1700.0) | (AXIS > 1760.0)
        s = Spectrum.create(AXIS[keep], polyethylene(0.1)[keep], y_unit="absorbance", technique="ir")
        result = aging_indices(s, "PE")
        assert result.carbonyl is None and "gap" in result.not_applicable["carbonyl"]

    def test_missing_reference_band_is_not_applicable(self) -> None:
        rng = np.random.default_rng(3)
        no_ch2 = band(1715.0, 0.1, 18.0) + band(1050.0, 0.4, 30.0) + rng.normal(0.0, 2e-4, AXIS.size)
        result = aging_indices(spectrum(no_ch2), "PE")
        assert (result.carbonyl, result.hydroxyl, result.vinyl) == (None, None, None)
        assert "reference band" in result.not_applicable["carbonyl"]

    def test_every_table_row_explains_each_undefined_window_and_cites_a_source(self) -> None:
        for polymer, row in REFERENCE_BANDS.items():
            assert row.source.strip(), polymer
            for index in INDICES:
                if row.window(index) is None:
                    assert row.not_applicable.get(index), (polymer, index)

    def test_as_dict_is_json_ready(self) -> None:
        result = aging_indices(spectrum(polyethylene(0.1)), "PP")
        again = json.loads(json.dumps(result.as_dict()))
        assert again["polymer"] == "PP" and again["vinyl"] is None and "vinyl" in again["not_applicable"]
        assert isinstance(result, AgingIndices)


class TestCompareGroups:
    def test_shifted_group_is_significantly_greater(self) -> None:
        rng = np.random.default_rng(1)
        pristine = list(rng.normal(0.1, 0.05, 30))
        environmental = list(rng.normal(0.4, 0.1, 40))
        result = compare_groups(pristine, environmental)
        assert result["a"]["n"] == 30 and result["b"]["n"] == 40
        assert result["b"]["median"] > result["a"]["median"]
        assert result["p_greater"] < 1e-6 and result["p_two_sided"] < 1e-6
        assert result["u"] == pytest.approx(result["prob_b_greater"] * 30 * 40)

    def test_a_greater_than_b_is_not_significant_one_sided(self) -> None:
        result = compare_groups([0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3, 0.4])
        assert result["p_greater"] > 0.9 and result["p_two_sided"] < 0.05

    def test_not_applicable_values_are_left_out_and_counted(self) -> None:
        result = compare_groups([0.1, None, float("nan"), 0.3], [0.2, 0.4])
        assert result["a"]["n"] == 2 and result["a"]["n_excluded"] == 2
        assert result["a"]["q1"] <= result["a"]["median"] <= result["a"]["q3"]

    def test_empty_group_gives_no_test(self) -> None:
        result = compare_groups([None, None], [0.2, 0.4])
        assert result["u"] is None and result["p_greater"] is None and result["reason"]


class TestPlot:
    def test_writes_a_png(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(2)
        records: list[dict[str, Any]] = [
            {"polymer": polymer, "group": group, "carbonyl": float(value)}
            for polymer in ("PE", "PP")
            for group, centre in ((PRISTINE, 0.1), (ENVIRONMENTAL, 0.4))
            for value in rng.normal(centre, 0.05, 12)
        ]
        records.append({"polymer": "PET", "group": PRISTINE, "carbonyl": None})
        path = plot_distributions(records, tmp_path / "sub" / "aging.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_no_applicable_values_still_writes_a_png(self, tmp_path: Path) -> None:
        records = [{"polymer": "PET", "group": PRISTINE, "carbonyl": None}]
        path = plot_distributions(records, tmp_path / "a.png")
        assert path.stat().st_size > 0

    def test_unknown_index_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown index"):
            plot_distributions([], tmp_path / "a.png", index="yellowness")


@pytest.fixture(scope="module")
def flopp_report(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("aging")
    return aging_report(shared_data / "flopp_frond2021", out)


class TestFloppPristineVsEnvironmental:
    """FLOPP (pristine) vs FLOPP-e (environmental) particles; the numbers are in docs/AGING.md."""

    @pytest.mark.parametrize(("polymer", "n_pristine", "n_environmental"), [("PE", 18, 49), ("PP", 19, 66)])
    def test_every_pe_and_pp_particle_has_a_carbonyl_index(
        self, flopp_report: dict[str, Any], polymer: str, n_pristine: int, n_environmental: int
    ) -> None:
        stats = flopp_report["comparisons"][polymer]["carbonyl"]
        assert (stats["a"]["n"], stats["b"]["n"]) == (n_pristine, n_environmental)
        assert stats["a"]["n_excluded"] == 0 and stats["b"]["n_excluded"] == 0
        values = [r["carbonyl"] for r in flopp_report["records"] if r["polymer"] == polymer]
        assert all(v is not None and math.isfinite(v) for v in values)

    @pytest.mark.parametrize(
        ("polymer", "median_pristine", "median_environmental", "u"),
        [("PE", 0.092, 0.316, 766), ("PP", 0.085, 0.377, 1137)],
    )
    def test_environmental_particles_have_higher_carbonyl_indices(
        self,
        flopp_report: dict[str, Any],
        polymer: str,
        median_pristine: float,
        median_environmental: float,
        u: float,
    ) -> None:
        # What the data show (docs/AGING.md): higher in FLOPP-e, one-sided Mann-Whitney p < 0.05.
        stats = flopp_report["comparisons"][polymer]["carbonyl"]
        assert stats["a"]["median"] == pytest.approx(median_pristine, abs=0.005)
        assert stats["b"]["median"] == pytest.approx(median_environmental, abs=0.005)
        assert stats["u"] == pytest.approx(u, abs=10)
        assert stats["b"]["median"] > stats["a"]["median"]
        assert stats["p_greater"] < 0.05

    def test_hydroxyl_index_is_also_higher_in_environmental_particles(
        self, flopp_report: dict[str, Any]
    ) -> None:
        for polymer in ("PE", "PP"):
            stats = flopp_report["comparisons"][polymer]["hydroxyl"]
            assert stats["b"]["median"] > stats["a"]["median"] and stats["p_greater"] < 0.05

    def test_pe_vinyl_index_shows_no_difference(self, flopp_report: dict[str, Any]) -> None:
        # Recorded as observed: the 909 cm-1 vinyl band does not separate the groups.
        stats = flopp_report["comparisons"]["PE"]["vinyl"]
        assert stats["p_two_sided"] > 0.05

    def test_other_polymers_are_not_applicable_never_zero(self, flopp_report: dict[str, Any]) -> None:
        for record in flopp_report["records"]:
            if record["polymer"] in ("PET", "PA", "EVA", "PU", "PMMA", "CA"):
                assert record["carbonyl"] is None and record["not_applicable"]["carbonyl"]
        assert set(flopp_report["comparisons"]) == {"PE", "PP"}

    def test_writes_png_and_json(self, flopp_report: dict[str, Any]) -> None:
        png = Path(flopp_report["outputs"]["png"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        on_disk = json.loads(Path(flopp_report["outputs"]["json"]).read_text(encoding="utf-8"))
        pe_carbonyl = flopp_report["comparisons"]["PE"]["carbonyl"]
        assert on_disk["comparisons"]["PE"]["carbonyl"]["u"] == pe_carbonyl["u"]
        assert len(on_disk["records"]) == 380


class TestEvaluateCommand:
    def test_evaluate_aging_writes_the_plot_and_the_statistics(self, tmp_path: Path) -> None:
        import subprocess
        import sys

        from tests.conftest import REPO_ROOT, SHARED_DATA

        done = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "evaluate", "--aging", str(SHARED_DATA / "flopp_frond2021"),
             "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "aging" / "aging.png").stat().st_size > 10_000
        assert "Mann-Whitney" in done.stdout and "carbonyl" in done.stdout
