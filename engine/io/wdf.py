"""Renishaw WiRE ``.wdf`` files: single spectra, series (depth, time) and maps.

A WDF file is a chain of blocks, each a 16-byte header (id, uid, uint64 size
including the header) and its content; the first block is the 512-byte file
header (``WDF1``) holding the point count, spectrum counts, x list length,
flags, the data unit, the laser wavenumber, the title and the user. The
blocks read here:

- ``DATA``: float32 intensities, ``npoints`` per spectrum, spectra one after another;
- ``XLST``: the x list (data type, unit, then float32 values);
- ``ORGN``: per-spectrum origins (map X/Y/Z positions, time ...), kept as metadata;
- ``WMAP``: a map's area (its scan flags, origin, step and point counts in x, y and z).

Every collected spectrum becomes one Spectrum (technique ``raman``); a
spectrum that is not usable (all zeros, say, as in interleaved depth series)
is skipped and the rest are kept. X lists in nm, µm, eV or absolute
wavenumbers are converted to Raman shift with the laser wavenumber. The
block chain is walked here rather than through the ``renishaw-wdf`` package,
whose section search does not stop on a zero-sized block.

A map is also read as a whole (:func:`read_wdf_map`): its grid, pixel size and
pixel order from the WMAP block and the X/Y origins, its Raman shift axis and
where its DATA block starts, so that :mod:`engine.maps` can memory-map the
intensities and read them a block of lines at a time. The file is mapped, not
read: only the blocks parsed are ever paged in.

>>> _raman_shift(np.array([850.0]), unit=3, laser_wavenumber=1e7 / 785).round(1).tolist()
[974.1]
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import PLAUSIBLE_RANGE, Spectrum, SpectrumError
from engine.io._binary import c_string, read_binary
from engine.io.registry import register

__all__ = ["WDF_MAGIC", "WdfMap", "is_wdf", "read_wdf", "read_wdf_map"]

logger = logging.getLogger(__name__)

WDF_MAGIC = b"WDF1"
_HEADER_SIZE = 512
_BLOCK_HEADER = 16
_DATA, _XLIST, _ORIGIN, _MAP_AREA = b"DATA", b"XLST", b"ORGN", b"WMAP"
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
_MAP_MEASUREMENT = 3

# WMAP (WdfMapArea): flags, unused, origin x y z, step x y z (µm), point counts x y z, line-focus length
_MAP_AREA_LAYOUT = struct.Struct("<II3f3f3II")
# WMAP flags (WdfMapAreaType); a negative step marks a row or column scanned backwards
_RANDOM_POINTS, _COLUMN_MAJOR, _ALTERNATING, _LINE_FOCUS = 1, 2, 4, 8
# origin data types of the stage positions, and their units in µm (nm, µm, mm, m)
_SPATIAL_X, _SPATIAL_Y = 3, 4
_UM_PER_UNIT = {_NANOMETRE: 1e-3, _MICRON: 1.0, 8: 1e3, 9: 1e6}
#: Stage positions closer than this (µm) are one grid position.
_POSITION_TOLERANCE_UM = 1e-3

#: The file's bytes: read whole (a spectrum file) or memory-mapped (a map, read in blocks).
_Data: TypeAlias = bytes | mmap.mmap


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


class _Layout(NamedTuple):
    """What every reading of a file settles first: its header, blocks, spectra and x list unit."""

    header: _Header
    blocks: dict[bytes, _Block]
    n_collected: int
    n_tracks: int
    x_unit: int


class _OriginList(NamedTuple):
    datatype: int  # WdfDataType, the primary flag cleared
    unit: int
    label: str
    offset: int  # of its ``n_spectra`` float64 (or FILETIME) values


class _MapArea(NamedTuple):
    flags: int
    origin: tuple[float, float, float]
    step: tuple[float, float, float]
    counts: tuple[int, int, int]


class WdfMap(NamedTuple):
    """A WDF map as a grid: enough to memory-map its DATA block and read it a line at a time.

    The grid's lines run along the stage's Y and its samples along X, both in increasing
    position, whatever the direction of the scan. ``order`` gives the DATA block's spectrum of
    every pixel, line by line (None when the spectra already lie in that order).
    ``placement`` says how that was settled: from the spectra's X/Y ``origins``, or from the
    map area's ``scan`` flags when the file records no usable positions.
    """

    lines: int
    samples: int
    step_um: tuple[float, float] | None  # (x, y) pixel size; None when the file gives no step
    order: npt.NDArray[np.intp] | None
    placement: str
    n_points: int
    data_offset: int
    raman_shift: npt.NDArray[np.float64]  # one per point, in the DATA block's point order
    y_unit: str
    metadata: dict[str, Any]


def _header(data: _Data) -> _Header:
    if len(data) < _HEADER_SIZE:
        raise SpectrumError("truncated", f"the header needs {_HEADER_SIZE} bytes, the file has {len(data)}")
    if data[: len(WDF_MAGIC)] != WDF_MAGIC:
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


def _blocks(data: _Data) -> dict[bytes, _Block]:
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


def _layout(data: _Data, name: str) -> _Layout:
    """The header and blocks, checked against each other before any spectrum is read."""
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
    return _Layout(header, blocks, n_collected, n_tracks, x_unit)


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


def _raman_shifts(data: _Data, layout: _Layout) -> list[npt.NDArray[np.float64]]:
    """The Raman shift axis of each x-list track (one, unless every spectrum has its own)."""
    count = layout.header.x_count
    offset = layout.blocks[_XLIST].offset + 8
    return [
        _raman_shift(
            np.frombuffer(data, dtype="<f4", count=count, offset=offset + 4 * count * track).astype(
                np.float64
            ),
            unit=layout.x_unit,
            laser_wavenumber=layout.header.laser_wavenumber,
        )
        for track in range(layout.n_tracks)
    ]


def _filetime(value: int) -> str | None:
    try:
        return (_FILETIME_EPOCH + timedelta(microseconds=value / 10)).isoformat() if value else None
    except (OverflowError, ValueError):
        return None


def _origin_lists(data: _Data, block: _Block | None, n_spectra: int) -> list[_OriginList]:
    """The ORGN block's lists and where their values start; empty when it is missing or malformed."""
    if block is None or block.size < 4:
        return []
    (count,) = struct.unpack_from("<I", data, block.offset)
    stride = _ORIGIN_HEADER + 8 * n_spectra
    if count * stride + 4 > block.size:
        return []
    out: list[_OriginList] = []
    for index in range(count):
        pos = block.offset + 4 + index * stride
        datatype, unit = struct.unpack_from("<II", data, pos)
        datatype &= ~_PRIMARY
        label = c_string(data[pos + 8 : pos + _ORIGIN_HEADER]) or f"origin {datatype}"
        out.append(_OriginList(datatype, unit, label, pos + _ORIGIN_HEADER))
    return out


def _origins(data: _Data, block: _Block | None, n_spectra: int) -> dict[str, list[Any]]:
    """Per-spectrum origin values by label; empty when the block is missing or malformed."""
    out: dict[str, list[Any]] = {}
    for origin in _origin_lists(data, block, n_spectra):
        if origin.datatype in _SKIPPED_ORIGINS:
            continue
        if origin.unit == _FILETIME_UNIT:
            times = np.frombuffer(data, dtype="<u8", count=n_spectra, offset=origin.offset)
            out[origin.label] = [_filetime(int(t)) for t in times]
        else:
            out[origin.label] = np.frombuffer(
                data, dtype="<f8", count=n_spectra, offset=origin.offset
            ).tolist()
    return out


def _description(header: _Header, x_unit: int) -> dict[str, Any]:
    """What the file header says of the measurement, as every spectrum's (and a map's) metadata."""
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
    return base


def _y_unit(header: _Header) -> str:
    return "counts" if header.data_unit in _COUNT_UNITS else "arbitrary"


def _read(data: bytes, name: str) -> list[Spectrum]:
    layout = _layout(data, name)
    header, n_collected, n_tracks = layout.header, layout.n_collected, layout.n_tracks
    shifts = _raman_shifts(data, layout)
    intensities = np.frombuffer(
        data, dtype="<f4", count=n_collected * header.n_points, offset=layout.blocks[_DATA].offset
    ).reshape(n_collected, header.n_points)
    origins = _origins(data, layout.blocks.get(_ORIGIN), header.n_spectra)
    base = _description(header, layout.x_unit)
    y_unit = _y_unit(header)
    out: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for index in range(n_collected):
        shift = shifts[index if n_tracks > 1 else 0]
        keep = shift >= PLAUSIBLE_RANGE[0]
        meta = dict(base)
        if n_collected > 1:
            meta["spectrum_index"] = index
        # a damaged header can count more spectra than the origin lists hold
        spectrum_origins = {label: v[index] for label, v in origins.items() if index < len(v)}
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


# -- maps -------------------------------------------------------------------------------------


def _map_area(data: _Data, block: _Block | None) -> _MapArea | None:
    if block is None or block.size < _MAP_AREA_LAYOUT.size:
        return None
    flags, _unused, *values = _MAP_AREA_LAYOUT.unpack_from(data, block.offset)
    ox, oy, oz, sx, sy, sz = (float(v) for v in values[:6])
    nx, ny, nz = (int(v) for v in values[6:9])
    return _MapArea(flags, (ox, oy, oz), (sx, sy, sz), (nx, ny, nz))


def _positions(
    data: _Data, layout: _Layout
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """Every collected spectrum's stage X and Y in µm, from the ORGN block; None without a usable pair."""
    found: dict[int, npt.NDArray[np.float64]] = {}
    n_spectra = layout.header.n_spectra
    for origin in _origin_lists(data, layout.blocks.get(_ORIGIN), n_spectra):
        scale = _UM_PER_UNIT.get(origin.unit)
        if origin.datatype in (_SPATIAL_X, _SPATIAL_Y) and scale is not None:
            values = np.frombuffer(data, dtype="<f8", count=n_spectra, offset=origin.offset)
            found.setdefault(origin.datatype, values[: layout.n_collected] * scale)
    if _SPATIAL_X not in found or _SPATIAL_Y not in found:
        return None
    x, y = found[_SPATIAL_X], found[_SPATIAL_Y]
    return (x, y) if np.isfinite(x).all() and np.isfinite(y).all() else None


def _distinct(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The distinct positions along one stage axis, ascending (positions within the tolerance are one)."""
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], np.diff(ordered) > _POSITION_TOLERANCE_UM])]


def _spacing(distinct: npt.NDArray[np.float64]) -> float:
    return float(np.median(np.diff(distinct))) if distinct.size > 1 else 0.0


def _placed_by_positions(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    *,
    lines: int,
    samples: int,
    step: tuple[float, float],
) -> npt.NDArray[np.intp] | None:
    """Each pixel's spectrum from its stage position; None unless every spectrum has a cell of its own."""
    sx, sy = step
    if not (sx > 0 or samples == 1) or not (sy > 0 or lines == 1):
        return None
    column = np.rint((x - x.min()) / sx).astype(np.intp) if samples > 1 else np.zeros(x.size, np.intp)
    row = np.rint((y - y.min()) / sy).astype(np.intp) if lines > 1 else np.zeros(y.size, np.intp)
    if column.max() >= samples or row.max() >= lines:
        return None
    cell = row * samples + column
    if np.unique(cell).size != cell.size:
        return None
    order = np.empty(cell.size, dtype=np.intp)
    order[cell] = np.arange(cell.size)
    return order


def _placed_by_scan(area: _MapArea | None, *, lines: int, samples: int) -> npt.NDArray[np.intp]:
    """Each pixel's spectrum from the order the map area says the stage moved in.

    Rows of X first (else columns of Y first, ``ColumnMajor``), every other one backwards in a
    snake (``Alternating``), and a negative step for an axis scanned towards lower positions.
    """
    flags = area.flags if area is not None else 0
    step_x, step_y = area.step[:2] if area is not None else (1.0, 1.0)
    column_major = bool(flags & _COLUMN_MAJOR)
    scan = np.arange(lines * samples, dtype=np.intp).reshape(
        (samples, lines) if column_major else (lines, samples)
    )
    if flags & _ALTERNATING:
        scan[1::2] = scan[1::2, ::-1]
    grid = scan.T if column_major else scan
    if step_x < 0:
        grid = grid[:, ::-1]
    if step_y < 0:
        grid = grid[::-1, :]
    return np.ascontiguousarray(grid).ravel()


def _map(data: _Data, name: str) -> WdfMap:
    layout = _layout(data, name)
    header = layout.header
    if header.measurement != _MAP_MEASUREMENT:
        kind = _MEASUREMENT_TYPES.get(header.measurement, f"type {header.measurement}")
        raise SpectrumError("unsupported_format", f"{name} holds a {kind} measurement, not a map")
    if layout.n_tracks > 1:
        raise SpectrumError(
            "unsupported_format", f"{name}: every spectrum of this map has its own x list; read it as spectra"
        )
    area = _map_area(data, layout.blocks.get(_MAP_AREA))
    positions = _positions(data, layout)
    if area is not None:
        if area.flags & _RANDOM_POINTS:
            raise SpectrumError("unsupported_format", f"{name}: a map of random points, not a grid")
        if area.counts[2] > 1:
            raise SpectrumError(
                "unsupported_format", f"{name}: a volume of {area.counts[2]} planes, not a map"
            )
        samples, lines = max(area.counts[0], 1), max(area.counts[1], 1)
        step = (abs(area.step[0]), abs(area.step[1]))
    elif positions is not None:
        xs, ys = _distinct(positions[0]), _distinct(positions[1])
        samples, lines = xs.size, ys.size
        step = (_spacing(xs), _spacing(ys))
    else:
        raise SpectrumError(
            "unsupported_format", f"{name}: a map with neither a map area (WMAP) nor X/Y positions"
        )
    n = layout.n_collected
    if samples * lines != n:
        raise SpectrumError(
            "length_mismatch",
            f"{name}: the map is {samples} x {lines} = {samples * lines} points, the file holds {n} spectra: "
            f"header and data disagree",
        )
    order = (
        None
        if positions is None
        else _placed_by_positions(*positions, lines=lines, samples=samples, step=step)
    )
    placement = "origins"
    if order is None:
        if area is not None and area.flags & _LINE_FOCUS:
            raise SpectrumError(
                "unsupported_format",
                f"{name}: a line-focus map whose spectra carry no X/Y positions to place them",
            )
        order, placement = _placed_by_scan(area, lines=lines, samples=samples), "scan"
    pixel_um = step if step[0] > 0 and step[1] > 0 else None
    metadata = {"format": "wdf", **_description(header, layout.x_unit), "map_placement": placement}
    if pixel_um is not None:
        metadata["map_step_um"] = [round(pixel_um[0], 6), round(pixel_um[1], 6)]
    return WdfMap(
        lines=lines,
        samples=samples,
        step_um=pixel_um,
        order=None if np.array_equal(order, np.arange(n)) else order,
        placement=placement,
        n_points=header.n_points,
        data_offset=layout.blocks[_DATA].offset,
        raman_shift=_raman_shifts(data, layout)[0],
        y_unit=_y_unit(header),
        metadata=metadata,
    )


def is_wdf(path: Path) -> bool:
    """Whether ``path`` starts as a WDF file does (its magic, whatever its suffix)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(WDF_MAGIC)) == WDF_MAGIC
    except OSError:
        return False


def read_wdf_map(path: Path) -> WdfMap:
    """The map in the WDF file at ``path`` as a grid (:class:`WdfMap`); its intensities are not read.

    The file is memory-mapped while its header, block chain, x list, origins and map area are
    parsed. SpectrumError for a file that is no map (``unsupported_format``: a single spectrum,
    a series, random points, a volume), a DATA block cut short (``truncated``) and a map area
    that does not match the spectra collected (``length_mismatch``).
    """
    name = path.name
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise SpectrumError("empty_file", f"{name} is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data, np.errstate(all="ignore"):
                return _map(data, name)
    except OSError as exc:
        raise SpectrumError("not_accessible", f"cannot read {name}: {exc.strerror or exc}") from exc
    except SpectrumError as exc:
        if exc.message.startswith(name):
            raise
        raise SpectrumError(exc.reason, f"{name}: {exc.message}") from exc
