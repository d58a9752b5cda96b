"""Open Specy files: CSV (long and wide), JSON and YAML objects.

An Open Specy object is a shared ``wavenumber`` axis, ``spectra`` (one column
per spectrum) and ``metadata`` (one entry per spectrum: ``x``, ``y``,
``spectrum_type``, ``spectrum_identity``...). It is written as

* long CSV: a ``wavenumber`` column, then one column per spectrum;
* wide CSV: a header of wavenumbers followed by metadata names, then one row
  per spectrum (its intensities, then its metadata values);
* JSON or YAML with the three keys above.

Zips of these (Open Specy's upload format) are read by :mod:`engine.io.archive`,
which asks the registry for each member's reader.

>>> spectra = spectra_from_openspecy_csv(
...     ("wavenumber,intensity\\n" + "".join(f"{400 + i},{i % 3}\\n" for i in range(16))).encode(),
...     name="demo.csv",
... )
>>> spectra[0].n_points, spectra[0].metadata["column"]
(16, 'intensity')
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from engine.core.spectrum import Spectrum, SpectrumError
from engine.io._text import (
    MAX_SPECTRA,
    NUMBER_CHARS,
    decode_text,
    infer_technique,
    infer_y_unit,
    is_missing,
    looks_binary,
    parse_number,
    short,
)
from engine.io.registry import register_parser

__all__ = [
    "looks_like_openspecy_csv",
    "spectra_from_openspecy_csv",
    "spectra_from_openspecy_json",
    "spectra_from_openspecy_object",
    "spectra_from_openspecy_yaml",
]

logger = logging.getLogger(__name__)

#: YAML parses slowly; an Open Specy YAML file larger than this is refused.
MAX_YAML_BYTES = 16 * 1024 * 1024

#: YAML nested deeper than this is refused (Open Specy's YAML has three levels).
MAX_YAML_DEPTH = 64

#: Wide CSVs and the long CSV's first row need at least this many wavenumbers.
MIN_WIDE_AXIS = 16

#: Metadata names that mark the wide Open Specy CSV layout.
OPENSPECY_METADATA_NAMES = frozenset(
    {
        "x",
        "y",
        "user_name",
        "spectrum_type",
        "spectrum_identity",
        "organization",
        "license",
        "session_id",
        "file_id",
        "sample_name",
        "material_class",
    }
)


def _first_line(head: bytes) -> str:
    text = head[:4096].decode("latin-1").lstrip("\ufeff").removeprefix("\xef\xbb\xbf")
    return text.splitlines()[0] if text else ""


def _csv_fields(line: str) -> list[str]:
    return [f.strip().strip('"').strip("'").strip() for f in line.split(",")]


def looks_like_openspecy_csv(head: bytes) -> bool:
    """Whether the head is an Open Specy CSV: a ``wavenumber`` first column, or a wide wavenumber header."""
    fields = _csv_fields(_first_line(head))
    if len(fields) >= 2 and fields[0].lower() == "wavenumber":
        return True
    numbers = []
    for text in fields:
        value = parse_number(text)
        if value is None:
            break
        numbers.append(value)
    if len(numbers) < MIN_WIDE_AXIS:
        return False
    steps = np.diff(np.array(numbers[:-1]))  # the last field may be cut by the head's end
    return bool(np.all(steps > 0) or np.all(steps < 0))


def _looks_like_json(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"["))


def _looks_like_yaml(head: bytes) -> bool:
    return b"wavenumber" in head[:4096] and not _looks_like_json(head)


def _technique(metadata: Mapping[str, Any]) -> str | None:
    """From ``spectrum_type`` (``Raman``, ``FTIR``...), else from the column name."""
    kind = str(metadata.get("spectrum_type", "")).lower()
    if "raman" in kind:
        return "raman"
    if "ir" in kind:
        return "ir"
    return infer_technique(str(metadata.get("column", ""))[:200])


def _y_unit(metadata: Mapping[str, Any], technique: str | None) -> str:
    """From a unit field or the column name (``counts`` too); Open Specy's own ``intensity``
    says nothing, so Raman intensities are counts and anything else is arbitrary."""
    for key in ("intensity_units", "y_unit", "units", "column"):
        unit = infer_y_unit(str(metadata.get(key, ""))[:200])
        if unit != "arbitrary":
            return unit
    return "counts" if technique == "raman" else "arbitrary"


def _text(value: Any) -> str:
    """A scalar as text cut to 500 characters; containers are only named (their text may be huge)."""
    if isinstance(value, list | dict | tuple | set):
        return f"<a {type(value).__name__} of {len(value)}>"
    try:
        return str(value)[:500]
    except ValueError:  # an integer too large for its decimal form
        return f"<{type(value).__name__} too large to show>"


def _scalar(value: Any) -> Any:
    """A JSON-friendly scalar for metadata; longer strings are cut."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) or (isinstance(value, int) and abs(value) < 2**63):
        return value
    return _text(value)


def _make(
    wavenumbers: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    metadata: dict[str, Any],
) -> Spectrum:
    technique = _technique(metadata)
    y_unit = _y_unit(metadata, technique)
    return Spectrum.create(
        wavenumbers, values, y_unit=y_unit, technique=technique, metadata=metadata, drop_missing=True
    )


def _keep(spectra: list[Spectrum], errors: list[SpectrumError], *, name: str) -> list[Spectrum]:
    if not spectra:
        if errors:
            raise errors[0]
        raise SpectrumError("no_spectrum", f"{name} holds no spectrum")
    if errors:
        logger.warning("%s: %d spectra skipped, first: %s", name, len(errors), errors[0])
    return spectra


# --- CSV ---------------------------------------------------------------------------------------


@register_parser("openspecy-csv", suffixes=(".csv",), sniff=looks_like_openspecy_csv)
def spectra_from_openspecy_csv(data: bytes, *, name: str) -> list[Spectrum]:
    """Every spectrum in an Open Specy CSV, long or wide."""
    if looks_binary(data):
        raise SpectrumError("unreadable", f"{name} is binary, not an Open Specy CSV")
    text = decode_text(data)
    plain = _plain_long_csv(text)
    if plain is not None:  # the common instrument export, parsed in one numpy call
        header, block = plain
        columns = {j: block[:, j] for j in range(1, len(header))}
        return _long_columns(header, block[:, 0], columns, {}, name=name)
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if "".join(row).strip()]
    except csv.Error as exc:
        raise SpectrumError("unreadable", f"{name}: not a valid CSV ({exc})") from exc
    if not rows:
        raise SpectrumError("empty_file", f"{name} holds no rows")
    header = [cell.strip() for cell in rows[0]]
    if header and header[0].lower() == "wavenumber":
        return _long_csv(header, rows[1:], name=name)
    return _wide_csv(header, rows[1:], name=name)


#: A body of plain decimal numbers, commas and white space: nothing a quoted or text cell needs.
_PLAIN_BODY = re.compile(r"[0-9eE+\-.,\s]*")


def _plain_long_csv(text: str) -> tuple[list[str], npt.NDArray[np.float64]] | None:
    """(header, number block) of a long CSV whose body is finite numbers only, else None.

    The general path (:mod:`csv`, cell by cell) reads everything else and
    names the row at fault, so anything unusual simply falls through to it.

    >>> header, block = _plain_long_csv("wavenumber,a,b\\n400,1,2\\n402,3,4\\n")
    >>> header, block.shape
    (['wavenumber', 'a', 'b'], (2, 3))
    >>> _plain_long_csv('wavenumber,a\\n400,"1"\\n') is None
    True
    """
    first, _, body = text.partition("\n")
    header = [cell.strip() for cell in first.split(",")]
    if len(header) < 2 or header[0].lower() != "wavenumber" or '"' in first or not body.strip():
        return None
    if _PLAIN_BODY.fullmatch(body) is None:
        return None
    try:
        block = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        return None
    if block.shape[1] != len(header) or not np.isfinite(block).all():
        return None
    return header, block


def _all_numeric(cells: list[list[str]]) -> npt.NDArray[np.float64] | None:
    """All cells as one float matrix when every one is a plain finite decimal number, else None."""
    if not cells or not NUMBER_CHARS.issuperset("".join("".join(row) for row in cells).replace(" ", "")):
        return None
    try:
        block = np.array(cells, dtype=np.float64)
    except ValueError:
        return None
    return block if np.isfinite(block).all() else None


def _long_csv(header: list[str], rows: list[list[str]], *, name: str) -> list[Spectrum]:
    width = len(header)
    if width < 2:
        raise SpectrumError("no_spectrum", f"{name}: a wavenumber column but no intensity column")
    footer = 0
    while len(rows) > footer + 1 and parse_number(rows[-1 - footer][0]) is None:
        footer += 1  # "End of data", "Operator: jk": a vendor's footer, not a row of the table
    if footer:
        logger.debug("%s: %d footer lines after the table ignored", name, footer)
        rows = rows[:-footer]
    cells: list[list[str]] = []
    for lineno, row in enumerate(rows, 2):
        if len(row) != width:
            reason = "truncated" if lineno == len(rows) + 1 and len(row) < width else "unreadable"
            raise SpectrumError(reason, f"{name} row {lineno} has {len(row)} fields, the header has {width}")
        cells.append(row)
    numeric: dict[int, list[float]] = {}
    constant: dict[str, Any] = {}
    block = _all_numeric(cells)
    if block is not None:  # the common case, parsed in one numpy call
        numeric = {j: block[:, j].tolist() for j in range(width)}
    for j in range(width if block is None else 0):
        column = [c[j] for c in cells]
        parsed = [float("nan") if is_missing(c) else parse_number(c) for c in column]
        blank = bool(column) and all(is_missing(c) for c in column)  # a column of no values: text
        if all(v is not None for v in parsed) and not blank:
            numeric[j] = [float(v) for v in parsed if v is not None]
        elif j == 0:
            raise SpectrumError("unreadable", f"{name}: the wavenumber column holds non-numbers")
        elif column:
            constant[header[j]] = _scalar(column[0])
    x = np.array(numeric.pop(0), dtype=np.float64)
    return _long_columns(header, x, numeric, constant, name=name)


def _long_columns(
    header: list[str],
    x: npt.NDArray[np.float64],
    numeric: Mapping[int, Sequence[float] | npt.NDArray[np.float64]],
    constant: dict[str, Any],
    *,
    name: str,
) -> list[Spectrum]:
    """One spectrum per numeric intensity column; text columns become every spectrum's metadata."""
    spectra: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for j, values in numeric.items():
        meta = dict(constant, column=header[j])
        try:
            spectra.append(_make(x, values, meta))
        except SpectrumError as exc:
            errors.append(exc)
    return _keep(spectra, errors, name=name)


def _wide_csv(header: list[str], rows: list[list[str]], *, name: str) -> list[Spectrum]:
    axis: list[float] = []
    for text in header:
        value = parse_number(text)
        if value is None:
            break
        axis.append(value)
    meta_names = header[len(axis) :]
    if len(axis) < MIN_WIDE_AXIS:
        raise SpectrumError(
            "unreadable", f"{name}: neither a 'wavenumber' column nor a header of wavenumbers"
        )
    if not rows:
        raise SpectrumError("no_spectrum", f"{name}: a wavenumber header but no spectrum rows")
    if len(rows) > MAX_SPECTRA:
        raise SpectrumError("unreadable", f"{name} has more than {MAX_SPECTRA} rows")
    spectra: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for lineno, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise SpectrumError(
                "truncated" if lineno == len(rows) + 1 and len(row) < len(header) else "unreadable",
                f"{name} row {lineno} has {len(row)} fields, the header has {len(header)}",
            )
        values = [parse_number(c) for c in row[: len(axis)]]
        if any(v is None for v in values):
            raise SpectrumError("unreadable", f"{name} row {lineno} holds a non-number among its intensities")
        meta = {
            key: _scalar(_number_or_text(value))
            for key, value in zip(meta_names, row[len(axis) :], strict=True)
        }
        try:
            spectra.append(_make(axis, [float(v) for v in values if v is not None], meta))
        except SpectrumError as exc:
            errors.append(exc)
    return _keep(spectra, errors, name=name)


def _number_or_text(text: str) -> float | str:
    value = parse_number(text)
    return value if value is not None else text


# --- JSON and YAML -----------------------------------------------------------------------------


def _numbers(value: Any, *, what: str, name: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise SpectrumError("unreadable", f"{name}: {what} is not a list of numbers")
    out: list[float] = []
    for item in value:
        if isinstance(item, list) and len(item) == 1:
            item = item[0]
        if isinstance(item, bool) or not isinstance(item, int | float):
            if item is None:
                out.append(float("nan"))
                continue
            raise SpectrumError("unreadable", f"{name}: {what} holds {short(_text(item))}, not a number")
        try:
            out.append(float(item))
        except OverflowError as exc:
            raise SpectrumError("non_finite", f"{name}: {what} holds a number too large for a float") from exc
    return out


def _spectra_columns(spectra: Any, *, name: str) -> dict[str, list[float]]:
    """``spectra`` as named columns: a mapping of columns, a list of row records or a list of columns."""
    if isinstance(spectra, dict):
        return {
            _text(k): _numbers(v, what=f"spectrum {short(_text(k))!r}", name=name) for k, v in spectra.items()
        }
    if isinstance(spectra, list) and spectra and all(isinstance(r, dict) for r in spectra):
        keys = list(spectra[0].keys())
        return {
            _text(k): _numbers([r.get(k) for r in spectra], what=f"spectrum {short(_text(k))!r}", name=name)
            for k in keys
        }
    if isinstance(spectra, list) and spectra and all(isinstance(c, list) for c in spectra):
        return {f"V{i + 1}": _numbers(c, what=f"spectrum {i + 1}", name=name) for i, c in enumerate(spectra)}
    if isinstance(spectra, list):
        return {"intensity": _numbers(spectra, what="spectra", name=name)}
    raise SpectrumError("unreadable", f"{name}: 'spectra' is neither columns nor rows of numbers")


def _metadata_rows(metadata: Any, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{} for _ in range(count)]
    if isinstance(metadata, list) and len(metadata) == count and all(isinstance(m, dict) for m in metadata):
        for row, record in zip(rows, metadata, strict=True):
            row.update(
                {
                    _text(k): _scalar(v)
                    for k, v in list(record.items())[:200]
                    if not isinstance(v, dict | list)
                }
            )
        return rows
    if not isinstance(metadata, dict):
        return rows
    for key, value in list(metadata.items())[:200]:
        if isinstance(value, list):
            if len(value) == count:
                for row, item in zip(rows, value, strict=True):
                    if not isinstance(item, dict | list):
                        row[_text(key)] = _scalar(item)
        elif not isinstance(value, dict):
            for row in rows:
                row[_text(key)] = _scalar(value)
    return rows


def spectra_from_openspecy_object(obj: Any, *, name: str) -> list[Spectrum]:
    """Every spectrum of a decoded Open Specy object (``wavenumber``, ``spectra``, ``metadata``)."""
    if not isinstance(obj, dict) or "wavenumber" not in obj or "spectra" not in obj:
        raise SpectrumError(
            "unreadable", f"{name} is not an Open Specy object (needs 'wavenumber' and 'spectra')"
        )
    wavenumbers = _numbers(obj["wavenumber"], what="'wavenumber'", name=name)
    columns = _spectra_columns(obj["spectra"], name=name)
    if len(columns) > MAX_SPECTRA:
        raise SpectrumError("unreadable", f"{name} has more than {MAX_SPECTRA} spectra")
    rows = _metadata_rows(obj.get("metadata"), len(columns))
    spectra: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for (column, values), meta in zip(columns.items(), rows, strict=True):
        if len(values) != len(wavenumbers):
            errors.append(
                SpectrumError(
                    "length_mismatch",
                    f"{name}: spectrum {short(column)!r} has {len(values)} values "
                    f"for {len(wavenumbers)} wavenumbers",
                )
            )
            continue
        try:
            spectra.append(_make(wavenumbers, values, dict(meta, column=column)))
        except SpectrumError as exc:
            errors.append(exc)
    return _keep(spectra, errors, name=name)


@register_parser("openspecy-json", suffixes=(".json",), sniff=_looks_like_json)
def spectra_from_openspecy_json(data: bytes, *, name: str) -> list[Spectrum]:
    """Every spectrum of an Open Specy JSON file."""
    try:
        obj = json.loads(decode_text(data))
    except (ValueError, RecursionError) as exc:
        raise SpectrumError("unreadable", f"{name} is not valid JSON ({short(str(exc), 100)})") from exc
    return spectra_from_openspecy_object(obj, name=name)


_YAML_NUMBER = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?")
_YAML_SPECIAL: dict[str, Any] = {
    "": None,
    "~": None,
    "null": None,
    "true": True,
    "false": False,
    ".nan": math.nan,
    ".inf": math.inf,
    "-.inf": -math.inf,
}


def _yaml_scalar(event: yaml.ScalarEvent) -> Any:
    """A scalar's value: plain scalars resolve to numbers, booleans and null, everything else is text."""
    text = event.value
    if event.style:
        return text
    lowered = text.lower()
    if lowered in _YAML_SPECIAL:
        return _YAML_SPECIAL[lowered]
    if len(text) <= 64 and _YAML_NUMBER.fullmatch(text):
        clean = text.replace("_", "")
        if re.fullmatch(r"[-+]?[0-9]+", clean):
            return int(clean)
        return float(clean)
    return text


def _compose_yaml(text: str, *, name: str) -> Any:
    """The first YAML document as plain lists, dicts and scalars, built from parser events.

    PyYAML's composers recurse once per nesting level (the C one overflows the C
    stack on deep input) and expand aliases; here nesting is bounded, aliases and
    complex keys are refused, and no tag ever constructs an object.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    stack: list[list[Any] | dict[str, Any]] = []
    pending: list[str | None] = []
    root: list[Any] = []

    def attach(value: Any) -> None:
        if not stack:
            root.append(value)
            return
        parent = stack[-1]
        if isinstance(parent, list):
            parent.append(value)
        elif pending[-1] is None:
            if isinstance(value, list | dict):
                raise SpectrumError("unreadable", f"{name}: YAML mapping keys must be plain values")
            pending[-1] = _text(value)
        else:
            parent[pending[-1]] = value
            pending[-1] = None

    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            raise SpectrumError("unreadable", f"{name}: YAML aliases are not allowed in a spectrum file")
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            if len(stack) >= MAX_YAML_DEPTH:
                raise SpectrumError("unreadable", f"{name}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
            node: list[Any] | dict[str, Any] = [] if isinstance(event, yaml.SequenceStartEvent) else {}
            attach(node)
            stack.append(node)
            pending.append(None)
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            stack.pop()
            pending.pop()
        elif isinstance(event, yaml.ScalarEvent):
            attach(_yaml_scalar(event))
        elif isinstance(event, yaml.DocumentEndEvent):
            break
    return root[0] if root else None


@register_parser("openspecy-yaml", suffixes=(".yml", ".yaml"), sniff=_looks_like_yaml)
def spectra_from_openspecy_yaml(data: bytes, *, name: str) -> list[Spectrum]:
    """Every spectrum of an Open Specy YAML file (parsed safely: no tags, aliases or deep nesting)."""
    if len(data) > MAX_YAML_BYTES:
        raise SpectrumError(
            "unreadable", f"{name} is over {MAX_YAML_BYTES // (1024 * 1024)} MiB, too large for YAML"
        )
    try:
        obj = _compose_yaml(decode_text(data), name=name)
    except yaml.YAMLError as exc:
        raise SpectrumError("unreadable", f"{name} is not valid YAML ({short(str(exc), 100)})") from exc
    return spectra_from_openspecy_object(obj, name=name)
