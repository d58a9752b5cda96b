"""Galactic / Thermo GRAMS SPC files: the new format (0x4B, 0x4C) and the old one (0x4D).

An SPC file is a main header followed by one or more subfiles, each one trace:

- new format: a 512-byte header; the x axis is evenly spaced (``ffirst`` to
  ``flast``), one shared x array (``TXVALS``) or one x array per subfile
  (``TXYXYS``); y values are IEEE floats (exponent 0x80) or integers scaled by
  ``2 ** (exponent - 32)`` (``2 ** (exponent - 16)`` for 16-bit ``TSPREC`` data);
- old format: a 256-byte header whose last 32 bytes are the first subfile's
  header, a float point count, evenly spaced x, and 32-bit integers stored
  high word first. The file declares no subfile count, so subfiles are read
  until the end of the file.

Every subfile becomes one :class:`~engine.core.spectrum.Spectrum`. Wavelength axes
(nm, µm) are converted to wavenumbers; axes that are not spectral (time, mass,
data points) and interferograms are refused. A Raman axis reaching far into
the anti-Stokes side is cut at the lower edge of the plausible range.
:func:`parse_spc` gives the subfiles in the file's own units and order.

>>> parse_spc(bytes([0x00, NEW_FORMAT_LSB]) + bytes(100))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
engine.core.spectrum.SpectrumError: truncated: the SPC file ends at byte 102 but the 512-byte main header...
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import PLAUSIBLE_RANGE, Spectrum, SpectrumError
from engine.io.registry import register

__all__ = [
    "NEW_FORMAT_LSB",
    "NEW_FORMAT_MSB",
    "OLD_FORMAT",
    "SpcFile",
    "SpcSubfile",
    "parse_spc",
    "read_spc",
]

logger = logging.getLogger(__name__)

NEW_FORMAT_LSB = 0x4B
NEW_FORMAT_MSB = 0x4C
OLD_FORMAT = 0x4D
_VERSIONS = (NEW_FORMAT_LSB, NEW_FORMAT_MSB, OLD_FORMAT)

# ftflgs bits
_TSPREC = 0x01  # 16-bit integer y values
_TMULTI = 0x04  # several subfiles
_TXYXYS = 0x40  # one x array per subfile
_TXVALS = 0x80  # x values stored (not evenly spaced)

_FLOAT_EXPONENT = -128  # 0x80: y values are IEEE floats
_NEW_HEADER = 512
_OLD_HEADER = 256
_OLD_FIRST_SUBHEADER = 224
_SUBHEADER = 32

_X_TYPES = {
    0: "arbitrary",
    1: "wavenumber (cm-1)",
    2: "micrometers",
    3: "nanometers",
    4: "seconds",
    5: "minutes",
    6: "Hz",
    7: "kHz",
    8: "MHz",
    9: "mass (m/z)",
    10: "ppm",
    11: "days",
    12: "years",
    13: "Raman shift (cm-1)",
    14: "eV",
    15: "text labels",
    16: "diode number",
    17: "channel",
    18: "degrees",
    19: "degrees F",
    20: "degrees C",
    21: "kelvin",
    22: "data points",
    23: "ms",
    24: "µs",
    25: "ns",
    26: "GHz",
    27: "cm",
    28: "m",
    29: "mm",
    30: "hours",
    255: "double interferogram",
}
_Y_TYPES = {
    0: "arbitrary",
    1: "interferogram",
    2: "absorbance",
    3: "Kubelka-Munk",
    4: "counts",
    5: "volts",
    6: "degrees",
    7: "milliamps",
    8: "millimeters",
    9: "millivolts",
    10: "log(1/R)",
    11: "percent",
    12: "intensity",
    13: "relative intensity",
    14: "energy",
    16: "decibel",
    19: "degrees F",
    20: "degrees C",
    21: "kelvin",
    22: "index of refraction",
    23: "extinction coefficient",
    24: "real",
    25: "imaginary",
    26: "complex",
    128: "transmittance",
    129: "reflectance",
    130: "single beam (valley peaks)",
    131: "emission",
    255: "reference arbitrary energy",
}
_EXPERIMENTS = {
    0: "general",
    1: "gas chromatogram",
    2: "chromatogram",
    3: "HPLC",
    4: "FT-IR/FT-NIR/FT-Raman",
    5: "NIR",
    7: "UV-VIS",
    8: "X-ray diffraction",
    9: "mass spectrum",
    10: "NMR",
    11: "Raman",
    12: "fluorescence",
    13: "atomic",
    14: "chromatography diode array",
}
#: y types and the Spectrum unit they map to; every other type is "arbitrary".
_Y_UNITS = {2: "absorbance", 4: "counts", 12: "counts", 128: "transmittance", 129: "reflectance"}
_IR_Y_TYPES = frozenset({2, 3, 10, 128, 129})
_RAMAN_EXPERIMENT = 11
_IR_EXPERIMENTS = frozenset({4, 5})
_INTERFEROGRAM_TYPES = frozenset({1})


def _wavenumbers_from_micrometers(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(1e4 / x, dtype=np.float64)


def _wavenumbers_from_nanometers(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(1e7 / x, dtype=np.float64)


def _unchanged(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return x


#: x types with a spectral meaning, and how to turn them into cm-1. Type 0
#: (arbitrary) is taken as cm-1: many exporters write it; the range check decides.
_TO_WAVENUMBERS: dict[int, Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]] = {
    0: _unchanged,
    1: _unchanged,
    13: _unchanged,
    2: _wavenumbers_from_micrometers,
    3: _wavenumbers_from_nanometers,
}
_RAMAN_X_TYPE = 13


@dataclass(frozen=True)
class SpcSubfile:
    """One trace as stored: ``x`` in the file's x unit and order, ``y`` scaled to floats.

    ``exponent`` is the y scaling exponent used (-128 for IEEE floats).
    """

    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    z: float
    index: int
    exponent: int


@dataclass(frozen=True)
class SpcFile:
    """A parsed SPC file: format version, flag bits, axis types and the subfiles."""

    version: int
    flags: int
    x_type: int
    y_type: int
    experiment: int | None
    subfiles: tuple[SpcSubfile, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def x_unit(self) -> str:
        """The x unit's name from the SPC specification."""
        return _X_TYPES.get(self.x_type, f"unknown x type {self.x_type}")

    @property
    def y_label(self) -> str:
        """The y unit's name from the SPC specification."""
        return _Y_TYPES.get(self.y_type, f"unknown y type {self.y_type}")


def _text(raw: bytes) -> str:
    """A NUL-terminated header string, decoded leniently."""
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()


def _check_room(data: bytes, offset: int, size: int, what: str) -> None:
    if offset < 0 or size < 0 or offset + size > len(data):
        raise SpectrumError(
            "truncated",
            f"the SPC file ends at byte {len(data)} but {what} needs bytes {offset} to {offset + size}",
        )


def _scaled(
    data: bytes,
    offset: int,
    count: int,
    *,
    exponent: int,
    endian: str,
    short: bool,
    old_word_order: bool,
) -> npt.NDArray[np.float64]:
    """Read ``count`` y values at ``offset`` as floats or scaled integers."""
    if exponent == _FLOAT_EXPONENT:
        return np.frombuffer(data, dtype=f"{endian}f4", count=count, offset=offset).astype(np.float64)
    if short:
        raw16 = np.frombuffer(data, dtype=f"{endian}i2", count=count, offset=offset)
        return raw16.astype(np.float64) * 2.0 ** (exponent - 16)
    if old_word_order:
        # old format: each 32-bit integer is two little-endian words, high word first
        words = np.frombuffer(data, dtype="<u2", count=2 * count, offset=offset).astype(np.uint32)
        raw32 = ((words[0::2] << 16) | words[1::2]).view(np.int32)
    else:
        raw32 = np.frombuffer(data, dtype=f"{endian}i4", count=count, offset=offset)
    return raw32.astype(np.float64) * 2.0 ** (exponent - 32)


def _y_size(exponent: int, *, short: bool) -> int:
    return 2 if short and exponent != _FLOAT_EXPONENT else 4


def _subfile_exponent(main_exponent: int, sub_exponent: int) -> int:
    """The y exponent of a subfile: floats if either header says so, else the subfile's
    own (signed) exponent, which may differ from subfile to subfile."""
    if _FLOAT_EXPONENT in (main_exponent, sub_exponent):
        return _FLOAT_EXPONENT
    return sub_exponent


def _packed_date(value: int) -> str | None:
    """The new format's packed date (minute 6 bits, hour 5, day 5, month 4, year 12)."""
    minute, hour = value & 0x3F, (value >> 6) & 0x1F
    day, month, year = (value >> 11) & 0x1F, (value >> 16) & 0x0F, (value >> 20) & 0x0FFF
    try:
        return datetime(year, month, day, hour, minute).isoformat()
    except ValueError:
        return None


def _parse_new(data: bytes) -> SpcFile:
    _check_room(data, 0, _NEW_HEADER, "the 512-byte main header")
    endian = "<" if data[1] == NEW_FORMAT_LSB else ">"
    flags, experiment = data[0], data[2]
    main_exponent = struct.unpack_from("b", data, 3)[0]
    fnpts, ffirst, flast, fnsub = struct.unpack_from(f"{endian}IddI", data, 4)
    x_type, y_type, z_type = data[28], data[29], data[30]
    (fdate,) = struct.unpack_from(f"{endian}I", data, 32)
    short = bool(flags & _TSPREC)
    xyxy = bool(flags & _TXYXYS)
    n_sub = fnsub if flags & _TMULTI else 1
    if n_sub < 1:
        raise SpectrumError("no_spectrum", "the SPC header declares no subfiles")
    if n_sub > (len(data) - _NEW_HEADER) // _SUBHEADER:
        raise SpectrumError(
            "truncated", f"the SPC header declares {n_sub} subfiles but the file has {len(data)} bytes"
        )
    pos = _NEW_HEADER
    shared_x: npt.NDArray[np.float64] | None = None
    if not xyxy:
        if fnpts < 1:
            raise SpectrumError("no_spectrum", "the SPC header declares 0 points")
        x_bytes = 4 * fnpts if flags & _TXVALS else 0
        min_y = _y_size(main_exponent, short=short)
        _check_room(
            data, pos, x_bytes + n_sub * (_SUBHEADER + min_y * fnpts), f"{n_sub} subfile(s) of {fnpts} points"
        )
        if flags & _TXVALS:
            shared_x = np.frombuffer(data, dtype=f"{endian}f4", count=fnpts, offset=pos).astype(np.float64)
            pos += x_bytes
        else:
            if not (np.isfinite(ffirst) and np.isfinite(flast)):
                raise SpectrumError("unreadable", "the SPC header's first/last x values are not finite")
            shared_x = np.linspace(ffirst, flast, fnpts)
    subfiles: list[SpcSubfile] = []
    for index in range(n_sub):
        _check_room(data, pos, _SUBHEADER, f"the header of subfile {index}")
        sub_exponent, z, sub_npts = _subheader(data, pos, endian)
        pos += _SUBHEADER
        exponent = _subfile_exponent(main_exponent, sub_exponent)
        y_size = _y_size(exponent, short=short)
        if shared_x is None:
            if sub_npts < 1:
                raise SpectrumError("no_spectrum", f"subfile {index} declares 0 points")
            _check_room(data, pos, sub_npts * (4 + y_size), f"subfile {index} ({sub_npts} x,y points)")
            x = np.frombuffer(data, dtype=f"{endian}f4", count=sub_npts, offset=pos).astype(np.float64)
            pos += 4 * sub_npts
        else:
            x = shared_x
        _check_room(data, pos, x.size * y_size, f"the y values of subfile {index}")
        y = _scaled(data, pos, x.size, exponent=exponent, endian=endian, short=short, old_word_order=False)
        pos += x.size * y_size
        subfiles.append(SpcSubfile(x=x, y=y, z=z, index=index, exponent=exponent))
    metadata = {
        "title": _text(data[88:218]),
        "resolution": _text(data[36:45]),
        "instrument": _text(data[45:54]),
        "date": _packed_date(fdate),
        "z_unit": _X_TYPES.get(z_type, f"unknown z type {z_type}"),
    }
    return SpcFile(
        version=data[1],
        flags=flags,
        x_type=x_type,
        y_type=y_type,
        experiment=experiment,
        subfiles=tuple(subfiles),
        metadata=metadata,
    )


def _subheader(data: bytes, pos: int, endian: str) -> tuple[int, float, int]:
    """(exponent, z value, point count) from a 32-byte subfile header."""
    sub_exponent = struct.unpack_from("b", data, pos + 1)[0]
    (z,) = struct.unpack_from(f"{endian}f", data, pos + 4)
    (sub_npts,) = struct.unpack_from(f"{endian}I", data, pos + 16)
    return sub_exponent, float(z), sub_npts


def _parse_old(data: bytes) -> SpcFile:
    _check_room(data, 0, _OLD_HEADER, "the 256-byte old-format header")
    flags = data[0]
    (old_exponent,) = struct.unpack_from("<h", data, 2)
    onpts, ofirst, olast = struct.unpack_from("<fff", data, 4)
    x_type, y_type = data[16], data[17]
    (oyear,) = struct.unpack_from("<H", data, 18)
    month, day, hour, minute = data[20], data[21], data[22], data[23]
    if flags & (_TXVALS | _TXYXYS):
        raise SpectrumError("unreadable", "old-format (0x4D) SPC with stored x values is not supported")
    if not (np.isfinite(onpts) and onpts >= 1 and onpts == int(onpts)):
        raise SpectrumError("unreadable", f"the old-format SPC header's point count {onpts!r} is not a count")
    if not (np.isfinite(ofirst) and np.isfinite(olast)):
        raise SpectrumError("unreadable", "the old-format SPC header's first/last x values are not finite")
    short = bool(flags & _TSPREC)
    main_exponent = _FLOAT_EXPONENT if old_exponent in (128, _FLOAT_EXPONENT) else old_exponent
    npts = int(onpts)
    _check_room(data, _OLD_HEADER, npts * _y_size(main_exponent, short=short), f"{npts} points")
    x = np.linspace(float(ofirst), float(olast), npts)
    subfiles: list[SpcSubfile] = []
    pos = _OLD_FIRST_SUBHEADER
    while True:
        index = len(subfiles)
        sub_exponent, z, _ = _subheader(data, pos, "<")
        exponent = _subfile_exponent(main_exponent, sub_exponent)
        y_size = _y_size(exponent, short=short)
        start = pos + _SUBHEADER
        _check_room(data, start, npts * y_size, f"subfile {index} ({npts} points)")
        y = _scaled(data, start, npts, exponent=exponent, endian="<", short=short, old_word_order=True)
        subfiles.append(SpcSubfile(x=x, y=y, z=z, index=index, exponent=exponent))
        pos = start + npts * y_size
        if not flags & _TMULTI or pos == len(data):
            break
        if len(data) - pos < _SUBHEADER + npts * y_size:
            raise SpectrumError(
                "truncated",
                f"the old-format SPC file ends {len(data) - pos} bytes into subfile {index + 1}",
            )
    year = oyear & 0x0FFF
    year += 1900 if 0 < year < 100 else 0  # some writers store two-digit years
    try:
        date = datetime(year, month, day, hour, minute).isoformat()
    except ValueError:
        date = None
    z_type = oyear >> 12
    metadata = {
        "title": _text(data[64:194]),
        "resolution": _text(data[24:32]),
        "date": date,
        "z_unit": _X_TYPES.get(z_type, f"unknown z type {z_type}"),
    }
    return SpcFile(
        version=OLD_FORMAT,
        flags=flags,
        x_type=x_type,
        y_type=y_type,
        experiment=None,
        subfiles=tuple(subfiles),
        metadata=metadata,
    )


def parse_spc(data: bytes) -> SpcFile:
    """Parse SPC bytes into subfiles in the file's units; raise SpectrumError if malformed."""
    if not data:
        raise SpectrumError("empty_file", "the SPC file is empty")
    if len(data) < 2 or data[1] not in _VERSIONS:
        found = f"0x{data[1]:02X}" if len(data) > 1 else "nothing"
        raise SpectrumError("unreadable", f"SPC version byte is {found}, expected 0x4B, 0x4C or 0x4D")
    if data[1] == OLD_FORMAT:
        return _parse_old(data)
    return _parse_new(data)


def _technique(spc: SpcFile) -> str | None:
    if spc.x_type == _RAMAN_X_TYPE or spc.experiment == _RAMAN_EXPERIMENT:
        return "raman"
    if spc.experiment in _IR_EXPERIMENTS or spc.y_type in _IR_Y_TYPES:
        return "ir"
    return None


def _spectra(spc: SpcFile, name: str) -> list[Spectrum]:
    if spc.y_type in _INTERFEROGRAM_TYPES or spc.x_type == 255:
        raise SpectrumError("no_spectrum", f"{name} holds an interferogram, not a spectrum")
    convert = _TO_WAVENUMBERS.get(spc.x_type)
    if convert is None:
        raise SpectrumError(
            "no_spectrum", f"{name} has an x axis in {spc.x_unit}, not wavenumbers or wavelengths"
        )
    technique = _technique(spc)
    y_unit = _Y_UNITS.get(spc.y_type, "arbitrary")
    base = {
        **{k: v for k, v in spc.metadata.items() if v},
        "spc_version": f"0x{spc.version:02X}",
        "x_unit": spc.x_unit,
        "y_label": spc.y_label,
    }
    if spc.experiment is not None:
        base["experiment"] = _EXPERIMENTS.get(spc.experiment, f"code {spc.experiment}")
    out: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for sub in spc.subfiles:
        wavenumbers, values = convert(sub.x), sub.y
        if technique == "raman":
            keep = wavenumbers >= PLAUSIBLE_RANGE[0]
            wavenumbers, values = wavenumbers[keep], values[keep]
        meta = dict(base)
        if len(spc.subfiles) > 1:
            meta.update(subfile=sub.index, z=sub.z)
        try:
            out.append(
                Spectrum.create(wavenumbers, values, y_unit=y_unit, technique=technique, metadata=meta)
            )
        except SpectrumError as exc:
            logger.debug("%s: subfile %d skipped: %s", name, sub.index, exc)
            errors.append(exc)
    if not out:
        first = errors[0]
        if len(errors) == 1:
            raise SpectrumError(first.reason, f"{name}: {first.message}") from first
        raise SpectrumError(
            first.reason, f"{name}: all {len(errors)} subfiles are unusable; the first: {first.message}"
        ) from first
    return out


def _looks_like_spc(head: bytes) -> bool:
    return len(head) >= 2 and head[1] in _VERSIONS


#: First two bytes (flag byte, version byte) of SPC files. Flag bytes that are
#: printable text or whitespace are left out so that text files starting with,
#: say, "AK" are not taken for SPC; those SPC files are still found by suffix.
_MAGIC = tuple(
    bytes((flags, version))
    for version in _VERSIONS
    for flags in range(256)
    if not (0x20 <= flags < 0x7F or flags in (0x09, 0x0A, 0x0D))
)


@register("spc", suffixes=(".spc",), magic=_MAGIC, sniff=_looks_like_spc)
def read_spc(path: Path) -> list[Spectrum]:
    """Every subfile of a Galactic SPC file as a Spectrum."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpectrumError("not_accessible", f"cannot read {path.name}: {exc.strerror}") from exc
    with np.errstate(all="ignore"):  # NaN/inf in damaged data is caught by Spectrum.create
        try:
            spc = parse_spc(data)
        except SpectrumError as exc:
            raise SpectrumError(exc.reason, f"{path.name}: {exc.message}") from exc
        return _spectra(spc, path.name)
