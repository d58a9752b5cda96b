"""JCAMP-DX data tables: the lines of ``(X++(Y..Y))`` and ``(XY..XY)`` tables decoded to numbers.

``(X++(Y..Y))`` lines are read by :func:`decode_xydata` whatever mix of AFFN,
PAC, SQZ, DIF and DUP they use. A line that ends in a difference repeats its
last value at the start of the next line (the Y-check); that duplicate is
verified and dropped, and failed checks are judged against the point count the
header gives (:func:`resolve_y_checks`). The X check values that start each
line tell a missing duplicate from a new point, and must lie within
``##FIRSTX``..``##LASTX`` (:func:`check_x_range`). Every table is bounded by
:data:`MAX_POINTS`, DUP counts included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import SpectrumError
from engine.io._text import short

__all__ = [
    "MAX_POINTS",
    "Decoded",
    "check_count",
    "check_x_range",
    "count_error",
    "decode_lines",
    "decode_points",
    "decode_xydata",
    "implied_count",
    "resolve_y_checks",
    "x_from_line_starts",
]

#: A single block never decodes to more points than this (DUP counts are bounded by it).
MAX_POINTS = 4_000_000


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
class Decoded:
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
    decoded = decode_lines(list(lines), name=name, first_x=first_x, delta_x=delta_x, x_factor=x_factor)
    y, kept = resolve_y_checks(
        decoded, expected_points, where=name, label="XYDATA", source="the expected count"
    )
    return y, decoded.compression, decoded.warnings + tuple(kept)


def decode_lines(
    lines: list[tuple[int, str]],
    *,
    name: str,
    first_x: float | None,
    delta_x: float | None,
    x_factor: float,
) -> Decoded:
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
    return Decoded(
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
    recorded, for :func:`resolve_y_checks` to judge against the point count.
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


def resolve_y_checks(
    decoded: Decoded, expected: int | None, *, where: str, label: str, source: str
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
    raise count_error(len(y), expected, where=where, label=label, source=source, note=first.describe())


def decode_points(
    lines: Iterable[tuple[int, str]], *, label: str, width: int, name: str
) -> tuple[list[float], list[float]]:
    """Decode the lines of an ``(XY..XY)`` style table: groups of ``width`` AFFN numbers, X first."""
    numbers: list[float] = []
    for lineno, raw in lines:
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
            f"{name}: the {label} table ends in an incomplete group ({len(numbers)} numbers "
            f"is not a multiple of {width})",
        )
    return numbers[0::width], numbers[1::width]


def check_count(count: int, npoints: int | None, *, where: str, label: str) -> None:
    if npoints is not None and count != npoints:
        raise count_error(count, npoints, where=where, label=label, source="##NPOINTS=")


def count_error(
    count: int, expected: int, *, where: str, label: str, source: str, note: str = ""
) -> SpectrumError:
    """The one-line error for a table whose point count differs from the header's."""
    reason = "truncated" if count < expected else "length_mismatch"
    verb = "declares" if source == "##NPOINTS=" else "gives"
    message = f"{where}: the {label} table decodes to {count} points but {source} {verb} {expected}"
    return SpectrumError(reason, f"{message}; {note}" if note else message)


def implied_count(first_x: float | None, last_x: float | None, delta_x: float | None) -> int | None:
    """The point count ``##FIRSTX``, ``##LASTX`` and ``##DELTAX`` imply, when they agree on a whole number."""
    if first_x is None or last_x is None or not delta_x:
        return None
    steps = (last_x - first_x) / delta_x
    if not math.isfinite(steps) or steps < 0 or abs(steps - round(steps)) > 0.01:
        return None
    return round(steps) + 1


def check_x_range(
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


def x_from_line_starts(
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
