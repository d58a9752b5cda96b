"""Targeted tests for the binary vendor readers, checked against independent parsers and dumps.

One class per reader, then a fuzz class: truncated, bit-flipped and random
files (with the right magic) must raise :class:`SpectrumError` and nothing
else, quickly.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import detect, read_spectra
from engine.io.omnic import SPA_MAGIC, read_omnic
from engine.io.opus import OPUS_MAGIC, read_opus
from engine.io.perkinelmer import PE_MAGIC, read_perkinelmer
from engine.io.spc import OLD_FORMAT, parse_spc, read_spc
from engine.io.wdf import WDF_MAGIC, read_wdf
from tests.conftest import FORMATS
from tests.format_cases import FormatCase
from tests.format_cases_binary import BINARY_CASES

OPUS = FORMATS / "opus"
SPA = FORMATS / "omnic_spa"
SPC = FORMATS / "spc"
SPC_REFERENCE = SPC / "rohanisaac_txt_reference"
PE = FORMATS / "perkinelmer_sp"
WDF = FORMATS / "renishaw_wdf"
BINARY_FOLDERS = ("opus", "omnic_spa", "spc", "perkinelmer_sp", "renishaw_wdf")


def _copy_with(tmp_path: Path, source: Path, data: bytes, name: str | None = None) -> Path:
    target = tmp_path / (name or source.name)
    target.write_bytes(data)
    return target


def _reference(name: str) -> npt.NDArray[np.float64]:
    """A rohanisaac/spc text dump: x in the first column, one column per subfile."""
    return np.loadtxt(SPC_REFERENCE / f"{name}.txt", ndmin=2)


class TestCaseTable:
    def test_every_binary_sample_has_one_row(self) -> None:
        files = {
            str(path.relative_to(FORMATS))
            for folder in BINARY_FOLDERS
            for path in (FORMATS / folder).iterdir()
            if path.is_file() and not path.name.startswith("LICENSE")
        }
        rows = [case.path for case in BINARY_CASES]
        assert len(rows) == len(set(rows))
        assert set(rows) == files

    @pytest.mark.parametrize("case", BINARY_CASES, ids=lambda case: case.path)
    def test_row_format_is_the_detected_reader(self, case: FormatCase) -> None:
        assert detect(FORMATS / case.path).name == case.format


class TestOpus:
    @pytest.mark.parametrize("name", ["ftir_ps.0", "brukeropus_example_file.0", "spectrochempy_test.0000"])
    def test_absorbance_block_matches_brukeropus(self, name: str) -> None:
        from brukeropus import read_opus as brukeropus_read

        (spectrum,) = read_opus(OPUS / name)
        block = brukeropus_read(str(OPUS / name)).a
        order = np.argsort(block.x)
        np.testing.assert_allclose(spectrum.wavenumbers, block.x[order])
        np.testing.assert_allclose(spectrum.values, block.y[order])
        assert spectrum.y_unit == "absorbance"
        assert spectrum.technique == "ir"

    @pytest.mark.parametrize("name", ["ftir_ps.2", "spectrochempy_background.0"])
    def test_reference_only_file_is_refused_with_a_clear_message(self, name: str) -> None:
        with pytest.raises(SpectrumError) as info:
            read_opus(OPUS / name)
        assert info.value.reason == "no_spectrum"
        assert info.value.message == (
            f"{name} holds only a background/reference single channel, no sample spectrum"
        )

    def test_absorbance_is_computed_from_the_channels_without_an_ab_block(self, tmp_path: Path) -> None:
        from brukeropus import read_opus as brukeropus_read

        source = OPUS / "ftir_ps.0"
        data = bytearray(source.read_bytes())
        directory, _, n_blocks = struct.unpack_from("<iii", data, 12)
        for index in range(n_blocks):
            entry = directory + 12 * index
            code, words, _offset = struct.unpack_from("<Iii", data, entry)
            is_data_block = (code >> 4) & 0x3F == 0
            if is_data_block and (code >> 10) & 0x7F == 4:  # an absorbance data block
                struct.pack_into("<Iii", data, entry, code, words, 0)  # drop it from the directory
        (spectrum,) = read_opus(_copy_with(tmp_path, source, bytes(data)))
        assert spectrum.metadata["block"] == "Absorbance computed from ScSm/ScRf"
        block = brukeropus_read(str(source)).a
        order = np.argsort(block.x)
        np.testing.assert_allclose(spectrum.wavenumbers, block.x[order])
        np.testing.assert_allclose(spectrum.values, block.y[order], atol=1e-6)

    def test_transmittance_block_is_reported_in_transmittance(self, tmp_path: Path) -> None:
        source = OPUS / "ftir_ps.0"
        data = bytearray(source.read_bytes())
        directory, _, n_blocks = struct.unpack_from("<iii", data, 12)
        for index in range(n_blocks):
            entry = directory + 12 * index
            (code,) = struct.unpack_from("<I", data, entry)
            if (code >> 10) & 0x7F == 4:  # absorbance data and status blocks -> transmittance
                struct.pack_into("<I", data, entry, (code & ~(0x7F << 10)) | (5 << 10))
        (spectrum,) = read_opus(_copy_with(tmp_path, source, bytes(data)))
        assert spectrum.y_unit == "transmittance"
        assert spectrum.metadata["block"] == "Transmittance"

    def test_instrument_metadata(self) -> None:
        (spectrum,) = read_opus(OPUS / "ftir_ps.0")
        meta = spectrum.metadata
        assert meta["title"] == "sample1_PSnew"
        assert meta["instrument"] == "VERTEX 70"
        assert meta["resolution"] == 4.0
        assert meta["laser_wavenumber"] == pytest.approx(15799.2373)
        assert meta["date"] == "2020-10-28T14:33:02.042000-05:00"

    def test_negative_parameter_length_is_refused_not_looped_on(self, tmp_path: Path) -> None:
        # brukeropus loops forever on this; the reader must not
        source = OPUS / "ftir_ps.0"
        data = bytearray(source.read_bytes())
        directory, _, n_blocks = struct.unpack_from("<iii", data, 12)
        for index in range(n_blocks):
            code, _words, offset = struct.unpack_from("<Iii", data, directory + 12 * index)
            if (code >> 4) & 0x3F == 1:  # a data-status parameter block
                struct.pack_into("<hh", data, offset + 4, 0, -4)
                break
        started = time.perf_counter()
        with pytest.raises(SpectrumError) as info:
            read_opus(_copy_with(tmp_path, source, bytes(data)))
        assert info.value.reason == "unreadable"
        assert time.perf_counter() - started < 1.0


class TestOmnic:
    def test_absorbance_spectrum(self) -> None:
        (spectrum,) = read_omnic(SPA / "spectrochempy_7_CZ0-100_Pd_101.SPA")
        assert spectrum.n_points == 5549
        assert spectrum.y_unit == "absorbance"
        assert spectrum.wavenumbers[0] == pytest.approx(649.9207153)
        assert spectrum.wavenumbers[-1] == pytest.approx(5999.7133789)
        assert spectrum.metadata["title"] == "7_CZ0-100 Pd_101"
        assert spectrum.metadata["date"] == "2018-11-30T07:10:57+00:00"
        assert "Absorbance" in spectrum.metadata["history"]

    def test_group_file_gives_one_spectrum_per_header_and_intensity_pair(self, tmp_path: Path) -> None:
        # no .spg sample exists: append a second header + intensity pair (values doubled) to an SPA
        source = SPA / "spectrochempy_7_CZ0-100_Pd_101.SPA"
        data = bytearray(source.read_bytes())
        (count,) = struct.unpack_from("<H", data, 294)
        entries = [struct.unpack_from("<BxII", data, 304 + 16 * i) for i in range(count)]
        (header_offset, header_size), = [(o, n) for key, o, n in entries if key == 2]
        (values_offset, values_size), = [(o, n) for key, o, n in entries if key == 3]
        values = np.frombuffer(data, dtype="<f4", count=values_size // 4, offset=values_offset).copy()
        new_header, new_values = len(data), len(data) + header_size
        data += data[header_offset : header_offset + header_size] + (2 * values).astype("<f4").tobytes()
        added = [(2, new_header, header_size), (3, new_values, values_size)]
        for index, (key, offset, size) in enumerate(added):
            struct.pack_into("<BxII", data, 304 + 16 * (count + index), key, offset, size)
        struct.pack_into("<H", data, 294, count + 2)
        first, second = read_omnic(_copy_with(tmp_path, source, bytes(data), "group.spg"))
        np.testing.assert_allclose(second.values, 2 * first.values)
        assert [first.metadata["group_index"], second.metadata["group_index"]] == [0, 1]

    def test_interferogram_is_refused(self) -> None:
        with pytest.raises(SpectrumError) as info:
            read_omnic(SPA / "spectrochempy_interfero.SPA")
        assert info.value.reason == "no_spectrum"
        assert "interferogram" in info.value.message

    def test_unknown_y_code_is_arbitrary(self) -> None:
        (spectrum,) = read_omnic(SPA / "spectrochempy_spectre.SPA")
        assert spectrum.y_unit == "arbitrary"
        assert spectrum.metadata["y_label"] == "unknown (code 15)"

    def test_intensity_block_past_the_end_is_truncated(self, tmp_path: Path) -> None:
        source = SPA / "spectrochempy_7_CZ0-100_Pd_101.SPA"
        data = source.read_bytes()
        intensity_block = 1032  # key 3 of the directory: 22196 bytes from here
        with pytest.raises(SpectrumError) as info:
            read_omnic(_copy_with(tmp_path, source, data[: intensity_block + 10_000]))
        assert info.value.reason == "truncated"

    def test_huge_point_count_is_refused_before_allocating(self, tmp_path: Path) -> None:
        source = SPA / "spectrochempy_7_CZ0-100_Pd_101.SPA"
        data = bytearray(source.read_bytes())
        struct.pack_into("<I", data, 560 + 4, 1_000_000_000)  # the data header is at byte 560
        with pytest.raises(SpectrumError) as info:
            read_omnic(_copy_with(tmp_path, source, bytes(data)))
        assert info.value.reason == "truncated"


class TestSpc:
    @pytest.mark.parametrize(
        ("name", "n_subfiles", "n_points"),
        [
            ("rohanisaac_m_evenz.spc", 32, 171),
            ("rohanisaac_m_ordz.spc", 10, 857),
            ("rohanisaac_nir.spc", 20, 700),
            ("galactic_DEMO_3D.SPC", 32, 171),
        ],
    )
    def test_multi_subfile_counts(self, name: str, n_subfiles: int, n_points: int) -> None:
        spc = parse_spc((SPC / name).read_bytes())
        assert len(spc.subfiles) == n_subfiles
        assert {sub.x.size for sub in spc.subfiles} == {n_points}

    def test_every_subfile_is_one_spectrum(self) -> None:
        spectra = read_spc(SPC / "rohanisaac_nir.spc")
        assert len(spectra) == 20
        assert [s.metadata["subfile"] for s in spectra] == list(range(20))

    def test_old_format_matches_the_reference_dump(self) -> None:
        spc = parse_spc((SPC / "rohanisaac_m_ordz.spc").read_bytes())
        assert spc.version == OLD_FORMAT
        reference = _reference("m_ordz.spc")
        np.testing.assert_allclose(spc.subfiles[0].x, reference[:, 0], rtol=1e-7)
        values = np.column_stack([sub.y for sub in spc.subfiles])
        np.testing.assert_allclose(values, reference[:, 1:], rtol=1e-7, atol=1e-12)

    @pytest.mark.parametrize("name", ["Ft-ir.spc", "RAMAN.SPC", "nir.spc", "s_evenx.spc", "s_xy.spc"])
    def test_new_format_matches_the_reference_dump(self, name: str) -> None:
        spc = parse_spc((SPC / f"rohanisaac_{name}").read_bytes())
        reference = _reference(name)
        np.testing.assert_allclose(spc.subfiles[0].x, reference[:, 0], rtol=1e-7)
        values = np.column_stack([sub.y for sub in spc.subfiles])
        np.testing.assert_allclose(values, reference[:, 1:], rtol=1e-7, atol=1e-12)

    def test_multi_file_with_per_subfile_exponents_matches_the_dump(self) -> None:
        # The dump scales the one subfile with a negative exponent (-1) as if it were 0;
        # the SPC specification's 2 ** (exponent - 32) gives half of it.
        spc = parse_spc((SPC / "rohanisaac_m_evenz.spc").read_bytes())
        reference = _reference("m_evenz.spc")
        values = np.column_stack([sub.y for sub in spc.subfiles])
        np.testing.assert_allclose(values[:, 1:], reference[:, 2:], rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(2 * values[:, 0], reference[:, 1], rtol=1e-7, atol=1e-12)

    def test_old_format_demo_equals_its_new_format_twin(self) -> None:
        old = parse_spc((SPC / "galactic_DEMO_3D.SPC").read_bytes())
        new = parse_spc((SPC / "rohanisaac_m_evenz.spc").read_bytes())
        assert old.version == OLD_FORMAT
        for a, b in zip(old.subfiles, new.subfiles, strict=True):
            np.testing.assert_allclose(a.x, b.x)
            np.testing.assert_array_equal(a.y, b.y)

    def test_xyxy_subfiles_match_the_dump(self) -> None:
        data = (SPC / "rohanisaac_m_xyxy.spc").read_bytes()
        spc = parse_spc(data)
        assert len(spc.subfiles) == 512
        lines = (SPC_REFERENCE / "m_xyxy.spc.txt").read_text().splitlines()
        rows = np.array([line.split() for line in lines if line.strip()], dtype=float)
        x = np.concatenate([sub.x for sub in spc.subfiles])
        y = np.concatenate([sub.y for sub in spc.subfiles])
        np.testing.assert_array_equal(y, rows[:, 1])
        # the dump reads the float32 x values as integers scaled by 2 ** (exponent - 32)
        scales = np.concatenate([np.full(sub.x.size, 2.0 ** (sub.exponent - 32)) for sub in spc.subfiles])
        as_integers = np.frombuffer(x.astype("<f4").tobytes(), dtype="<i4") * scales
        np.testing.assert_allclose(as_integers, rows[:, 0], atol=1e-3)
        assert spc.subfiles[0].x[0] == pytest.approx(43.9)  # m/z of CO2

    @pytest.mark.parametrize(
        "name",
        [
            "galactic_BENZENE.SPC",
            "galactic_POLYR.SPC",
            "galactic_XYTRACE.SPC",
            "openspecy_raman_atacamit.spc",
            "rohanisaac_m_evenz.spc",
            "rohanisaac_m_xyxy.spc",
            "rohanisaac_nir.spc",
            "rohanisaac_s_xy.spc",
        ],
    )
    def test_new_format_matches_spc_io(self, name: str) -> None:
        from spc_io import SPC as SpcIo

        data = (SPC / name).read_bytes()
        theirs = SpcIo.from_bytes_io(io.BytesIO(data))
        ours = parse_spc(data)
        assert len(ours.subfiles) == len(theirs)
        # spc-io sorts subfiles by (w, z); compare as sets of traces keyed by their values
        ours_sorted = sorted(ours.subfiles, key=lambda sub: (sub.z, sub.index))
        for mine, their in zip(ours_sorted, theirs, strict=True):
            np.testing.assert_allclose(mine.x, np.asarray(their.xarray, dtype=float), rtol=1e-7)
            np.testing.assert_allclose(mine.y, np.asarray(their.yarray, dtype=float), rtol=1e-7)

    def test_big_endian_new_format_reads_like_its_little_endian_original(self) -> None:
        # no 0x4C sample exists: byte-swap every field the format defines in s_evenx (float y, even x)
        lsb = (SPC / "rohanisaac_s_evenx.spc").read_bytes()
        msb = bytearray(lsb)
        msb[1] = 0x4C
        for fmt, offset in (("I", 4), ("d", 8), ("d", 16), ("I", 24), ("I", 32), ("I", 248), ("I", 252)):
            struct.pack_into(f">{fmt}", msb, offset, *struct.unpack_from(f"<{fmt}", lsb, offset))
        for fmt, offset in (("H", 2), ("f", 4), ("f", 8), ("f", 12), ("I", 16), ("I", 20), ("f", 24)):
            struct.pack_into(f">{fmt}", msb, 512 + offset, *struct.unpack_from(f"<{fmt}", lsb, 512 + offset))
        (n_points,) = struct.unpack_from("<I", lsb, 4)
        values = np.frombuffer(lsb, dtype="<f4", count=n_points, offset=544)
        msb[544 : 544 + 4 * n_points] = values.astype(">f4").tobytes()
        little, big = parse_spc(lsb), parse_spc(bytes(msb))
        np.testing.assert_array_equal(big.subfiles[0].x, little.subfiles[0].x)
        np.testing.assert_array_equal(big.subfiles[0].y, little.subfiles[0].y)

    def test_raman_axis_is_cut_at_the_plausible_range(self) -> None:
        (spectrum,) = read_spc(SPC / "rohanisaac_RAMAN.SPC")
        assert spectrum.technique == "raman"
        assert spectrum.wavenumbers[0] >= -500.0
        assert spectrum.n_points == 2332

    def test_non_spectral_axis_is_refused(self) -> None:
        with pytest.raises(SpectrumError) as info:
            read_spc(SPC / "rohanisaac_s_xy.spc")
        assert info.value.reason == "no_spectrum"
        assert "minutes" in info.value.message

    def test_printable_flag_byte_is_found_by_suffix(self) -> None:
        # RAMAN.SPC starts with flag 0x20 (' '), left out of the magic list
        assert (SPC / "rohanisaac_RAMAN.SPC").read_bytes()[:2] == b" K"
        assert detect(SPC / "rohanisaac_RAMAN.SPC").name == "spc"

    def test_huge_subfile_count_is_refused_before_allocating(self, tmp_path: Path) -> None:
        source = SPC / "rohanisaac_nir.spc"
        data = bytearray(source.read_bytes())
        struct.pack_into("<I", data, 4, 1_000_000_000)  # fnpts
        with pytest.raises(SpectrumError) as info:
            read_spc(_copy_with(tmp_path, source, bytes(data)))
        assert info.value.reason == "truncated"


class TestPerkinElmer:
    def test_matches_specio_documentation(self) -> None:
        (spectrum,) = read_perkinelmer(PE / "specio_spectra.sp")
        assert spectrum.n_points == 3301
        assert (spectrum.wavenumbers[0], spectrum.wavenumbers[-1]) == (700.0, 4000.0)
        # specio lists 4000 -> 700 cm-1: 0.03723936, 0.03718614, 0.03713289, ...,
        # 0.00313506, 0.00368404, 0.00417556
        high_end, low_end = spectrum.values[-3:][::-1], spectrum.values[:3][::-1]
        np.testing.assert_allclose(high_end, [0.03723936, 0.03718614, 0.03713289], rtol=1e-6)
        np.testing.assert_allclose(low_end, [0.00313506, 0.00368404, 0.00417556], rtol=1e-5)
        assert spectrum.values[-1] == pytest.approx(0.03723936007346753)
        assert spectrum.y_unit == "absorbance"

    def test_instrument_metadata(self) -> None:
        (spectrum,) = read_perkinelmer(PE / "specio_spectra.sp")
        assert spectrum.metadata["instrument"] == "Spectrum One"
        assert spectrum.metadata["detector"] == "MCT"
        assert spectrum.metadata["title"] == "strip01"

    def test_truncated_file(self, tmp_path: Path) -> None:
        source = PE / "specio_spectra.sp"
        with pytest.raises(SpectrumError) as info:
            read_perkinelmer(_copy_with(tmp_path, source, source.read_bytes()[:20_000]))
        assert info.value.reason == "truncated"


class TestWdf:
    @pytest.mark.parametrize(
        "name", ["spectrochempy_sp.wdf", "spectrochempy_depth.wdf", "renishaw_wdf_pkg_Si-map.wdf"]
    )
    def test_spectra_match_renishaw_wdf(self, name: str) -> None:
        from wdf import Wdf

        spectra = read_wdf(WDF / name)
        with Wdf(str(WDF / name)) as theirs:
            x = np.asarray(theirs.xlist(), dtype=float)
            for spectrum in spectra:
                index = spectrum.metadata.get("spectrum_index", 0)
                np.testing.assert_allclose(spectrum.wavenumbers, x[::-1])
                np.testing.assert_allclose(spectrum.values, np.asarray(theirs[index], dtype=float)[::-1])
                assert spectrum.technique == "raman"
                assert spectrum.y_unit == "counts"

    def test_map_gives_one_spectrum_per_point_with_its_position(self) -> None:
        spectra = read_wdf(WDF / "renishaw_wdf_pkg_Si-map.wdf")
        assert len(spectra) == 88
        assert spectra[0].metadata["origins"]["X"] == pytest.approx(-7.09)
        assert spectra[0].metadata["laser_wavelength_nm"] == pytest.approx(532.0)

    def test_empty_spectra_of_a_depth_series_are_skipped(self) -> None:
        spectra = read_wdf(WDF / "spectrochempy_depth.wdf")
        assert [s.metadata["spectrum_index"] for s in spectra] == list(range(1, 40, 2))

    def test_zero_sized_block_stops_the_walk(self, tmp_path: Path) -> None:
        # renishaw-wdf's section search loops forever on this
        source = WDF / "spectrochempy_sp.wdf"
        data = bytearray(source.read_bytes())
        struct.pack_into("<Q", data, 512 + 8, 0)  # the DATA block's size
        started = time.perf_counter()
        with pytest.raises(SpectrumError) as info:
            read_wdf(_copy_with(tmp_path, source, bytes(data)))
        assert info.value.reason == "unreadable"
        assert time.perf_counter() - started < 1.0

    def test_registry_reads_every_spectrum(self) -> None:
        spectra = read_spectra(WDF / "renishaw_wdf_pkg_Si-map.wdf")
        assert [s.metadata["index"] for s in spectra] == list(range(88))
        assert {s.metadata["format"] for s in spectra} == {"wdf"}


# --- fuzzing ------------------------------------------------------------------------------------

ReaderFn = Callable[[Path], list[Spectrum]]

FUZZ_TARGETS: dict[str, tuple[ReaderFn, list[Path], bytes]] = {
    "opus": (read_opus, sorted(OPUS.iterdir()), OPUS_MAGIC),
    "omnic": (read_omnic, sorted(SPA.iterdir()), SPA_MAGIC),
    "spc": (read_spc, sorted(p for p in SPC.iterdir() if p.is_file()), b"\x00K"),
    "perkinelmer": (read_perkinelmer, [PE / "specio_spectra.sp"], PE_MAGIC),
    "wdf": (read_wdf, sorted(WDF.glob("*.wdf")), WDF_MAGIC),
}
#: Header-field bombs: -1, 2**31 - 1, -2**31, 0 and 10**9 as little-endian int32.
_BIG_INTEGERS = (b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", bytes(4), b"\x00\xca\x9a\x3b")

_flips = st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 7)), min_size=1, max_size=16)
_overwrites = st.lists(
    st.tuples(st.integers(0, 2047), st.sampled_from(_BIG_INTEGERS)), min_size=1, max_size=4
)
_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), _flips),
    st.tuples(st.just("overwrite"), _overwrites),
    st.tuples(st.just("random"), st.binary(max_size=4096)),
)


def _mutate(data: bytes, magic: bytes, mutation: tuple[str, Any]) -> bytes:
    """Damage ``data``: cut it, flip bits, plant huge integers, or put random bytes behind the magic."""
    kind, arg = mutation
    if kind == "truncate":
        return data[: int(len(data) * arg)]
    if kind == "random":
        return magic + arg
    out = bytearray(data)
    if kind == "flip":
        for where, bit in arg:
            out[min(int(where * len(out)), len(out) - 1)] ^= 1 << bit
    else:
        for offset, value in arg:
            out[offset : offset + 4] = value
    return bytes(out)


class TestFuzz:
    @pytest.mark.parametrize("reader", sorted(FUZZ_TARGETS))
    @settings(max_examples=50, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.data(), mutation=_mutation)
    def test_damaged_files_raise_only_spectrum_error(
        self, tmp_path: Path, reader: str, data: st.DataObject, mutation: tuple[str, Any]
    ) -> None:
        read, samples, magic = FUZZ_TARGETS[reader]
        source = data.draw(st.sampled_from(samples))
        damaged_bytes = _mutate(source.read_bytes(), magic, mutation)
        damaged = _copy_with(tmp_path, source, damaged_bytes, "fuzzed" + source.suffix)
        started = time.perf_counter()
        try:
            spectra = read(damaged)
        except SpectrumError:
            pass
        else:
            assert spectra and all(isinstance(s, Spectrum) for s in spectra)
        assert time.perf_counter() - started < 1.0
