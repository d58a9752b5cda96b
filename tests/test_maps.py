"""FTIR imaging maps to particles: engine/maps on small maps painted from real FLOPP spectra.

Every scene is a 64 x 64 map on an 8 cm-1 axis (676-3996 cm-1, 416 bands): a
low-signal filter with noise, and particles painted in known shapes with
pristine FLOPP spectra (the test model's own library), so each particle's
polymer, pixel count, Feret diameters and centroid are known beforehand.

A Renishaw WiRE Raman map is a map too: the real silicon map Si-map.wdf (8 x 11
points, 2 µm steps), read as a cube, checked against the spectra reader, and
identified with the bundled Raman library.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from engine.core.spectrum import SpectrumError
from engine.io.envi import envi_header_text, parse_envi_header, read_envi
from engine.maps import MapConfig, MapIdentification, identify_map, is_map, render_map
from engine.maps.cube import MapCube, WdfCube, open_cube
from engine.maps.pixels import PixelPreprocessor
from engine.maps.pixelwise import PixelIdentifier
from engine.maps.segment import feret_diameters, regions
from tests.conftest import FORMATS, SHARED_DATA

AXIS = np.arange(676.0, 4000.0, 8.0)
SIZE = 64
PIXEL_UM = 5.0
NOISE = 0.003

#: The painted particles: name -> (label, boolean mask).
RECTANGLE = (slice(5, 15), slice(5, 25))  # 10 lines x 20 samples
DISC_CENTRE, DISC_RADIUS = (40, 44), 8
PAIR_LEFT = (slice(46, 56), slice(4, 14))
PAIR_RIGHT = (slice(46, 56), slice(14, 24))
NAN_PIXELS = [(0, 63), (1, 63), (30, 2), (62, 40)]


def _disc() -> npt.NDArray[np.bool_]:
    lines, samples = np.mgrid[0:SIZE, 0:SIZE]
    return np.asarray((lines - DISC_CENTRE[0]) ** 2 + (samples - DISC_CENTRE[1]) ** 2 <= DISC_RADIUS**2)


@pytest.fixture(scope="module")
def references() -> dict[str, npt.NDArray[np.float32]]:
    """One pristine FLOPP spectrum per polymer, as absorbance on the map's axis, peak 0.5."""
    from engine.analysis.evaluate import load_source

    out: dict[str, npt.NDArray[np.float32]] = {}
    for s in load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP"):
        label = s.metadata["label"]
        if label in ("PE", "PP", "PS", "PET", "cellulose") and label not in out:
            transmittance = np.interp(AXIS, s.wavenumbers, s.values)
            absorbance = -np.log10(np.clip(transmittance / 100.0, 1e-4, None))
            absorbance -= absorbance.min()
            out[label] = (0.5 * absorbance / absorbance.max()).astype(np.float32)
    return out


def _filter(seed: int, *, level: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    cube = (0.01 + rng.normal(0.0, NOISE, (SIZE, SIZE, AXIS.size))).astype(np.float32)
    if level is not None:
        cube += level
    return cube


def _paint(cube: npt.NDArray[np.float32], where: Any, spectrum: npt.NDArray[np.float32], seed: int) -> None:
    rng = np.random.default_rng(seed)
    region = cube[where]
    region[...] = spectrum + 0.01 + rng.normal(0.0, NOISE, region.shape).astype(np.float32)
    cube[where] = region


def _scene(references: dict[str, npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    cube = _filter(0)
    _paint(cube, RECTANGLE, references["PE"], 1)
    _paint(cube, _disc(), references["PP"], 2)
    _paint(cube, PAIR_LEFT, references["PS"], 3)
    _paint(cube, PAIR_RIGHT, references["PET"], 4)
    for line, sample in NAN_PIXELS:
        cube[line, sample] = np.nan
    return cube


def _write(
    folder: Path,
    cube: npt.NDArray[np.float32],
    *,
    interleave: str = "bip",
    pixel_size: tuple[float, float] | None = (PIXEL_UM, PIXEL_UM),
    name: str = "map",
) -> Path:
    """``cube`` (lines, samples, bands) as an ENVI pair; the header's path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, samples, _ = cube.shape
    header = folder / f"{name}.hdr"
    header.write_text(
        envi_header_text(
            samples=samples, lines=lines, wavenumbers=AXIS, interleave=interleave, pixel_size_um=pixel_size
        )
    )
    order = {"bip": (0, 1, 2), "bil": (0, 2, 1), "bsq": (2, 0, 1)}[interleave]
    (folder / f"{name}.dat").write_bytes(np.ascontiguousarray(cube.transpose(order)).astype("<f4").tobytes())
    return header


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory: pytest.TempPathFactory, references: dict[str, Any]) -> Path:
    return _write(tmp_path_factory.mktemp("scene"), _scene(references))


@pytest.fixture(scope="module")
def scene(model: Any, scene_path: Path) -> MapIdentification:
    return identify_map(model, scene_path)


def _calipers(coords: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """The caliper width of pixel squares at ``coords`` every 0.01 degree, by brute force."""
    corners = np.vstack([coords + offset for offset in ([0, 0], [0, 1], [1, 0], [1, 1])]).astype(np.float64)
    angles = np.radians(np.arange(0.0, 180.0, 0.01))
    projected = corners @ np.stack([np.cos(angles), np.sin(angles)])
    return np.asarray(projected.max(axis=0) - projected.min(axis=0))


def _at(result: MapIdentification, line: int, sample: int) -> Any:
    index = int(result.particle_image[line, sample])
    assert index >= 0, f"no particle at ({line}, {sample})"
    return result.particles[index]


class TestParticles:
    def test_each_painted_shape_is_one_particle_of_its_polymer(self, scene: MapIdentification) -> None:
        assert len(scene.particles) == 4
        found = {
            _at(scene, 10, 10).label,
            _at(scene, *DISC_CENTRE).label,
            _at(scene, 50, 8).label,
            _at(scene, 50, 20).label,
        }
        assert found == {"PE", "PP", "PS", "PET"}
        assert all(p.status == "known" for p in scene.particles)
        assert _at(scene, 10, 10).family == "polyolefin"
        assert _at(scene, 50, 8).pixel_label == "PS"

    def test_rectangle_area_feret_and_centroid(self, scene: MapIdentification) -> None:
        p = _at(scene, 10, 10)
        assert p.n_pixels == 200 and p.area_px == 200
        assert p.area_um2 == pytest.approx(200 * PIXEL_UM**2)
        assert p.feret_max_px == pytest.approx(np.hypot(10, 20))
        assert p.feret_min_px == pytest.approx(10.0)
        assert p.feret_max_um == pytest.approx(np.hypot(10, 20) * PIXEL_UM)
        assert p.feret_min_um == pytest.approx(10 * PIXEL_UM)
        assert (p.y_px, p.x_px) == pytest.approx((9.5, 14.5))
        assert (p.y_um, p.x_um) == pytest.approx((9.5 * PIXEL_UM, 14.5 * PIXEL_UM))
        assert p.bbox == (5, 5, 14, 24)

    def test_disc_area_feret_and_centroid(self, scene: MapIdentification) -> None:
        p = _at(scene, *DISC_CENTRE)
        disc = _disc()
        assert p.n_pixels == int(disc.sum())
        assert p.area_um2 == pytest.approx(disc.sum() * PIXEL_UM**2)
        # A pixelated disc of radius 8 is 17 pixels across along the axes, a little less or more obliquely.
        widths = _calipers(np.argwhere(disc))
        assert p.feret_max_px == pytest.approx(widths.max(), abs=1e-3)
        assert p.feret_min_px == pytest.approx(widths.min(), abs=1e-3)
        assert 16.0 <= p.feret_min_px <= 17.0 <= p.feret_max_px <= 18.0
        assert p.feret_max_um == pytest.approx(p.feret_max_px * PIXEL_UM)
        assert (p.y_px, p.x_px) == pytest.approx(DISC_CENTRE)

    def test_touching_particles_of_different_polymers_are_split(self, scene: MapIdentification) -> None:
        left, right = _at(scene, 50, 8), _at(scene, 50, 20)
        assert left.index != right.index
        assert (left.label, right.label) == ("PS", "PET")
        assert left.n_pixels == right.n_pixels == 100
        assert left.bbox == (46, 4, 55, 13) and right.bbox == (46, 14, 55, 23)

    def test_mean_spectrum_evidence_and_aging(self, scene: MapIdentification) -> None:
        p = _at(scene, 10, 10)
        assert p.hits and p.hits[0].label == "PE" and p.hits[0].r > 0.9
        assert p.confidence > 0
        assert "carbonyl" in json.dumps(p.aging)

    def test_background_is_background_not_unknown(self, scene: MapIdentification) -> None:
        painted = 200 + int(_disc().sum()) + 200
        assert scene.n_unknown_pixels == 0
        assert scene.n_background == SIZE * SIZE - painted - len(NAN_PIXELS)
        assert int((scene.particle_image >= 0).sum()) == painted

    def test_nan_pixels_are_low_quality_and_counted(self, scene: MapIdentification) -> None:
        assert scene.n_low_quality_pixels == len(NAN_PIXELS)
        assert scene.metadata["n_non_finite_pixels"] == len(NAN_PIXELS)
        assert all(scene.particle_image[line, sample] == -1 for line, sample in NAN_PIXELS)

    def test_summary_is_json_ready(self, scene: MapIdentification) -> None:
        summary = json.loads(json.dumps(scene.summary()))
        assert summary["n_particles"] == 4
        assert summary["particles_by_label"] == {"PE": 1, "PET": 1, "PP": 1, "PS": 1}
        assert summary["pixel_size_um"] == PIXEL_UM and summary["pixel_size_source"] == "header"
        assert summary["particles"][0]["bbox"] == list(scene.particles[0].bbox)
        assert "particle_image" not in summary
        assert scene.particle_image.dtype == np.int32 and scene.particle_image.shape == (SIZE, SIZE)

    def test_render_writes_a_png(self, scene: MapIdentification, tmp_path: Path) -> None:
        target = tmp_path / "map.png"
        render_map(scene, target)
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_a_fibre_two_pixels_wide_keeps_its_colour(self, scene: MapIdentification) -> None:
        """The outline is drawn on a particle's edge pixels: a thin fibre was all outline, all black."""
        from dataclasses import replace

        from engine.maps.render import _rgb, particle_colours

        image = np.where(scene.particle_image == 0, -1, scene.particle_image)
        image[2:4, 1:30] = 0  # particle 0 redrawn as a fibre, 2 x 29 pixels
        fibre = replace(scene, particle_image=image.astype(np.int32))
        rgb = _rgb(fibre, particle_colours(fibre))
        assert not (rgb[2:4, 1:30] == 0.0).all(axis=-1).any()
        wide = scene.particle_image == 1  # a particle with an inside is still outlined
        assert (rgb[wide] == 0.0).all(axis=-1).any() and not (rgb[wide] == 0.0).all(axis=-1).all()


class TestBackground:
    def test_a_filter_with_a_spectrum_of_its_own_is_learned_as_background(
        self, model: Any, references: dict[str, Any], tmp_path: Path
    ) -> None:
        """A cellulose filter would be one huge cellulose particle; the learned filter spectrum removes it."""
        cube = _filter(5, level=0.3 * references["cellulose"])
        _paint(cube, RECTANGLE, references["PE"], 6)
        result = identify_map(model, _write(tmp_path, cube))
        assert [p.label for p in result.particles] == ["PE"]
        assert result.particles[0].n_pixels == 200
        assert result.n_background == SIZE * SIZE - 200
        assert result.metadata["background"]["filter_spectrum"] is True

    def test_a_filter_of_noise_learns_no_spectrum(self, scene: MapIdentification) -> None:
        assert scene.metadata["background"]["filter_spectrum"] is False


class TestSizesAndUnits:
    def test_no_pixel_size_gives_sizes_in_pixels(
        self, model: Any, references: dict[str, Any], tmp_path: Path
    ) -> None:
        cube = _filter(7)
        _paint(cube, RECTANGLE, references["PE"], 8)
        result = identify_map(model, _write(tmp_path, cube, pixel_size=None))
        assert (result.pixel_size_um, result.pixel_size_source) == (None, "none")
        (p,) = result.particles
        assert p.area_um2 is None and p.feret_max_um is None and p.x_um is None and p.y_um is None
        assert p.feret_min_px == pytest.approx(10.0) and p.area_px == 200

        profiled = identify_map(
            model, _write(tmp_path, cube, pixel_size=None), config=MapConfig(pixel_size_um=2.0)
        )
        assert (profiled.pixel_size_um, profiled.pixel_size_source) == (2.0, "profile")
        assert profiled.particles[0].feret_min_um == pytest.approx(20.0)

    def test_a_pixel_size_written_without_its_unit_is_warned_of(
        self, model: Any, references: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        # ENVI's pixel size is in metres unless it names its units: {5, 5} is 5 m, not 5 µm.
        cube = _filter(7)
        _paint(cube, RECTANGLE, references["PE"], 8)
        header = _write(tmp_path, cube, pixel_size=None)
        header.write_text(header.read_text() + "pixel size = {5, 5}\n")
        with caplog.at_level("WARNING", logger="engine.maps.identify"):
            result = identify_map(model, header)
        assert result.pixel_size_um == pytest.approx(5e6)
        assert "in metres unless it names its units" in result.metadata["pixel_size_warning"]
        assert any("pixels of 5e+06 µm" in r.getMessage() for r in caplog.records)
        plausible = identify_map(model, _write(tmp_path, cube))  # {5, 5, units=Micrometers}
        assert "pixel_size_warning" not in plausible.metadata

    def test_transmittance_map_is_converted_as_any_spectrum(
        self, model: Any, references: dict[str, Any], tmp_path: Path
    ) -> None:
        absorbance = _filter(9)
        _paint(absorbance, RECTANGLE, references["PS"], 10)
        header = _write(tmp_path, (100.0 * 10.0 ** (-absorbance)).astype(np.float32))
        header.write_text(header.read_text().replace("Absorbance", "Transmittance"))
        result = identify_map(model, header)
        assert result.metadata["y_unit"] == "transmittance"
        assert [p.label for p in result.particles] == ["PS"]

    def test_pixel_features_equal_the_models_own(self, model: Any, references: dict[str, Any]) -> None:
        from engine.core.conventions import resolve_all
        from engine.core.spectrum import Spectrum

        rng = np.random.default_rng(11)
        rows = np.vstack([references[k] for k in ("PE", "PP", "PS")]).astype(np.float32)
        rows = rows + rng.normal(0, NOISE, rows.shape).astype(np.float32)
        rows[1, 100:110] = 0.0  # a zero-filled run: resampled as a spectrum, which leaves it out
        spectra = resolve_all([Spectrum.create(AXIS, r, y_unit="absorbance", technique="ir") for r in rows])
        grid, features = model.features(spectra)
        pre = PixelPreprocessor(model.pipeline, AXIS, "absorbance")
        mine = pre.grid_rows(pre.absorbance(rows))
        np.testing.assert_allclose(mine, grid, atol=1e-5)
        np.testing.assert_allclose(pre.features(mine), features, atol=1e-5)

    def test_raman_pixels_keep_zeros_inside_as_a_raman_spectrum_does(
        self, model: Any, references: dict[str, Any]
    ) -> None:
        """Inside a Raman spectrum a zero run is a baseline clipped at zero, measured; only zero-filled
        ends are not. A map's pixels are put on the grid as the spectra are: the Raman rule included."""
        from engine.core.spectrum import Spectrum

        rows = np.vstack([references[k] for k in ("PE", "PP", "PS")]).astype(np.float32) + np.float32(0.1)
        rows[0, 100:110] = 0.0  # inside: measured, for Raman
        rows[1, :8] = 0.0  # a zero-filled end: not measured
        spectra = [Spectrum.create(AXIS, r, y_unit="absorbance", technique="raman") for r in rows]
        pre = PixelPreprocessor(model.pipeline, AXIS, "absorbance", "raman")
        mine = pre.grid_rows(pre.absorbance(rows))
        np.testing.assert_allclose(mine, pre.resample.transform(spectra), atol=1e-5)
        assert np.isnan(mine[0]).sum() == np.isnan(mine[2]).sum()  # the zeros inside are kept
        assert np.isnan(mine[1]).sum() > np.isnan(mine[2]).sum()  # the filled end is left out

    def test_pixel_calls_agree_with_the_served_model(self, model: Any, references: dict[str, Any]) -> None:
        from engine.core.spectrum import Spectrum

        rng = np.random.default_rng(12)
        rows = [references[k] * rng.uniform(0.05, 1.0) for k in ("PE", "PP", "PS", "PET", "cellulose")] * 8
        rows = np.asarray(rows, dtype=np.float32) + rng.normal(0, NOISE, (len(rows), AXIS.size)).astype(
            np.float32
        )
        rows[::7] = rng.normal(0.05, 0.02, (len(rows[::7]), AXIS.size))  # noise: no polymer
        spectra = [Spectrum.create(AXIS, r, y_unit="absorbance", technique="ir") for r in rows]
        served = [
            res.label if res.status == "known" else None for res in model.classify(spectra, aging=False)
        ]
        pre = PixelPreprocessor(model.pipeline, AXIS, "absorbance")
        identifier = PixelIdentifier(model)
        calls = identifier.identify(pre.features(pre.grid_rows(pre.absorbance(rows))))
        mine = [identifier.classes[c] if c >= 0 else None for c in calls.codes]
        assert mine == served
        assert None in mine and "PS" in mine


class TestReading:
    @pytest.mark.parametrize("interleave", ["bil", "bsq"])
    def test_every_interleave_gives_the_same_particles(
        self,
        model: Any,
        references: dict[str, Any],
        scene: MapIdentification,
        tmp_path: Path,
        interleave: str,
    ) -> None:
        result = identify_map(model, _write(tmp_path, _scene(references), interleave=interleave))
        np.testing.assert_array_equal(result.particle_image, scene.particle_image)

    def test_small_blocks_give_the_same_map(
        self, model: Any, scene_path: Path, scene: MapIdentification, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One line per block: the map is read a block at a time, never whole."""
        largest: list[int] = []
        read_lines = MapCube.read_lines

        def spy(cube: MapCube, start: int, stop: int) -> Any:
            largest.append(stop - start)
            return read_lines(cube, start, stop)

        monkeypatch.setattr(MapCube, "read_lines", spy)
        result = identify_map(model, scene_path, config=MapConfig(block_pixels=SIZE))
        assert max(largest) == 1
        np.testing.assert_array_equal(result.particle_image, scene.particle_image)
        assert [p.label for p in result.particles] == [p.label for p in scene.particles]

    def test_the_data_file_is_memory_mapped(self, scene_path: Path) -> None:
        with open_cube(scene_path, max_pixels=SIZE * SIZE) as cube:
            assert isinstance(cube._mapped(), np.memmap)
            block = cube.read_lines(10, 12)
        assert block.shape == (2 * SIZE, AXIS.size) and not isinstance(block, np.memmap)

    def test_the_data_file_beside_the_header_is_a_map_too(self, model: Any, scene_path: Path) -> None:
        data = scene_path.with_suffix(".dat")
        assert is_map(scene_path) and is_map(data)
        assert len(identify_map(model, data).particles) == 4

    @pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    def test_a_zipped_map(
        self, model: Any, scene_path: Path, scene: MapIdentification, tmp_path: Path, compression: int
    ) -> None:
        """A stored member is mapped inside the zip; a compressed one is extracted to a temporary file."""
        target = tmp_path / "map.zip"
        with zipfile.ZipFile(target, "w", compression=compression) as archive:
            archive.write(scene_path, "sample 7/map.hdr")
            archive.write(scene_path.with_suffix(".dat"), "sample 7/map.dat")
        assert is_map(target)
        result = identify_map(model, target)
        np.testing.assert_array_equal(result.particle_image, scene.particle_image)

    def test_open_specy_map_zip(self, model: Any) -> None:
        path = FORMATS / "openspecy_misc/CA_tiny_map.zip"
        assert is_map(path)
        result = identify_map(model, path)
        assert (result.lines, result.samples, result.bands) == (13, 16, 427)
        assert (result.pixel_size_um, result.pixel_size_source) == pytest.approx((25.0, "header"))
        labelled = int((result.particle_image >= 0).sum())
        assert labelled + result.n_background + result.n_low_quality_pixels <= 208
        assert result.n_background + result.n_unknown_pixels + result.n_low_quality_pixels <= 208
        assert sum(p.n_pixels for p in result.particles) == labelled
        assert result.metadata["description"].startswith("Pixel 15")


class TestBadInput:
    def test_truncated_cube(self, model: Any, scene_path: Path, tmp_path: Path) -> None:
        header = tmp_path / "cut.hdr"
        header.write_text(scene_path.read_text())
        (tmp_path / "cut.dat").write_bytes(scene_path.with_suffix(".dat").read_bytes()[:-100])
        with pytest.raises(SpectrumError) as info:
            identify_map(model, header)
        assert info.value.reason == "truncated"

    def test_header_and_data_that_disagree(self, model: Any, scene_path: Path, tmp_path: Path) -> None:
        header = tmp_path / "long.hdr"
        header.write_text(scene_path.read_text().replace(f"lines = {SIZE}", f"lines = {SIZE - 2}"))
        (tmp_path / "long.dat").write_bytes(scene_path.with_suffix(".dat").read_bytes())
        with pytest.raises(SpectrumError) as info:
            identify_map(model, header)
        assert info.value.reason == "length_mismatch"
        assert "disagree" in info.value.message

    def test_truncated_zip_member(self, model: Any, scene_path: Path, tmp_path: Path) -> None:
        target = tmp_path / "cut.zip"
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(scene_path, "map.hdr")
            archive.writestr("map.dat", scene_path.with_suffix(".dat").read_bytes()[:-4096])
        with pytest.raises(SpectrumError) as info:
            identify_map(model, target)
        assert info.value.reason == "truncated"

    def test_map_over_the_pixel_limit_is_refused(self, model: Any, scene_path: Path) -> None:
        with pytest.raises(SpectrumError, match="max_pixels"):
            identify_map(model, scene_path, config=MapConfig(max_pixels=SIZE * SIZE - 1))

    def test_a_map_over_the_default_limit_is_still_a_map(self, model: Any, tmp_path: Path) -> None:
        """The limit is the caller's (MapConfig.max_pixels), not the header parser's."""
        header = tmp_path / "big.hdr"
        header.write_text(envi_header_text(samples=2500, lines=2000, wavenumbers=AXIS[:16]))
        with (tmp_path / "big.dat").open("wb") as data:
            data.truncate(2500 * 2000 * 16 * 4)  # sparse: nothing is written
        assert is_map(header)
        with pytest.raises(SpectrumError, match="max_pixels"):
            identify_map(model, header)

    def test_all_nan_map_has_no_particles(self, model: Any, tmp_path: Path) -> None:
        cube = np.full((4, 5, AXIS.size), np.nan, dtype=np.float32)
        result = identify_map(model, _write(tmp_path, cube))
        assert result.particles == [] and result.n_low_quality_pixels == 20

    def test_what_is_not_a_map(self, tmp_path: Path, scene_path: Path) -> None:
        line = _write(tmp_path, np.ones((1, 5, AXIS.size), np.float32), name="line")
        csv = tmp_path / "one.csv"
        csv.write_text("wavenumber,absorbance\n1000,0.1\n1004,0.2\n")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("a.csv", csv.read_text())
        (tmp_path / "csvs.zip").write_bytes(buffer.getvalue())
        for path in (line, csv, tmp_path / "csvs.zip", tmp_path / "missing.hdr"):
            assert not is_map(path)


class TestContentIdentity:
    def test_a_pair_is_its_header_with_its_data(
        self, references: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from engine.core.spectrum import file_sha256
        from engine.io import identity

        one = _write(tmp_path / "a", _scene(references))
        two = _write(tmp_path / "b", _filter(3))  # another filter: a header of the same bytes
        assert one.read_bytes() == two.read_bytes()
        assert identity.content_sha256(one) != identity.content_sha256(two)
        again = _write(tmp_path / "c", _scene(references))  # the same map delivered again
        assert identity.content_sha256(one) == identity.content_sha256(again)
        monkeypatch.setattr(identity, "WHOLE_DATA_BYTES", 1 << 16)  # larger data: sampled blocks
        monkeypatch.setattr(identity, "BLOCK_BYTES", 1 << 12)
        assert identity.content_sha256(one) != identity.content_sha256(two)
        one.with_suffix(".dat").unlink()  # no data yet: the header alone
        assert identity.content_sha256(one) == file_sha256(one)
        other = tmp_path / "a" / "notes.csv"
        other.write_text("wavenumber,absorbance\n")
        assert identity.content_sha256(other) == file_sha256(other)


class TestGeometry:
    def test_feret_of_one_pixel_and_of_a_line(self) -> None:
        assert feret_diameters(np.array([[3, 4]])) == pytest.approx((np.sqrt(2), 1.0))
        line = np.array([[0, i] for i in range(10)])
        assert feret_diameters(line) == pytest.approx((np.hypot(1, 10), 1.0))
        assert feret_diameters(line, pixel_x=2.0, pixel_y=3.0) == pytest.approx((np.hypot(3, 20), 3.0))

    def test_regions_split_by_code_and_drop_small_ones(self) -> None:
        codes = np.full((6, 6), -1, dtype=np.int32)
        codes[1:3, 1:3] = 0
        codes[1:3, 3:5] = 1  # touches the first, another identification
        codes[5, 5] = 0  # a single pixel
        image, found = regions(codes, min_pixels=2)
        assert [(r.code, r.n_pixels) for r in found] == [(0, 4), (1, 4)]
        assert image[5, 5] == -1 and image[1, 1] == 0 and image[1, 4] == 1


class TestEnviReader:
    def test_pixel_size_units(self) -> None:
        base = "ENVI\nsamples = 2\nlines = 2\nbands = 4\ndata type = 4\n"
        assert parse_envi_header(base + "pixel size = {25, 30, units=Micrometers}").pixel_size_um == (
            25.0,
            30.0,
        )
        assert parse_envi_header(base + "pixel size = {0.01, 0.01, units=mm}").pixel_size_um == (10.0, 10.0)
        assert parse_envi_header(base + "pixel size = {0, 1}").pixel_size_um is None
        assert parse_envi_header(base).pixel_size_um is None

    def test_a_small_map_still_reads_as_spectra(self, scene_path: Path) -> None:
        spectra = read_envi(scene_path)
        assert len(spectra) == SIZE * SIZE - len(NAN_PIXELS)
        assert {"x", "y"} <= set(spectra[0].metadata)

    def test_reading_as_spectra_is_limited_in_pixels(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import engine.io.envi as envi

        monkeypatch.setattr(envi, "MAX_SPECTRA_PIXELS", 10)
        header = _write(tmp_path, np.ones((4, 4, AXIS.size), np.float32))
        with pytest.raises(SpectrumError, match="identify it as a map"):
            read_envi(header)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="pixel_size_um"):
        MapConfig(pixel_size_um=0.0)
    assert replace(MapConfig(), block_pixels=8).block_pixels == 8


# -- Renishaw WiRE maps ---------------------------------------------------------------------------

WDF = FORMATS / "renishaw_wdf"
SI_MAP = WDF / "renishaw_wdf_pkg_Si-map.wdf"
SI_LINES, SI_SAMPLES, SI_POINTS, SI_STEP_UM = 11, 8, 575, 2.0


def _wdf_blocks(data: bytes | bytearray) -> dict[bytes, int]:
    """Where each block's content starts (after its 16-byte header), by block id."""
    found: dict[bytes, int] = {}
    pos = 0
    while pos + 16 <= len(data):
        (size,) = struct.unpack_from("<Q", data, pos + 8)
        found.setdefault(bytes(data[pos : pos + 4]), pos + 16)
        pos += size
    return found


def _si_pixels(path: Path) -> npt.NDArray[np.float32]:
    """Every pixel of a WDF map's cube, read a line at a time: (lines, samples, bands)."""
    with open_cube(path, max_pixels=10_000) as cube:
        return np.stack([cube.read_lines(line, line + 1) for line in range(cube.lines)])


def _snake(tmp_path: Path, *, positions: bool) -> Path:
    """The Si map rewritten as a snake scan: every other line collected backwards, the map area's
    Alternating flag set, and the spectra's origins moved with them (or their X/Y made no
    stage position, so that only the scan flags can place the spectra)."""
    data = bytearray(SI_MAP.read_bytes())
    blocks = _wdf_blocks(data)

    def snake(offset: int, itemsize: int) -> None:
        count = SI_LINES * SI_SAMPLES
        grid = np.frombuffer(bytes(data[offset : offset + count * itemsize]), dtype=f"V{itemsize}")
        grid = grid.reshape(SI_LINES, SI_SAMPLES).copy()
        grid[1::2] = grid[1::2, ::-1]
        data[offset : offset + count * itemsize] = grid.tobytes()

    snake(blocks[b"DATA"], 4 * SI_POINTS)
    orgn = blocks[b"ORGN"]
    (n_lists,) = struct.unpack_from("<I", data, orgn)
    for index in range(n_lists):
        pos = orgn + 4 + index * (24 + 8 * SI_LINES * SI_SAMPLES)
        snake(pos + 24, 8)
        if not positions:
            struct.pack_into("<I", data, pos, 0)  # an arbitrary origin: no stage position
    struct.pack_into("<I", data, blocks[b"WMAP"], 4)  # WdfMapArea flags: Alternating
    target = tmp_path / f"snake-{'origins' if positions else 'scan'}.wdf"
    target.write_bytes(bytes(data))
    return target


def _with_counts(tmp_path: Path, samples: int, lines: int) -> Path:
    """The Si map with its map area's x and y point counts replaced."""
    data = bytearray(SI_MAP.read_bytes())
    struct.pack_into("<II", data, _wdf_blocks(data)[b"WMAP"] + 32, samples, lines)
    target = tmp_path / f"counts-{samples}x{lines}.wdf"
    target.write_bytes(bytes(data))
    return target


@pytest.fixture(scope="module")
def raman_model() -> Any:
    """The served model on the bundled Raman library, with a small ensemble."""
    from engine.core.library import DEFAULT_RAMAN_LIBRARY, ReferenceLibrary
    from engine.models.served import IdentificationModel, ModelConfig

    return IdentificationModel(
        ReferenceLibrary.load(DEFAULT_RAMAN_LIBRARY), ModelConfig(n_synthetic=10, n_learners=10)
    )


class TestWdfMaps:
    def test_the_si_map_is_a_cube_of_its_map_area(self) -> None:
        """Lines x samples and the pixel size from the WMAP block, as Renishaw's own package reads it."""
        from wdf import Wdf

        assert is_map(SI_MAP)
        with open_cube(SI_MAP, max_pixels=10_000) as cube:
            assert isinstance(cube, WdfCube) and isinstance(cube._mapped(), np.memmap)
            assert (cube.lines, cube.samples, cube.n_pixels, cube.bands) == (11, 8, 88, SI_POINTS)
            assert cube.pixel_size_um == (SI_STEP_UM, SI_STEP_UM)
            assert (cube.technique, cube.y_unit) == ("raman", "counts")
            assert cube.metadata["map_placement"] == "origins" and cube.metadata["format"] == "wdf"
            assert cube.wavenumbers[0] == pytest.approx(53.36, abs=0.01)
            assert cube.wavenumbers[-1] == pytest.approx(957.44, abs=0.01)
            assert np.all(np.diff(cube.wavenumbers) > 0)
            block = cube.read_lines(2, 4)
            assert block.shape == (2 * SI_SAMPLES, SI_POINTS) and not isinstance(block, np.memmap)
        with Wdf(str(SI_MAP)) as theirs:
            area = theirs.map_area
            assert (area.count.y, area.count.x) == (SI_LINES, SI_SAMPLES)
            assert (area.step.x, area.step.y) == (SI_STEP_UM, SI_STEP_UM)

    def test_pixels_are_the_readers_spectra_in_their_stage_positions(self) -> None:
        from engine.io import read_spectra

        pixels = _si_pixels(SI_MAP)
        spectra = read_spectra(SI_MAP)
        assert len(spectra) == pixels.shape[0] * pixels.shape[1]
        x0 = min(s.metadata["origins"]["X"] for s in spectra)
        y0 = min(s.metadata["origins"]["Y"] for s in spectra)
        with open_cube(SI_MAP, max_pixels=10_000) as cube:
            wavenumbers = cube.wavenumbers
        for s in spectra:
            line = round((s.metadata["origins"]["Y"] - y0) / SI_STEP_UM)
            sample = round((s.metadata["origins"]["X"] - x0) / SI_STEP_UM)
            np.testing.assert_array_equal(s.wavenumbers, wavenumbers)
            np.testing.assert_array_equal(pixels[line, sample], s.values.astype(np.float32))

    @pytest.mark.parametrize("positions", [True, False])
    def test_a_snake_scan_is_placed_on_the_grid(self, tmp_path: Path, *, positions: bool) -> None:
        """Every other line collected backwards: placed by the spectra's origins, else by the scan flags."""
        path = _snake(tmp_path, positions=positions)
        with open_cube(path, max_pixels=10_000) as cube:
            assert cube.metadata["map_placement"] == ("origins" if positions else "scan")
        np.testing.assert_array_equal(_si_pixels(path), _si_pixels(SI_MAP))

    def test_single_spectra_series_and_line_scans_are_not_maps(self, tmp_path: Path) -> None:
        line = _with_counts(tmp_path, SI_LINES * SI_SAMPLES, 1)
        with open_cube(line, max_pixels=10_000) as cube:
            assert (cube.lines, cube.samples) == (1, SI_LINES * SI_SAMPLES)
        for path in (WDF / "spectrochempy_sp.wdf", WDF / "spectrochempy_depth.wdf", line):
            assert not is_map(path)
        with (
            pytest.raises(SpectrumError) as info,
            open_cube(WDF / "spectrochempy_depth.wdf", max_pixels=10_000),
        ):
            pass
        assert info.value.reason == "unsupported_format" and "series" in info.value.message

    def test_a_map_cut_short_in_its_data_is_refused_as_truncated(
        self, raman_model: Any, tmp_path: Path
    ) -> None:
        """Whichever route takes it (the map's or the spectra reader's), it is quarantined as truncated."""
        from engine.io import read_spectra

        data = SI_MAP.read_bytes()
        cut = tmp_path / "cut.wdf"
        cut.write_bytes(data[: _wdf_blocks(data)[b"DATA"] + 40 * 4 * SI_POINTS])
        with pytest.raises(SpectrumError) as info, open_cube(cut, max_pixels=10_000):
            pass
        assert info.value.reason == "truncated" and info.value.message.startswith("cut.wdf")
        with pytest.raises(SpectrumError) as info:
            identify_map(raman_model, cut)
        assert info.value.reason == "truncated"
        assert not is_map(cut)
        with pytest.raises(SpectrumError) as info:
            read_spectra(cut)
        assert info.value.reason == "truncated"

    def test_a_map_area_that_disagrees_with_the_spectra(self, raman_model: Any, tmp_path: Path) -> None:
        with pytest.raises(SpectrumError) as info:
            identify_map(raman_model, _with_counts(tmp_path, SI_SAMPLES, SI_LINES - 1))
        assert info.value.reason == "length_mismatch" and "disagree" in info.value.message

    def test_the_si_map_is_identified_end_to_end(self, raman_model: Any) -> None:
        """Silicon is no polymer: every pixel is background, unknown or low quality, none a known particle."""
        result = identify_map(raman_model, SI_MAP)
        assert isinstance(result, MapIdentification)
        assert (result.lines, result.samples, result.bands, result.n_pixels) == (11, 8, SI_POINTS, 88)
        assert (result.pixel_size_um, result.pixel_size_source) == (SI_STEP_UM, "header")
        assert result.metadata["technique"] == "raman" and result.metadata["format"] == "wdf"
        assert result.n_background + result.n_unknown_pixels + result.n_low_quality_pixels == 88
        assert not any(p.status == "known" for p in result.particles)
        assert result.particle_image.shape == (SI_LINES, SI_SAMPLES)
        assert json.loads(json.dumps(result.summary()))["n_pixels"] == 88

    def test_a_particle_on_the_si_map_is_measured_in_micrometres(
        self, raman_model: Any, tmp_path: Path
    ) -> None:
        """A Raman PP reference painted over 3 x 3 points of the real map: one PP particle, 2 µm pixels."""
        from engine.core.library import DEFAULT_RAMAN_LIBRARY, ReferenceLibrary

        library = ReferenceLibrary.load(DEFAULT_RAMAN_LIBRARY)
        pp = next(s for s, label in zip(library.measured, library.labels, strict=True) if label == "PP")
        with open_cube(SI_MAP, max_pixels=10_000) as cube:
            axis = cube.grid.raman_shift
        reference = np.interp(axis, pp.wavenumbers, pp.values)
        reference = (reference - reference.min()) / np.ptp(reference)
        data = bytearray(SI_MAP.read_bytes())
        offset = _wdf_blocks(data)[b"DATA"]
        size = SI_LINES * SI_SAMPLES * SI_POINTS * 4
        spectra = np.frombuffer(bytes(data[offset : offset + size]), dtype="<f4")
        spectra = spectra.reshape(SI_LINES, SI_SAMPLES, SI_POINTS).copy()
        noise = np.random.default_rng(13).normal(0.0, 20.0, (3, 3, SI_POINTS))
        spectra[3:6, 2:5] = 500.0 + 3000.0 * reference + noise
        data[offset : offset + size] = spectra.astype("<f4").tobytes()
        painted = tmp_path / "painted.wdf"
        painted.write_bytes(bytes(data))

        result = identify_map(raman_model, painted)
        (particle,) = result.particles
        assert (particle.status, particle.label, particle.n_pixels) == ("known", "PP", 9)
        assert particle.area_um2 == pytest.approx(9 * SI_STEP_UM**2)
        assert particle.feret_min_um == pytest.approx(3 * SI_STEP_UM)
        assert (particle.y_um, particle.x_um) == pytest.approx((4 * SI_STEP_UM, 3 * SI_STEP_UM))
        assert particle.bbox == (3, 2, 5, 4)
        assert result.n_background == 88 - 9

    def test_the_daemon_and_the_archive_take_a_wdf_map_as_a_map(self, tmp_path: Path) -> None:
        from daemon.config import MapsConfig
        from daemon.pipeline.maps import MapRoute
        from engine.reclassify.tasks import survey

        route = MapRoute(MapsConfig(), tmp_path)
        assert route.claims(str(SI_MAP)) and route.header_of(str(SI_MAP)) is None
        assert not route.claims(str(WDF / "spectrochempy_depth.wdf"))
        beside = tmp_path / "Si-map.wdf"  # an ENVI header of the same name beside it claims nothing
        beside.write_bytes(SI_MAP.read_bytes())
        beside.with_suffix(".hdr").write_text(envi_header_text(samples=2, lines=2, wavenumbers=AXIS[:16]))
        assert route.header_of(str(beside)) is None
        source = survey(SI_MAP, WDF)
        assert (source.kind, source.n_spectra) == ("map", 88)
