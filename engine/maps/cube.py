"""A map's cube, memory-mapped: the file's header checked against its data, pixels read in blocks of lines.

A map is an ENVI pair (a ``.hdr`` and its data file, found from either), a zip holding one (Open
Specy's map upload), or a Renishaw WiRE ``.wdf`` Raman map. The data is never read whole: every
read maps the file (:class:`numpy.memmap`), copies the lines or pixels asked for, and unmaps it
again, so the pages read leave the process with the block. A zip member stored without
compression is mapped in place; a compressed one is first extracted, in chunks, to a temporary
file. A WDF map's DATA block is mapped where it lies in the file, its spectra placed on the grid
by :func:`engine.io.wdf.read_wdf_map`. A header and data that disagree are refused before any
pixel is read (``truncated``, ``length_mismatch``).

Whatever the format, :func:`open_cube` answers a :class:`Cube`: lines, samples, ascending
wavenumbers, the unit, technique and pixel size the file states, and blocks of whole lines.
"""

from __future__ import annotations

import abc
import contextlib
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import PLAUSIBLE_RANGE, SpectrumError
from engine.io._text import decode_text, read_limited, short
from engine.io.envi import (
    MAX_HEADER_BYTES,
    EnviHeader,
    check_data_size,
    check_pixels,
    data_file_for,
    envi_header_for,
    header_metadata,
    header_technique,
    header_wavenumbers,
    header_y_unit,
    parse_envi_header,
    zip_envi_data,
)
from engine.io.wdf import WdfMap, is_wdf, read_wdf_map

__all__ = ["MAX_BANDS", "Cube", "MapCube", "WdfCube", "map_header", "map_shape", "open_cube"]

#: A map's pixels may have at most this many bands.
MAX_BANDS = 16_384
#: How the pixel limit of a map read as a cube is named in a refusal.
MAX_PIXELS_LIMIT = "allowed (max_pixels)"

#: Bytes copied at a time when a compressed zip member is extracted.
EXTRACT_CHUNK_BYTES = 4 * 1024 * 1024

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


class Cube(abc.ABC):
    """What :func:`engine.maps.identify_map` reads of a map, whatever its format.

    ``wavenumbers`` ascend; ``bands_kept`` are the file's bands in that order (all of them, or
    those inside a profile's range), and every read gives those bands, in float32.
    """

    name: str
    wavenumbers: npt.NDArray[np.float64]
    bands_kept: npt.NDArray[np.intp]

    @property
    @abc.abstractmethod
    def lines(self) -> int: ...

    @property
    @abc.abstractmethod
    def samples(self) -> int: ...

    @property
    @abc.abstractmethod
    def bands(self) -> int:
        """The bands each pixel has in the file (before any are left out)."""

    @property
    @abc.abstractmethod
    def y_unit(self) -> str:
        """The unit of the values, as the file states it (``arbitrary`` when it does not)."""

    @property
    @abc.abstractmethod
    def technique(self) -> str | None:
        """``ir`` or ``raman`` as the file states it; None when it is to be inferred."""

    @property
    @abc.abstractmethod
    def pixel_size_um(self) -> tuple[float, float] | None:
        """The (x, y) size of a pixel in µm as the file states it; None when it does not."""

    @property
    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """The file's format and short records, for the map's metadata."""

    @abc.abstractmethod
    def read_lines(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """The pixels of lines ``start`` to ``stop`` (exclusive), line by line: (pixels, bands)."""

    @property
    def n_pixels(self) -> int:
        return self.lines * self.samples

    def _kept(self, raw: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Pixels x file bands -> pixels x kept bands in float32 (a copy)."""
        kept = self.bands_kept
        if kept.size == raw.shape[1] and np.array_equal(kept, np.arange(kept.size)):
            return np.array(raw, dtype=np.float32)  # all bands, in order: one copy, no gather
        return np.asarray(raw[:, kept], dtype=np.float32)

    def read_pixels(self, flat: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        """The pixels at flat indices ``flat`` (``line * samples + sample``), in that order: (pixels, bands).

        Each line that holds some is read on its own: scattered pixels read from one mapping would
        bring most of the file into memory at once (the kernel reads around every page touched).
        """
        lines, samples = np.divmod(np.asarray(flat, dtype=np.intp), self.samples)
        out = np.empty((lines.size, self.wavenumbers.size), dtype=np.float32)
        for line in np.unique(lines):
            at = np.flatnonzero(lines == line)
            out[at] = self.read_lines(int(line), int(line) + 1)[samples[at]]
        return out

    def sample(self, count: int) -> npt.NDArray[np.float32]:
        """About ``count`` pixels spread evenly over the map, read a whole line at a time: (pixels, bands)."""
        n_lines = min(self.lines, max(1, min(64, count)))
        per_line = min(self.samples, -(-count // n_lines))
        lines = np.unique(np.linspace(0, self.lines - 1, n_lines).round().astype(np.intp))
        columns = np.unique(np.linspace(0, self.samples - 1, per_line).round().astype(np.intp))
        return self.read_pixels((lines[:, None] * self.samples + columns[None, :]).ravel())

    def blocks(self, block_pixels: int) -> Iterator[tuple[int, int]]:
        """(first line, stop line) of successive blocks of whole lines, about ``block_pixels`` pixels each."""
        step = max(1, block_pixels // max(self.samples, 1))
        for start in range(0, self.lines, step):
            yield start, min(start + step, self.lines)


@dataclass(frozen=True)
class MapCube(Cube):
    """An ENVI image on disk, read a block at a time; wavenumbers ascending, the bands reordered to match.

    ``data_path`` holds the image from byte ``data_offset`` on (a zip's stored member sits inside
    the zip).
    """

    name: str
    header: EnviHeader
    data_path: Path
    data_offset: int
    wavenumbers: npt.NDArray[np.float64]
    bands_kept: npt.NDArray[np.intp]
    ignore_value: float | None

    @property
    def lines(self) -> int:
        return self.header.lines

    @property
    def samples(self) -> int:
        return self.header.samples

    @property
    def bands(self) -> int:
        return self.header.bands

    @property
    def y_unit(self) -> str:
        return header_y_unit(self.header)

    @property
    def technique(self) -> str | None:
        return header_technique(self.header, self.y_unit)

    @property
    def pixel_size_um(self) -> tuple[float, float] | None:
        return self.header.pixel_size_um

    @property
    def metadata(self) -> dict[str, Any]:
        return {"format": "envi", **header_metadata(self.header)}

    def _mapped(self) -> np.memmap[Any, Any]:
        header = self.header
        shape = {
            "bip": (header.lines, header.samples, header.bands),
            "bil": (header.lines, header.bands, header.samples),
            "bsq": (header.bands, header.lines, header.samples),
        }[header.interleave]
        return np.memmap(self.data_path, dtype=header.dtype, mode="r", offset=self.data_offset, shape=shape)

    def read_lines(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        mapped = self._mapped()
        try:
            interleave = self.header.interleave
            if interleave == "bip":
                raw = mapped[start:stop].reshape(-1, self.header.bands)
            elif interleave == "bil":
                raw = mapped[start:stop].transpose(0, 2, 1).reshape(-1, self.header.bands)
            else:
                raw = mapped[:, start:stop, :].transpose(1, 2, 0).reshape(-1, self.header.bands)
            out = self._kept(raw)
        finally:
            del mapped
        if self.ignore_value is not None:
            out[out == np.float32(self.ignore_value)] = np.nan
        return out


@dataclass(frozen=True)
class WdfCube(Cube):
    """A Renishaw WiRE Raman map on disk: its DATA block (float32, one spectrum after another) mapped
    in place and read a block of lines at a time, each pixel's spectrum found through the grid's
    ``order`` (:class:`engine.io.wdf.WdfMap`). The pixel size is the map area's step.
    """

    name: str
    grid: WdfMap
    data_path: Path
    wavenumbers: npt.NDArray[np.float64]
    bands_kept: npt.NDArray[np.intp]

    @property
    def lines(self) -> int:
        return self.grid.lines

    @property
    def samples(self) -> int:
        return self.grid.samples

    @property
    def bands(self) -> int:
        return self.grid.n_points

    @property
    def y_unit(self) -> str:
        return self.grid.y_unit

    @property
    def technique(self) -> str | None:
        return "raman"

    @property
    def pixel_size_um(self) -> tuple[float, float] | None:
        return self.grid.step_um

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.grid.metadata)

    def _mapped(self) -> np.memmap[Any, Any]:
        grid = self.grid
        shape = (grid.lines * grid.samples, grid.n_points)
        return np.memmap(self.data_path, dtype="<f4", mode="r", offset=grid.data_offset, shape=shape)

    def read_lines(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        pixels = slice(start * self.samples, stop * self.samples)
        order = self.grid.order
        mapped = self._mapped()
        try:
            return self._kept(mapped[pixels] if order is None else mapped[order[pixels]])
        finally:
            del mapped


def _ascending_bands(
    wavenumbers: npt.NDArray[np.float64],
    *,
    window: tuple[float, float] | None,
    name: str,
    axis: str = "the ENVI wavelength list",
) -> npt.NDArray[np.intp]:
    """The bands to keep, in ascending wavenumber order: all, or those in ``window`` (if 16 or more).

    ``axis`` names the file's list of wavenumbers in the messages.
    """
    if not np.all(np.isfinite(wavenumbers)):
        raise SpectrumError("non_finite", f"{name}: {axis} holds NaN or infinity")
    order = np.argsort(wavenumbers, kind="stable")
    ascending = wavenumbers[order]
    if not np.all(np.diff(ascending) > 0):
        raise SpectrumError("not_monotone", f"{name}: {axis} repeats a wavenumber")
    low, high = PLAUSIBLE_RANGE
    if ascending[0] < low or ascending[-1] > high:
        raise SpectrumError(
            "implausible_range",
            f"{name}: bands span {ascending[0]:.6g} to {ascending[-1]:.6g} cm-1, outside {low:g} to {high:g}",
        )
    if window is not None:
        inside = (ascending >= window[0]) & (ascending <= window[1])
        if np.count_nonzero(inside) >= 16:
            order = order[inside]
    return np.asarray(order, dtype=np.intp)


def _header(text: str, *, name: str, max_pixels: int) -> EnviHeader:
    header = parse_envi_header(text, name=name)
    check_pixels(header.samples, header.lines, max_pixels, name=name, limit_name=MAX_PIXELS_LIMIT)
    if header.bands > MAX_BANDS:
        raise SpectrumError("unreadable", f"{name}: {header.bands} bands, more than {MAX_BANDS}")
    return header


def _cube(
    header: EnviHeader,
    data_path: Path,
    data_offset: int,
    *,
    name: str,
    window: tuple[float, float] | None,
) -> MapCube:
    wavenumbers = header_wavenumbers(header, name=name)
    kept = _ascending_bands(wavenumbers, window=window, name=name)
    ignore: float | None = None
    with contextlib.suppress(ValueError):
        ignore = float(header.fields.get("data ignore value", "").strip())
    return MapCube(name, header, data_path, data_offset, wavenumbers[kept], kept, ignore)


def _zip_pair(
    archive: zipfile.ZipFile, *, name: str
) -> tuple[zipfile.ZipInfo, bytes, zipfile.ZipInfo] | None:
    """The first ENVI header member of a zip, its text and its data member; None when it holds no map."""
    infos = {
        info.filename: info
        for info in archive.infolist()
        if not info.filename.endswith("/") and "__MACOSX" not in PurePosixPath(info.filename).parts
    }
    for member, info in infos.items():
        if PurePosixPath(member).suffix.lower() != ".hdr" or info.file_size > MAX_HEADER_BYTES:
            continue
        if info.flag_bits & 0x1:
            raise SpectrumError("unreadable", f"{name}: member {short(member)!r} is encrypted")
        with archive.open(info) as handle:
            text = handle.read(MAX_HEADER_BYTES)
        data_name = zip_envi_data(member, text, infos, name=name)
        if data_name is not None:
            return info, text, infos[data_name]
    return None


def _stored_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored (uncompressed) member's bytes start in the zip file."""
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise SpectrumError("unreadable", f"{path.name}: member {short(info.filename)!r} has no local header")
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, *, name: str) -> None:
    """Copy a compressed member to ``target`` in chunks; refuse it when it does not hold its declared size."""
    if info.flag_bits & 0x1:
        raise SpectrumError("unreadable", f"{name}: member {short(info.filename)!r} is encrypted")
    written = 0
    with archive.open(info) as source, target.open("wb") as sink:
        while written <= info.file_size:
            chunk = source.read(min(EXTRACT_CHUNK_BYTES, info.file_size + 1 - written))
            if not chunk:
                break
            sink.write(chunk)
            written += len(chunk)
    if written != info.file_size:
        raise SpectrumError(
            "truncated",
            f"{name}: member {short(info.filename)!r} holds {written} bytes, {info.file_size} declared",
        )


@contextlib.contextmanager
def _zip_cube(path: Path, *, max_pixels: int, window: tuple[float, float] | None) -> Iterator[MapCube]:
    name = path.name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SpectrumError("unreadable", f"{name} is not a readable zip ({short(str(exc), 100)})") from exc
    with archive, contextlib.ExitStack() as stack:
        try:
            pair = _zip_pair(archive, name=name)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise SpectrumError("unreadable", f"{name}: {short(str(exc), 100)}") from exc
        if pair is None:
            raise SpectrumError("no_spectrum", f"{name} holds no ENVI map (no .hdr member with its data)")
        header_info, text, data_info = pair
        member = header_info.filename
        header = _header(decode_text(text), name=member, max_pixels=max_pixels)
        check_data_size(header, data_info.file_size, name=member)
        if data_info.compress_type == zipfile.ZIP_STORED and not data_info.flag_bits & 0x1:
            offset = _stored_offset(path, data_info)
            data_path = path
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mpwatch-map-")))
            data_path = folder / "cube.dat"
            try:
                _extract(archive, data_info, data_path, name=name)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise SpectrumError("unreadable", f"{name}: {short(str(exc), 100)}") from exc
            offset = 0
        yield _cube(header, data_path, offset + header.header_offset, name=member, window=window)


def _header_path(path: Path) -> Path:
    if path.suffix.lower() == ".hdr":
        return path
    found = envi_header_for(path)
    if found is None:
        raise SpectrumError("unsupported_format", f"{path.name} is not an ENVI map (no .hdr beside it)")
    return found


def _wdf_cube(path: Path, *, max_pixels: int, window: tuple[float, float] | None) -> WdfCube:
    """A WDF map's cube; its points below the plausible range are left out, as the reader leaves them."""
    name = path.name
    grid = read_wdf_map(path)
    check_pixels(grid.samples, grid.lines, max_pixels, name=name, limit_name=MAX_PIXELS_LIMIT)
    if grid.n_points > MAX_BANDS:
        raise SpectrumError(
            "unreadable", f"{name}: {grid.n_points} points per spectrum, more than {MAX_BANDS}"
        )
    plausible = np.flatnonzero(grid.raman_shift >= PLAUSIBLE_RANGE[0])
    if plausible.size == 0:
        raise SpectrumError("implausible_range", f"{name}: no point of the x list is a plausible Raman shift")
    kept = plausible[
        _ascending_bands(grid.raman_shift[plausible], window=window, name=name, axis="the x list")
    ]
    return WdfCube(name, grid, path, grid.raman_shift[kept], kept)


def map_header(path: Path) -> EnviHeader | None:
    """The ENVI header of the map at ``path`` (a pair or a zip), read without its data; None if none."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pair = _zip_pair(archive, name=path.name)
            return None if pair is None else parse_envi_header(decode_text(pair[1]), name=path.name)
        header_path = _header_path(path)
        if path.suffix.lower() == ".hdr":
            data_file_for(header_path)
        return parse_envi_header(decode_text(read_limited(header_path, limit=MAX_HEADER_BYTES)))
    except (SpectrumError, OSError, zipfile.BadZipFile, EOFError, ValueError):
        return None


def map_shape(path: Path) -> tuple[int, int] | None:
    """(lines, samples) of the map at ``path``, its data unread; None when it holds no map.

    An ENVI pair or zip answers from its header; a WDF file when it is a map measurement laid
    out on a grid that its spectra fill (a single spectrum or a series is no map).
    """
    if is_wdf(path):
        try:
            grid = read_wdf_map(path)
        except SpectrumError:
            return None
        return grid.lines, grid.samples
    header = map_header(path)
    return None if header is None else (header.lines, header.samples)


@contextlib.contextmanager
def open_cube(path: Path, *, max_pixels: int, window: tuple[float, float] | None = None) -> Iterator[Cube]:
    """The map at ``path`` as a :class:`Cube`, open for the ``with`` block.

    ``path`` is a ``.hdr``, the data file beside one, a zip holding a pair, or a WDF map.
    ``window`` (cm-1) keeps only the bands inside it (an inbox profile's range). A temporary
    copy of a compressed zip member is removed when the block ends.
    """
    if not path.is_file():
        raise SpectrumError("not_accessible", f"{path.name} is not a readable file")
    if is_wdf(path):
        yield _wdf_cube(path, max_pixels=max_pixels, window=window)
        return
    if zipfile.is_zipfile(path):
        with _zip_cube(path, max_pixels=max_pixels, window=window) as cube:
            yield cube
        return
    header_path = _header_path(path)
    header = _header(
        decode_text(read_limited(header_path, limit=MAX_HEADER_BYTES)),
        name=header_path.name,
        max_pixels=max_pixels,
    )
    data_path = data_file_for(header_path)
    try:
        size = data_path.stat().st_size
    except OSError as exc:
        raise SpectrumError("not_accessible", f"cannot open {data_path.name}: {exc.strerror or exc}") from exc
    check_data_size(header, size, name=data_path.name)
    yield _cube(header, data_path, header.header_offset, name=header_path.name, window=window)
