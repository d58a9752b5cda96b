"""Targeted tests of the text-format readers: JCAMP-DX, delimited text, LabSpec, Agilent .asp,
Open Specy (CSV, JSON, YAML, zip) and ENVI; plus a fuzz that nothing but SpectrumError escapes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import detect, read_spectra
from engine.io.archive import spectra_from_zip
from engine.io.asp import spectra_from_asp
from engine.io.delimited import parse_delimited, spectra_from_delimited, spectra_from_labspec
from engine.io.envi import spectra_from_envi
from engine.io.jcampdx import JcampBlock, parse_jcamp, spectra_from_jcamp
from engine.io.openspecy import (
    spectra_from_openspecy_csv,
    spectra_from_openspecy_json,
    spectra_from_openspecy_yaml,
)
from tests.conftest import FORMATS
from tests.format_cases_text import TEXT_CASES

TEXT_FOLDERS = ("jcamp", "agilent_asp", "horiba_labspec_txt", "openspecy_misc")


def _jcamp_block(path: str) -> JcampBlock:
    return parse_jcamp((FORMATS / path).read_text(encoding="latin-1"), name=path)


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


# --- an independent JCAMP-DX encoder, to produce every compression form of the same data ----------

_SQZ_POS, _SQZ_NEG = "@ABCDEFGHI", "@abcdefghi"
_DIF_POS, _DIF_NEG = "%JKLMNOPQR", "%jklmnopqr"
_DUP = "STUVWXYZs"


def _asdf(value: int, positive: str, negative: str) -> str:
    digits = str(abs(value))
    return (negative if value < 0 else positive)[int(digits[0])] + digits[1:]


def _dup(count: int) -> str:
    digits = str(count)
    return _DUP[int(digits[0]) - 1] + digits[1:]


def _pack_repeats(tokens: list[str]) -> list[str]:
    """DUP compression: a run of equal tokens becomes the token and its count."""
    runs: list[tuple[str, int]] = []
    for token in tokens:
        if runs and runs[-1][0] == token:
            runs[-1] = (token, runs[-1][1] + 1)
        else:
            runs.append((token, 1))
    return [token + (_dup(count) if count > 1 else "") for token, count in runs]


def _encode_lines(y: list[int], form: str, *, per_line: int = 10, first_x: int = 1000) -> list[str]:
    """``(X++(Y..Y))`` lines for integer ``y`` on x = first_x + index, in one compression form."""
    lines = []
    if form in ("AFFN", "PAC", "SQZ"):
        for start in range(0, len(y), per_line):
            chunk = y[start : start + per_line]
            if form == "AFFN":
                body = " " + " ".join(str(v) for v in chunk)
            elif form == "PAC":
                body = "".join(f"{v:+d}" for v in chunk)
            else:
                body = "".join(_asdf(v, _SQZ_POS, _SQZ_NEG) for v in chunk)
            lines.append(f"{first_x + start}{body}")
        return lines
    start = 0
    while start < len(y) - 1:
        end = min(start + per_line, len(y) - 1)
        tokens = [_asdf(y[start], _SQZ_POS, _SQZ_NEG)]
        tokens += [_asdf(y[i] - y[i - 1], _DIF_POS, _DIF_NEG) for i in range(start + 1, end + 1)]
        if form == "DIFDUP":
            tokens = _pack_repeats(tokens)
        lines.append(f"{first_x + start}" + "".join(tokens))
        start = end  # the next line repeats the last value: the Y check
    return lines


def _jcamp_text(lines: list[str], n: int, *, extra: str = "", x_units: str = "1/CM") -> str:
    return (
        "##TITLE= synthetic\n##JCAMP-DX= 4.24\n##DATA TYPE= INFRARED SPECTRUM\n"
        f"##XUNITS= {x_units}\n##YUNITS= ABSORBANCE\n##XFACTOR= 1\n##YFACTOR= 0.001\n"
        f"##FIRSTX= 1000\n##LASTX= {1000 + n - 1}\n##NPOINTS= {n}\n{extra}"
        "##XYDATA= (X++(Y..Y))\n" + "\n".join(lines) + "\n##END=\n"
    )


#: Integer test data with runs (for DUP), negative values and large steps.
_Y = [0, 0, 0, 0, 5, 10, 15, 20, 20, 20, -3, -3, 400, 1234, -987, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 9]
_Y += [int(300 * np.sin(i / 5.0)) for i in range(40)]


class TestTextCaseTable:
    def test_every_text_sample_has_a_row(self) -> None:
        rows = {case.path for case in TEXT_CASES}
        files = {
            f"{folder}/{path.name}"
            for folder in TEXT_FOLDERS
            for path in (FORMATS / folder).iterdir()
            if not path.name.startswith("LICENSE")
        }
        assert files == rows


class TestJcampDx:
    @pytest.mark.parametrize("form", ["AFFN", "PAC", "SQZ", "DIF", "DIFDUP"])
    def test_every_compression_form_decodes_to_the_same_values(self, form: str) -> None:
        text = _jcamp_text(_encode_lines(_Y, form), len(_Y))
        block = parse_jcamp(text)[0]
        assert block.compression == form
        np.testing.assert_array_equal(block.y, np.array(_Y) * 0.001)
        np.testing.assert_allclose(block.x, 1000 + np.arange(len(_Y)))

    def test_sqz_and_pac_files_agree(self) -> None:
        pac = _jcamp_block("jcamp/isas_BRUKPAC.DX")[0]
        sqz = _jcamp_block("jcamp/isas_BRUKSQZ.DX")[0]
        assert (pac.compression, sqz.compression) == ("PAC", "SQZ")
        assert pac.y.size == sqz.y.size == 16384
        np.testing.assert_array_equal(pac.y, sqz.y)

    @pytest.mark.parametrize(
        ("path", "first_y", "last_y", "y_factor"),
        [
            ("jcamp/isas_BRUKDIF.DX", 2254931.0, None, 1.0),
            ("jcamp/isas_BRUKPAC.DX", 2259260.0, None, 1.0),
            ("jcamp/isas_BRUKSQZ.DX", 2259260.0, None, 1.0),
            ("jcamp/isas_BRUKER1.JCM", 91.06659889, None, 1.220703125e-2),
            ("jcamp/isas_BRUKER2.JCM", 4.064083099e-2, None, 2.441406250e-4),
            ("jcamp/isas_PE1800.DX", 1.0160, None, 1e-4),
            ("jcamp/isas_LABCALC.DX", 0.971056, None, 9.31323e-10),
            ("jcamp/openspecy_ftir_nitrocellulose.jdx", 0.68973011, None, 6.5086409e-10),
            ("jcamp/openspecy_throws_error_raman_1000002.jdx", 67.0, 46.0, 1.0),
            ("jcamp/difdup_example.jdx", 0.0, None, 0.1),
        ],
    )
    def test_first_value_matches_the_header(
        self, path: str, first_y: float, last_y: float | None, y_factor: float
    ) -> None:
        block = _jcamp_block(path)[0]
        # The data are integers times YFACTOR and FIRSTY is printed to 6 or more digits.
        assert abs(block.y[0] - first_y) <= y_factor * 1.0001 + 1e-6 * abs(first_y)
        if last_y is not None:
            assert block.y[-1] == pytest.approx(last_y)
        assert block.y.size == int(block.ldrs["NPOINTS"])

    def test_dif_file_with_dollar_comments_decodes(self) -> None:
        """jcamp 1.3.2 fails on this file's ``$$ checkpoint`` comment."""
        block = _jcamp_block("jcamp/isas_BRUKDIF.DX")[0]
        assert block.compression == "DIFDUP"
        assert block.y.size == 16384
        assert block.x[0] == pytest.approx(24038.5) and block.x[-1] == pytest.approx(0.0)
        # The same sample as BRUKPAC ("test32" vs "testspec"): nearly identical values.
        pac = _jcamp_block("jcamp/isas_BRUKPAC.DX")[0]
        assert np.corrcoef(block.y, pac.y)[0, 1] > 0.99999

    def test_difdup_example_decodes_its_53_points(self) -> None:
        """jcamp 1.3.2 returns an empty array; the last line holds only the Y-check value."""
        block = _jcamp_block("jcamp/difdup_example.jdx")[0]
        assert block.y.size == 53
        assert block.x[0] == 4.0 and block.x[-1] == 56.0
        assert block.y[-1] == pytest.approx(12.8)  # "56A28": the check value 128 x YFACTOR 0.1

    def test_absorbance_file_agrees_with_the_transmittance_file(self) -> None:
        """BRUKER2 (absorbance) is BRUKER1 (%T) of the same sample: A = -log10(T / 100)."""
        transmittance = _jcamp_block("jcamp/isas_BRUKER1.JCM")[0].y
        absorbance = _jcamp_block("jcamp/isas_BRUKER2.JCM")[0].y
        usable = (transmittance > 1.0) & (absorbance < 4.0)
        assert usable.sum() > 3700
        np.testing.assert_allclose(-np.log10(transmittance[usable] / 100), absorbance[usable], atol=5e-3)

    @pytest.mark.parametrize(
        "path",
        [
            "jcamp/isas_BRUKER1.JCM",
            "jcamp/isas_PE1800.DX",
            "jcamp/isas_LABCALC.DX",
            "jcamp/isas_BRUKPAC.DX",
            "jcamp/isas_BRUKSQZ.DX",
            "jcamp/openspecy_ftir_nitrocellulose.jdx",
            "jcamp/openspecy_throws_error_raman_1000002.jdx",
            "jcamp/scientific_notation_example.jdx",
        ],
    )
    def test_matches_the_jcamp_package_where_it_works(self, path: str) -> None:
        jcamp = pytest.importorskip("jcamp")
        with contextlib.redirect_stdout(io.StringIO()):
            reference = jcamp.readfile(str(FORMATS / path))
        block = _jcamp_block(path)[0]
        np.testing.assert_allclose(block.y, np.asarray(reference["y"], dtype=float), rtol=1e-12)
        np.testing.assert_allclose(block.x, np.asarray(reference["x"], dtype=float), rtol=1e-9)

    @staticmethod
    def _wrong_check_lines() -> list[str]:
        lines = _encode_lines(_Y, "DIF")
        wrong_check = _asdf(_Y[10] + 3, _SQZ_POS, _SQZ_NEG)
        lines[1] = re.sub(r"^([0-9]+)[@A-Ia-i][0-9]*", lambda m: m.group(1) + wrong_check, lines[1])
        return lines

    def test_y_check_failure_with_the_right_count_is_a_warning(self) -> None:
        block = parse_jcamp(_jcamp_text(self._wrong_check_lines(), len(_Y)))[0]
        assert block.y.size == len(_Y)
        assert any(w.startswith("line ") and "Y-check failed" in w for w in block.warnings)

    def test_y_check_failure_is_reported_without_a_point_count(self) -> None:
        text = re.sub(r"##NPOINTS= [0-9]+\n", "", _jcamp_text(self._wrong_check_lines(), len(_Y)))
        with pytest.raises(SpectrumError, match="Y-check failed") as info:
            parse_jcamp(text)
        assert info.value.reason == "unreadable"

    def test_y_check_failure_with_the_wrong_count_is_refused(self) -> None:
        with pytest.raises(SpectrumError, match="Y-check failed") as info:
            parse_jcamp(_jcamp_text(self._wrong_check_lines(), len(_Y) + 5))
        assert info.value.reason == "truncated"

    def test_a_writer_that_omits_the_y_check_is_tolerated(self) -> None:
        """Without the duplicate, the X check value shows that a line starts a new point."""
        lines = []
        for start in range(0, len(_Y), 10):
            chunk = _Y[start : start + 10]
            tokens = [_asdf(chunk[0], _SQZ_POS, _SQZ_NEG)]
            tokens += [_asdf(b - a, _DIF_POS, _DIF_NEG) for a, b in itertools.pairwise(chunk)]
            lines.append(f"{1000 + start}" + "".join(tokens))
        block = parse_jcamp(_jcamp_text(lines, len(_Y)))[0]
        np.testing.assert_array_equal(block.y, np.array(_Y) * 0.001)
        assert block.warnings and "no Y-check" in block.warnings[0]

    def test_npoints_mismatch_is_reported(self) -> None:
        text = (FORMATS / "jcamp/isas_PE1800.DX").read_text(encoding="latin-1").splitlines()
        del text[100]
        with pytest.raises(
            SpectrumError, match=r"decodes to 3290 points but ##NPOINTS= declares 3301"
        ) as info:
            parse_jcamp("\n".join(text))
        assert info.value.reason == "truncated"

    def test_truncated_file_is_refused(self, tmp_path: Path) -> None:
        data = (FORMATS / "jcamp/isas_BRUKER1.JCM").read_bytes()
        path = _write(tmp_path, "cut.jcm", data[: len(data) // 2])
        with pytest.raises(SpectrumError) as info:
            read_spectra(path)
        assert info.value.reason in ("truncated", "unreadable")

    @pytest.mark.parametrize(("unit", "scale"), [("MICROMETERS", 1e4), ("NANOMETERS", 1e7)])
    def test_wavelength_axes_become_wavenumbers(self, unit: str, scale: float) -> None:
        n = 20
        first, last = (2.5, 12.5) if unit == "MICROMETERS" else (2500.0, 12500.0)
        text = (
            f"##TITLE= w\n##DATA TYPE= INFRARED SPECTRUM\n##XUNITS= {unit}\n##YUNITS= ABSORBANCE\n"
            f"##FIRSTX= {first}\n##LASTX= {last}\n##NPOINTS= {n}\n##XYDATA= (X++(Y..Y))\n"
            + "\n".join(f"{i} {i % 7}" for i in range(n))
            + "\n##END=\n"
        )
        spectrum = spectra_from_jcamp(text.encode(), name="w.jdx")[0]
        assert spectrum.wavenumbers[0] == pytest.approx(scale / last)
        assert spectrum.wavenumbers[-1] == pytest.approx(scale / first)
        assert spectrum.values[0] == (n - 1) % 7  # the last point, at the longest wavelength

    @pytest.mark.parametrize("unit", ["HZ", "PPM"])
    def test_nmr_axes_are_refused(self, unit: str) -> None:
        text = _jcamp_text(_encode_lines(_Y, "AFFN"), len(_Y), x_units=unit)
        with pytest.raises(SpectrumError, match="not an IR or Raman") as info:
            spectra_from_jcamp(text.encode(), name="nmr.dx")
        assert info.value.reason == "no_spectrum"

    def test_link_blocks_give_one_spectrum_each(self) -> None:
        inner = [_jcamp_text(_encode_lines(_Y, form), len(_Y)) for form in ("DIFDUP", "PAC")]
        text = (
            "##TITLE= link\n##JCAMP-DX= 5.0\n##DATA TYPE= LINK\n##BLOCKS= 2\n" + "".join(inner) + "##END=\n"
        )
        spectra = spectra_from_jcamp(text.encode(), name="link.jdx")
        assert len(spectra) == 2
        np.testing.assert_array_equal(spectra[0].values, spectra[1].values)
        assert [s.metadata["jcamp_compression"] for s in spectra] == ["DIFDUP", "PAC"]

    def test_peak_table_is_read_as_points(self) -> None:
        pairs = " ".join(f"{500 + 10 * i},{(i * 37) % 11}" for i in range(20))
        text = (
            "##TITLE= peaks\n##DATA TYPE= INFRARED PEAK TABLE\n##XUNITS= 1/CM\n##YUNITS= ABSORBANCE\n"
            f"##NPOINTS= 20\n##PEAKTABLE= (XY..XY)\n{pairs}\n##END=\n"
        )
        spectrum = spectra_from_jcamp(text.encode(), name="p.jdx")[0]
        assert spectrum.n_points == 20 and spectrum.wavenumbers[-1] == 690.0

    def test_ntuples_pages_give_one_spectrum_each(self) -> None:
        n = len(_Y)
        pages = "".join(
            f"##PAGE= N={page}\n##DATA TABLE= (X++(Y..Y)), XYDATA\n"
            + "\n".join(_encode_lines(_Y, "DIFDUP"))
            + "\n"
            for page in (1, 2)
        )
        text = (
            "##TITLE= nt\n##JCAMP-DX= 5.0\n##DATA TYPE= INFRARED SPECTRUM\n##NTUPLES= INFRARED SPECTRUM\n"
            "##VAR_NAME= WAVENUMBER, ABSORBANCE, PAGE NUMBER\n##SYMBOL= X, Y, N\n"
            f"##VAR_DIM= {n}, {n}, 2\n##UNITS= 1/CM, ABSORBANCE,\n##FIRST= 1000, 0,\n"
            f"##LAST= {1000 + n - 1}, 0,\n##FACTOR= 1, 0.001,\n"
            + pages
            + "##END NTUPLES= INFRARED SPECTRUM\n##END=\n"
        )
        spectra = spectra_from_jcamp(text.encode(), name="nt.jdx")
        assert len(spectra) == 2
        np.testing.assert_array_equal(spectra[0].values, np.array(_Y) * 0.001)
        assert spectra[0].y_unit == "absorbance" and spectra[1].metadata["page"] == "N=2"

    def test_jcamp_is_recognised_whatever_the_suffix(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "spectrum.txt", _jcamp_text(_encode_lines(_Y, "SQZ"), len(_Y)))
        assert detect(path).name == "jcamp-dx"
        assert read_spectra(path)[0].n_points == len(_Y)

    def test_jcamp_after_a_comment_in_a_txt_file(self, tmp_path: Path) -> None:
        text = "$$ exported\n\n" + _jcamp_text(_encode_lines(_Y, "PAC"), len(_Y))
        path = _write(tmp_path, "late.txt", text)
        assert detect(path).name == "jcamp-dx"  # the JCAMP sniff, before the generic text reader
        spectrum = read_spectra(path)[0]
        assert spectrum.n_points == len(_Y) and spectrum.metadata["format"] == "jcamp-dx"

    def test_metadata_carries_header_fields(self) -> None:
        spectrum = read_spectra(FORMATS / "jcamp/isas_PE1800.DX")[0]
        assert spectrum.metadata["title"] == "Isobutylacrylat 1 ul"
        assert spectrum.metadata["instrument"] == "PERKIN-ELMER 1800"
        assert spectrum.metadata["date"] == "91/06/18"
        assert spectrum.technique == "ir"

    def test_garbage_is_refused(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "x.jdx", b"\x00\xff garbage \x13" * 50)
        with pytest.raises(SpectrumError):
            read_spectra(path)

    def test_huge_dup_count_is_refused_without_allocating(self) -> None:
        text = _jcamp_text(["1000A1s99999999"], 16)
        with pytest.raises(SpectrumError, match="DUP count"):
            parse_jcamp(text)


class TestDelimited:
    def test_decimal_comma_with_semicolons(self, tmp_path: Path) -> None:
        rows = "".join(f"{1000 + i},5;0,{i % 7 + 1}\n" for i in range(20))
        path = _write(tmp_path, "s.csv", "Wellenzahl;Absorbanz\n" + rows)
        spectrum = read_spectra(path)[0]
        assert spectrum.wavenumbers[0] == 1000.5
        assert spectrum.values[0] == 0.1
        assert spectrum.y_unit == "absorbance"
        assert spectrum.metadata["decimal"] == ","

    def test_decimal_comma_with_blanks(self) -> None:
        table = parse_delimited("".join(f"{1000 + i},25 {i},5\n" for i in range(20)))
        assert (table.delimiter, table.decimal) == (" ", ",")
        assert table.columns[1].tolist() == [1001.25, 1.5]

    def test_semicolon_with_decimal_point(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "s.csv", "".join(f"{1000 + i}.5;{i % 5}.25\n" for i in range(20)))
        spectrum = read_spectra(path)[0]
        assert spectrum.n_points == 20 and spectrum.values[1] == 1.25

    def test_headerless_csv(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "h.csv", "".join(f"{4000 - 10 * i},{(i * 3) % 8}\n" for i in range(30)))
        spectrum = read_spectra(path)[0]
        assert detect(path).name == "delimited"
        assert spectrum.n_points == 30 and spectrum.y_unit == "arbitrary" and spectrum.technique is None

    def test_descending_axis_is_sorted(self, tmp_path: Path) -> None:
        rows = "".join(f"{4000 - i}\t{i}\n" for i in range(20))
        spectrum = read_spectra(_write(tmp_path, "d.tsv", "Wavenumber\t%T\n" + rows))[0]
        assert spectrum.wavenumbers[0] == 3981 and spectrum.values[0] == 19
        assert np.all(np.diff(spectrum.wavenumbers) > 0)
        assert (spectrum.y_unit, spectrum.technique) == ("transmittance", "ir")

    def test_three_columns_give_one_spectrum_per_value_column(self, tmp_path: Path) -> None:
        rows = "".join(f"{1000 + i},{i % 4},{i % 5}\n" for i in range(20))
        spectra = read_spectra(_write(tmp_path, "t.csv", "wavenumber,sample A,sample B\n" + rows))
        assert [s.metadata["column"] for s in spectra] == ["sample A", "sample B"]
        assert spectra[1].values[4] == 4

    def test_a_leading_index_column_is_dropped(self, tmp_path: Path) -> None:
        rows = "".join(f"{i + 1} {1000 + 2 * i} {i % 3}\n" for i in range(20))
        spectra = read_spectra(_write(tmp_path, "i.txt", rows))
        assert len(spectra) == 1
        assert spectra[0].wavenumbers[0] == 1000 and spectra[0].values[2] == 2

    def test_comments_and_raman_header(self, tmp_path: Path) -> None:
        text = "# exported by a spectrometer\n% another comment\nRaman shift (cm-1)\tIntensity\n"
        text += "".join(f"{100 + i}\t{i * i}\n" for i in range(20)) + "# end\n"
        spectrum = read_spectra(_write(tmp_path, "r.txt", text))[0]
        assert (spectrum.y_unit, spectrum.technique) == ("counts", "raman")
        assert spectrum.n_points == 20

    def test_utf16_with_bom(self, tmp_path: Path) -> None:
        text = "wavenumber,absorbance\r\n" + "".join(f"{1000 + i},{i % 6}\r\n" for i in range(20))
        spectrum = read_spectra(_write(tmp_path, "u.csv", text.encode("utf-16")))[0]
        assert spectrum.n_points == 20 and spectrum.y_unit == "absorbance"

    def test_wide_layout_gives_one_spectrum_per_row(self) -> None:
        axis = "\t".join(str(500 + i) for i in range(20))
        rows = "".join(
            f"{x}\t{y}\t" + "\t".join(str((i + x) % 9) for i in range(20)) + "\n" for x, y in [(0, 0), (5, 0)]
        )
        spectra = spectra_from_delimited(f"\t\t{axis}\n{rows}".encode(), name="map.txt")
        assert len(spectra) == 2
        assert (spectra[1].metadata["x"], spectra[1].metadata["y"]) == (5.0, 0.0)
        assert spectra[1].values[0] == 5

    def test_truncated_last_row(self) -> None:
        text = "".join(f"{1000 + i},{i % 3}\n" for i in range(20)) + "1020"
        # A single number cannot be a data row: it ends the data, which still reads.
        assert spectra_from_delimited(text.encode(), name="t.csv")[0].n_points == 20
        text = "".join(f"{1000 + i},{i % 3},{i % 4}\n" for i in range(20)) + "1020,1"
        with pytest.raises(SpectrumError) as info:
            spectra_from_delimited(text.encode(), name="t.csv")
        assert info.value.reason == "truncated"

    @pytest.mark.parametrize(("header", "scale"), [("wavelength_um", 1e4), ("Wavelength (nm)", 1e7)])
    def test_a_wavelength_axis_becomes_wavenumbers(self, tmp_path: Path, header: str, scale: float) -> None:
        """An axis in µm was taken as cm-1 (2.5 to 14.8) and the spectrum came out narrow_range."""
        wavelengths = np.linspace(2.5, 14.8, 50) * (1e3 if scale == 1e7 else 1)
        text = f"{header},absorbance\n" + "".join(
            f"{w:.4f},{i % 6 / 10}\n" for i, w in enumerate(wavelengths)
        )
        (spectrum,) = read_spectra(_write(tmp_path, "wavelengths.csv", text))
        assert spectrum.wavenumbers[0] == pytest.approx(scale / wavelengths[-1])
        assert spectrum.wavenumbers[-1] == pytest.approx(4000.0)
        assert "converted" in spectrum.metadata["x_unit"]

    def test_an_opus_data_point_table_is_read(self, tmp_path: Path) -> None:
        path = tmp_path / "PA_67.dpt"
        path.write_text("".join(f"{4000 - 2 * i},{i % 9 / 10}\n" for i in range(100)))
        assert detect(path).name == "delimited" and read_spectra(path)[0].n_points == 100

    @pytest.mark.parametrize("marker", ["NaN", "nan", "", "N/A", "-"])
    def test_values_marked_not_measured_are_left_out(self, marker: str) -> None:
        """A blanked CO2 region: the rows after the first NaN were read as a footer and dropped."""
        rows = [
            f"{1000 + 2 * i}\t{1 + (i % 7) / 10}" if not 20 <= i < 25 else f"{1000 + 2 * i}\t{marker}"
            for i in range(60)
        ]
        (spectrum,) = spectra_from_delimited(("x\ty\n" + "\n".join(rows)).encode(), name="t.txt")
        assert spectrum.n_points == 55 and spectrum.wavenumbers[-1] == 1118
        assert spectrum.metadata["points_not_measured"] == 5

    @pytest.mark.parametrize(
        "content",
        [
            b"\x00\x01\x02\x03\xff\xfe\xfd" * 100,
            b"1\n2\n3\n4\n",
            "ä,ö\nü,ß\n".encode("latin-1"),
        ],
    )
    def test_garbage_is_refused(self, tmp_path: Path, content: bytes) -> None:
        with pytest.raises(SpectrumError) as info:
            read_spectra(_write(tmp_path, "g.txt", content))
        assert info.value.reason == "unreadable"

    def test_long_lines_that_fail_to_parse_fail_fast(self) -> None:
        """A regular expression that backtracks exponentially would hang here."""
        line = ",".join(str(300 + 3 * i) for i in range(600))
        start = time.perf_counter()
        for text in (line + ",", line + ",x", "a= " + " " * 100_000 + "b\n" + line):
            with contextlib.suppress(SpectrumError):
                spectra_from_delimited(text.encode(), name="long.csv")
        assert time.perf_counter() - start < 1.0

    def test_envi_data_file_is_read_through_its_header(self, tmp_path: Path) -> None:
        header, data = _envi(samples=2, lines=1, bands=20, interleave="bsq")
        _write(tmp_path, "map.hdr", header)
        path = _write(tmp_path, "map.dat", data)
        assert detect(path).name == "envi"  # claimed by the ENVI reader, not the delimited one
        spectra = read_spectra(path)
        assert len(spectra) == 2
        assert {s.metadata["format"] for s in spectra} == {"envi"}
        assert spectra[0].metadata["source"] == str(path)
        assert spectra[0].metadata["sha256"] == hashlib.sha256(data).hexdigest()

    def test_a_dat_without_an_envi_header_stays_delimited_text(self, tmp_path: Path) -> None:
        _write(tmp_path, "map.hdr", "not an ENVI header\n")
        path = _write(tmp_path, "map.dat", "".join(f"{1000 + i}\t{i % 7}\n" for i in range(20)))
        assert detect(path).name == "delimited"


NOTE = (
    "Sample S-07, Rhine at Lobith, 2024-05-03.\n"
    "Volume filtered: 250 L, mesh 20 um, dried at 40 \u00b0C overnight.\n"
    "Particles picked: 42 (see photo.png); 3 lost while mounting.\n"
)


class TestNotASpectrum:
    """A note that no reader recognises is ``not_a_spectrum``; a damaged spectrum keeps its reason."""

    @pytest.mark.parametrize(
        ("name", "content"),
        [
            ("notes.txt", NOTE.encode()),
            ("notes.csv", b"particle,comment\nP1,fibre, blue\nP2,fragment\n"),
            ("README", NOTE.encode("utf-16")),
            ("protocol.log", NOTE.encode("cp1252")),
            ("sample.md", b"# Sample 7\n\nNothing to report.\n"),
        ],
    )
    def test_a_note_is_not_a_spectrum(self, tmp_path: Path, name: str, content: bytes) -> None:
        with pytest.raises(SpectrumError) as info:
            read_spectra(_write(tmp_path, name, content))
        assert info.value.reason == "not_a_spectrum"
        assert name in info.value.message

    @pytest.mark.parametrize(
        ("name", "content", "reason"),
        [
            ("cut.csv", b"wavenumber,absorbance\n", "too_few_points"),  # the data never written
            ("cut.txt", b"wavenumber,absorbance\n1000,0.1\n1002,0.", "too_few_points"),
            ("short.txt", b"1000,0.1\n1002,0.2\n", "too_few_points"),
            # one row, its value not written: "1234.5;" is a point not measured, and one is too few
            ("cut-short.csv", b"This file was cut short by the instrument\n1234.5;\n", "too_few_points"),
            ("row.txt", b"Sample A\n" + b" ".join(b"%d" % (1000 + i) for i in range(40)), "too_few_points"),
            (
                "table.txt",
                NOTE.encode() + b"".join(b"%d %d\n" % (i % 5, i) for i in range(20)),
                "not_monotone",
            ),
            ("broken.txt", b"\x00\x01\x02\x03\xff\xfe\xfd" * 100, "unreadable"),
            ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "unsupported_format"),
        ],
    )
    def test_a_damaged_spectrum_keeps_its_reason(
        self, tmp_path: Path, name: str, content: bytes, reason: str
    ) -> None:
        with pytest.raises(SpectrumError) as info:
            read_spectra(_write(tmp_path, name, content))
        assert info.value.reason == reason

    def test_a_recognised_format_is_never_called_a_note(self, tmp_path: Path) -> None:
        with pytest.raises(SpectrumError) as info:  # JCAMP-DX by its content, whatever its damage
            read_spectra(_write(tmp_path, "notes.txt", b"##TITLE=notes\n##JCAMP-DX=4.24\n##END=\n"))
        assert info.value.reason != "not_a_spectrum"

    def test_the_licence_texts_beside_the_sample_files(self) -> None:
        licences = sorted(FORMATS.rglob("LICENSE*.txt"))
        assert licences
        for path in licences:
            with pytest.raises(SpectrumError) as info:
                read_spectra(path)
            assert info.value.reason == "not_a_spectrum", path.name


class TestLabSpec:
    def test_header_fields_become_metadata(self) -> None:
        spectrum = read_spectra(FORMATS / "horiba_labspec_txt/spectrochempy_SMC1-Initial_RT.txt")[0]
        assert spectrum.metadata["format"] == "horiba-labspec"
        assert spectrum.metadata["instrument"] == "LabRAM HR Evol"
        assert spectrum.metadata["laser"] == "532nm_Edge"
        assert spectrum.metadata["title"] == "D_1"
        assert spectrum.metadata["date"] == "14.02.2019 10:03"
        assert (spectrum.technique, spectrum.y_unit) == ("raman", "counts")

    def test_plain_text_is_not_claimed(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "p.txt", "# note=1\n" + "".join(f"{100 + i}\t{i}\n" for i in range(20)))
        assert detect(path).name == "delimited"

    def test_garbage_after_the_header_is_refused(self) -> None:
        data = (FORMATS / "horiba_labspec_txt/spectrochempy_SMC1-Initial_RT.txt").read_bytes()
        header = data[: data.index(b"12.5534")]
        with pytest.raises(SpectrumError):
            spectra_from_labspec(header + b"no numbers here\n", name="x.txt")


class TestAgilentAsp:
    def test_sample_file(self) -> None:
        spectrum = read_spectra(FORMATS / "agilent_asp/openspecy_ftir_ldpe_soil.asp")[0]
        assert spectrum.n_points == 1798
        assert round(spectrum.wavenumbers[0]) == 650 and round(spectrum.wavenumbers[-1]) == 3999
        assert spectrum.technique == "ir"

    def test_text_that_does_not_fit_is_unreadable(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "r.asp", "this is\nnot an asp\nfile at all\n")
        with pytest.raises(SpectrumError) as info:
            read_spectra(path)
        assert info.value.reason == "unreadable"

    def test_more_values_than_declared_is_unreadable(self) -> None:
        text = "16\n4000\n1000\n1\n2\n4\n" + "\n".join(str(i % 3) for i in range(40))
        with pytest.raises(SpectrumError, match="declares 16") as info:
            spectra_from_asp(text.encode(), name="x.asp")
        assert info.value.reason == "unreadable"

    def test_truncated(self) -> None:
        data = (FORMATS / "agilent_asp/openspecy_ftir_ldpe_soil.asp").read_bytes()
        with pytest.raises(SpectrumError) as info:
            spectra_from_asp(data[: len(data) // 2], name="cut.asp")
        assert info.value.reason == "truncated"


class TestOpenSpecy:
    def test_csv_precedence_over_the_generic_reader(self) -> None:
        assert detect(FORMATS / "openspecy_misc/raman_hdpe.csv").name == "openspecy-csv"
        assert detect(FORMATS / "openspecy_misc/raman_hdpe_os.csv").name == "openspecy-csv"
        assert detect(FORMATS / "openspecy_misc/ftir_pva_without_header.csv").name == "delimited"

    @pytest.mark.parametrize("marker", ["nan", "", "NA"])
    def test_values_marked_not_measured_are_left_out(self, marker: str) -> None:
        """``nan`` made the intensity column text: "holds no spectrum"; blanks: ``non_finite``."""
        rows = [
            f"{1000 + 2 * i},{1 + (i % 7) / 10}" if not 20 <= i < 25 else f"{1000 + 2 * i},{marker}"
            for i in range(60)
        ]
        (spectrum,) = spectra_from_openspecy_csv(
            ("wavenumber,absorbance\n" + "\n".join(rows)).encode(), name="t.csv"
        )
        assert spectrum.n_points == 55 and spectrum.metadata["points_not_measured"] == 5
        assert spectrum.y_unit == "absorbance"

    def test_a_column_with_no_value_is_refused_plainly(self) -> None:
        text = "wavenumber,absorbance\n" + "".join(f"{1000 + i},nan\n" for i in range(40))
        with pytest.raises(SpectrumError) as info:
            spectra_from_openspecy_csv(text.encode(), name="t.csv")
        assert info.value.reason == "no_spectrum"

    def test_a_footer_after_the_table_is_not_a_row(self) -> None:
        table = "".join(f"{1000 + i},{i % 5}\n" for i in range(40))
        (spectrum,) = spectra_from_openspecy_csv(
            f"wavenumber,absorbance\n{table}\nEnd of data\nOperator: jk\n".encode(), name="t.csv"
        )
        assert spectrum.n_points == 40
        with pytest.raises(SpectrumError) as info:  # a short last row of numbers is still a cut-short file
            spectra_from_openspecy_csv(
                f"wavenumber,a,b\n{table.replace(chr(10), ',1' + chr(10))}1040\n".encode(), name="t.csv"
            )
        assert info.value.reason == "truncated"

    def test_wide_csv_metadata(self) -> None:
        spectrum = read_spectra(FORMATS / "openspecy_misc/raman_hdpe_os.csv")[0]
        assert spectrum.metadata["spectrum_identity"] == "HDPE"
        assert spectrum.technique == "raman"

    def test_all_encodings_agree(self) -> None:
        paths = ["raman_hdpe.csv", "raman_hdpe.json", "raman_hdpe.yml"]
        spectra = [read_spectra(FORMATS / "openspecy_misc" / p)[0] for p in paths]
        for other in spectra[1:]:
            np.testing.assert_array_equal(other.wavenumbers, spectra[0].wavenumbers)
            np.testing.assert_array_equal(other.values, spectra[0].values)

    def test_long_csv_with_several_spectra(self) -> None:
        rows = "".join(f"{400 + i},{i % 3},{i % 4}\n" for i in range(20))
        spectra = spectra_from_openspecy_csv(f"wavenumber,a,b\n{rows}".encode(), name="m.csv")
        assert [s.metadata["column"] for s in spectra] == ["a", "b"]

    def test_json_with_several_spectra_and_metadata(self) -> None:
        obj = {
            "wavenumber": [400 + i for i in range(20)],
            "spectra": {"V1": [i % 3 for i in range(20)], "V2": [i % 5 for i in range(20)]},
            "metadata": {"x": [0, 1], "y": [0, 0], "spectrum_type": ["FTIR", "FTIR"], "file_id": "abc"},
        }
        spectra = spectra_from_openspecy_json(json.dumps(obj).encode(), name="o.json")
        assert len(spectra) == 2
        assert spectra[1].metadata["x"] == 1 and spectra[1].metadata["file_id"] == "abc"
        assert spectra[1].technique == "ir"

    def test_yaml_aliases_and_bad_types_are_refused(self) -> None:
        text = "wavenumber: &a [1, 2]\nspectra:\n  intensity: [*a, *a]\n"
        with pytest.raises(SpectrumError):
            spectra_from_openspecy_yaml(text.encode(), name="bad.yml")
        with pytest.raises(SpectrumError):
            spectra_from_openspecy_yaml(b"!!python/object:os.system {}", name="evil.yml")

    @pytest.mark.parametrize("content", [b"{not json", b"[1, 2, 3]", b'{"wavenumber": "x", "spectra": {}}'])
    def test_bad_json_is_refused(self, content: bytes) -> None:
        with pytest.raises(SpectrumError) as info:
            spectra_from_openspecy_json(content, name="b.json")
        assert info.value.reason == "unreadable"


def _envi(*, samples: int, lines: int, bands: int, interleave: str) -> tuple[str, bytes]:
    """A synthetic ENVI pair whose pixel (x, y) holds (x + 10 y) * 100 + band."""
    cube = np.zeros((lines, samples, bands), dtype="<f4")
    for y in range(lines):
        for x in range(samples):
            cube[y, x] = (x + 10 * y) * 100 + np.arange(bands)
    order = {"bip": (0, 1, 2), "bil": (0, 2, 1), "bsq": (2, 0, 1)}[interleave]
    wavelength = ", ".join(str(1000 + 4 * b) for b in range(bands))
    header = (
        f"ENVI\nsamples = {samples}\nlines = {lines}\nbands = {bands}\nheader offset = 0\ndata type = 4\n"
        f"interleave = {interleave}\nbyte order = 0\nz plot titles = {{Wavenumbers (cm-1), Absorbance}}\n"
        f"wavelength = {{{wavelength}}}\n"
    )
    return header, np.ascontiguousarray(cube.transpose(order)).tobytes()


class TestEnviAndZip:
    @pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
    def test_every_interleave_gives_the_same_pixels(self, interleave: str) -> None:
        header, data = _envi(samples=3, lines=2, bands=20, interleave=interleave)
        spectra = spectra_from_envi(header, data, name="m.hdr")
        assert len(spectra) == 6
        pixel = next(s for s in spectra if (s.metadata["x"], s.metadata["y"]) == (2, 1))
        assert pixel.values[0] == 1200 and pixel.values[-1] == 1219
        assert pixel.y_unit == "absorbance"

    def test_truncated_data(self) -> None:
        header, data = _envi(samples=3, lines=2, bands=20, interleave="bip")
        with pytest.raises(SpectrumError) as info:
            spectra_from_envi(header, data[:-4], name="m.hdr")
        assert info.value.reason == "truncated"

    def test_map_zip_pixel_coordinates(self) -> None:
        spectra = read_spectra(FORMATS / "openspecy_misc/CA_tiny_map.zip")
        assert len(spectra) == 208
        assert {(s.metadata["x"], s.metadata["y"]) for s in spectra} == {
            (x, y) for x in range(16) for y in range(13)
        }
        assert spectra[0].metadata["member"] == "CA small UF.hdr"

    def test_zip_of_csvs(self) -> None:
        spectra = read_spectra(FORMATS / "openspecy_misc/testdata_zipped.zip")
        assert sorted(s.metadata["member"] for s in spectra) == [
            "testdata2 - Copy (2).csv",
            "testdata2 - Copy.csv",
            "testdata2.csv",
        ]

    def test_zip_bomb_is_refused_before_decompressing(self) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("bomb.csv", b"0" * (4 * 1024 * 1024))
        with pytest.raises(SpectrumError, match="zip bomb"):
            spectra_from_zip(buffer.getvalue(), name="bomb.zip")

    def test_lying_declared_size_is_refused(self) -> None:
        buffer = io.BytesIO()
        rows = "".join(f"{400 + i},{i % 3}\n" for i in range(40)).encode()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("a.csv", rows)
        data = bytearray(buffer.getvalue())
        # Shrink the declared size in the central directory (offset 24 of the record).
        central = data.rindex(b"PK\x01\x02")
        data[central + 24 : central + 28] = (10).to_bytes(4, "little")
        with pytest.raises(SpectrumError):
            spectra_from_zip(bytes(data), name="liar.zip")

    def test_zip_members_are_chosen_as_files_are(self) -> None:
        jcamp = "$$ exported\n\n" + _jcamp_text(_encode_lines(_Y, "SQZ"), len(_Y))
        asp = "16\n4000\n1000\n1\n2\n4\n" + "\n".join(str(i % 5) for i in range(16))
        labspec = (FORMATS / "horiba_labspec_txt/spectrochempy_SMC1-Initial_RT.txt").read_bytes()
        rows = "wavenumber,intensity\n" + "".join(f"{400 + i},{i % 3}\n" for i in range(16))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("a/late.txt", jcamp)
            archive.writestr("b.asp", asp)
            archive.writestr("c.txt", labspec)
            archive.writestr("d.csv", rows)
            archive.writestr("e.spa", (FORMATS / "omnic_spa/spectrochempy_spectre.SPA").read_bytes())
            archive.writestr("readme.md", "# notes\n")
        spectra = spectra_from_zip(buffer.getvalue(), name="mixed.zip")
        by_member = {s.metadata["member"]: s for s in spectra}
        assert sorted(by_member) == ["a/late.txt", "b.asp", "c.txt", "d.csv"]  # binary members are skipped
        assert by_member["a/late.txt"].metadata["jcamp_compression"] == "SQZ"
        assert by_member["b.asp"].metadata["asp_header"] == [1.0, 2.0, 4.0]
        assert by_member["c.txt"].metadata["labspec"] and by_member["c.txt"].y_unit == "counts"
        assert by_member["d.csv"].metadata["column"] == "intensity"

    def test_zip_without_spectra(self) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("readme.md", "nothing here")
        with pytest.raises(SpectrumError) as info:
            spectra_from_zip(buffer.getvalue(), name="empty.zip")
        assert info.value.reason == "no_spectrum"


# --- fuzz: truncation, flipped bytes and random bytes never raise anything but SpectrumError ------

BytesReader = Callable[..., list[Spectrum]]

FUZZ_SAMPLES: list[tuple[str, BytesReader]] = [
    ("jcamp/isas_BRUKER1.JCM", spectra_from_jcamp),
    ("jcamp/isas_PE1800.DX", spectra_from_jcamp),
    ("jcamp/openspecy_throws_error_raman_1000002.jdx", spectra_from_jcamp),
    ("jcamp/difdup_example.jdx", spectra_from_jcamp),
    ("agilent_asp/openspecy_ftir_ldpe_soil.asp", spectra_from_asp),
    ("horiba_labspec_txt/spectrochempy_SMC1-Initial_RT.txt", spectra_from_labspec),
    ("openspecy_misc/ftir_pva_without_header.csv", spectra_from_delimited),
    ("openspecy_misc/raman_hdpe_os.csv", spectra_from_delimited),
    ("openspecy_misc/raman_hdpe_os.csv", spectra_from_openspecy_csv),
    ("openspecy_misc/raman_hdpe.csv", spectra_from_openspecy_csv),
    ("openspecy_misc/raman_hdpe.json", spectra_from_openspecy_json),
    ("openspecy_misc/raman_hdpe.yml", spectra_from_openspecy_yaml),
    ("openspecy_misc/testdata_zipped.zip", spectra_from_zip),
    ("openspecy_misc/CA_tiny_map.zip", spectra_from_zip),
]


@functools.cache
def _sample(path: str) -> bytes:
    return (FORMATS / path).read_bytes()


@st.composite
def _mutated(draw: st.DrawFn, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original)))]
    if kind == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    return draw(st.binary(max_size=4096))


class TestFuzz:
    @pytest.mark.parametrize(("path", "reader"), FUZZ_SAMPLES, ids=[p for p, _ in FUZZ_SAMPLES])
    @settings(
        max_examples=50,
        deadline=2000,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def test_only_spectrum_errors_escape(self, path: str, reader: BytesReader, data: st.DataObject) -> None:
        mutated = data.draw(_mutated(_sample(path)))
        start = time.perf_counter()
        try:
            spectra = reader(mutated, name=Path(path).name)
        except SpectrumError:
            pass
        else:
            assert spectra and all(isinstance(s, Spectrum) for s in spectra)
        assert time.perf_counter() - start < 1.0


def test_decimal_comma_rows_read_as_their_point_twins(tmp_path: Path) -> None:
    """Large decimal-comma exports take the fast path (flat arrays, not lists): same numbers."""
    x = np.linspace(400.0, 4000.0, 5000)
    y = np.sin(x / 50.0) + 2.0
    point = tmp_path / "point.csv"
    comma = tmp_path / "comma.csv"
    point.write_text(
        "wavenumber,absorbance\n" + "".join(f"{a:.4f},{b:.6f}\n" for a, b in zip(x, y, strict=True))
    )
    comma.write_text(
        "wavenumber;absorbance\n"
        + "".join(f"{a:.4f};{b:.6f}\n".replace(".", ",") for a, b in zip(x, y, strict=True))
    )
    (a,), (b,) = read_spectra(point), read_spectra(comma)
    assert np.array_equal(a.wavenumbers, b.wavenumbers) and np.array_equal(a.values, b.values)
