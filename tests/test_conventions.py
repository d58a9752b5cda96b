"""Conventions inferred, never assumed: y unit, scale, technique, range, and a relative quality gate.

Real spectra from ../shared/data are rendered in other labs' conventions (the
labels do not change) and must come out as the native form does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.analysis.evaluate import library_from_sources, load_source
from engine.analysis.renderings import by_name, render_values
from engine.core.conventions import AcquisitionProfile, infer_technique, infer_y_unit, resolve
from engine.core.labels import scoring_label
from engine.core.library import DEFAULT_LIBRARY, DEFAULT_RAMAN_LIBRARY, LibraryError, ReferenceLibrary
from engine.core.preprocess import Resample
from engine.core.spectrum import Spectrum
from engine.io import read_spectra
from engine.io.labelled_set import load_labelled_set
from engine.models.openset import MAX_SNR, QualityGate
from engine.models.ranges import RangeModelCache, route
from engine.models.served import IdentificationModel, ModelConfig, serving
from tests.conftest import SHARED_DATA

FAST = ModelConfig(n_synthetic=10, n_learners=10)


def _measured_rows(name: str, *, every: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
    data = load_labelled_set(SHARED_DATA / name)
    for i in range(0, len(data), every):
        row = data.spectra[i].astype(np.float64)
        keep = ~np.isnan(row) & (row != 0)
        yield data.wavenumbers[keep], row[keep], data.labels[i]


def _absorbance_from_percent(y: np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(y / 100.0, 1e-4, None))


class TestUnitInference:
    """Undeclared units judged by shape: bands up or down, baseline low or high."""

    @pytest.mark.parametrize(
        ("name", "render", "expected"),
        [
            ("flopp_frond2021", lambda y: y, "transmittance"),  # %T, 0-100
            ("flopp_frond2021", lambda y: y / 100.0, "transmittance"),  # T, 0-1
            ("flopp_frond2021", lambda y: _absorbance_from_percent(y), "absorbance"),
            ("villegas_camacho2024_c8", lambda y: y, "transmittance"),
            ("openspecy_ftir_2023", lambda y: y, "absorbance"),  # normalised to max 1
            ("openspecy_ftir_2023", lambda y: 100.0 * y, "absorbance"),  # scaled to max 100
            ("openspecy_ftir_2023", lambda y: 0.3 + 1.5 * y, "absorbance"),  # raw, with an offset
            ("openspecy_ftir_2023", lambda y: 100.0 * 10 ** (-0.5 * y), "transmittance"),
        ],
    )
    def test_real_spectra_in_other_units(self, name: str, render: object, expected: str) -> None:
        every = 10 if name == "villegas_camacho2024_c8" else 2
        rows = list(_measured_rows(name, every=every))
        wrong = [
            i
            for i, (x, y, _) in enumerate(rows)
            if resolve(Spectrum.create(x, render(y))).y_unit != expected  # type: ignore[operator]
        ]
        assert len(wrong) <= 0.01 * len(rows), f"{len(wrong)} of {len(rows)} misread"

    def test_ldir_window_is_judged_too(self) -> None:
        rows = list(_measured_rows("flopp_frond2021"))
        wrong = 0
        for x, y, _ in rows:
            inside = (x >= 975) & (x <= 1800)
            wrong += resolve(Spectrum.create(x[inside], y[inside])).y_unit != "transmittance"
        assert wrong <= 0.01 * len(rows)

    def test_result_records_what_was_inferred_and_how_sure(self) -> None:
        x, y, _ = next(_measured_rows("flopp_frond2021"))
        s = resolve(Spectrum.create(x, y))
        assert s.metadata["y_unit_source"] == "inferred"
        assert 0.5 < s.metadata["y_unit_confidence"] <= 1.0
        assert "unit_uncertain" not in s.metadata

    def test_declared_unit_wins_over_the_data(self) -> None:
        x, y, _ = next(_measured_rows("flopp_frond2021"))
        s = resolve(Spectrum.create(x, y, y_unit="%T"))
        assert (s.y_unit, s.metadata["y_unit_source"]) == ("transmittance", "declared")

    def test_profile_wins_over_the_file(self) -> None:
        x, y, _ = next(_measured_rows("flopp_frond2021"))
        s = resolve(Spectrum.create(x, y, y_unit="absorbance"), profile=AcquisitionProfile(y_unit="%T"))
        assert (s.y_unit, s.metadata["y_unit_source"]) == ("transmittance", "profile")

    @pytest.mark.parametrize("declared", ["log(1/R)", "Kubelka-Munk", "KM"])
    def test_reflectance_transforms_read_as_absorbance(self, declared: str) -> None:
        x, y, _ = next(_measured_rows("openspecy_ftir_2023"))
        s = resolve(Spectrum.create(x, y, y_unit=declared))
        assert (s.y_unit, s.metadata["y_unit_source"]) == ("absorbance", "declared")

    def test_ambiguous_shape_is_flagged_not_dropped(self) -> None:
        x = np.linspace(600.0, 4000.0, 1701)
        s = resolve(Spectrum.create(x, np.sin(x / 40.0)))  # no band points either way
        assert s.metadata.get("unit_uncertain") is True
        assert s.y_unit in ("absorbance", "transmittance")
        assert infer_y_unit(s).uncertain

    def test_resolve_is_idempotent(self) -> None:
        x, y, _ = next(_measured_rows("flopp_frond2021"))
        once = resolve(Spectrum.create(x, y))
        assert resolve(once, profile=AcquisitionProfile(y_unit="absorbance")) is once

    def test_bare_intensity_header_declares_nothing(self, tmp_path: Path) -> None:
        x, y, _ = next(_measured_rows("flopp_frond2021"))
        path = tmp_path / "particle.csv"
        rows = "".join(f"{a:.2f};{b:.3f}\n" for a, b in zip(x, y, strict=True))
        path.write_text("wavenumber;intensity\n" + rows)
        (spectrum,) = read_spectra(path)
        assert spectrum.y_unit == "arbitrary"
        assert resolve(spectrum).y_unit == "transmittance"


class TestTechnique:
    def test_a_counts_header_declares_raman(self, tmp_path: Path) -> None:
        x = np.arange(400.0, 3200.0, 2.0)  # starts where IR starts too: only the header tells
        path = tmp_path / "raman.csv"
        rows = "".join(f"{a},{1000 + 500 * np.exp(-(((a - 1000) / 5) ** 2)):.3f}\n" for a in x)
        path.write_text("wavenumber,counts\n" + rows)
        (spectrum,) = read_spectra(path)
        resolved = resolve(spectrum)
        assert (resolved.technique, resolved.y_unit, resolved.metadata["y_unit_source"]) == (
            "raman",
            "counts",
            "declared",
        )

    def test_raman_shift_axis_is_raman(self) -> None:
        x = np.linspace(150.0, 3400.0, 1626)
        assert infer_technique(Spectrum.create(x, np.exp(-(((x - 1000) / 5) ** 2)) + 0.1)) == "raman"

    def test_mid_ir_axis_is_ir(self) -> None:
        x = np.linspace(650.0, 4000.0, 1676)
        assert infer_technique(Spectrum.create(x, np.exp(-(((x - 1000) / 5) ** 2)) + 0.1)) == "ir"

    def test_declared_counts_are_raman(self) -> None:
        x = np.linspace(400.0, 3200.0, 1401)
        s = Spectrum.create(x, np.exp(-(((x - 1000) / 5) ** 2)) + 0.1, y_unit="counts")
        assert infer_technique(s) == "raman"

    def test_profile_states_the_technique(self) -> None:
        x = np.linspace(400.0, 3200.0, 1401)
        s = resolve(
            Spectrum.create(x, np.exp(-(((x - 1000) / 5) ** 2)) + 0.1), profile=AcquisitionProfile("raman")
        )
        assert (s.technique, s.metadata["technique_source"], s.y_unit) == ("raman", "profile", "counts")

    def test_profile_range_cuts_the_spectrum(self) -> None:
        x, y, _ = next(_measured_rows("flopp_frond2021"))
        s = resolve(Spectrum.create(x, y), profile=AcquisitionProfile(range=(975.0, 1800.0)))
        assert s.wavenumbers[0] >= 975.0 and s.wavenumbers[-1] <= 1800.0


class TestQualityGateIsRelative:
    """Saturation is a flat top, never an absolute value; S/N is always finite."""

    def _row(self) -> np.ndarray:
        x, y, _ = next(_measured_rows("flopp_frond2021"))
        grid = np.arange(400.0, 4000.1, 4.0)
        return np.interp(grid, x, _absorbance_from_percent(y), left=np.nan, right=np.nan)

    def test_absorbance_scaled_to_100_is_not_saturated(self) -> None:
        row = self._row()
        for scale in (1.0, 100.0, 1000.0):
            report = QualityGate().assess(scale * row / np.nanmax(row))
            assert "saturated" not in report.flags, scale

    def test_clipped_band_is_saturated(self) -> None:
        row = self._row()
        top = np.nanpercentile(row, 97)
        assert "saturated" in QualityGate().assess(np.minimum(row, top)).flags

    def test_flat_spectrum_with_one_spike_has_finite_snr(self) -> None:
        row = np.full(901, 0.5)
        row[450] = 3.0
        report = QualityGate().assess(row, native=row)
        assert np.isfinite(report.snr) and report.snr <= MAX_SNR
        json.dumps(report.as_dict(), allow_nan=False)

    def test_noiseless_spectrum_has_finite_snr(self) -> None:
        x = np.arange(400.0, 4000.1, 4.0)
        report = QualityGate().assess(np.exp(-(((x - 1700) / 400) ** 2)))
        assert np.isfinite(report.snr)


class TestRamanAsACcdWritesIt:
    """Counts on a 1 cm-1 axis, a fluorescence background, a cosmic ray: the polymer still shows."""

    def test_a_raman_fluorescence_background_is_no_saturation_a_clipped_ccd_is(self) -> None:
        """Half of the Raman references on a broad fluorescence hump came out ``saturated``."""
        data = load_labelled_set(SHARED_DATA / "openspecy_raman_polymers_2023")
        row = data.spectra[259].astype(np.float64)  # a PE reference
        keep = ~np.isnan(row)
        x = np.arange(100.0, 3200.1, 1.0)
        y = np.interp(x, data.wavenumbers[keep], row[keep], left=np.nan, right=np.nan)
        x, y = x[~np.isnan(y)], (y[~np.isnan(y)] - np.nanmin(y)) / np.nanmax(y - np.nanmin(y))
        hump = 0.8 + 0.6 * (x - x[0]) / np.ptp(x) + 0.5 * np.exp(-(((x - 1800) / 900) ** 2))
        counts = 2000 * y + 3000 * hump + 200
        model = IdentificationModel(ReferenceLibrary.load(DEFAULT_RAMAN_LIBRARY), FAST)
        fluorescent = Spectrum.create(x, counts, y_unit="counts", technique="raman")
        (result,) = model.classify([fluorescent])
        assert result.status == "known" and result.label == "PE", result.quality
        inside = (x > 400) & (x < 1900)  # the window where most Raman references were measured
        clipped = fluorescent.with_values(np.minimum(counts, np.percentile(counts[inside], 97)))
        assert "saturated" in model.classify([clipped])[0].quality["flags"]

    def test_a_cosmic_ray_on_a_grid_point_does_not_hide_the_polymer(self) -> None:
        """One spike at 1501 cm-1 (a grid point of the Raman range model) took a PE reference from r 1.00
        to 0.45 and unknown; at 1500 or 1502 it changed nothing."""
        data = load_labelled_set(SHARED_DATA / "openspecy_raman_polymers_2023")
        model = IdentificationModel(ReferenceLibrary.load(DEFAULT_RAMAN_LIBRARY), FAST)
        for index, label in ((259, "PE"), (11, "PP"), (261, "PS")):
            row = data.spectra[index].astype(np.float64)
            keep = ~np.isnan(row)
            x = np.arange(100.0, 3200.1, 1.0)  # a CCD's 1 cm-1 axis
            y = np.interp(x, data.wavenumbers[keep], row[keep], left=np.nan, right=np.nan)
            x, y = x[~np.isnan(y)], y[~np.isnan(y)]
            counts = 2000 * (y - y.min()) / np.ptp(y) + 200
            for at in (1500.0, 1501.0, 1502.0):
                hit = counts.copy()
                hit[np.flatnonzero(x == at)] += 3000  # 1.5 times the strongest band
                (result,) = model.classify([Spectrum.create(x, hit, y_unit="counts", technique="raman")])
                assert (result.status, result.label) == ("known", label), (label, at, result.extra)

    def test_noisy_counts_on_a_1_cm_axis_are_averaged_onto_the_grid(self) -> None:
        """References rendered at 1 cm-1 as counts, S/N 20 at the strongest band (Poisson): 5 of these 16
        came out ``low_snr``, each grid point taking one noisy sample. Averaged over the 4 cm-1 step,
        the noise is halved."""
        data = load_labelled_set(SHARED_DATA / "openspecy_raman_polymers_2023")
        model = IdentificationModel(ReferenceLibrary.load(DEFAULT_RAMAN_LIBRARY), FAST)
        rng = np.random.default_rng(0)
        labels = [scoring_label(label) for label in data.labels]
        rows = [i for name in ("PE", "PP", "PS", "PET") for i in np.flatnonzero(np.array(labels) == name)[:4]]
        spectra = []
        for i in rows:
            row = data.spectra[i].astype(np.float64)
            keep = ~np.isnan(row)
            x = np.arange(np.ceil(data.wavenumbers[keep][0]), np.floor(data.wavenumbers[keep][-1]), 1.0)
            y = np.interp(x, data.wavenumbers[keep], row[keep])
            counts = rng.poisson(400 * (y - y.min()) / np.ptp(y) + 80).astype(np.float64)  # S/N 20 at the top
            spectra.append(Spectrum.create(x, counts, y_unit="counts", technique="raman"))
        got = [(r.status, r.label and scoring_label(r.label)) for r in model.classify(spectra)]
        assert got == [("known", labels[i]) for i in rows]


class TestRamanAsOtherLabsExportIt:
    """Spectra of NIST and Horiba against Cabernard's library: sharp bands on a 2 cm-1 axis, a baseline
    clipped at zero. Three of the four known spectra this pair rejected were these."""

    @pytest.fixture(scope="class")
    @classmethod
    def cabernard(cls) -> IdentificationModel:
        source = SHARED_DATA / "openspecy_raman_polymers_2023"
        library = library_from_sources([f"{source}@organization=Cabernard et al. 2018"])
        return IdentificationModel(library, FAST)

    @staticmethod
    def _references(identity: str, organisation: str) -> list[Spectrum]:
        source = SHARED_DATA / "openspecy_raman_polymers_2023"
        spectra = load_source(f"{source}@organization={organisation}")
        return [s for s in spectra if s.metadata.get("spectrum_identity") == identity]

    def test_sharp_bands_on_a_2_cm_axis_are_no_spikes(self, cabernard: IdentificationModel) -> None:
        """PS's ring band at 1001 cm-1 is a few cm-1 wide: on a 2 cm-1 axis it is a point or two, and
        the gate counted 10 such "spikes" on NIST's PS (12 on Horiba's PDMS): ``low_quality``."""
        for identity, organisation, label in (
            ("PS", "J. Lynch, NIST", "PS"),
            ("polydimethylsiloxane", "Horiba Scientific", "PDMS"),
        ):
            spectra = self._references(identity, organisation)
            assert spectra and all(s.spacing == pytest.approx(2.0) for s in spectra)
            for result in cabernard.classify(spectra):
                assert "spikes" not in result.quality["flags"]
                assert (result.status, result.label) == ("known", label), result.quality
        # An infrared spectrum on such an axis still has its single points counted: its bands are wide.
        assert (
            QualityGate.for_technique("ir").spike_max_spacing
            >= 2.0
            > QualityGate.for_technique("raman").spike_max_spacing
        )

    def test_a_baseline_clipped_at_zero_is_measured(self, cabernard: IdentificationModel) -> None:
        """Horiba's polyester is 0 at 1387 of its 1700 points, between its bands: read as zero-filled
        gaps, 24 % of the grid was left and the spectrum came out ``narrow_range``."""
        (spectrum,) = self._references("polyester", "Horiba Scientific")
        assert np.count_nonzero(spectrum.values == 0) > 1000
        (result,) = cabernard.classify([spectrum])
        assert result.quality["flags"] == [] and result.quality["coverage"] > 0.9
        assert (result.status, result.label) == ("known", "PET"), result.quality
        # The same values as an infrared spectrum: its zero runs are what an instrument did not measure.
        as_ir = Spectrum.create(spectrum.wavenumbers, spectrum.values + 1.0, y_unit="absorbance")
        zero_filled = as_ir.with_values(np.where(spectrum.values == 0, 0.0, as_ir.values))
        on_grid = Resample(start=100.0, stop=3500.0, step=4.0, average=True)
        assert np.isnan(on_grid.transform([zero_filled])).mean() > 0.5
        assert np.isnan(on_grid.transform([spectrum])).mean() < 0.05


class TestCoarseInstruments:
    """An instrument sampling every 16 cm-1: a band can be a single point, and is no spike."""

    @staticmethod
    def _one_point_bands(spacing: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.arange(650.0, 4000.0, spacing)
        y = np.full(x.size, 0.05)
        y[np.linspace(10, x.size - 10, 12).astype(int)] = 1.0  # 12 bands, each one point wide
        return x, y

    def test_one_point_bands_are_spikes_only_on_a_fine_axis(self) -> None:
        gate = QualityGate()
        for spacing, spikes in ((16.0, False), (2.0, True)):
            x, y = self._one_point_bands(spacing)
            report = gate.assess(np.interp(np.arange(650.0, 4000.0, 4.0), x, y), native=y, spacing=spacing)
            assert ("spikes" in report.flags) is spikes, spacing

    def test_real_spectra_at_16_cm_identified_as_at_their_own_resolution(self) -> None:
        """FLOPP spectra averaged over 16 cm-1 steps (as ``pct_t_16cm`` renders them, no noise)."""
        data = load_labelled_set(SHARED_DATA / "flopp_frond2021")
        labels = np.asarray(data.labels)
        classes = ("PU", "PET", "PS", "PP", "PE", "PA")
        rows = [i for label in classes for i in np.flatnonzero(labels == label)[:5]]
        model = IdentificationModel(ReferenceLibrary.load(DEFAULT_LIBRARY), FAST)
        native, coarse = [], []
        for i in rows:
            x, y = data.wavenumbers, data.spectra[i].astype(np.float64)
            keep = ~np.isnan(y) & (y != 0)  # FLOPP rows write 0 where nothing was measured
            native.append(Spectrum.create(x[keep], y[keep], y_unit=data.y_unit(i)))
            edges = np.arange(x[keep][0], x[keep][-1], 16.0)
            which = np.digitize(x[keep], edges)
            means = [y[keep][which == b].mean() for b in np.unique(which)]
            centres = [x[keep][which == b].mean() for b in np.unique(which)]
            coarse.append(Spectrum.create(np.asarray(centres), np.asarray(means), y_unit=data.y_unit(i)))
        at_16 = model.classify(coarse)
        assert all("/16" in r.model_version for r in at_16)
        assert [r.quality["flags"] for r in at_16] == [[]] * len(rows)
        truth = [scoring_label(labels[i]) for i in rows]

        def right(results: list[Any]) -> int:
            return sum(
                r.status == "known" and scoring_label(r.label) == t
                for r, t in zip(results, truth, strict=True)
            )

        assert right(at_16) >= right(model.classify(native)) - 1

    def test_particles_at_16_cm_meet_references_sampled_as_they_were(
        self, model: IdentificationModel
    ) -> None:
        """FLOPP-e particles as an instrument sampling every 16 cm-1 writes them, with noise, against
        FLOPP pristine: the range model's references are sampled at 16 cm-1 too, then both meet the
        4 cm-1 grid. On a grid of 16 cm-1 itself, 12 more of 189 were lost (3 now)."""
        known = {scoring_label(label) for label in model.library.labels}
        particles = load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")
        particles = [s for s in particles if scoring_label(str(s.metadata["label"])) in known]
        rng = np.random.default_rng(0)
        coarse = []
        for s in particles:
            x, y = render_values(
                s.wavenumbers, s.values, by_name("pct_t_16cm_noise"), y_unit=s.y_unit, rng=rng
            )
            coarse.append(Spectrum.create(x, y, y_unit="percent_transmittance"))
        truth = [scoring_label(str(s.metadata["label"])) for s in particles]

        def right(spectra: list[Spectrum]) -> int:
            results = model.classify(spectra)
            return sum(
                r.status == "known" and scoring_label(r.label) == t
                for r, t in zip(results, truth, strict=True)
            )

        at_16 = model.classify(coarse[:1])[0]
        assert at_16.model_version.endswith("/16") and at_16.extra["sampling_step"] == 16.0
        assert right(coarse) >= right(particles) - 6


class TestRangeRouting:
    def test_rule(self) -> None:
        span, grid = (402.0, 3992.0), (400.0, 4000.0)
        assert route((650.0, 4000.0), span=span, step=4.0, grid=grid).kind == "full"
        ldir = route((975.0, 1800.0), span=span, step=4.0, grid=grid)
        assert (ldir.kind, ldir.window) == ("range", (975.0, 1800.0))
        narrow = route((1458.0, 1477.0), span=span, step=4.0, grid=grid)
        assert (narrow.kind, narrow.overlap) == ("narrow", (1458.0, 1477.0))
        assert route((1000.0, 1140.0), span=span, step=4.0, grid=grid).kind == "narrow"  # < 150 cm-1

    def test_cache_is_least_recently_used(self) -> None:
        built: list[tuple[float, float]] = []
        cache: RangeModelCache[str] = RangeModelCache(lambda w: built.append(w) or f"{w}", capacity=2)
        a, b, c = (1.0, 2.0), (3.0, 4.0), (5.0, 6.0)
        cache.get(a), cache.get(b), cache.get(a), cache.get(c)
        assert cache.windows() == [a, c] and cache.evictions == 1 and cache.hits == 1
        cache.get(b)
        assert built == [a, b, c, b]


@pytest.fixture(scope="module")
def flopp_model() -> IdentificationModel:
    library = library_from_sources([f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP"])
    return IdentificationModel(library, FAST)


@pytest.fixture(scope="module")
def particles() -> list[Spectrum]:
    return load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")[::4]


def _undeclared(s: Spectrum, *, low: float = 0.0, high: float = 1e9, to_absorbance: bool = False) -> Spectrum:
    inside = (s.wavenumbers >= low) & (s.wavenumbers <= high)
    y = s.values[inside]
    if to_absorbance:
        y = _absorbance_from_percent(y)
        y = 100.0 * (y - y.min()) / np.ptp(y)
    return Spectrum.create(s.wavenumbers[inside], y, metadata={"label": s.metadata["label"]})


def _correct(model: IdentificationModel, spectra: list[Spectrum]) -> int:
    from engine.core.labels import scoring_label

    results = model.classify(spectra, aging=False)
    return sum(
        r.status == "known" and scoring_label(str(r.label)) == scoring_label(s.metadata["label"])
        for s, r in zip(spectra, results, strict=True)
    )


class TestModelRouting:
    def test_ldir_spectra_go_to_a_range_model(self, flopp_model: IdentificationModel) -> None:
        spectra = [
            _undeclared(s, low=975.0, high=1800.0, to_absorbance=True)
            for s in load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")[:6]
        ]
        results = flopp_model.classify(spectra, aging=False)
        assert all(r.extra["range"] == [975.0, 1800.0] for r in results)
        assert all(r.model_version.endswith("@975-1800") for r in results)
        assert not any("narrow_range" in r.quality["flags"] for r in results)
        assert flopp_model.ranges_.windows() == [(975.0, 1800.0, 4.0)]

    def test_ldir_accuracy_near_the_native_form(
        self, flopp_model: IdentificationModel, particles: list[Spectrum]
    ) -> None:
        native = _correct(flopp_model, particles)
        ldir = _correct(flopp_model, [_undeclared(s, low=975.0, high=1800.0) for s in particles])
        assert ldir >= native - 0.05 * len(particles), (ldir, native, len(particles))

    def test_undeclared_units_match_the_native_form(
        self, flopp_model: IdentificationModel, particles: list[Spectrum]
    ) -> None:
        native = _correct(flopp_model, particles)
        assert _correct(flopp_model, [_undeclared(s) for s in particles]) == native
        assert _correct(flopp_model, [_undeclared(s, to_absorbance=True) for s in particles]) == native

    def test_a_spectrum_cut_below_its_strongest_bands_goes_to_a_range_model(self) -> None:
        """An FTIR microscope's MCT detector ends near 750 cm-1, 97 % of the bundled library's span: the
        library's own model took it, and PS (bands at 698 and 756 cm-1) and PE (720) came out unknown."""
        data = load_labelled_set(SHARED_DATA / "flopp_frond2021")
        labels = np.array([scoring_label(label) for label in data.labels])
        model = IdentificationModel(ReferenceLibrary.load(DEFAULT_LIBRARY), FAST)
        rows = [i for name in ("PS", "PE") for i in np.flatnonzero(labels == name)[:4]]
        spectra = {cut: [] for cut in (675.0, 750.0)}
        for i in rows:
            x, y = data.wavenumbers, data.spectra[i].astype(np.float64)
            for cut, out in spectra.items():
                keep = ~np.isnan(y) & (y != 0) & (x >= cut)  # FLOPP writes 0 where it did not measure
                out.append(Spectrum.create(x[keep], y[keep], y_unit=data.y_unit(i)))
        measured_from_675, mct = (model.classify(spectra[cut], aging=False) for cut in (675.0, 750.0))
        assert [r.model_version for r in measured_from_675] == ["lib1.r0"] * len(rows)  # FLOPP's own range
        assert [r.model_version for r in mct] == ["lib1.r0@750-4000"] * len(rows)
        assert [(r.status, scoring_label(str(r.label))) for r in mct] == [("known", labels[i]) for i in rows]

    def test_narrow_overlap_is_low_quality_with_the_overlap(self, flopp_model: IdentificationModel) -> None:
        x = np.linspace(1458.0, 1477.0, 40)
        (result,) = flopp_model.classify([Spectrum.create(x, np.exp(-(((x - 1468) / 3) ** 2)) + 0.01)])
        assert result.status == "low_quality"
        assert result.quality["flags"] == ["narrow_range"] and result.quality["overlap"] == [1458.0, 1477.0]

    def test_a_library_change_forgets_range_models(self, flopp_model: IdentificationModel) -> None:
        spectrum = _undeclared(
            load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")[0], low=975.0, high=1800.0
        )
        model = IdentificationModel(flopp_model.library.subset(lambda e: True), FAST)
        model.classify([spectrum])
        assert len(model.ranges_) == 1
        model.add_references([spectrum], "PE", confirmed_by="test")
        assert len(model.ranges_) == 0
        assert model.classify([spectrum])[0].model_version.endswith("@975-1800")

    def test_results_carry_their_conventions(self, flopp_model: IdentificationModel) -> None:
        spectrum = _undeclared(load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")[0])
        out = flopp_model.classify([spectrum])[0].as_dict()
        assert (out["technique"], out["y_unit"], out["y_unit_source"]) == ("ir", "transmittance", "inferred")
        assert 0 < out["y_unit_confidence"] <= 1

    def test_raman_without_a_raman_library_is_unknown_with_a_reason(
        self, flopp_model: IdentificationModel
    ) -> None:
        x = np.linspace(150.0, 3400.0, 1626)
        (result,) = flopp_model.classify([Spectrum.create(x, np.exp(-(((x - 1000) / 5) ** 2)) + 0.1)])
        assert result.status == "unknown" and "no raman library" in result.extra["reason"]


class TestTechniqueLibraries:
    def test_bundled_raman_library(self) -> None:
        library = ReferenceLibrary.load(DEFAULT_RAMAN_LIBRARY)
        assert library.technique == "raman" and len(library) == 266
        assert library.pipeline_spec["name"] == "raman"
        assert library.attribution is not None
        for organisation in ("Cabernard et al. 2018", "J. Lynch, NIST", "Horiba Scientific"):
            assert organisation in library.attribution

    def test_a_library_holds_one_technique(self) -> None:
        library = ReferenceLibrary.load(DEFAULT_LIBRARY)
        assert library.technique == "ir"
        raman = read_spectra(SHARED_DATA / "openspecy_raman_polymers_2023")[:2]
        with pytest.raises(LibraryError, match="one technique"):
            library.add(raman, ["PE", "PE"])

    def test_build_records_the_technique_and_picks_its_pipeline(self) -> None:
        library = library_from_sources([f"{SHARED_DATA / 'openspecy_raman_polymers_2023'}"])
        assert library.pipeline_spec["technique"] == "raman" and library.pipeline_spec["name"] == "raman"

    def test_raman_spectra_are_routed_to_the_raman_library(self) -> None:
        model = serving(
            [ReferenceLibrary.load(DEFAULT_LIBRARY), ReferenceLibrary.load(DEFAULT_RAMAN_LIBRARY)], FAST
        )
        raman = load_source(f"{SHARED_DATA / 'openspecy_raman_polymers_2023'}@organization=Horiba Scientific")
        undeclared = [Spectrum.create(s.wavenumbers, 1000 + 5000 * s.values) for s in raman]
        results = model.classify(undeclared, aging=False)
        assert all(r.extra["technique"] == "raman" for r in results)
        assert sum(r.status == "known" for r in results) >= 0.8 * len(results)
