"""JCAMP-DX reader: every ASDF compression form, link blocks and NTUPLES pages.

The file is split into labelled data records (``##LABEL= value``); each
``##TITLE=`` opens a block and ``##END=`` closes it, so LINK files yield one
block per nested spectrum. A block's data table is decoded by
:func:`decode_xydata` for ``(X++(Y..Y))`` tables, whatever mix of AFFN, PAC,
SQZ, DIF and DUP it uses, or as point pairs for ``(XY..XY)`` tables
(``##XYPOINTS``, ``##PEAKTABLE``). DIF lines carry a Y-value check: a line
that ends in a difference repeats its last value at the start of the next line;
that duplicate is verified and dropped. The decoded count is checked against
``##NPOINTS``. A Y-check that fails does not refuse the file when the point count
still agrees with ``##NPOINTS`` (or with the axis ``##FIRSTX``/``##LASTX``/``##DELTAX``
imply): the data are kept and the mismatch is recorded in the block's warnings.
Data that contradict the header (another point count, or in a DIF table X check
values outside ``##FIRSTX``..``##LASTX``) are refused.

The x axis is converted to wavenumbers (cm-1) from ``1/CM``, micrometres or
nanometres; frequency (Hz, ppm), time and mass axes are NMR, chromatography or
mass spectra, which are refused with reason ``no_spectrum``.

>>> block = parse_jcamp('''##TITLE= demo
... ##XUNITS= 1/CM
... ##YUNITS= ABSORBANCE
... ##FIRSTX= 1000
... ##LASTX= 1015
... ##NPOINTS= 16
... ##XYDATA= (X++(Y..Y))
... 1000@JU
... 1003CJV
... 1007GJV
... 1011A1J%jk
... ##END=''')[0]
>>> block.y.tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 12.0, 11.0, 9.0]
>>> block.compression
'DIFDUP'
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.io._text import decode_text, looks_binary, read_limited, short
from engine.io.registry import register
from engine.core.spectrum import Spectrum, SpectrumError, normalise_y_unit

__all__ = [
    "JcampBlock",
    "decode_xydata",
    "looks_like_jcamp",
    "parse_jcamp",
    "read_jcamp",
    "spectra_from_jcamp",
]

logger = logging.getLogger(__name__)

#: A single block never decodes to more points than this (DUP counts are bounded by it).
MAX_POINTS = 4_000_000

#: At most this many blocks in one file.
MAX_BLOCKS = 10_000

#: A header value longer than this is cut (continuation lines are appended to it).
MAX_VALUE_CHARS = 20_000

_SQZ = {ch: i for i, ch in enumerate("@ABCDEFGHI")} | {ch: -i for i, ch in enumerate("@abcdefghi") if i}
_DIF = {ch: i for i, ch in enumerate("%JKLMNOPQR")} | {ch: -i for i, ch in enumerate("%jklmnopqr") if i}
_DUP = {ch: i for i, ch in enumerate("@STUVWXYZs") if i}

#: ASDF characters other than E/e: their presence means the table is compressed,
#: so ``E``/``e`` are SQZ digits (5, -5), never exponent markers.
_COMPRESSED_CHARS = re.compile(r"[@A-DF-Ia-df-i%J-Rj-rS-Zs]")

_TOKEN_PATTERNS = {
    "compressed": r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)",
    "affn": r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?",
}
_TOKEN = {
    mode: re.compile(
        r"(?P<sep>[\s,;]+)"
        rf"|(?P<abs>{number})"
        r"|(?P<sqz>[@A-Ia-i][0-9.]*)"
        r"|(?P<dif>[%J-Rj-r][0-9.]*)"
        r"|(?P<dup>[S-Zs][0-9]*)"
        r"|(?P<missing>\?)"
        r"|(?P<comment>\$\$.*)"
        r"|(?P<bad>.)"
    )
    for mode, number in _TOKEN_PATTERNS.items()
}

_XPP_FORM = re.compile(r"\(?X\+\+\(([A-Z]+)\.\.\1\)?\)?")
_POINTS_FORM = re.compile(r"\(([A-Z]{2,4})\.\.\1\)")

#: JCAMP x units, normalised (upper case, no blanks), to the factor for cm-1.
_WAVENUMBER_UNITS = frozenset(
    {"1/CM", "CM-1", "CM^-1", "CM**-1", "WAVENUMBERS", "WAVENUMBER", "1/CM(RAMANSHIFT)"}
)
_MICROMETRE_UNITS = frozenset({"MICROMETERS", "MICROMETRES", "MICRONS", "UM", "µM", "MICROMETER"})
_NANOMETRE_UNITS = frozenset({"NANOMETERS", "NANOMETRES", "NM", "NANOMETER"})
_NOT_SPECTRAL_UNITS = {
    "HZ": "a frequency axis (NMR)",
    "KHZ": "a frequency axis (NMR)",
    "MHZ": "a frequency axis (NMR)",
    "PPM": "a chemical-shift axis (NMR)",
    "SECONDS": "a time axis",
    "SEC": "a time axis",
    "S": "a time axis",
    "MILLISECONDS": "a time axis",
    "MINUTES": "a time axis",
    "M/Z": "a mass-to-charge axis (mass spectrum)",
    "DALTONS": "a mass axis (mass spectrum)",
}
_NOT_SPECTRAL_TYPES = {
    "NMR": "an NMR spectrum",
    "MASS": "a mass spectrum",
    "INTERFEROGRAM": "an interferogram",
    "UV": "a UV/VIS spectrum",
    "CHROMATOGRAM": "a chromatogram",
}
_Y_UNITS = {
    "ABSORBANCE": "absorbance",
    "ABSORBANCEUNITS": "absorbance",
    "LOG(1/R)": "absorbance",
    "LOG(1/T)": "absorbance",
    "TRANSMITTANCE": "transmittance",
    "%TRANSMITTANCE": "transmittance",
    "PERCENTTRANSMITTANCE": "transmittance",
    "%T": "transmittance",
    "REFLECTANCE": "reflectance",
    "%REFLECTANCE": "reflectance",
    "PERCENTREFLECTANCE": "reflectance",
    "KUBELKA-MUNK": "arbitrary",
    "KUBELKAMUNK": "arbitrary",
    "ARBITRARYUNITS": "arbitrary",
    "ARBITRARY": "arbitrary",
    "ARB.UNITS": "arbitrary",
    "A.U.": "arbitrary",
    "RELATIVEINTENSITY": "arbitrary",
    "INTENSITY": "counts",
    "COUNTS": "counts",
    "CPS": "counts",
}
#: Header records copied into each spectrum's metadata (normalised label -> key).
_METADATA_LABELS = {
    "TITLE": "title",
    "DATE": "date",
    "TIME": "time",
    "LONGDATE": "date",
    "SPECTROMETERDATASYSTEM": "instrument",
    "INSTRUMENTPARAMETERS": "instrument_parameters",
    "ORIGIN": "origin",
    "OWNER": "owner",
    "DATATYPE": "data_type",
    "JCAMPDX": "jcamp_version",
    "RESOLUTION": "resolution",
    "CASREGISTRYNO": "cas_registry_no",
    "CASNAME": "cas_name",
    "NAMES": "names",
    "MOLFORM": "molecular_formula",
    "SAMPLINGPROCEDURE": "sampling_procedure",
    "SAMPLEDESCRIPTION": "sample_description",
    "STATE": "state",
    "SOURCEREFERENCE": "source_reference",
    "BLOCKID": "block_id",
}
_LASER_LABELS = ("LASERWAVELENGTH", "EXCITATIONWAVELENGTH", "$LASERWAVELENGTH", ".LASERWAVELENGTH")


@dataclass(frozen=True)
class JcampBlock:
    """One decoded JCAMP-DX data table, before unit conversion and validation.

    ``x`` is in the file's ``x_units`` (``XFACTOR`` applied) and ``y`` in its
    ``y_units`` (``YFACTOR`` applied), in file order. ``ldrs`` maps normalised
    labels (upper case, no blanks, dashes, slashes or underscores) to values.
    """

    title: str
    ldrs: dict[str, str]
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    x_units: str
    y_units: str
    data_form: str
    compression: str
    line: int
    warnings: tuple[str, ...] = ()

    @property
    def data_type(self) -> str:
        """The block's ``##DATA TYPE`` (or ``##NTUPLES`` kind), upper case."""
        return (self.ldrs.get("DATATYPE") or self.ldrs.get("NTUPLES") or "").upper()


@dataclass
class _Table:
    label: str
    form: str
    line: int
    page: dict[str, str]
    lines: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class _RawBlock:
    line: int
    ldrs: dict[str, str] = field(default_factory=dict)
    tables: list[_Table] = field(default_factory=list)
    page: dict[str, str] | None = None
    closed: bool = False


def _norm_label(label: str) -> str:
    return re.sub(r"[\s\-/_]", "", label).upper()


def _strip_comment(value: str) -> str:
    head, _, _ = value.partition("$$")
    return head.strip()


def looks_like_jcamp(head: bytes) -> bool:
    """Whether the head of a file is JCAMP-DX: a ``##TITLE=`` or ``##JCAMP-DX=`` record near the top."""
    text = head[:4096].decode("latin-1")
    for line in text.splitlines()[:40]:
        stripped = line.strip().lstrip("\ufeff\xef\xbb\xbf").upper()
        if not stripped or stripped.startswith("$$"):
            continue
        if stripped.startswith("##"):
            label = _norm_label(stripped[2:].partition("=")[0])
            if label in ("TITLE", "JCAMPDX", "JCAMPCS"):
                return True
    return False


def _split_blocks(text: str, *, name: str) -> list[_RawBlock]:
    """Scan the records of a JCAMP-DX text into blocks with their data tables."""
    finished: list[_RawBlock] = []
    stack: list[_RawBlock] = []
    table: _Table | None = None
    last_key: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("##"):
            table = None
            label, sep, value = line[2:].partition("=")
            if not sep:
                last_key = None
                continue
            key = _norm_label(label)
            value = _strip_comment(value) if not key.startswith("$") else value.strip()
            if key == "END" and not stack:
                last_key = None
                continue
            if key == "TITLE" or not stack:
                if len(finished) + len(stack) >= MAX_BLOCKS:
                    raise SpectrumError("unreadable", f"{name}: more than {MAX_BLOCKS} JCAMP-DX blocks")
                stack.append(_RawBlock(line=lineno))
            block = stack[-1]
            if key == "END":
                block.closed = True
                finished.append(stack.pop())
                last_key = None
                continue
            if key in ("XYDATA", "XYPOINTS", "PEAKTABLE", "DATATABLE"):
                table = _Table(label=key, form=value, line=lineno, page=dict(block.page or {}))
                block.tables.append(table)
                last_key = None
                continue
            if key == "PAGE":
                block.page = {"PAGE": value}
            elif key == "ENDNTUPLES":
                block.page = None
            elif block.page is not None:
                block.page[key] = value[:MAX_VALUE_CHARS]
            else:
                block.ldrs[key] = value[:MAX_VALUE_CHARS]
            last_key = key
            continue
        if table is not None:
            table.lines.append((lineno, raw))
        elif line and not line.startswith("$$") and stack and last_key is not None:
            target = stack[-1].page if stack[-1].page is not None else stack[-1].ldrs
            current = target.get(last_key, "")
            if len(current) < MAX_VALUE_CHARS:
                target[last_key] = (current + "\n" + _strip_comment(line))[:MAX_VALUE_CHARS]
    finished.extend(reversed(stack))
    finished.sort(key=lambda b: b.line)
    return finished


def _to_float(value: str | None, *, label: str, name: str) -> float | None:
    """A header value as a float (``None`` when absent); malformed numbers are an error."""
    if value is None or not value.strip():
        return None
    text = value.split()[0].rstrip(",;")
    try:
        number = float(text)
    except ValueError as exc:
        raise SpectrumError("unreadable", f"{name}: ##{label}= {short(value)!r} is not a number") from exc
    if not math.isfinite(number):
        raise SpectrumError("unreadable", f"{name}: ##{label}= is not finite")
    return number


def _asdf_value(table: dict[str, int], token: str, *, where: str) -> float:
    digit = table[token[0]]
    text = f"{abs(digit)}{token[1:]}"
    try:
        value = float(text)
    except ValueError as exc:
        raise SpectrumError(
            "unreadable", f"{where}: {short(token)!r} is not a valid compressed number"
        ) from exc
    return -value if digit < 0 else value


@dataclass
class _Line:
    lineno: int
    x: float
    ys: list[float]
    ends_with_dif: bool


_AFFN_TOKEN = re.compile(_TOKEN_PATTERNS["affn"] + r"|\?")
_SEPARATORS = re.compile(r"[\s,;]*")
_PAC_SIGN = re.compile(r"[0-9.][+-]")


def _affn_line(lineno: int, body: str, *, kinds: set[str]) -> _Line | None:
    """The fast path for uncompressed lines; ``None`` sends the line to the full tokeniser."""
    tokens = _AFFN_TOKEN.findall(body)
    if not tokens or tokens[0] == "?" or not _SEPARATORS.fullmatch(_AFFN_TOKEN.sub("", body)):
        return None
    kinds.add("PAC" if _PAC_SIGN.search(body) else "AFFN")
    ys = [math.nan if token == "?" else float(token) for token in tokens[1:]]
    return _Line(lineno=lineno, x=float(tokens[0]), ys=ys, ends_with_dif=False)


def _tokenise_line(
    lineno: int, raw: str, *, pattern: re.Pattern[str], kinds: set[str], budget: int, name: str
) -> _Line | None:
    """Decode one ``(X++(Y..Y))`` line: the X check value, then the Y values it encodes."""
    if pattern is _TOKEN["affn"]:
        fast = _affn_line(lineno, raw.partition("$$")[0], kinds=kinds)
        if fast is not None:
            if len(fast.ys) > budget:
                raise SpectrumError("unreadable", f"{name}: more than {MAX_POINTS} points in one table")
            return fast
    where = f"{name} line {lineno}"
    x: float | None = None
    ys: list[float] = []
    last_kind = ""
    last_dif = 0.0
    previous_end = -1
    for match in pattern.finditer(raw):
        kind = match.lastgroup or "bad"
        token = match.group()
        if kind == "sep":
            previous_end = -1
            continue
        if kind == "comment":
            break
        if kind == "bad":
            raise SpectrumError(
                "unreadable", f"{where}: unexpected character {short(token)!r} in the data table"
            )
        if x is None:
            if kind == "abs":
                x = float(token)
            elif kind == "sqz":
                x = _asdf_value(_SQZ, token, where=where)
            else:
                raise SpectrumError("unreadable", f"{where}: the line does not start with an X value")
            previous_end = match.end()
            continue
        if kind == "abs":
            kinds.add("PAC" if token[0] in "+-" and previous_end == match.start() else "AFFN")
            ys.append(float(token))
            last_kind = "abs"
        elif kind == "sqz":
            kinds.add("SQZ")
            ys.append(_asdf_value(_SQZ, token, where=where))
            last_kind = "abs"
        elif kind == "missing":
            ys.append(math.nan)
            last_kind = "abs"
        elif kind == "dif":
            kinds.add("DIF")
            if not ys:
                raise SpectrumError("unreadable", f"{where}: a DIF value has no preceding Y value")
            last_dif = _asdf_value(_DIF, token, where=where)
            ys.append(ys[-1] + last_dif)
            last_kind = "dif"
        else:
            kinds.add("DUP")
            if not ys:
                raise SpectrumError("unreadable", f"{where}: a DUP count has no preceding Y value")
            count = int(f"{_DUP[token[0]]}{token[1:]}") if len(token) < 12 else budget + 1
            if count - 1 + len(ys) > budget:
                raise SpectrumError(
                    "unreadable", f"{where}: DUP count {short(token)} exceeds {MAX_POINTS} points"
                )
            step = last_dif if last_kind == "dif" else 0.0
            start = ys[-1]
            ys.extend(start + step * k for k in range(1, count))
        previous_end = match.end()
        if len(ys) > budget:
            raise SpectrumError("unreadable", f"{name}: more than {MAX_POINTS} points in one table")
    if x is None:
        return None
    return _Line(lineno=lineno, x=x, ys=ys, ends_with_dif=last_kind == "dif")


@dataclass(frozen=True)
class _Mismatch:
    """A failed Y-check: the first value of a line after a DIF line differs from the previous end."""

    lineno: int
    index: int  # where the value sits if it is a new point rather than a wrong check value
    value: float
    previous: float
    may_be_point: bool  # the X check does not mark the value as the duplicate

    def describe(self) -> str:
        return (
            f"line {self.lineno}: Y-check failed (the line starts with {self.value:.10g}, "
            f"the previous line ended with {self.previous:.10g})"
        )


@dataclass(frozen=True)
class _Decoded:
    y: list[float]
    line_x: list[tuple[float, int]]
    x_checks: list[tuple[int, float]]  # (line number, X check value x XFACTOR)
    compression: str
    warnings: tuple[str, ...]
    mismatches: tuple[_Mismatch, ...] = ()


def _same(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def decode_xydata(
    lines: Iterable[tuple[int, str]],
    *,
    name: str = "JCAMP-DX",
    first_x: float | None = None,
    delta_x: float | None = None,
    x_factor: float = 1.0,
    expected_points: int | None = None,
) -> tuple[list[float], str, tuple[str, ...]]:
    """Decode ``(X++(Y..Y))`` data lines to raw Y values (before ``YFACTOR``).

    Returns the values, the compression form (``AFFN``, ``PAC``, ``SQZ``,
    ``DIF`` or ``DIFDUP``) and warnings. ``first_x``/``delta_x`` (real units)
    and ``x_factor`` enable the X check that tells a Y-check duplicate from a
    new point when a writer left the duplicate out. A failed Y-check is an
    error unless ``expected_points`` is given and the values agree with it;
    then it is a warning.

    >>> decode_xydata([(1, "100 A3J2K%"), (2, "104 B7j"), (3, "105 B6")])[0]
    [13.0, 25.0, 27.0, 27.0, 26.0]
    """
    decoded = _decode_lines(list(lines), name=name, first_x=first_x, delta_x=delta_x, x_factor=x_factor)
    y, kept = _resolve_y_checks(
        decoded, expected_points, where=name, label="XYDATA", source="the expected count"
    )
    return y, decoded.compression, decoded.warnings + tuple(kept)


def _decode_lines(
    lines: list[tuple[int, str]],
    *,
    name: str,
    first_x: float | None,
    delta_x: float | None,
    x_factor: float,
) -> _Decoded:
    compressed = any(_COMPRESSED_CHARS.search(raw.partition("$$")[0]) for _, raw in lines)
    pattern = _TOKEN["compressed" if compressed else "affn"]
    kinds: set[str] = set()
    y: list[float] = []
    line_x: list[tuple[float, int]] = []
    x_checks: list[tuple[int, float]] = []
    warnings: list[str] = []
    mismatches: list[_Mismatch] = []
    previous: _Line | None = None
    for lineno, raw in lines:
        line = _tokenise_line(
            lineno, raw, pattern=pattern, kinds=kinds, budget=MAX_POINTS - len(y), name=name
        )
        if line is None:
            continue
        values = line.ys
        if previous is not None and previous.ends_with_dif and values:
            values = _y_check(
                line,
                y,
                first_x=first_x,
                delta_x=delta_x,
                x_factor=x_factor,
                warnings=warnings,
                mismatches=mismatches,
            )
        line_x.append((line.x * x_factor, len(y)))
        x_checks.append((lineno, line.x * x_factor))
        y.extend(values)
        previous = line
    if "DIF" in kinds:
        compression = "DIFDUP" if "DUP" in kinds else "DIF"
    elif "SQZ" in kinds:
        compression = "SQZ"
    elif "PAC" in kinds:
        compression = "PAC"
    else:
        compression = "AFFN"
    return _Decoded(
        y=y,
        line_x=line_x,
        x_checks=x_checks,
        compression=compression,
        warnings=tuple(warnings),
        mismatches=tuple(mismatches),
    )


def _y_check(
    line: _Line,
    y: list[float],
    *,
    first_x: float | None,
    delta_x: float | None,
    x_factor: float,
    warnings: list[str],
    mismatches: list[_Mismatch],
) -> list[float]:
    """Verify and drop the Y-check duplicate that starts a line after a DIF line.

    When the line's X check value clearly places its first value at the next
    point (within half a step), the writer left the duplicate out: the value is
    kept. Otherwise the first value should repeat the previous line's last one;
    when it does not, it is still dropped as the check value and the mismatch is
    recorded, for :func:`_resolve_y_checks` to judge against the point count.
    """
    check = line.ys[0]
    at_duplicate = False
    if first_x is not None and delta_x:
        position = (line.x * x_factor - first_x) / delta_x
        if abs(position - len(y)) < 0.5:
            warnings.append(
                f"line {line.lineno}: no Y-check value after a DIF line (the X check shows a new point)"
            )
            return line.ys
        at_duplicate = abs(position - (len(y) - 1)) < 0.5
    if not _same(check, y[-1]):
        mismatches.append(
            _Mismatch(
                lineno=line.lineno,
                index=len(y),
                value=check,
                previous=y[-1],
                may_be_point=not at_duplicate,
            )
        )
    return line.ys[1:]


def _resolve_y_checks(
    decoded: _Decoded, expected: int | None, *, where: str, label: str, source: str
) -> tuple[list[float], list[str]]:
    """The values and warnings once failed Y-checks are judged against the expected point count.

    With the check values dropped, a count equal to ``expected`` keeps the data
    (each mismatch becomes a warning). When reading every failed check as a new
    point instead (a writer that left the checks out, with X checks that do not
    tell) gives the expected count, those values are kept as points. Otherwise
    the data contradict the header: the count error is raised, naming the first
    failed check; with no count to compare, the failed check itself is the error.
    """
    y = decoded.y
    if not decoded.mismatches:
        return y, []
    first = decoded.mismatches[0]
    if expected is None:
        raise SpectrumError(
            "unreadable",
            f"{where} {first.describe()}, and no ##NPOINTS= or ##FIRSTX/##LASTX/##DELTAX= to confirm "
            "the point count; the compressed data is corrupt",
        )
    if len(y) == expected:
        return y, [f"{m.describe()}; kept, the point count matches {source}" for m in decoded.mismatches]
    if len(y) + len(decoded.mismatches) == expected and all(m.may_be_point for m in decoded.mismatches):
        restored = list(y)
        for shift, mismatch in enumerate(decoded.mismatches):
            restored.insert(mismatch.index + shift, mismatch.value)
        kept = [
            f"{m.describe()}; read as a new point, the point count matches {source}"
            for m in decoded.mismatches
        ]
        return restored, kept
    raise _count_error(len(y), expected, where=where, label=label, source=source, note=first.describe())


def _point_table(table: _Table, *, width: int, name: str) -> tuple[list[float], list[float]]:
    """Decode an ``(XY..XY)`` style table: groups of ``width`` AFFN numbers, X first."""
    numbers: list[float] = []
    for lineno, raw in table.lines:
        body = raw.partition("$$")[0]
        for field_text in re.split(r"[\s,;]+", body.strip()):
            if not field_text:
                continue
            if field_text == "?":
                numbers.append(math.nan)
                continue
            try:
                numbers.append(float(field_text))
            except ValueError as exc:
                raise SpectrumError(
                    "unreadable", f"{name} line {lineno}: {short(field_text)!r} is not a number"
                ) from exc
            if len(numbers) > MAX_POINTS * width:
                raise SpectrumError("unreadable", f"{name}: more than {MAX_POINTS} points in one table")
    if len(numbers) % width:
        raise SpectrumError(
            "truncated",
            f"{name}: the {table.label} table ends in an incomplete group ({len(numbers)} numbers "
            f"is not a multiple of {width})",
        )
    return numbers[0::width], numbers[1::width]


def _ntuple_value(block: _RawBlock, table: _Table, label: str, symbol: str) -> str | None:
    """A per-variable NTUPLES record (``##UNITS=``, ``##FACTOR=``...) for one symbol."""
    if label in table.page:
        return table.page[label]
    symbols = [s.strip().upper() for s in block.ldrs.get("SYMBOL", "").split(",")]
    values = [v.strip() for v in block.ldrs.get(label, "").split(",")]
    if symbol in symbols:
        index = symbols.index(symbol)
        if index < len(values) and values[index]:
            return values[index]
    return None


def _decode_table(
    block: _RawBlock, table: _Table, *, name: str, index: int, spectral_only: bool
) -> JcampBlock:
    ldrs = dict(block.ldrs)
    ntuples = "NTUPLES" in ldrs
    form = re.sub(r"\s", "", table.form).upper()
    where = f"{name} block {index + 1}"
    x_symbol, y_symbol = "X", "Y"
    xpp = _XPP_FORM.match(form)
    points = _POINTS_FORM.match(form)
    if xpp is not None:
        y_symbol = xpp.group(1)
    elif points is not None:
        symbols = points.group(1)
        x_symbol, y_symbol = symbols[0], symbols[1]
    else:
        raise SpectrumError("unreadable", f"{where}: unsupported data table form {short(table.form)!r}")

    def record(label: str, symbol: str) -> str | None:
        if ntuples:
            ntuple_label = {"XFACTOR": "FACTOR", "YFACTOR": "FACTOR", "FIRSTX": "FIRST", "LASTX": "LAST"}
            key = ntuple_label.get(label, label)
            return _ntuple_value(block, table, key, symbol) if key != label else table.page.get(label)
        return table.page.get(label, ldrs.get(label))

    x_factor = _to_float(record("XFACTOR", x_symbol), label="XFACTOR", name=where) or 1.0
    y_factor = _to_float(record("YFACTOR", y_symbol), label="YFACTOR", name=where) or 1.0
    first_x = _to_float(record("FIRSTX", x_symbol), label="FIRSTX", name=where)
    last_x = _to_float(record("LASTX", x_symbol), label="LASTX", name=where)
    npoints_text = table.page.get("NPOINTS", ldrs.get("NPOINTS"))
    if npoints_text is None and ntuples:
        npoints_text = _ntuple_value(block, table, "VARDIM", x_symbol)
    npoints_value = _to_float(npoints_text, label="NPOINTS", name=where)
    npoints = int(npoints_value) if npoints_value is not None else None
    if npoints is not None and (npoints < 0 or npoints != npoints_value):
        raise SpectrumError("unreadable", f"{where}: ##NPOINTS= {npoints_text} is not a point count")
    delta_x = _to_float(record("DELTAX", x_symbol), label="DELTAX", name=where)
    expected, source = npoints, "##NPOINTS="
    if npoints is None:
        expected, source = _implied_count(first_x, last_x, delta_x), "##FIRSTX/##LASTX/##DELTAX="
    if first_x is not None and last_x is not None and npoints and npoints > 1:
        delta_x = (last_x - first_x) / (npoints - 1)
    if ntuples:
        x_units = _ntuple_value(block, table, "UNITS", x_symbol) or ""
        y_units = _ntuple_value(block, table, "UNITS", y_symbol) or ""
    else:
        x_units = ldrs.get("XUNITS", "")
        y_units = ldrs.get("YUNITS", "")
    if spectral_only:
        why_not = _why_not_spectral(ldrs.get("DATATYPE") or ldrs.get("NTUPLES") or "", x_units)
        if why_not is not None:
            raise SpectrumError("no_spectrum", f"{where} is not an IR or Raman spectrum: {why_not}")

    warnings: list[str] = []
    if not block.closed:
        warnings.append("the block has no ##END= record")
    if xpp is not None:
        decoded = _decode_lines(table.lines, name=name, first_x=first_x, delta_x=delta_x, x_factor=x_factor)
        warnings.extend(decoded.warnings)
        y_raw, kept = _resolve_y_checks(decoded, expected, where=where, label=table.label, source=source)
        warnings.extend(kept)
        compression = decoded.compression
        count = len(y_raw)
        _check_count(count, npoints, where=where, label=table.label)
        if count == 0:
            raise SpectrumError("no_spectrum", f"{where}: the {table.label} table holds no values")
        if compression in ("DIF", "DIFDUP"):
            # The X checks tell Y-check duplicates from new points: they must fit the header.
            _check_x_range(decoded.x_checks, first_x, last_x, count, name=name)
        if first_x is not None and last_x is not None and count > 1:
            x_values = np.linspace(first_x, last_x, count, dtype=np.float64)
        elif first_x is not None and delta_x is not None:
            x_values = first_x + delta_x * np.arange(count, dtype=np.float64)
        else:
            x_values = _x_from_line_starts(decoded.line_x, count, where=where)
    else:
        width = len(points.group(1)) if points is not None else 2
        xs, y_raw = _point_table(table, width=width, name=where)
        compression = "AFFN"
        _check_count(len(y_raw), npoints, where=where, label=table.label)
        if not y_raw:
            raise SpectrumError("no_spectrum", f"{where}: the {table.label} table holds no values")
        x_values = np.asarray(xs, dtype=np.float64) * x_factor
    y_values = np.asarray(y_raw, dtype=np.float64) * y_factor
    title = ldrs.get("TITLE", "")
    if table.page.get("PAGE"):
        ldrs["PAGE"] = table.page["PAGE"]
    return JcampBlock(
        title=title,
        ldrs=ldrs,
        x=x_values,
        y=y_values,
        x_units=x_units.strip(),
        y_units=y_units.strip(),
        data_form=f"{table.label}={form}",
        compression=compression,
        line=table.line,
        warnings=tuple(warnings),
    )


def _check_count(count: int, npoints: int | None, *, where: str, label: str) -> None:
    if npoints is not None and count != npoints:
        raise _count_error(count, npoints, where=where, label=label, source="##NPOINTS=")


def _count_error(
    count: int, expected: int, *, where: str, label: str, source: str, note: str = ""
) -> SpectrumError:
    """The one-line error for a table whose point count differs from the header's."""
    reason = "truncated" if count < expected else "length_mismatch"
    verb = "declares" if source == "##NPOINTS=" else "gives"
    message = f"{where}: the {label} table decodes to {count} points but {source} {verb} {expected}"
    return SpectrumError(reason, f"{message}; {note}" if note else message)


def _implied_count(first_x: float | None, last_x: float | None, delta_x: float | None) -> int | None:
    """The point count ``##FIRSTX``, ``##LASTX`` and ``##DELTAX`` imply, when they agree on a whole number."""
    if first_x is None or last_x is None or not delta_x:
        return None
    steps = (last_x - first_x) / delta_x
    if not math.isfinite(steps) or steps < 0 or abs(steps - round(steps)) > 0.01:
        return None
    return round(steps) + 1


def _check_x_range(
    x_checks: list[tuple[int, float]],
    first_x: float | None,
    last_x: float | None,
    count: int,
    *,
    name: str,
) -> None:
    """Refuse a table whose X check values lie outside ``##FIRSTX``..``##LASTX`` by more than a step.

    Applied to DIF tables, whose X checks decide whether a line's first value is
    the Y-check duplicate or a new point.
    """
    if first_x is None or last_x is None or count < 2 or not x_checks:
        return
    low, high = min(first_x, last_x), max(first_x, last_x)
    step = (high - low) / (count - 1)
    tolerance = 1.5 * step + 1e-9 * max(1.0, abs(low), abs(high))
    for lineno, x in x_checks:
        if not low - tolerance <= x <= high + tolerance:
            raise SpectrumError(
                "unreadable",
                f"{name} line {lineno}: X check value {x:.10g} lies outside ##FIRSTX..##LASTX "
                f"({first_x:.10g}..{last_x:.10g}); the data contradict the header",
            )


def _x_from_line_starts(
    line_x: list[tuple[float, int]], count: int, *, where: str
) -> npt.NDArray[np.float64]:
    """The axis from the X check values when ##FIRSTX/##LASTX are missing."""
    if len(line_x) < 2 or line_x[-1][1] == line_x[0][1]:
        raise SpectrumError(
            "unreadable", f"{where}: no ##FIRSTX/##LASTX and too few lines to derive the x axis"
        )
    (x0, i0), (x1, i1) = line_x[0], line_x[-1]
    step = (x1 - x0) / (i1 - i0)
    return np.asarray(x0 + step * (np.arange(count) - i0), dtype=np.float64)


def parse_jcamp(text: str, *, name: str = "JCAMP-DX", spectral_only: bool = False) -> list[JcampBlock]:
    """Every data table of a JCAMP-DX text, decoded but not yet converted or validated.

    In a file of several tables a table that fails to decode is skipped (and
    logged) when another one decodes; otherwise its error is raised. With
    ``spectral_only=True`` tables that are not IR or Raman spectra (NMR, mass...)
    are refused from their header, before their data are decoded.
    """
    raw_blocks = _split_blocks(text, name=name)
    if not raw_blocks:
        raise SpectrumError("unreadable", f"{name} is not JCAMP-DX: it has no ##TITLE= record")
    out: list[JcampBlock] = []
    errors: list[SpectrumError] = []
    index = 0
    for block in raw_blocks:
        for table in block.tables:
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    out.append(
                        _decode_table(block, table, name=name, index=index, spectral_only=spectral_only)
                    )
            except SpectrumError as exc:
                errors.append(exc)
            index += 1
    if errors:
        if not out:
            raise errors[0]
        for error in errors:
            logger.warning("%s: skipped a data table: %s", name, error)
    if not out:
        raise SpectrumError(
            "no_spectrum", f"{name} has JCAMP-DX records but no ##XYDATA=, ##XYPOINTS= or ##PEAKTABLE= table"
        )
    failed = [warning for block in out for warning in block.warnings if "Y-check failed" in warning]
    if failed:
        logger.warning(
            "%s: kept the data despite %d failed Y-check(s), the point count matches the header; first: %s",
            name,
            len(failed),
            failed[0],
        )
    return out


def _why_not_spectral(data_type: str, x_units: str) -> str | None:
    """Why a table is not an IR or Raman spectrum, or ``None`` when it may be one."""
    for word, what in _NOT_SPECTRAL_TYPES.items():
        if re.search(rf"\b{word}\b", data_type.upper()):
            return f"its data type {short(data_type)!r} is {what}, not an IR or Raman spectrum"
    unit = re.sub(r"\s", "", x_units).upper()
    if unit in _NOT_SPECTRAL_UNITS:
        return f"its x unit {x_units!r} is {_NOT_SPECTRAL_UNITS[unit]}, not an IR or Raman wavenumber axis"
    return None


def _technique(block: JcampBlock) -> str | None:
    data_type = block.data_type
    if "RAMAN" in data_type:
        return "raman"
    if "INFRARED" in data_type or re.search(r"\b(FT)?-?IR\b", data_type) or "FTIR" in data_type:
        return "ir"
    return None


def _wavenumbers(block: JcampBlock, *, technique: str | None, where: str) -> npt.NDArray[np.float64]:
    unit = re.sub(r"\s", "", block.x_units).upper()
    x = block.x
    if not unit or unit in _WAVENUMBER_UNITS:
        return x
    if unit in _MICROMETRE_UNITS or unit in _NANOMETRE_UNITS:
        scale = 1e4 if unit in _MICROMETRE_UNITS else 1e7
        if np.any(~np.isfinite(x)) or np.any(x <= 0):
            raise SpectrumError(
                "implausible_range", f"{where}: wavelengths must be positive to convert to cm-1"
            )
        if technique == "raman":
            laser = _laser_nm(block)
            if laser is None:
                raise SpectrumError(
                    "no_spectrum",
                    f"{where}: a Raman spectrum on a wavelength axis ({block.x_units}) needs the laser "
                    "wavelength to convert to Raman shift, and the file does not give it",
                )
            return np.asarray(1e7 / laser - scale / x, dtype=np.float64)
        return np.asarray(scale / x, dtype=np.float64)
    raise SpectrumError("unreadable", f"{where}: unknown x unit {short(block.x_units)!r}")


def _laser_nm(block: JcampBlock) -> float | None:
    for label in _LASER_LABELS:
        value = block.ldrs.get(label)
        if value:
            match = re.search(r"[0-9]+(?:\.[0-9]*)?", value)
            if match and float(match.group()) > 0:
                return float(match.group())
    return None


def _y_unit(block: JcampBlock, *, where: str) -> str:
    key = re.sub(r"\s", "", block.y_units).upper()
    if key in _Y_UNITS:
        return _Y_UNITS[key]
    try:
        return normalise_y_unit(block.y_units)
    except SpectrumError as exc:
        raise SpectrumError(
            "unknown_unit", f"{where}: y unit {short(block.y_units)!r} is not recognised"
        ) from exc


def _metadata(block: JcampBlock, *, index: int) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for label, key in _METADATA_LABELS.items():
        value = block.ldrs.get(label, "").strip()
        if value and key not in meta:
            meta[key] = value
    meta["x_units"] = block.x_units
    meta["y_units"] = block.y_units
    meta["jcamp_block"] = index
    meta["jcamp_data"] = block.data_form
    meta["jcamp_compression"] = block.compression
    if "PAGE" in block.ldrs:
        meta["page"] = block.ldrs["PAGE"]
    if block.warnings:
        meta["warnings"] = list(block.warnings)
    return meta


def block_to_spectrum(block: JcampBlock, *, index: int, name: str) -> Spectrum:
    """Convert one decoded block to a validated :class:`Spectrum` in cm-1."""
    where = f"{name} block {index + 1}" if index else name
    why_not = _why_not_spectral(block.data_type, block.x_units)
    if why_not is not None:
        raise SpectrumError("no_spectrum", f"{where} is not an IR or Raman spectrum: {why_not}")
    technique = _technique(block)
    y_unit = _y_unit(block, where=where)
    wavenumbers = _wavenumbers(block, technique=technique, where=where)
    return Spectrum.create(
        wavenumbers, block.y, y_unit=y_unit, technique=technique, metadata=_metadata(block, index=index)
    )


def spectra_from_jcamp(data: bytes, *, name: str) -> list[Spectrum]:
    """Every IR or Raman spectrum in JCAMP-DX bytes.

    Blocks that are not IR or Raman spectra (or fail validation) are skipped when
    another block succeeds; when none does, the first block's error is raised.
    """
    if looks_binary(data):
        raise SpectrumError("unreadable", f"{name} is binary, not JCAMP-DX text")
    blocks = parse_jcamp(decode_text(data), name=name, spectral_only=True)
    spectra: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for index, block in enumerate(blocks):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                spectra.append(block_to_spectrum(block, index=index, name=name))
        except SpectrumError as exc:
            errors.append(exc)
    if not spectra:
        raise errors[0]
    for error in errors:
        logger.warning("%s: skipped a block: %s", name, error)
    return spectra


@register(
    "jcamp-dx",
    suffixes=(".jdx", ".dx", ".jcm", ".jcamp"),
    magic=(b"##TITLE", b"##title", b"\xef\xbb\xbf##TITLE"),
    sniff=looks_like_jcamp,
)
def read_jcamp(path: Path) -> list[Spectrum]:
    """Every IR or Raman spectrum in a JCAMP-DX file (one per block or NTUPLES page)."""
    return spectra_from_jcamp(read_limited(path), name=path.name)
