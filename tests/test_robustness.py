"""The robustness matrix: the renderer writes files as instruments do, and identification survives them.

The accuracy tests are the requirement of the project's issue: a set read
from files in any convention labs use is identified as well as the set read
natively (within one spectrum of ~45). The renderer's own tests check that
each file holds exactly what the convention says.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from daemon.cli import build_parser
from engine.analysis.evaluate import library_from_sources
from engine.analysis.plots import plot_conventions
from engine.analysis.renderings import (
    CONVENTIONS,
    NATIVE,
    Convention,
    by_name,
    measured_mask,
    render_set,
    render_values,
)
from engine.analysis.robustness import conventions_matrix, shortfalls, stratified_rows
from engine.io import read_spectra
from engine.io.labelled_set import LabelledSet, load_labelled_set
from engine.models.served import IdentificationModel
from tests.conftest import SHARED_DATA

FLOPP = SHARED_DATA / "flopp_frond2021"

#: The fast subset of the matrix: the renderings of the issue that a lab delivers most often.
FAST = (
    by_name("pct_t"),
    by_name("t_fraction_no_header"),
    by_name("absorbance_max100"),
    by_name("pct_t_decimal_comma"),
    by_name("absorbance_975_1800"),
    by_name("pct_t_8cm_noise"),
)
#: A unit header declares the unit: the control, which must hold today.
CONTROL = by_name("pct_t_unit_header")

#: About 45 FLOPP-e particles: at most 5 per label, drawn with a fixed seed.
PER_CLASS = 5


@pytest.fixture(scope="module")
def flopp(shared_data: Path) -> LabelledSet:
    return load_labelled_set(shared_data / "flopp_frond2021")


def _rows(data: LabelledSet, n: int = 5) -> npt.NDArray[np.float64]:
    """The first ``n`` rows of PP, the most common class: FLOPP rows with a zero-filled edge."""
    picked = [i for i, label in enumerate(data.labels) if label == "PP"][:n]
    return np.asarray(data.spectra[picked], dtype=np.float64)


class TestConvention:
    def test_the_matrix_covers_the_issue(self) -> None:
        names = {c.name for c in CONVENTIONS}
        assert len(names) == len(CONVENTIONS)
        ys = {c.y for c in CONVENTIONS}
        assert ys == {
            "percent_transmittance",
            "transmittance",
            "absorbance",
            "absorbance_max1",
            "absorbance_max100",
        }
        assert {c.header for c in CONVENTIONS} == {"none", "bare", "unit"}
        assert any(c.decimal == "," and c.delimiter == ";" for c in CONVENTIONS)
        assert {c.x_range for c in CONVENTIONS} >= {(975.0, 1800.0), (1200.0, 3200.0)}
        assert {c.step for c in CONVENTIONS if c.noise} == {4.0, 8.0, 16.0}
        # every y convention is written with a bare header: no unit declared
        for y in ys:
            assert any(c.y == y and c.header == "bare" and c.x_range is c.step is None for c in CONVENTIONS)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"y": "kubelka-munk"},
            {"header": "units"},
            {"delimiter": ",", "decimal": ","},
            {"x_range": (1800.0, 975.0)},
            {"step": 0.0},
            {"noise": -0.01},
        ],
    )
    def test_an_impossible_convention_is_refused(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValueError):
            Convention("bad", **kwargs)

    def test_unknown_name(self) -> None:
        with pytest.raises(KeyError, match="no convention"):
            by_name("jcamp")


class TestRenderSet:
    def test_pct_t_parses_back_to_the_measured_points(self, flopp: LabelledSet, tmp_path: Path) -> None:
        rows = _rows(flopp)
        paths = render_set(rows, flopp.wavenumbers, by_name("pct_t"), tmp_path, seed=0, y_units="%T")
        assert [p.name for p in paths] == [f"{i:05d}.csv" for i in range(len(rows))]
        for row, path in zip(rows, paths, strict=True):
            keep = measured_mask(row, y_unit="%T")
            assert not keep.all(), "a FLOPP row with a zero-filled edge is the point of this test"
            spectrum = read_spectra(path)[0]
            np.testing.assert_allclose(spectrum.wavenumbers, flopp.wavenumbers[keep], atol=5e-5)
            np.testing.assert_allclose(spectrum.values, row[keep], rtol=1e-5)
            assert np.all(spectrum.values > 0), "zero-filled (not measured) points are dropped"

    def test_units_are_converted(self, flopp: LabelledSet, tmp_path: Path) -> None:
        row = _rows(flopp, 1)
        keep = measured_mask(row[0], y_unit="%T")
        pct_t = row[0][keep]
        absorbance = -np.log10(np.clip(pct_t, 0.01, None) / 100.0)
        expected = {
            "t_fraction": pct_t / 100.0,
            "absorbance": absorbance,
            "absorbance_max1": absorbance / absorbance.max(),
            "absorbance_max100": 100.0 * absorbance / absorbance.max(),
        }
        for name, values in expected.items():
            [path] = render_set(row, flopp.wavenumbers, by_name(name), tmp_path / name, seed=0, y_units="%T")
            np.testing.assert_allclose(read_spectra(path)[0].values, values, rtol=1e-5, atol=1e-9)

    def test_absorbance_becomes_a_realistic_pct_t(self, tmp_path: Path) -> None:
        x = np.linspace(400.0, 4000.0, 1801)
        absorbance = 0.2 + 0.8 * np.exp(-(((x - 1716.0) / 12.0) ** 2))
        absorbance[:50] = np.nan  # not measured
        [path] = render_set(absorbance, x, by_name("pct_t"), tmp_path, seed=0, y_units="absorbance")
        spectrum = read_spectra(path)[0]
        assert spectrum.n_points == 1801 - 50
        assert spectrum.values.max() == pytest.approx(100.0)
        assert spectrum.values.min() == pytest.approx(10.0, rel=1e-4)

    def test_headers(self, flopp: LabelledSet, tmp_path: Path) -> None:
        row = _rows(flopp, 1)
        first = {}
        for name in ("pct_t", "pct_t_unit_header", "pct_t_no_header"):
            [path] = render_set(row, flopp.wavenumbers, by_name(name), tmp_path / name, seed=0, y_units="%T")
            first[name] = path.read_text(encoding="utf-8").splitlines()[0]
        assert first["pct_t"] == "wavenumber,intensity"
        assert first["pct_t_unit_header"] == "wavenumber (cm-1),%T"
        keep = measured_mask(row[0], y_unit="%T")
        expected = [flopp.wavenumbers[keep][0], row[0][keep][0]]
        assert [float(v) for v in first["pct_t_no_header"].split(",")] == pytest.approx(expected, rel=1e-5)
        assert not any(ch.isalpha() for ch in first["pct_t_no_header"])
        [path] = render_set(row, flopp.wavenumbers, CONTROL, tmp_path / "control", seed=0, y_units="%T")
        assert read_spectra(path)[0].y_unit == "transmittance", "a declared unit is read"

    def test_decimal_comma(self, flopp: LabelledSet, tmp_path: Path) -> None:
        row = _rows(flopp, 1)
        convention = by_name("pct_t_decimal_comma")
        [path] = render_set(row, flopp.wavenumbers, convention, tmp_path / "comma", seed=0, y_units="%T")
        [plain] = render_set(
            row, flopp.wavenumbers, by_name("pct_t"), tmp_path / "plain", seed=0, y_units="%T"
        )
        header, *lines = path.read_text(encoding="utf-8").splitlines()
        assert header == "wavenumber;intensity"
        for line in lines:
            wavenumber, value = line.split(";")
            assert "." not in line and "," in wavenumber
            assert float(wavenumber.replace(",", ".")) > 0 and float(value.replace(",", ".")) > 0
        a, b = read_spectra(path)[0], read_spectra(plain)[0]
        np.testing.assert_array_equal(a.wavenumbers, b.wavenumbers)
        np.testing.assert_array_equal(a.values, b.values)

    @pytest.mark.parametrize("name", ["absorbance_975_1800", "pct_t_1200_3200"])
    def test_the_cut_cuts(self, flopp: LabelledSet, tmp_path: Path, name: str) -> None:
        convention = by_name(name)
        assert convention.x_range is not None
        lo, hi = convention.x_range
        step = float(np.median(np.diff(flopp.wavenumbers)))
        for path in render_set(_rows(flopp), flopp.wavenumbers, convention, tmp_path, seed=0, y_units="%T"):
            x = read_spectra(path)[0].wavenumbers
            assert lo <= x[0] <= lo + step and hi - step <= x[-1] <= hi

    def test_resampling_and_noise(self, flopp: LabelledSet, tmp_path: Path) -> None:
        row = _rows(flopp, 1)[0]
        convention = by_name("pct_t_8cm_noise")
        x_clean, y_clean = render_values(flopp.wavenumbers, row, Convention("clean", step=8.0), y_unit="%T")
        x, y = render_values(flopp.wavenumbers, row, convention, y_unit="%T", rng=np.random.default_rng(1))
        np.testing.assert_array_equal(x, x_clean)
        assert np.all(np.diff(x) == 8.0) and np.all(x % 8.0 == 0)
        noise = np.std(y - y_clean)
        assert noise == pytest.approx(0.01 * np.ptp(y_clean), rel=0.15)
        with pytest.raises(ValueError, match="rng"):
            render_values(flopp.wavenumbers, row, convention, y_unit="%T")

    def test_noise_is_seeded_per_row(self, flopp: LabelledSet, tmp_path: Path) -> None:
        rows = _rows(flopp, 3)
        convention = by_name("pct_t_4cm_noise")
        a = render_set(rows, flopp.wavenumbers, convention, tmp_path / "a", seed=7, y_units="%T")
        b = render_set(rows[:2], flopp.wavenumbers, convention, tmp_path / "b", seed=7, y_units="%T")
        c = render_set(rows, flopp.wavenumbers, convention, tmp_path / "c", seed=8, y_units="%T")
        moved = render_set(rows[1:2], flopp.wavenumbers, convention, tmp_path / "m", seed=7, y_units="%T")
        # row i's noise is drawn from (seed, i): the rows rendered with it do not change it
        assert [p.read_bytes() for p in b] == [p.read_bytes() for p in a[:2]]
        assert a[0].read_bytes() != c[0].read_bytes()
        assert a[1].read_bytes() != moved[0].read_bytes()
        # the same noise-free values underneath: only the noise differs between seeds
        x_a, y_a = read_spectra(a[0])[0].wavenumbers, read_spectra(a[0])[0].values
        x_c, y_c = read_spectra(c[0])[0].wavenumbers, read_spectra(c[0])[0].values
        np.testing.assert_array_equal(x_a, x_c)
        assert np.std(y_a - y_c) < 0.03 * np.ptp(y_a)

    def test_labels_kept_apart(self, flopp: LabelledSet, tmp_path: Path) -> None:
        paths = render_set(
            _rows(flopp, 2),
            flopp.wavenumbers,
            by_name("pct_t"),
            tmp_path,
            seed=0,
            y_units="%T",
            labels=["PP", "PP"],
        )
        assert (tmp_path / "labels.csv").read_text(encoding="utf-8").splitlines() == [
            "file,label",
            f"{paths[0].name},PP",
            f"{paths[1].name},PP",
        ]
        assert all("PP" not in p.read_text(encoding="utf-8") for p in paths)

    def test_only_ir_units(self, tmp_path: Path) -> None:
        x = np.linspace(100.0, 3500.0, 200)
        with pytest.raises(ValueError, match="transmittance and absorbance"):
            render_set(np.sin(x / 100.0) + 2, x, by_name("pct_t"), tmp_path, seed=0, y_units="counts")


class TestStratifiedRows:
    def test_at_most_per_class_and_reproducible(self) -> None:
        labels = ["PE"] * 10 + ["PP"] * 2 + ["PS"] * 5
        rows = stratified_rows(labels, per_class=3, seed=0)
        assert rows == sorted(rows) == stratified_rows(labels, per_class=3, seed=0)
        assert [labels[i] for i in rows].count("PE") == 3
        assert [labels[i] for i in rows].count("PP") == 2
        assert stratified_rows(labels, per_class=None, seed=0) == list(range(len(labels)))


@pytest.fixture(scope="module")
def matrix(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """~40 FLOPP-e particles natively and in the fast subset, identified across sources (FLOPP pristine).

    The canonical cross-source pair: on it every convention of the fast subset holds the
    issue's bar. With the bundled library, cutting to 975-1800 cm-1 costs 1.5 points on
    FLOPP (README "Robustness matrix"), so the bar is kept where it is met, not lowered.
    """
    model = IdentificationModel(library_from_sources([f"{shared_data / 'flopp_frond2021'}@library=FLOPP"]))
    return conventions_matrix(
        model,
        [f"{shared_data / 'flopp_frond2021'}@library=FLOPP-e"],
        [*FAST, CONTROL],
        workdir=tmp_path_factory.mktemp("renderings"),
        per_class=PER_CLASS,
        seed=0,
    )


def _correct(entry: dict[str, Any]) -> int:
    return round(entry["accuracy"] * entry["n"])


class TestConventionsMatrix:
    def test_the_subset_and_its_native_accuracy(self, matrix: dict[str, Any]) -> None:
        [test] = matrix["sets"].values()
        assert 35 <= test["n_scored"] <= 50
        assert test["n_skipped"] == test["n_rendered"] - test["n_scored"] > 0
        # FLOPP-e particles of classes no FLOPP pristine reference has
        assert set(test["skipped_labels"]) <= {"CA", "EAA", "PMMA", "sr"}
        native = test["scores"][NATIVE]
        assert native["read_as"] == {"transmittance": test["n_rendered"]}
        assert native["accuracy"] >= 0.75

    def test_a_declared_unit_is_as_good_as_native(self, matrix: dict[str, Any]) -> None:
        [test] = matrix["sets"].values()
        entry = test["scores"][CONTROL.name]
        assert entry["unreadable"] == 0
        assert _correct(entry) >= _correct(test["scores"][NATIVE]) - 1, entry

    @pytest.mark.parametrize("convention", [c.name for c in FAST])
    def test_at_most_one_spectrum_worse_than_native(self, matrix: dict[str, Any], convention: str) -> None:
        """The issue's requirement: accuracy in every convention within 1 point of native (1 of ~40 here)."""
        [test] = matrix["sets"].values()
        native, entry = test["scores"][NATIVE], test["scores"][convention]
        assert entry["unreadable"] == 0, entry
        assert _correct(entry) >= _correct(native) - 1, (
            f"{convention}: accuracy {entry['accuracy']:.3f} vs native {native['accuracy']:.3f} "
            f"({entry['delta_points']:+.1f} points; closed-set {entry['closed_set_accuracy']:.3f}, "
            f"rejected {entry['rejected']:.3f}, low quality {entry['low_quality']:.3f}, "
            f"read as {entry['read_as']})"
        )

    def test_the_report_shows_the_unit_inferred(self, matrix: dict[str, Any]) -> None:
        [test] = matrix["sets"].values()
        rendered = test["n_rendered"]
        assert test["scores"]["pct_t"]["identified_as"] == {"transmittance (inferred)": rendered}
        assert test["scores"]["absorbance_max100"]["identified_as"] == {"absorbance (inferred)": rendered}
        assert test["scores"][CONTROL.name]["identified_as"] == {"transmittance (declared)": rendered}

    def test_report_and_plot(self, matrix: dict[str, Any], tmp_path: Path) -> None:
        [test] = matrix["sets"].values()
        assert list(test["scores"]) == [NATIVE, *(c.name for c in (*FAST, CONTROL))]
        for name, entry in test["scores"].items():
            assert entry["n"] == test["n_scored"]
            assert not math.isnan(entry["accuracy"])
            assert 0 <= entry["accuracy"] <= entry["closed_set_accuracy"]
            if name != NATIVE:
                assert entry["within_tolerance"] == (entry["delta_points"] >= -matrix["tolerance_points"])
        assert {(s, c) for s, c, _ in shortfalls(matrix)} == {
            (s, c)
            for s, t in matrix["sets"].items()
            for c, e in t["scores"].items()
            if c != NATIVE and not e["within_tolerance"]
        }
        png = plot_conventions(matrix, tmp_path / "conventions.png", title="fast subset")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class TestCommandLine:
    def test_evaluate_conventions_option(self) -> None:
        args = build_parser().parse_args(
            ["evaluate", "--conventions", "--test", str(FLOPP), "--out", "artifacts/evaluate/conventions"]
        )
        assert args.conventions and args.test == [str(FLOPP)] and args.library is None

    def test_conventions_needs_a_test_set(self, tmp_path: Path) -> None:
        args = build_parser().parse_args(["evaluate", "--conventions", "--out", str(tmp_path)])
        with pytest.raises(SystemExit, match="give --test"):
            args.func(args)
