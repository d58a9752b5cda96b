"""Renishaw WiRE ``.wdf`` files: single spectra, series (depth, time) and maps.

A WDF file is a chain of blocks, each a 16-byte header (id, uid, uint64 size
including the header) and its content; the first block is the 512-byte file
header (``WDF1``) holding the point count, spectrum counts, x list length,
flags, the data unit, the laser wavenumber, the title and the user. The
blocks read here:

- ``DATA``: float32 intensities, ``npoints`` per spectrum, spectra one after another;
- ``XLST``: the x list (data type, unit, then float32 values);
- ``ORGN``: per-spectrum origins (map X/Y/Z positions, time ...), kept as metadata.

Every collected spectrum becomes one Spectrum (technique ``raman``); a
spectrum that is not usable (all zeros, say, as in interleaved depth series)
is skipped and the rest are kept. X lists in nm, µm, eV or absolute
wavenumbers are converted to Raman shift with the laser wavenumber. The
block chain is walked here rather than through the ``renishaw-wdf`` package,
whose section search does not stop on a zero-sized block.

>>> _raman_shift(np.array([850.0]), unit=3, laser_wavenumber=1e7 / 785).round(1).tolist()
[974.1]
"""

from __future__ import annotations

import logging
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import PLAUSIBLE_RANGE, Spectrum, SpectrumError
from engine.io._binary import c_string, read_binary
from engine.io.registry import register

__all__ = ["WDF_MAGIC", "read_wdf"]

logger = logging.getLogger(__name__)

WDF_MAGIC = b"WDF1"
_HEADER_SIZE = 512
_BLOCK_HEADER = 16
_DATA, _XLIST, _ORIGIN = b"DATA", b"XLST", b"ORGN"
_BROKEN = b"<broken>"  # marks where the block chain stopped making sense
_MULTITRACK = 1 << 3
_PRIMARY = 0x80000000
_ORIGIN_HEADER = 24
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_CM1_PER_EV = 8065.544

# x list units (WdfDataUnit)
_RAMAN_SHIFT, _WAVENUMBER, _NANOMETRE, _ELECTRON_VOLT, _MICRON = 1, 2, 3, 4, 5
_X_UNITS = {
    _RAMAN_SHIFT: "Raman shift (cm-1)",
    _WAVENUMBER: "absolute wavenumber (cm-1)",
    _NANOMETRE: "nm",
    _ELECTRON_VOLT: "eV",
    _MICRON: "µm",
}
# data units that are detector counts
_COUNT_UNITS = frozenset({6, 7, 17})  # counts, electrons, intensity
_FILETIME_UNIT = 24
_SKIPPED_ORIGINS = frozenset({16, 17})  # checksum, flags
_MEASUREMENT_TYPES = {0: "unspecified", 1: "single", 2: "series", 3: "map"}


class _Header(NamedTuple):
    flags: int
    n_tracks: int
    n_points: int
    n_spectra: int
    n_collected: int
    x_count: int
    app_name: str
    app_version: str
    measurement: int
    time_start: int
    data_unit: int
    laser_wavenumber: float
    user: str
    title: str


class _Block(NamedTuple):
    offset: int  # start of the content (after the 16-byte block header)
    size: int  # content size


def _header(data: bytes) -> _Header:
    if len(data) < _HEADER_SIZE:
        raise SpectrumError("truncated", f"the header needs {_HEADER_SIZE} bytes, the file has {len(data)}")
    if not data.startswith(WDF_MAGIC):
        raise SpectrumError("unreadable", "the file does not start with 'WDF1'")
    (flags,) = struct.unpack_from("<Q", data, 16)
    n_tracks, _status, n_points = struct.unpack_from("<III", data, 52)
    n_spectra, n_collected = struct.unpack_from("<QQ", data, 64)
    (x_count,) = struct.unpack_from("<I", data, 88)
    version = struct.unpack_from("<4H", data, 120)
    measurement, time_start, _time_end, data_unit = struct.unpack_from("<IQQI", data, 132)
    (laser,) = struct.unpack_from("<f", data, 156)
    return _Header(
        flags=flags,
        n_tracks=n_tracks,
        n_points=n_points,
        n_spectra=n_spectra,
        n_collected=n_collected,
        x_count=x_count,
        app_name=c_string(data[96:120]),
        app_version=".".join(map(str, version)),
        measurement=measurement,
        time_start=time_start,
        data_unit=data_unit,
        laser_wavenumber=float(laser),
        user=c_string(data[208:240]),
        title=c_string(data[240:400]),
    )


def _blocks(data: bytes) -> dict[bytes, _Block]:
    """The first block of each id, walking the chain from the file header.

    The walk stops at a block with an impossible size; the blocks before it are
    kept, and a missing DATA or XLST block is reported by the caller.
    """
    found: dict[bytes, _Block] = {}
    pos = 0
    while pos + _BLOCK_HEADER <= len(data):
        block_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<Q", data, pos + 8)
        if size < _BLOCK_HEADER:
            logger.debug("block chain broken at byte %d (size %d)", pos, size)
            found.setdefault(_BROKEN, _Block(pos, 0))
            break
        if pos + size > len(data):
            if block_id in (_DATA, _XLIST):
                raise SpectrumError(
                    "truncated",
                    f"block {block_id.decode('latin-1')} at byte {pos} declares {size} bytes, "
                    f"past the end of the {len(data)}-byte file",
                )
            break
        found.setdefault(block_id, _Block(pos + _BLOCK_HEADER, size - _BLOCK_HEADER))
        pos += size
    return found


def _raman_shift(
    x: npt.NDArray[np.float64], *, unit: int, laser_wavenumber: float
) -> npt.NDArray[np.float64]:
    """An x list converted to Raman shift (cm-1)."""
    if unit == _RAMAN_SHIFT:
        return x
    if not (np.isfinite(laser_wavenumber) and laser_wavenumber > 0):
        raise SpectrumError(
            "no_spectrum", f"the x list is in {_X_UNITS[unit]} and the laser wavenumber is unknown"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        if unit == _WAVENUMBER:
            absolute = x
        elif unit == _NANOMETRE:
            absolute = 1e7 / x
        elif unit == _MICRON:
            absolute = 1e4 / x
        else:
            absolute = x * _CM1_PER_EV
    return np.asarray(laser_wavenumber - absolute, dtype=np.float64)


def _filetime(value: int) -> str | None:
    try:
        return (_FILETIME_EPOCH + timedelta(microseconds=value / 10)).isoformat() if value else None
    except (OverflowError, ValueError):
        return None


def _origins(data: bytes, block: _Block | None, n_spectra: int) -> dict[str, list[Any]]:
    """Per-spectrum origin values by label; empty when the block is missing or malformed."""
    if block is None or block.size < 4:
        return {}
    (count,) = struct.unpack_from("<I", data, block.offset)
    stride = _ORIGIN_HEADER + 8 * n_spectra
    if count * stride + 4 > block.size:
        return {}
    out: dict[str, list[Any]] = {}
    for index in range(count):
        pos = block.offset + 4 + index * stride
        datatype, unit = struct.unpack_from("<II", data, pos)
        datatype &= ~_PRIMARY
        if datatype in _SKIPPED_ORIGINS:
            continue
        label = c_string(data[pos + 8 : pos + _ORIGIN_HEADER]) or f"origin {datatype}"
        start = pos + _ORIGIN_HEADER
        if unit == _FILETIME_UNIT:
            times = np.frombuffer(data, dtype="<u8", count=n_spectra, offset=start)
            out[label] = [_filetime(int(t)) for t in times]
        else:
            out[label] = np.frombuffer(data, dtype="<f8", count=n_spectra, offset=start).tolist()
    return out


def _read(data: bytes, name: str) -> list[Spectrum]:
    header = _header(data)
    blocks = _blocks(data)
    if _DATA not in blocks or _XLIST not in blocks:
        if _BROKEN in blocks:
            raise SpectrumError(
                "unreadable", f"{name}: the block chain breaks at byte {blocks[_BROKEN].offset}"
            )
        raise SpectrumError("no_spectrum", f"{name} has no DATA or no XLST block")
    if header.n_collected == 0:
        raise SpectrumError("no_spectrum", f"{name}: no spectra were collected")
    if header.n_points < 1 or header.x_count != header.n_points:
        raise SpectrumError(
            "unreadable", f"{name}: {header.n_points} points per spectrum but an x list of {header.x_count}"
        )
    n_collected = min(header.n_collected, header.n_spectra or header.n_collected)
    data_block, x_block = blocks[_DATA], blocks[_XLIST]
    if n_collected * header.n_points * 4 > data_block.size:
        raise SpectrumError(
            "truncated",
            f"{name} declares {n_collected} spectra of {header.n_points} points, "
            f"the DATA block holds {data_block.size // (4 * header.n_points)}",
        )
    n_tracks = header.n_tracks if header.flags & _MULTITRACK else 1
    if n_tracks not in (1, n_collected):
        raise SpectrumError(
            "unreadable", f"{name}: {n_tracks} x-list tracks for {n_collected} spectra cannot be matched up"
        )
    if 8 + n_tracks * header.x_count * 4 > x_block.size:
        raise SpectrumError("truncated", f"{name}: the XLST block is too short for {header.x_count} values")
    _x_type, x_unit = struct.unpack_from("<II", data, x_block.offset)
    if x_unit not in _X_UNITS:
        raise SpectrumError("no_spectrum", f"{name}: the x list unit (code {x_unit}) is not spectral")
    x_lists = np.frombuffer(
        data, dtype="<f4", count=n_tracks * header.x_count, offset=x_block.offset + 8
    ).reshape(n_tracks, header.x_count)
    shifts = [
        _raman_shift(x.astype(np.float64), unit=x_unit, laser_wavenumber=header.laser_wavenumber)
        for x in x_lists
    ]
    intensities = np.frombuffer(
        data, dtype="<f4", count=n_collected * header.n_points, offset=data_block.offset
    ).reshape(n_collected, header.n_points)
    origins = _origins(data, blocks.get(_ORIGIN), header.n_spectra)
    base: dict[str, Any] = {
        "title": header.title,
        "operator": header.user,
        "software": f"{header.app_name} {header.app_version}".strip(),
        "measurement": _MEASUREMENT_TYPES.get(header.measurement, f"type {header.measurement}"),
        "x_unit": _X_UNITS[x_unit],
    }
    if np.isfinite(header.laser_wavenumber) and header.laser_wavenumber > 0:
        base["laser_wavenumber"] = header.laser_wavenumber
        base["laser_wavelength_nm"] = round(1e7 / header.laser_wavenumber, 3)
    date = _filetime(header.time_start)
    if date:
        base["date"] = date
    y_unit = "counts" if header.data_unit in _COUNT_UNITS else "arbitrary"
    out: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for index in range(n_collected):
        shift = shifts[index if n_tracks > 1 else 0]
        keep = shift >= PLAUSIBLE_RANGE[0]
        meta = dict(base)
        if n_collected > 1:
            meta["spectrum_index"] = index
        spectrum_origins = {label: values[index] for label, values in origins.items()}
        if spectrum_origins:
            meta["origins"] = spectrum_origins
        try:
            out.append(
                Spectrum.create(
                    shift[keep], intensities[index][keep], y_unit=y_unit, technique="raman", metadata=meta
                )
            )
        except SpectrumError as exc:
            logger.debug("%s: spectrum %d skipped: %s", name, index, exc)
            errors.append(exc)
    if not out:
        first = errors[0]
        if len(errors) == 1:
            raise first
        raise SpectrumError(first.reason, f"all {len(errors)} spectra are unusable; first: {first.message}")
    return out


@register("wdf", suffixes=(".wdf",), magic=(WDF_MAGIC,))
def read_wdf(path: Path) -> list[Spectrum]:
    """Every collected spectrum of a Renishaw WDF file, in collection order."""
    return read_binary(path, _read)
