"""Thermo OMNIC ``.spa`` files (and ``.spg`` groups, which share the layout).

The file starts with ``Spectral Data File``; the spectrum's title is a
NUL-terminated string at byte 30 and the acquisition time a uint32 of seconds
since 1899-12-31 (UTC) at byte 296. The number of directory entries is a
uint16 at byte 294 and the directory itself starts at byte 304: 16-byte
entries of a key (uint8), a block offset (uint32 at +2) and a block size
(uint32 at +6). The keys read here:

- 2: data header: point count (uint32 at +4), x unit code (+8), y unit code
  (+12), first and last x (float32 at +16 and +20), scans (+36), background
  scans (+52);
- 3: the intensities, float32;
- 27: the processing history, text;
- 107: a spectrum title in group files.

The x axis is evenly spaced from the first to the last x. A file whose x axis
is in data points holds an interferogram and is refused with ``no_spectrum``.

>>> _y_unit(17), _y_unit(16), _y_unit(99)
('absorbance', 'transmittance', 'arbitrary')
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import Spectrum, SpectrumError
from engine.io._binary import c_string, read_binary
from engine.io.registry import register

__all__ = ["SPA_MAGIC", "read_omnic"]

SPA_MAGIC = b"Spectral Data File"
_TITLE_OFFSET, _TITLE_SIZE = 30, 256
_COUNT_OFFSET = 294
_TIME_OFFSET = 296
_DIRECTORY_OFFSET = 304
_ENTRY_SIZE = 16
_HEADER_MIN_SIZE = 24
_EPOCH = datetime(1899, 12, 31, tzinfo=UTC)

_KEY_HEADER, _KEY_INTENSITIES, _KEY_HISTORY, _KEY_TITLE = 2, 3, 27, 107

#: x unit codes: code -> (name, factor): with a factor, x is a wavelength and factor / x
#: its wavenumber (cm-1); without (None), x needs no conversion.
_X_WAVENUMBERS, _X_POINTS, _X_NANOMETERS, _X_MICROMETERS, _X_RAMAN_SHIFT = 1, 2, 3, 4, 32
_X_UNITS: dict[int, tuple[str, float | None]] = {
    _X_WAVENUMBERS: ("wavenumbers (cm-1)", None),
    _X_POINTS: ("data points", None),
    _X_NANOMETERS: ("nanometers", 1e7),
    _X_MICROMETERS: ("micrometers", 1e4),
    _X_RAMAN_SHIFT: ("Raman shift (cm-1)", None),
}
#: y unit codes: code -> (name, Spectrum y unit).
_Y_UNITS = {
    17: ("absorbance", "absorbance"),
    16: ("%transmittance", "transmittance"),
    11: ("%reflectance", "reflectance"),
    12: ("log(1/R)", "arbitrary"),
    20: ("Kubelka-Munk", "arbitrary"),
    22: ("volts", "arbitrary"),
    26: ("photoacoustic", "arbitrary"),
    31: ("Raman intensity", "counts"),
}
_RAMAN_Y = 31


class _Entry(NamedTuple):
    key: int
    offset: int
    size: int


def _y_unit(code: int) -> str:
    """The Spectrum y unit for an OMNIC y unit code; unknown codes are ``arbitrary``."""
    return _Y_UNITS.get(code, ("", "arbitrary"))[1]


def _directory(data: bytes) -> list[_Entry]:
    if len(data) < _DIRECTORY_OFFSET:
        raise SpectrumError(
            "truncated", f"the header needs {_DIRECTORY_OFFSET} bytes, the file has {len(data)}"
        )
    (count,) = struct.unpack_from("<H", data, _COUNT_OFFSET)
    end = _DIRECTORY_OFFSET + count * _ENTRY_SIZE
    if end > len(data):
        raise SpectrumError("truncated", f"the directory of {count} entries runs past the end of the file")
    entries = []
    for pos in range(_DIRECTORY_OFFSET, end, _ENTRY_SIZE):
        offset, size = struct.unpack_from("<II", data, pos + 2)
        entries.append(_Entry(data[pos], offset, size))
    return entries


def _block(data: bytes, entry: _Entry, what: str) -> bytes:
    if entry.offset + entry.size > len(data):
        raise SpectrumError(
            "truncated",
            f"the {what} block (bytes {entry.offset} to {entry.offset + entry.size}) runs past the end "
            f"of the {len(data)}-byte file",
        )
    return data[entry.offset : entry.offset + entry.size]


class _Header(NamedTuple):
    n_points: int
    x_code: int
    y_code: int
    first_x: float
    last_x: float
    scans: int | None
    background_scans: int | None


def _header(data: bytes, entry: _Entry) -> _Header:
    block = _block(data, entry, "data header")
    if len(block) < _HEADER_MIN_SIZE:
        raise SpectrumError("truncated", f"the SPA data header is {len(block)} bytes, too short")
    (n_points,) = struct.unpack_from("<I", block, 4)
    first_x, last_x = struct.unpack_from("<ff", block, 16)
    scans = struct.unpack_from("<I", block, 36)[0] if len(block) >= 40 else None
    background = struct.unpack_from("<I", block, 52)[0] if len(block) >= 56 else None
    return _Header(n_points, block[8], block[12], float(first_x), float(last_x), scans, background)


def _intensities(data: bytes, entry: _Entry, n_points: int) -> npt.NDArray[np.float64]:
    block = _block(data, entry, "intensity")
    available = len(block) // 4
    if n_points > available:
        raise SpectrumError(
            "truncated", f"the data header declares {n_points} points, the intensity block holds {available}"
        )
    return np.frombuffer(block, dtype="<f4", count=n_points).astype(np.float64)


def _wavenumbers(header: _Header, name: str) -> npt.NDArray[np.float64]:
    if header.x_code == _X_POINTS:
        raise SpectrumError(
            "no_spectrum", f"{name} holds an interferogram (x axis in data points), not a spectrum"
        )
    if header.x_code not in _X_UNITS:
        raise SpectrumError("unreadable", f"{name} has an unknown x unit code {header.x_code}")
    if not (np.isfinite(header.first_x) and np.isfinite(header.last_x)):
        raise SpectrumError("unreadable", f"{name}: the first/last x values are not finite")
    x = np.linspace(header.first_x, header.last_x, header.n_points)
    factor = _X_UNITS[header.x_code][1]
    if factor is None:
        return x
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(factor / x, dtype=np.float64)


def _acquired(data: bytes) -> str | None:
    (seconds,) = struct.unpack_from("<I", data, _TIME_OFFSET)
    return (_EPOCH + timedelta(seconds=seconds)).isoformat() if seconds else None


def _read(data: bytes, name: str) -> list[Spectrum]:
    if not data.startswith(SPA_MAGIC):
        raise SpectrumError("unreadable", f"{name} does not start with {SPA_MAGIC.decode()!r}")
    entries = _directory(data)
    headers = [e for e in entries if e.key == _KEY_HEADER]
    intensities = [e for e in entries if e.key == _KEY_INTENSITIES]
    titles = [e for e in entries if e.key == _KEY_TITLE]
    if not headers or not intensities:
        raise SpectrumError("no_spectrum", f"{name} has no data header or no intensity block")
    if len(headers) != len(intensities):
        raise SpectrumError(
            "unreadable", f"{name} has {len(headers)} data headers but {len(intensities)} intensity blocks"
        )
    base: dict[str, Any] = {"title": c_string(data[_TITLE_OFFSET : _TITLE_OFFSET + _TITLE_SIZE])}
    history = [e for e in entries if e.key == _KEY_HISTORY]
    if history:
        base["history"] = c_string(_block(data, history[0], "history")).replace("\r\n", "\n")
    acquired = _acquired(data)
    if acquired:
        base["date"] = acquired
    parsed = [_header(data, entry) for entry in headers]
    declared = sum(header.n_points for header in parsed)
    if declared > len(data) // 4 or min(header.n_points for header in parsed) < 1:
        raise SpectrumError(
            "truncated", f"{name} declares {declared} points in all, more than its {len(data)} bytes hold"
        )
    group = len(parsed) > 1
    out: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for index, (header, data_entry) in enumerate(zip(parsed, intensities, strict=True)):
        meta = dict(base)
        if group:
            title = c_string(_block(data, titles[index], "title")) if index < len(titles) else ""
            meta.update(title=title or base["title"], group_index=index)
        try:
            out.append(_spectrum(data, header, data_entry, name, meta))
        except SpectrumError as exc:
            if not group:
                raise
            errors.append(exc)
    if not out:
        first = errors[0]
        raise SpectrumError(first.reason, f"all {len(errors)} spectra are unusable; first: {first.message}")
    return out


def _spectrum(data: bytes, header: _Header, entry: _Entry, name: str, meta: dict[str, Any]) -> Spectrum:
    """One spectrum from its data header and intensity block."""
    wavenumbers = _wavenumbers(header, name)
    values = _intensities(data, entry, header.n_points)
    meta["x_unit"] = _X_UNITS[header.x_code][0]
    meta["y_label"] = _Y_UNITS.get(header.y_code, (f"unknown (code {header.y_code})", ""))[0]
    if header.scans:
        meta["sample_scans"] = header.scans
    if header.background_scans:
        meta["background_scans"] = header.background_scans
    technique = "raman" if header.y_code == _RAMAN_Y or header.x_code == _X_RAMAN_SHIFT else "ir"
    return Spectrum.create(
        wavenumbers, values, y_unit=_y_unit(header.y_code), technique=technique, metadata=meta
    )


@register("omnic", suffixes=(".spa", ".spg"), magic=(SPA_MAGIC,))
def read_omnic(path: Path) -> list[Spectrum]:
    """The spectra of a Thermo OMNIC SPA file (one) or SPG group file (several)."""
    return read_binary(path, _read)
