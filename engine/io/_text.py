"""Shared helpers of the text-format readers: bounded reading, decoding and number parsing.

Every text reader reads its file whole, so the size is bounded first; bytes are
decoded without ever failing (UTF-8, UTF-16 with a byte-order mark, else
Latin-1), and numbers are parsed with the decimal separator the file uses.

>>> decode_text("1234,5;0,12".encode())
'1234,5;0,12'
>>> parse_number("1,5", decimal=",")
1.5
>>> parse_number("abc") is None
True
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from engine.core.spectrum import SpectrumError

__all__ = [
    "MAX_SPECTRA",
    "MAX_TEXT_BYTES",
    "NUMBER_CHARS",
    "decode_text",
    "infer_technique",
    "infer_y_unit",
    "is_missing",
    "is_prose",
    "looks_binary",
    "parse_number",
    "read_limited",
    "short",
]

#: Text spectrum files larger than this are refused: a spectrum in text is a few MB at most.
MAX_TEXT_BYTES = 64 * 1024 * 1024

#: No text file may yield more spectra than this (a 1000 x 1000 map is already huge).
MAX_SPECTRA = 1_000_000

#: The characters of a plain decimal number.
NUMBER_CHARS = frozenset("0123456789+-.eE")

#: Bytes of a file looked at to tell a note from a spectrum (:func:`is_prose`).
PROSE_BYTES = 256 * 1024

#: Words that name a spectrum's axis or values, and JCAMP-DX's labels: a text that has one
#: is a spectrum file, however damaged.
_SPECTRUM_WORDS = re.compile(
    r"##|wave\s*number|wavelength|cm\s*-\s*1|cm\^-1|cm\u207b\u00b9|1\s*/\s*cm|raman|absorb|transm|reflect|"
    r"intensit",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]{2,}")
_FIELD_SEPARATORS = re.compile(r"[\s,;]+")


def read_limited(path: Path, *, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of ``path``, refusing empty files and files over ``limit`` bytes."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise SpectrumError("not_accessible", f"cannot open {path.name}: {exc.strerror or exc}") from exc
    if not data:
        raise SpectrumError("empty_file", f"{path.name} is empty")
    if len(data) > limit:
        raise SpectrumError(
            "unreadable", f"{path.name} is over {limit // (1024 * 1024)} MiB, too large for a text spectrum"
        )
    return data


def looks_binary(data: bytes) -> bool:
    """Whether ``data`` holds NUL bytes that no UTF-16 reading explains (a binary file)."""
    if b"\x00" not in data:
        return False
    return _utf16_codec(data) is None


def is_prose(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes) is plainly a text that is not a spectrum: a note.

    That is printable text with words in it, naming no spectral axis, unit or JCAMP-DX
    label, with no line of bare numbers (numbers in sentences do not count). Anything
    else (binary data, a header cut short, a single data row after a remark) is a
    spectrum file that is damaged or of an unknown format.

    >>> is_prose(b"Sample 12, river bank. Filtered 3 May, 2.5 g dry weight.\\n")
    True
    >>> is_prose(b"wavenumber,absorbance\\n")  # a spectrum's header, the data cut off
    False
    >>> is_prose(b"1000,0.1\\n1002,0.2\\n")  # numbers only: a spectrum cut short
    False
    >>> is_prose(b"This file was cut short by the instrument\\n1234.5;\\n")  # one data row is enough
    False
    """
    if looks_binary(data):
        return False
    text = decode_text(data[:PROSE_BYTES])
    printable = sum(ch.isprintable() or ch.isspace() for ch in text)
    if printable < 0.98 * len(text) or not _WORD.search(text) or _SPECTRUM_WORDS.search(text):
        return False
    for line in text.splitlines():  # a line of bare numbers is a data row: a spectrum, cut short or not
        fields = [f for f in _FIELD_SEPARATORS.split(line) if f]
        if fields and all(parse_number(f) is not None for f in fields):
            return False
    return True


def _utf16_codec(data: bytes) -> str | None:
    """``utf-16-le`` or ``utf-16-be`` when ``data`` looks like BOM-less UTF-16 text."""
    sample = data[:4096]
    if len(sample) < 4:
        return None
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_nuls > 0.9 * half and even_nuls == 0:
        return "utf-16-le"
    if even_nuls > 0.9 * half and odd_nuls == 0:
        return "utf-16-be"
    return None


def decode_text(data: bytes) -> str:
    """Decode text bytes, never failing: BOMs honoured, UTF-8 first, Latin-1 as the fallback."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    codec = _utf16_codec(data) if b"\x00" in data[:4096] else None
    if codec is not None:
        return data.decode(codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_number(field: str, *, decimal: str = ".") -> float | None:
    """A field as a float, or ``None`` when it is not a plain decimal number.

    Only digits, sign, decimal separator and exponent are accepted, so words such
    as ``nan``, ``inf`` or ``1_000`` that :func:`float` would take are refused.
    """
    text = field.strip().strip('"').strip("'").strip()
    if decimal != ".":
        if "." in text:
            return None
        text = text.replace(decimal, ".")
    if not text or len(text) > 64 or not NUMBER_CHARS.issuperset(text):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


#: What exports write for a value not measured (a blanked CO2 region, a detector gap), lower case.
MISSING_MARKERS = frozenset({"", "nan", "-nan", "+nan", "na", "n/a", "#n/a", "null", "none", "-", "--"})


def is_missing(field: str) -> bool:
    """Whether a field marks a value as not measured (empty, ``NaN``, ``N/A``...).

    >>> [is_missing(f) for f in ("", " NaN", '"n/a"', "-", "0", "-1.5", "PE")]
    [True, True, True, True, False, False, False]
    """
    return field.strip().strip('"').strip("'").strip().lower() in MISSING_MARKERS


def short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for an error message, printable only."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def infer_y_unit(text: str) -> str:
    """The y unit named by header words, ``arbitrary`` when none is.

    >>> infer_y_unit("%T"), infer_y_unit("Abs."), infer_y_unit("signal")
    ('transmittance', 'absorbance', 'arbitrary')
    """
    words = text.lower()
    if re.search(r"absorb|\babs\b|log\s*\(\s*1\s*/\s*r\s*\)|kubelka", words):
        return "absorbance"
    if re.search(r"transm|%\s*t\b|\bt\s*\(?%", words):
        return "transmittance"
    if re.search(r"reflect|%\s*r\b", words):
        return "reflectance"
    if re.search(r"count|raman|\bcps\b", words):
        return "counts"
    return "arbitrary"  # "intensity" alone says nothing: every instrument's y is an intensity


def infer_technique(text: str) -> str | None:
    """``raman`` or ``ir`` when header words say so, else ``None``."""
    words = text.lower()
    if "raman" in words:
        return "raman"
    if re.search(r"ft-?ir|infrared|\bir\b|\batr\b|absorb|transm|reflect|%\s*t\b", words):
        return "ir"
    return None
