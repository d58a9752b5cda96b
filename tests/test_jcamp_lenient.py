"""JCAMP-DX Y-check mismatches: kept with a warning when the point count agrees with the header.

The fixtures are generated here, in the layout of reference-collection IR files
(NIST and similar): DIFDUP-compressed ``(X++(Y..Y))`` data, 1801 points from
400 to 4000 cm-1, and a final line that holds a lone Y value - the Y-check of
the last point, which those writers put on a line of its own.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from engine.core.spectrum import SpectrumError
from engine.io import read_spectra
from engine.io.jcampdx import decode_xydata, parse_jcamp, spectra_from_jcamp

N = 1801
FIRST_X, LAST_X, STEP = 400, 4000, 2
Y_FACTOR = 0.0001
PER_LINE = 12

_SQZ_POS, _SQZ_NEG = "@ABCDEFGHI", "@abcdefghi"
_DIF_POS, _DIF_NEG = "%JKLMNOPQR", "%jklmnopqr"
_DUP = "STUVWXYZs"


def _sqz(value: int) -> str:
    digits = str(abs(value))
    return (_SQZ_NEG if value < 0 else _SQZ_POS)[int(digits[0])] + digits[1:]


def _dif(value: int) -> str:
    digits = str(abs(value))
    return (_DIF_NEG if value < 0 else _DIF_POS)[int(digits[0])] + digits[1:]


def _dup(count: int) -> str:
    digits = str(count)
    return _DUP[int(digits[0]) - 1] + digits[1:]


def _polyethylene() -> list[int]:
    """Integer absorbance (x YFACTOR) of a polyethylene-like film on a sloping baseline."""
    x = FIRST_X + STEP * np.arange(N, dtype=np.float64)
    peaks = [(2915, 9000, 18), (2848, 7000, 12), (1472, 2500, 6), (1462, 2000, 6), (730, 1800, 5)]
    y = 150 + 20 * (x - FIRST_X) / (LAST_X - FIRST_X)
    for centre, height, width in peaks:
        y = y + height * np.exp(-0.5 * ((x - centre) / width) ** 2)
    values = [round(v) for v in y]
    values[-1] = values[-2] + 3  # the last point differs from its neighbour
    return values


TRUTH = _polyethylene()


def _data_lines(y: list[int], *, check_line: bool = True) -> list[str]:
    """DIFDUP lines; each line after the first starts with the Y-check of the previous line's last point.

    With ``check_line`` the last line holds only the Y-check of the last point (``4000A...``).
    """
    lines = []
    start = 0
    while start < len(y) - 1:
        end = min(start + PER_LINE, len(y) - 1)
        tokens = [_sqz(y[start])] + [_dif(y[i] - y[i - 1]) for i in range(start + 1, end + 1)]
        packed: list[str] = []
        run = 1
        for previous, token in zip(tokens, [*tokens[1:], ""], strict=True):
            if token == previous:
                run += 1
                continue
            packed.append(previous + (_dup(run) if run > 1 else ""))
            run = 1
        lines.append(f"{FIRST_X + STEP * start}{''.join(packed)}")
        start = end
    if check_line:
        lines.append(f"{FIRST_X + STEP * (len(y) - 1)}{_sqz(y[-1])}")
    return lines


def _jdx(lines: list[str], *, drop: tuple[str, ...] = (), x_factor: str = "1.0") -> str:
    header = {
        "TITLE": "Polyethylene film (synthetic reference spectrum)",
        "JCAMP-DX": "4.24",
        "DATA TYPE": "INFRARED SPECTRUM",
        "ORIGIN": "mpwatch test suite",
        "OWNER": "public domain",
        "CAS REGISTRY NO": "9002-88-4",
        "STATE": "SOLID (FILM)",
        "XUNITS": "1/CM",
        "YUNITS": "ABSORBANCE",
        "XFACTOR": x_factor,
        "YFACTOR": f"{Y_FACTOR}",
        "DELTAX": f"{STEP:.1f}",
        "FIRSTX": f"{FIRST_X:.1f}",
        "LASTX": f"{LAST_X:.1f}",
        "FIRSTY": f"{TRUTH[0] * Y_FACTOR:.4f}",
        "MAXX": f"{LAST_X:.1f}",
        "MINX": f"{FIRST_X:.1f}",
        "NPOINTS": f"{N}",
    }
    records = "".join(f"##{label}={value}\n" for label, value in header.items() if label not in drop)
    return records + "##XYDATA=(X++(Y..Y))\n" + "\n".join(lines) + "\n##END=\n"


def _data_start(text: str) -> int:
    """The file line number of the first data line."""
    return text.splitlines().index("##XYDATA=(X++(Y..Y))") + 2


def _with_last_check(value: int) -> list[str]:
    lines = _data_lines(TRUTH)
    lines[-1] = f"{LAST_X}{_sqz(value)}"
    return lines


def _unsqz(token: str) -> int:
    digit = _SQZ_POS.index(token[0]) if token[0] in _SQZ_POS else -_SQZ_NEG.index(token[0])
    value = int(f"{abs(digit)}{token[1:]}")
    return -value if digit < 0 else value


def _shift_check(lines: list[str], index: int, by: int) -> list[str]:
    """Change the leading Y-check value of one data line (a single corrupt digit)."""
    match = re.match(r"^([0-9]+)([@A-Ia-i][0-9]*)", lines[index])
    assert match is not None
    changed = list(lines)
    changed[index] = match.group(1) + _sqz(_unsqz(match.group(2)) + by) + lines[index][match.end() :]
    return changed


class TestFixture:
    def test_the_clean_file_reads_without_warnings(self) -> None:
        text = _jdx(_data_lines(TRUTH))
        assert text.splitlines()[-2] == f"4000{_sqz(TRUTH[-1])}"  # a lone Y value
        block = parse_jcamp(text, name="pe.jdx")[0]
        assert block.compression == "DIFDUP"
        np.testing.assert_allclose(block.y, np.array(TRUTH) * Y_FACTOR)
        assert block.x[0] == FIRST_X and block.x[-1] == LAST_X and block.x.size == N
        assert block.warnings == ()


class TestYCheckMismatch:
    def test_a_wrong_check_on_the_last_line_is_kept_with_a_warning(self) -> None:
        text = _jdx(_with_last_check(TRUTH[-1] - 1))
        block = parse_jcamp(text, name="pe.jdx")[0]
        np.testing.assert_allclose(block.y, np.array(TRUTH) * Y_FACTOR)
        assert block.x.size == N and block.x[0] == FIRST_X and block.x[-1] == LAST_X
        last_line = len(text.splitlines()) - 1
        assert len(block.warnings) == 1
        assert block.warnings[0].startswith(f"line {last_line}: Y-check failed")

    def test_the_warning_reaches_the_spectrum_metadata(self, tmp_path: Path) -> None:
        path = tmp_path / "pe.jdx"
        path.write_text(_jdx(_with_last_check(TRUTH[-1] + 7)), encoding="ascii")
        spectrum = read_spectra(path)[0]
        assert spectrum.n_points == N
        assert spectrum.wavenumbers.min() == FIRST_X and spectrum.wavenumbers.max() == LAST_X
        warnings = spectrum.metadata["warnings"]
        assert isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)
        assert len(warnings) == 1 and "Y-check failed" in warnings[0] and "\n" not in warnings[0]

    def test_a_lone_last_point_is_read_when_the_x_check_shows_a_new_point(self) -> None:
        """A writer that leaves the check out: the last line is the real last point."""
        lines = [*_data_lines(TRUTH[:-1], check_line=False), f"{LAST_X}{_sqz(TRUTH[-1])}"]
        block = parse_jcamp(_jdx(lines), name="pe.jdx")[0]
        np.testing.assert_allclose(block.y, np.array(TRUTH) * Y_FACTOR)

    def test_a_lone_last_point_with_an_unclear_x_check_is_read_by_the_point_count(self) -> None:
        """The X check (3999) lies between the check position and a new point: NPOINTS decides."""
        lines = [*_data_lines(TRUTH[:-1], check_line=False), f"{LAST_X - 1}{_sqz(TRUTH[-1])}"]
        block = parse_jcamp(_jdx(lines), name="pe.jdx")[0]
        np.testing.assert_allclose(block.y, np.array(TRUTH) * Y_FACTOR)
        assert len(block.warnings) == 1 and "Y-check failed" in block.warnings[0]
        assert "new point" in block.warnings[0]

    def test_a_mid_file_mismatch_with_the_right_count_is_kept(self) -> None:
        lines = _shift_check(_data_lines(TRUTH), 60, 2)
        text = _jdx(lines)
        block = parse_jcamp(text, name="pe.jdx")[0]
        assert block.y.size == N
        start = 60 * PER_LINE
        expected = np.array(TRUTH, dtype=np.float64)
        # The corrupt check value is dropped as the duplicate of point 720; the rest of its line
        # is read as written, 2 too high.
        expected[start + 1 : start + PER_LINE + 1] += 2
        np.testing.assert_allclose(block.y, expected * Y_FACTOR)
        first = _data_start(text)
        # The corrupt check fails against line 60's predecessor, and line 61's check against it.
        assert [w.split(":")[0] for w in block.warnings] == [f"line {first + 60}", f"line {first + 61}"]
        assert all("Y-check failed" in w for w in block.warnings)

    def test_the_mismatches_are_logged_once_per_file(self, caplog: pytest.LogCaptureFixture) -> None:
        lines = _shift_check(_with_last_check(TRUTH[-1] + 1), 30, -4)
        with caplog.at_level(logging.WARNING, logger="engine.io.jcampdx"):
            spectra = spectra_from_jcamp(_jdx(lines).encode(), name="pe.jdx")
        assert len(spectra[0].metadata["warnings"]) == 3
        records = [r for r in caplog.records if r.name == "engine.io.jcampdx"]
        assert len(records) == 1
        assert records[0].levelno == logging.WARNING
        assert "pe.jdx" in records[0].getMessage() and "Y-check" in records[0].getMessage()

    def test_without_npoints_the_axis_gives_the_count(self) -> None:
        text = _jdx(_with_last_check(TRUTH[-1] - 1), drop=("NPOINTS",))
        block = parse_jcamp(text, name="pe.jdx")[0]
        np.testing.assert_allclose(block.y, np.array(TRUTH) * Y_FACTOR)
        assert len(block.warnings) == 1 and "Y-check failed" in block.warnings[0]

    def test_decode_xydata_takes_the_expected_count(self) -> None:
        lines = list(enumerate(_with_last_check(TRUTH[-1] - 1), 1))
        with pytest.raises(SpectrumError, match="Y-check failed"):
            decode_xydata(lines)
        values, compression, warnings = decode_xydata(lines, expected_points=N)
        assert values == TRUTH and compression == "DIFDUP"
        assert len(warnings) == 1


class TestDataContradictingTheHeader:
    def test_a_mismatch_without_any_point_count_is_refused(self) -> None:
        text = _jdx(_with_last_check(TRUTH[-1] - 1), drop=("NPOINTS", "DELTAX"))
        with pytest.raises(SpectrumError, match="Y-check failed") as info:
            parse_jcamp(text, name="pe.jdx")
        assert info.value.reason == "unreadable"

    def test_a_lost_line_is_refused_as_truncated(self) -> None:
        lines = _data_lines(TRUTH)
        del lines[104]
        with pytest.raises(SpectrumError) as info:
            spectra_from_jcamp(_jdx(lines).encode(), name="pe.jdx")
        assert info.value.reason == "truncated"
        message = str(info.value)
        assert f"decodes to {N - PER_LINE} points but ##NPOINTS= declares {N}" in message
        assert "Y-check failed" in message and "\n" not in message

    def test_a_surplus_line_is_refused(self) -> None:
        lines = _data_lines(TRUTH)
        lines.insert(75, lines[75])
        with pytest.raises(SpectrumError, match=r"##NPOINTS= declares 1801") as info:
            parse_jcamp(_jdx(lines), name="pe.jdx")
        assert info.value.reason == "length_mismatch"

    def test_a_lone_value_after_the_check_line_is_one_point_too_many(self) -> None:
        lines = [*_data_lines(TRUTH), f"{LAST_X + 1}{_sqz(TRUTH[-1] + 5)}"]
        with pytest.raises(SpectrumError, match=f"decodes to {N + 1} points but ##NPOINTS= declares") as info:
            parse_jcamp(_jdx(lines), name="pe.jdx")
        assert info.value.reason == "length_mismatch"

    @pytest.mark.parametrize("last_check", [TRUTH[-1], TRUTH[-1] - 1], ids=["clean", "check-mismatch"])
    def test_x_checks_outside_firstx_lastx_are_refused(self, last_check: int) -> None:
        """XFACTOR 2 puts the X check values at 800..8000 cm-1, far outside ##FIRSTX..##LASTX."""
        text = _jdx(_with_last_check(last_check), x_factor="2.0")
        with pytest.raises(SpectrumError, match=r"outside ##FIRSTX\.\.##LASTX") as info:
            parse_jcamp(text, name="pe.jdx")
        assert info.value.reason == "unreadable"
        assert "\n" not in str(info.value)
