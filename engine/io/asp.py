"""Agilent ``.asp`` spectra: plain text, one number per line.

The layout, as Agilent MicroLab writes it: the point count ``n``, the first
and the last wavenumber, three instrument values, then ``n`` intensities from
the first wavenumber to the last (evenly spaced). Nothing in the file names
the y unit, so it is ``arbitrary``; the instruments are FTIR.

>>> text = "16\\n4000\\n1000\\n1\\n2\\n4\\n" + "\\n".join(str(0.1 * (i % 5)) for i in range(16))
>>> spectrum = spectra_from_asp(text.encode(), name="demo.asp")[0]
>>> spectrum.n_points, float(spectrum.wavenumbers[0]), float(spectrum.wavenumbers[-1])
(16, 1000.0, 4000.0)
"""

from __future__ import annotations

import numpy as np

from engine.core.spectrum import Spectrum, SpectrumError
from engine.io._text import decode_text, looks_binary, parse_number, short
from engine.io.registry import register_parser

__all__ = ["HEADER_VALUES", "looks_like_asp", "spectra_from_asp"]

#: Numbers before the intensities: count, first wavenumber, last wavenumber, three instrument values.
HEADER_VALUES = 6

#: An ``.asp`` file never declares more points than this.
MAX_POINTS = 2_000_000


def looks_like_asp(head: bytes) -> bool:
    """Whether the head reads as an ``.asp``: one number per line, an integer count first."""
    lines = [line.strip() for line in head[:4096].decode("latin-1").splitlines()]
    lines = [line for line in lines if line][: HEADER_VALUES + 4]
    if len(lines) < HEADER_VALUES + 1:
        return False
    numbers = [parse_number(line) for line in lines]
    if any(n is None for n in numbers):
        return False
    count = numbers[0]
    return count is not None and count == int(count) and 1 <= count <= MAX_POINTS


def _numbers(fields: list[str], *, start: int, name: str) -> list[float]:
    numbers = []
    for position, text in enumerate(fields, start + 1):
        value = parse_number(text)
        if value is None:
            raise SpectrumError(
                "unreadable",
                f"{name}: value {position} ({short(text)!r}) is not a number; this is not an .asp file",
            )
        numbers.append(value)
    return numbers


@register_parser("agilent-asp", suffixes=(".asp",), sniff=looks_like_asp)
def spectra_from_asp(data: bytes, *, name: str) -> list[Spectrum]:
    """The spectrum in Agilent ``.asp`` bytes."""
    if looks_binary(data):
        raise SpectrumError("unreadable", f"{name} is binary, not an Agilent .asp text file")
    fields = decode_text(data).split()
    if len(fields) < HEADER_VALUES:
        raise SpectrumError(
            "unreadable", f"{name}: {len(fields)} numbers, an .asp header alone has {HEADER_VALUES}"
        )
    header = _numbers(fields[:HEADER_VALUES], start=0, name=name)
    count, first, last = header[0], header[1], header[2]
    if count != int(count) or not 1 <= count <= MAX_POINTS:
        raise SpectrumError(
            "unreadable", f"{name}: the first value ({short(fields[0])}) is not a point count"
        )
    n = int(count)
    found = len(fields) - HEADER_VALUES
    if found > n:
        raise SpectrumError(
            "unreadable",
            f"{name}: {found} intensities where the header declares {n}, so this is not an .asp file",
        )
    values = _numbers(fields[HEADER_VALUES:], start=HEADER_VALUES, name=name)
    if found < n:
        raise SpectrumError("truncated", f"{name}: {found} intensities, the header declares {n}")
    wavenumbers = np.linspace(first, last, n)
    metadata = {"asp_header": header[3:]}
    return [Spectrum.create(wavenumbers, values, y_unit="arbitrary", technique="ir", metadata=metadata)]
