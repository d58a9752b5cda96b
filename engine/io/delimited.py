"""Delimited text spectra: generic CSV/TXT/DAT/TSV columns and Horiba LabSpec ``.txt`` exports.

The delimiter (tab, semicolon, comma or whitespace) and the decimal separator
(point or comma, as in ``1234,5;0,123``) are found by trying each scheme on a
sample of lines and keeping the one that reads the most rows as numbers.
Lines before the data are the header (its last line names the columns);
lines starting with ``#``, ``%``, ``//`` or ``!`` are comments anywhere.

The first column is the wavenumber axis and every further column one
spectrum; a leading 1, 2, 3... index column is dropped. A header line whose
trailing fields are a numeric axis (LabSpec and other "wide" map exports)
makes every following row one spectrum. The y unit and the technique are
read from the column name, then from the whole header.

>>> table = parse_delimited("Wavenumber;Absorbance\\n1000,5;0,25\\n1001,5;0,5\\n")
>>> table.delimiter, table.decimal, table.names, table.columns.tolist()
(';', ',', ('Wavenumber', 'Absorbance'), [[1000.5, 0.25], [1001.5, 0.5]])
>>> infer_y_unit("Raman intensity (counts)"), infer_technique("Raman shift")
('counts', 'raman')
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import MIN_POINTS, Spectrum, SpectrumError, wavenumbers_from_wavelengths
from engine.io._text import (
    MAX_SPECTRA,
    decode_text,
    infer_technique,
    infer_y_unit,
    is_missing,
    looks_binary,
    parse_number,
)
from engine.io.registry import register_parser

__all__ = [
    "DelimitedTable",
    "infer_technique",
    "infer_y_unit",
    "looks_like_labspec",
    "parse_delimited",
    "spectra_from_delimited",
    "spectra_from_labspec",
]

logger = logging.getLogger(__name__)

#: (delimiter, decimal separator) in the order ties are broken; " " means any whitespace.
SCHEMES: tuple[tuple[str, str], ...] = (
    ("\t", "."),
    ("\t", ","),
    (";", "."),
    (";", ","),
    (",", "."),
    (" ", "."),
    (" ", ","),
)

COMMENT_PREFIXES = ("#", "%", "//", "!")

#: Lines sampled to choose the delimiter scheme.
SAMPLE_LINES = 400

#: Header text beyond this many characters is not searched for units and techniques.
MAX_HEADER_CHARS = 20_000

#: A wide layout needs at least this many axis values in its header line.
MIN_WIDE_AXIS = 16

_LABSPEC_KEYS = (
    "acq. time",
    "accumulations",
    "laser",
    "grating",
    "spectro (cm",
    "objective",
    "instrument",
    "detector",
    "hole",
    "binning",
    "spike filter",
)

_LABSPEC_METADATA = {
    "title": "title",
    "date": "date",
    "acquired": "acquired",
    "instrument": "instrument",
    "laser": "laser",
    "detector": "detector",
    "objective": "objective",
    "grating": "grating",
    "acq. time (s)": "acquisition_time_s",
    "accumulations": "accumulations",
    "sample": "sample",
    "project": "project",
    "remark": "remark",
}

#: A plain number, which :func:`float` reads exactly as :func:`parse_number` would.
_PLAIN_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"


def _plain_line(delimiter: str) -> re.Pattern[str]:
    """Whole lines of plain numbers separated by ``delimiter``: the fast path of :func:`parse_delimited`."""
    blank = "[ ]" if delimiter == "\t" else r"[ \t]"  # a tab next to a tab delimiter is an empty field
    gap = rf"{blank}+" if delimiter == " " else rf"{blank}*{re.escape(delimiter)}{blank}*"
    return re.compile(rf"{blank}*{_PLAIN_NUMBER}(?:{gap}{_PLAIN_NUMBER})+{blank}*")


_PLAIN_LINES = {delimiter: _plain_line(delimiter) for delimiter in ("\t", ";", ",", " ")}

#: A plain number with a decimal comma (``1234,5``), which :func:`float` reads once the comma is a point.
_COMMA_NUMBER = r"[-+]?(?:[0-9]+(?:,[0-9]*)?|,[0-9]+)(?:[eE][-+]?[0-9]+)?"


def _plain_comma_line(delimiter: str) -> re.Pattern[str]:
    """Whole lines of decimal-comma numbers separated by ``delimiter`` (never a comma)."""
    blank = "[ ]" if delimiter == "\t" else r"[ \t]"
    gap = rf"{blank}+" if delimiter == " " else rf"{blank}*{re.escape(delimiter)}{blank}*"
    return re.compile(rf"{blank}*{_COMMA_NUMBER}(?:{gap}{_COMMA_NUMBER})+{blank}*")


_PLAIN_COMMA_LINES = {delimiter: _plain_comma_line(delimiter) for delimiter in ("\t", ";", " ")}


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time, without building a list of them all."""
    for line in io.StringIO(text, newline=None):
        yield line.rstrip("\n")

_HEADER_SEPARATORS = re.compile(r"[=:\t]")


@dataclass(frozen=True)
class DelimitedTable:
    """Numbers read from a delimited text, with the header that preceded them.

    ``columns`` has one row per data line; ``names`` are the column names from
    the header (empty strings when there is none); ``axis`` is set for the wide
    layout, where the header line holds the wavenumbers and each row of
    ``columns`` is one spectrum (``lead`` leading fields are coordinates).
    """

    columns: npt.NDArray[np.float64]
    names: tuple[str, ...]
    header: tuple[str, ...]
    delimiter: str
    decimal: str
    axis: npt.NDArray[np.float64] | None = None
    lead: int = 0
    missing: bool = False


def _is_comment(line: str) -> bool:
    return line.startswith(COMMENT_PREFIXES)


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == " ":
        return line.split()
    fields = [f.strip() for f in line.split(delimiter)]
    while len(fields) > 2 and not fields[-1]:  # a trailing delimiter; "1040," is a value not measured
        fields.pop()
    return fields


def _numeric(fields: list[str], decimal: str) -> list[float] | None:
    """The fields as numbers, or ``None`` when it is not a data row.

    A value after the first (the axis) may be marked not measured (:func:`is_missing`:
    empty, ``NaN``, ``N/A``...): it is NaN, and the point is left out of its spectrum.
    """
    if len(fields) < 2 or not fields[0]:
        return None
    values: list[float] = []
    for i, text in enumerate(fields):
        if i and is_missing(text):
            values.append(float("nan"))
            continue
        value = parse_number(text, decimal=decimal)
        if value is None:
            return None
        values.append(value)
    return values


def _choose_scheme(lines: list[str]) -> tuple[str, str]:
    """The (delimiter, decimal) that reads the most of the first lines as rows of numbers."""
    sample = [s.rstrip() for s in lines[: SAMPLE_LINES * 4] if s.strip() and not _is_comment(s.strip())]
    sample = sample[:SAMPLE_LINES] + sample[-50:]
    best = SCHEMES[0]
    best_score = 0
    for delimiter, decimal in SCHEMES:
        counts: Counter[int] = Counter()
        for line in sample:
            values = _numeric(_split(line, delimiter), decimal)
            if values is not None:
                counts[len(values)] += 1
        score = max(counts.values(), default=0)
        if score > best_score:
            best, best_score = (delimiter, decimal), score
    return best


def _names(line: str, delimiter: str) -> list[str]:
    if delimiter == " ":
        return line.split()
    try:
        row = next(csv.reader([line], delimiter=delimiter))
    except (csv.Error, StopIteration):
        row = line.split(delimiter)
    fields = [f.strip() for f in row]
    while fields and not fields[-1]:
        fields.pop()
    return fields


def parse_delimited(text: str, *, name: str = "text") -> DelimitedTable:
    """Read the numeric table of a delimited text; raise :class:`SpectrumError` when there is none.

    Rows are kept as one flat array of doubles, not as Python lists, so a large export
    costs little more than its numbers (a 50 MB CSV: about 100 MB, not 1 GB).
    """
    delimiter, decimal = _choose_scheme(list(itertools.islice(_lines(text), SAMPLE_LINES * 4)))
    plain = (_PLAIN_LINES if decimal == "." else _PLAIN_COMMA_LINES).get(delimiter)
    header: list[str] = []
    flat = array("d")
    widths = array("l")
    linenos = array("l")
    ended_at: int | None = None
    for lineno, line in enumerate(_lines(text), 1):
        if plain is not None and ended_at is None and plain.fullmatch(line):
            tokens = line.split() if delimiter == " " else line.split(delimiter)
            try:
                fast = [float(t if decimal == "." else t.replace(",", ".")) for t in tokens]
            except ValueError:  # not expected after the match; the full parse below decides
                fast = [math.inf]
            if -math.inf < min(fast) and max(fast) < math.inf:
                flat.extend(fast)
                widths.append(len(fast))
                linenos.append(lineno)
                continue
        stripped = line.strip()
        if not stripped:
            continue
        if _is_comment(stripped):
            header.append(stripped)
            continue
        if ended_at is not None:
            continue
        row = line.rstrip() if delimiter == " " else line.rstrip(" \r")  # "1040\t": a value not measured
        values = _numeric(_split(row, delimiter), decimal)
        if values is None:
            if widths:
                ended_at = lineno
            else:
                header.append(line.rstrip())
            continue
        flat.extend(values)
        widths.append(len(values))
        linenos.append(lineno)
    if not widths:
        raise SpectrumError(
            "unreadable", f"{name} has no rows of numbers (tried tab, semicolon, comma and blank delimiters)"
        )
    if ended_at is not None:
        logger.debug("%s: data ends at line %d, the rest is ignored", name, ended_at)
    row_widths = np.frombuffer(widths, dtype=widths.typecode)
    found, first, counts = np.unique(row_widths, return_index=True, return_counts=True)
    most = counts == counts.max()
    width = int(found[most][np.argmin(first[most])])  # the most common width; a tie: the first seen
    odd = np.flatnonzero(row_widths != width)
    if odd.size:
        position = int(odd[0])
        lineno, got = int(linenos[position]), int(row_widths[position])
        problem = f"{name} line {lineno} has {got} fields where the others have {width}"
        if position == len(row_widths) - 1 and got < width:
            raise SpectrumError("truncated", problem)
        raise SpectrumError("unreadable", problem)
    columns = np.frombuffer(flat, dtype=np.float64).reshape(-1, width).copy()
    missing = bool(np.isnan(columns).any())
    names: tuple[str, ...] = ("",) * width
    axis = None
    lead = 0
    header_lines = [h for h in header if not _is_comment(h)]
    if header_lines:
        fields = _names(header_lines[-1], delimiter)
        axis_found = _wide_axis(fields, width=width, decimal=decimal)
        if axis_found is not None:
            axis, lead = axis_found
        elif len(fields) == width:
            names = tuple(fields)
    return DelimitedTable(
        columns=columns,
        names=names,
        header=tuple(header),
        delimiter=delimiter,
        decimal=decimal,
        axis=axis,
        lead=lead,
        missing=missing,
    )


def _wide_axis(fields: list[str], *, width: int, decimal: str) -> tuple[npt.NDArray[np.float64], int] | None:
    """The wavenumber axis of a wide layout: the header's trailing numeric fields."""
    if width < MIN_WIDE_AXIS or len(fields) > width:
        return None
    numbers: list[float] = []
    for text in reversed(fields):
        value = parse_number(text, decimal=decimal)
        if value is None:
            break
        numbers.append(value)
    if len(numbers) < MIN_WIDE_AXIS:
        return None
    lead = width - len(numbers)
    if any(parse_number(text, decimal=decimal) is not None for text in fields[: len(fields) - len(numbers)]):
        return None
    axis = np.array(numbers[::-1], dtype=np.float64)
    if np.all(np.diff(axis) == 1) and axis[0] in (0.0, 1.0):
        return None  # column numbers, not wavenumbers
    return axis, lead


def header_metadata(lines: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``key = value`` and ``key: value`` pairs of header lines, plus title/date/instrument when named."""
    fields: dict[str, str] = {}
    for line in lines[:500]:
        body = line[:2000].lstrip("#%!/ ")
        match = _HEADER_SEPARATORS.search(body, 0, 61)
        if match is None:
            continue
        key, value = body[: match.start()].strip(), body[match.end() :].strip()
        if key and value:
            fields.setdefault(key, value[:500])
    meta: dict[str, Any] = {}
    for key, value in fields.items():
        lower = key.lower()
        for word, target in (
            ("title", "title"),
            ("sample", "title"),
            ("name", "title"),
            ("date", "date"),
            ("acquired", "date"),
            ("instrument", "instrument"),
            ("spectrometer", "instrument"),
            ("laser", "laser"),
        ):
            if word in lower and target not in meta:
                meta[target] = value
    if fields:
        meta["header"] = dict(list(fields.items())[:200])
    return meta


#: Words of an axis column's name that say it holds wavelengths, and in which unit.
_WAVELENGTH_WORDS = {
    **dict.fromkeys(("um", "µm", "micron", "microns", "micrometer", "micrometers"), "micrometre"),
    **dict.fromkeys(("micrometre", "micrometres", "mikrometer"), "micrometre"),
    **dict.fromkeys(("nm", "nanometer", "nanometers", "nanometre", "nanometres"), "nanometre"),
}


def wavelength_unit(name: str) -> str | None:
    """``micrometre`` or ``nanometre`` when an axis column's name says it holds wavelengths, else None.

    >>> [wavelength_unit(n) for n in ("wavelength_um", "Wavelength (µm)", "lambda [nm]", "wavenumber", "")]
    ['micrometre', 'micrometre', 'nanometre', None, None]
    """
    words = re.split(r"[^a-zµ]+", name.lower())
    return next((_WAVELENGTH_WORDS[w] for w in words if w in _WAVELENGTH_WORDS), None)


def _index_column(columns: npt.NDArray[np.float64]) -> bool:
    """Whether the first of three or more columns counts rows (1, 2, 3... or 0, 1, 2...)."""
    if columns.shape[1] < 3 or columns.shape[0] < 2:
        return False
    first = columns[:, 0]
    if not np.all(np.isfinite(first)) or first[0] not in (0.0, 1.0):
        return False
    steps = np.diff(first)
    second = np.diff(columns[:, 1])
    return bool(np.all(steps == 1) and (np.all(second > 0) or np.all(second < 0)))


def spectra_from_table(
    table: DelimitedTable,
    *,
    name: str,
    y_unit: str | None = None,
    technique: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[Spectrum]:
    """Spectra from a parsed table; ``y_unit``/``technique`` override what the header says."""
    header_text = "\n".join(table.header)[:MAX_HEADER_CHARS]
    base = dict(metadata) if metadata is not None else header_metadata(table.header)
    if table.axis is not None:
        return _wide_spectra(table, table.axis, name=name, y_unit=y_unit, technique=technique, base=base)
    if table.columns.shape[0] < MIN_POINTS:
        raise SpectrumError(
            "too_few_points",
            f"{name} has {table.columns.shape[0]} rows of numbers, need at least {MIN_POINTS}",
        )
    header_unit = y_unit or infer_y_unit(header_text)
    header_technique = technique or infer_technique(header_text)
    columns = table.columns
    names = list(table.names)
    if _index_column(columns):
        columns = columns[:, 1:]
        names = names[1:]
    x = columns[:, 0]
    x_name = names[0]
    wavelengths = wavelength_unit(x_name[:200])
    spectra: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for j in range(1, columns.shape[1]):
        column_name = names[j]
        y = columns[:, j]
        if np.all(np.isnan(y)):
            continue
        unit = y_unit or infer_y_unit(column_name[:200])
        if unit == "arbitrary":
            unit = header_unit
        kind = technique or infer_technique(f"{x_name[:200]} {column_name[:200]}") or header_technique
        meta = dict(base)
        if column_name:
            meta["column"] = column_name
        meta["delimiter"] = {"\t": "tab", " ": "whitespace"}.get(table.delimiter, table.delimiter)
        meta["decimal"] = table.decimal
        keep = np.isfinite(x)
        try:
            axis = x[keep]
            if wavelengths is not None and kind != "raman":  # a Raman shift needs the laser line too
                axis = wavenumbers_from_wavelengths(axis, wavelengths, where=name)
                meta["x_unit"] = f"{wavelengths} (converted to cm-1)"
            spectra.append(
                Spectrum.create(
                    axis, y[keep], y_unit=unit, technique=kind, metadata=meta, drop_missing=table.missing
                )
            )
        except SpectrumError as exc:
            errors.append(exc)
    return _keep(spectra, errors, name=name, what="column")


def _wide_spectra(
    table: DelimitedTable,
    axis: npt.NDArray[np.float64],
    *,
    name: str,
    y_unit: str | None,
    technique: str | None,
    base: dict[str, Any],
) -> list[Spectrum]:
    header_text = "\n".join(table.header)[:MAX_HEADER_CHARS]
    unit = y_unit or infer_y_unit(header_text)
    kind = technique or infer_technique(header_text)
    if table.columns.shape[0] > MAX_SPECTRA:
        raise SpectrumError("unreadable", f"{name} has more than {MAX_SPECTRA} spectra")
    spectra: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for row in table.columns:
        meta = dict(base)
        coords = row[: table.lead]
        if table.lead == 2:
            meta["x"], meta["y"] = float(coords[0]), float(coords[1])
        elif table.lead:
            meta["coordinates"] = [float(c) for c in coords]
        try:
            spectra.append(
                Spectrum.create(
                    axis,
                    row[table.lead :],
                    y_unit=unit,
                    technique=kind,
                    metadata=meta,
                    drop_missing=table.missing,
                )
            )
        except SpectrumError as exc:
            errors.append(exc)
    return _keep(spectra, errors, name=name, what="row")


def _keep(spectra: list[Spectrum], errors: list[SpectrumError], *, name: str, what: str) -> list[Spectrum]:
    """The spectra that validated; the first error when none did."""
    if not spectra:
        if errors:
            raise errors[0]
        raise SpectrumError("no_spectrum", f"{name} has no column of values beside the wavenumbers")
    if errors:
        logger.warning("%s: %d %s(s) skipped, first: %s", name, len(errors), what, errors[0])
    return spectra


@register_parser("delimited", suffixes=(".csv", ".txt", ".dat", ".tsv", ".dpt", ".xy"), fallback=True)
def spectra_from_delimited(data: bytes, *, name: str) -> list[Spectrum]:
    """Every spectrum in delimited text bytes (the generic reader of its suffixes, chosen last)."""
    if looks_binary(data):
        raise SpectrumError("unreadable", f"{name} is binary, not delimited text")
    return spectra_from_table(parse_delimited(decode_text(data), name=name), name=name)


def looks_like_labspec(head: bytes) -> bool:
    """Whether the head is a Horiba LabSpec export: ``#key=<tab>value`` lines with LabSpec keys."""
    keys = []
    for line in head[:4096].decode("latin-1").splitlines()[:80]:
        if line.startswith("#") and "=" in line:
            keys.append(line[1:].partition("=")[0].strip().lower())
    return sum(any(key.startswith(known) for known in _LABSPEC_KEYS) for key in keys) >= 2


@register_parser("horiba-labspec", suffixes=(".txt", ".csv", ".tsv", ".dat"), sniff=looks_like_labspec)
def spectra_from_labspec(data: bytes, *, name: str) -> list[Spectrum]:
    """Every spectrum in a Horiba LabSpec text export (Raman, counts)."""
    if looks_binary(data):
        raise SpectrumError("unreadable", f"{name} is binary, not a LabSpec text export")
    text = decode_text(data)
    fields: dict[str, str] = {}
    for line in text.splitlines()[:2000]:
        if line.startswith("#") and "=" in line:
            key, _, value = line[1:].partition("=")
            fields.setdefault(key.strip(), value.strip()[:500])
    meta: dict[str, Any] = {}
    for key, value in fields.items():
        target = _LABSPEC_METADATA.get(key.lower())
        if target and value:
            meta[target] = value
    meta["labspec"] = fields
    table = parse_delimited(text, name=name)
    return spectra_from_table(table, name=name, y_unit="counts", technique="raman", metadata=meta)
