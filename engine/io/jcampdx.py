"""JCAMP-DX reader: every ASDF compression form, link blocks and NTUPLES pages.

The file is split into labelled data records (``##LABEL= value``); each
``##TITLE=`` opens a block and ``##END=`` closes it, so LINK files yield one
block per nested spectrum. A block's data table is decoded (in
:mod:`engine.io._jcamp_data`) by :func:`decode_xydata` for ``(X++(Y..Y))``
tables, whatever mix of AFFN, PAC, SQZ, DIF and DUP it uses, or as point pairs
for ``(XY..XY)`` tables (``##XYPOINTS``, ``##PEAKTABLE``). DIF lines carry a Y-value check: a line
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import Spectrum, SpectrumError, normalise_y_unit, wavenumbers_from_wavelengths
from engine.io._jcamp_data import (
    check_count,
    check_x_range,
    decode_lines,
    decode_points,
    decode_xydata,
    implied_count,
    resolve_y_checks,
    x_from_line_starts,
)
from engine.io._text import decode_text, looks_binary, short
from engine.io.registry import register_parser

__all__ = [
    "JcampBlock",
    "decode_xydata",
    "looks_like_jcamp",
    "parse_jcamp",
    "spectra_from_jcamp",
]

logger = logging.getLogger(__name__)

#: At most this many blocks in one file.
MAX_BLOCKS = 10_000

#: A header value longer than this is cut (continuation lines are appended to it).
MAX_VALUE_CHARS = 20_000

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
        expected, source = implied_count(first_x, last_x, delta_x), "##FIRSTX/##LASTX/##DELTAX="
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
        decoded = decode_lines(table.lines, name=name, first_x=first_x, delta_x=delta_x, x_factor=x_factor)
        warnings.extend(decoded.warnings)
        y_raw, kept = resolve_y_checks(decoded, expected, where=where, label=table.label, source=source)
        warnings.extend(kept)
        compression = decoded.compression
        count = len(y_raw)
        check_count(count, npoints, where=where, label=table.label)
        if count == 0:
            raise SpectrumError("no_spectrum", f"{where}: the {table.label} table holds no values")
        if compression in ("DIF", "DIFDUP"):
            # The X checks tell Y-check duplicates from new points: they must fit the header.
            check_x_range(decoded.x_checks, first_x, last_x, count, name=name)
        if first_x is not None and last_x is not None and count > 1:
            x_values = np.linspace(first_x, last_x, count, dtype=np.float64)
        elif first_x is not None and delta_x is not None:
            x_values = first_x + delta_x * np.arange(count, dtype=np.float64)
        else:
            x_values = x_from_line_starts(decoded.line_x, count, where=where)
    else:
        width = len(points.group(1)) if points is not None else 2
        xs, y_raw = decode_points(table.lines, label=table.label, width=width, name=where)
        compression = "AFFN"
        check_count(len(y_raw), npoints, where=where, label=table.label)
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
        wavenumbers = wavenumbers_from_wavelengths(
            x, "micrometre" if unit in _MICROMETRE_UNITS else "nanometre", where=where
        )
        if technique == "raman":
            laser = _laser_nm(block)
            if laser is None:
                raise SpectrumError(
                    "no_spectrum",
                    f"{where}: a Raman spectrum on a wavelength axis ({block.x_units}) needs the laser "
                    "wavelength to convert to Raman shift, and the file does not give it",
                )
            return np.asarray(1e7 / laser - wavenumbers, dtype=np.float64)
        return wavenumbers
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


@register_parser(
    "jcamp-dx",
    suffixes=(".jdx", ".dx", ".jcm", ".jcamp"),
    magic=(b"##TITLE", b"##title", b"\xef\xbb\xbf##TITLE"),
    sniff=looks_like_jcamp,
    sniff_anywhere=True,  # JCAMP-DX text after a comment or a blank line, whatever its suffix
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

