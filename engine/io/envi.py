"""ENVI hyperspectral images: a text ``.hdr`` beside a binary data file, one spectrum per pixel.

FTIR imaging exports (and Open Specy's map zips) use ENVI: the header gives
``samples`` x ``lines`` pixels of ``bands`` values each, the data type, the
interleave (``bsq``, ``bil`` or ``bip``), the byte order and, in its
``wavelength`` list, the wavenumber of every band. Each pixel becomes one
spectrum whose metadata holds its ``x`` (sample) and ``y`` (line) position.
Sizes are checked against the header before anything is allocated, and the
data file is memory-mapped, never read whole: a header and a data file that
disagree (data cut short, or longer than the image by a pixel or more) are
refused. Read as one spectrum per pixel, a map may have at most
:data:`MAX_SPECTRA_PIXELS` pixels; larger maps are identified in blocks by
:mod:`engine.maps`, up to its own limit (by default :data:`MAX_ENVI_PIXELS`).

The reader is registered for the ``.hdr`` (and its ``ENVI`` magic); it also
claims, through the registry, a ``.dat`` that has a header beside it. In a zip
the pair is found by :func:`data_member`.

>>> header = parse_envi_header('''ENVI
... samples = 2
... lines = 1
... bands = 3
... data type = 4
... wavelength = {1000, 1001,
...   1002}''')
>>> header.samples, header.bands, header.wavelength.tolist()
(2, 3, [1000.0, 1001.0, 1002.0])
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import Spectrum, SpectrumError, normalise_y_unit, wavenumbers_from_wavelengths
from engine.io._text import decode_text, read_limited, short
from engine.io.registry import register

__all__ = [
    "ENVI_MAGIC",
    "MAX_ENVI_BYTES",
    "MAX_ENVI_PIXELS",
    "MAX_SPECTRA_PIXELS",
    "EnviHeader",
    "check_data_size",
    "check_pixels",
    "data_file_for",
    "data_member",
    "envi_header_for",
    "envi_header_text",
    "header_metadata",
    "header_technique",
    "header_wavenumbers",
    "header_y_unit",
    "parse_envi_header",
    "read_envi",
    "spectra_from_envi",
    "zip_envi_data",
]

logger = logging.getLogger(__name__)

#: The first bytes of every ENVI header.
ENVI_MAGIC = b"ENVI"

#: The default streaming limit of :mod:`engine.maps` (``MapConfig.max_pixels``), which reads a
#: memory-mapped cube in blocks: a map may have at most this many pixels.
MAX_ENVI_PIXELS = 4_000_000

#: Read as one :class:`Spectrum` per pixel (``read_spectra``), a map may have at most this many pixels:
#: each becomes an object in memory. Larger maps are identified by :mod:`engine.maps`.
MAX_SPECTRA_PIXELS = 262_144

#: A zip's members are read into memory up to this many bytes in all (:mod:`engine.io.archive`); a map
#: file beside its header is memory-mapped instead.
MAX_ENVI_BYTES = 256 * 1024 * 1024

#: An ENVI header is small; anything larger is not one.
MAX_HEADER_BYTES = 4 * 1024 * 1024

#: Suffixes the binary half of an ENVI pair is found under, tried in order.
DATA_SUFFIXES = (".dat", ".img", ".raw", ".bsq", ".bil", ".bip", ".DAT", ".IMG", "")

_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}


@dataclass(frozen=True)
class EnviHeader:
    """The facts of an ENVI header needed to read its image; ``fields`` holds every record."""

    samples: int
    lines: int
    bands: int
    data_type: int
    interleave: str
    header_offset: int
    byte_order: int
    wavelength: npt.NDArray[np.float64] | None
    fields: dict[str, str]

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype of one value, with the header's byte order."""
        return np.dtype(("<" if self.byte_order == 0 else ">") + _DTYPES[self.data_type])

    @property
    def data_bytes(self) -> int:
        """Bytes of image data the header declares (after the header offset)."""
        return self.samples * self.lines * self.bands * self.dtype.itemsize

    @property
    def pixel_size_um(self) -> tuple[float, float] | None:
        """The (x, y) size of a pixel in micrometres from ``pixel size = {x, y, units=...}``.

        ENVI's unit is metres unless the record names another; ``None`` when the header has no
        usable pixel size.

        Without that record, the pixel size of ``map info`` (its sixth and seventh entries)
        when the record names a length unit, as several imaging tools write it.

        >>> parse_envi_header("ENVI\\nsamples = 2\\nlines = 2\\nbands = 4\\ndata type = 4\\n"
        ...                   "pixel size = {0.000025, 0.000025}").pixel_size_um
        (25.0, 25.0)
        >>> parse_envi_header("ENVI\\nsamples = 2\\nlines = 2\\nbands = 4\\ndata type = 4\\n"
        ...                   "map info = {Arbitrary, 1, 1, 0, 0, 5.5, 5.5, units=Micrometers}").pixel_size_um
        (5.5, 5.5)
        """
        return _pixel_size(self.fields.get("pixel size", "")) or _map_info_pixel_size(
            self.fields.get("map info", "")
        )


def _fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key: str | None = None
    parts: list[str] = []
    for line in text.splitlines()[1:]:
        if key is not None:
            parts.append(line)
            if "}" in line:
                fields[key] = " ".join(parts).strip()
                key = None
            continue
        name, sep, value = line.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        value = value.strip()
        if value.startswith("{") and "}" not in value:
            key, parts = name, [value]
        else:
            fields[name] = value
    if key is not None:
        fields[key] = " ".join(parts).strip()
    return fields


def _int_field(fields: dict[str, str], key: str, *, name: str, default: int | None = None) -> int:
    value = fields.get(key)
    if value is None:
        if default is None:
            raise SpectrumError("unreadable", f"{name}: the ENVI header has no '{key}'")
        return default
    try:
        number = int(value.strip())
    except ValueError as exc:
        raise SpectrumError("unreadable", f"{name}: ENVI '{key} = {short(value)}' is not an integer") from exc
    if number < 0:
        raise SpectrumError("unreadable", f"{name}: ENVI '{key}' is negative")
    return number


def _list_field(value: str) -> list[str]:
    return [item.strip() for item in value.strip().strip("{}").split(",")]


_LENGTH_UNITS_UM = {
    "meters": 1e6,
    "metres": 1e6,
    "m": 1e6,
    "millimeters": 1e3,
    "millimetres": 1e3,
    "mm": 1e3,
    "micrometers": 1.0,
    "micrometres": 1.0,
    "microns": 1.0,
    "um": 1.0,
    "µm": 1.0,
    "nanometers": 1e-3,
    "nanometres": 1e-3,
    "nm": 1e-3,
}


def _map_info_pixel_size(value: str) -> tuple[float, float] | None:
    """The x and y pixel sizes of a ``map info`` record in micrometres; None unless it names a length unit."""
    items = _list_field(value) if value else []
    units = [
        unit
        for name, sep, unit in (i.partition("=") for i in items)
        if sep and name.strip().lower() == "units"
    ]
    scale = _LENGTH_UNITS_UM.get(units[0].strip().lower()) if units else None
    if scale is None or len(items) < 7:
        return None
    try:
        x, y = float(items[5]), float(items[6])
    except ValueError:
        return None
    return (x * scale, y * scale) if all(np.isfinite(v) and v > 0 for v in (x, y)) else None


def _pixel_size(value: str) -> tuple[float, float] | None:
    """The ``pixel size`` record in micrometres, or None when absent or not two positive sizes."""
    numbers: list[float] = []
    scale = 1e6
    for item in _list_field(value) if value else []:
        name, sep, unit = item.partition("=")
        if sep:
            if name.strip().lower() == "units":
                found = _LENGTH_UNITS_UM.get(unit.strip().lower())
                if found is None:
                    return None
                scale = found
            continue
        try:
            numbers.append(float(item))
        except ValueError:
            return None
    if len(numbers) < 2 or not all(np.isfinite(n) and n > 0 for n in numbers[:2]):
        return None
    return numbers[0] * scale, numbers[1] * scale


def parse_envi_header(text: str, *, name: str = "ENVI header") -> EnviHeader:
    """Parse and check an ENVI header; raise :class:`SpectrumError` when it is not a usable one."""
    if not text.lstrip("\ufeff").startswith("ENVI"):
        raise SpectrumError("unreadable", f"{name} is not an ENVI header (no 'ENVI' first line)")
    fields = _fields(text)
    header = EnviHeader(
        samples=_int_field(fields, "samples", name=name),
        lines=_int_field(fields, "lines", name=name),
        bands=_int_field(fields, "bands", name=name),
        data_type=_int_field(fields, "data type", name=name),
        interleave=fields.get("interleave", "bsq").strip().lower(),
        header_offset=_int_field(fields, "header offset", name=name, default=0),
        byte_order=_int_field(fields, "byte order", name=name, default=0),
        wavelength=None,
        fields=fields,
    )
    _check_image(header, name=name)
    if "wavelength" not in fields:
        return header
    return replace(header, wavelength=_wavelength(fields["wavelength"], header.bands, name=name))


def _check_image(header: EnviHeader, *, name: str) -> None:
    """SpectrumError unless the header describes an image this reader can read."""
    samples, lines, bands = header.samples, header.lines, header.bands
    if min(samples, lines, bands) < 1:
        raise SpectrumError("no_spectrum", f"{name}: the ENVI image is empty ({samples}x{lines}x{bands})")
    if header.data_type not in _DTYPES:
        raise SpectrumError("unreadable", f"{name}: ENVI data type {header.data_type} is not supported")
    if header.interleave not in ("bsq", "bil", "bip"):
        raise SpectrumError(
            "unreadable", f"{name}: ENVI interleave {short(header.interleave)!r} is not bsq, bil or bip"
        )
    if header.byte_order not in (0, 1):
        raise SpectrumError("unreadable", f"{name}: ENVI byte order {header.byte_order} is not 0 or 1")


def _wavelength(value: str, bands: int, *, name: str) -> npt.NDArray[np.float64]:
    """The ``wavelength`` record's list: one number per band."""
    try:
        wavelength = np.array([float(v) for v in _list_field(value) if v], dtype=np.float64)
    except ValueError as exc:
        raise SpectrumError("unreadable", f"{name}: the ENVI wavelength list holds a non-number") from exc
    if wavelength.size != bands:
        raise SpectrumError("length_mismatch", f"{name}: {wavelength.size} wavelengths for {bands} bands")
    return wavelength


def header_wavenumbers(header: EnviHeader, *, name: str) -> npt.NDArray[np.float64]:
    """The wavenumber (cm-1) of every band, in the header's band order (nm and µm converted)."""
    if header.wavelength is None:
        raise SpectrumError(
            "no_spectrum", f"{name}: the ENVI header has no wavelength list, so bands have no wavenumbers"
        )
    units = header.fields.get("wavelength units", "").strip().lower()
    titles = header.fields.get("z plot titles", "").lower()
    x = header.wavelength
    if units in ("nanometers", "nm") or (not units and "nanomet" in titles):
        return wavenumbers_from_wavelengths(x, "nanometre", where=name)
    if units in ("micrometers", "microns", "um", "µm"):
        return wavenumbers_from_wavelengths(x, "micrometre", where=name)
    return x


def header_y_unit(header: EnviHeader) -> str:
    """The y unit the header's ``z plot titles`` name (``arbitrary`` when none is recognised)."""
    titles = _list_field(header.fields.get("z plot titles", ""))
    label = titles[1] if len(titles) > 1 else ""
    try:
        return normalise_y_unit(re.sub(r"\([^()]*\)", "", label[:200]).strip())
    except SpectrumError:
        return "arbitrary"


def header_technique(header: EnviHeader, y_unit: str) -> str | None:
    """``raman`` when the description says so, ``ir`` unless the unit is counts, else None (to infer)."""
    description = header.fields.get("description", "").lower()
    return "raman" if "raman" in description else ("ir" if y_unit != "counts" else None)


#: Header records too long or too technical to keep as a map's metadata.
_BULKY_FIELDS = frozenset({"wavelength", "fwhm", "bbl", "band names", "spectra names"})


def header_metadata(header: EnviHeader) -> dict[str, str]:
    """The header's short records (instrument, description, acquisition...), for a map's metadata."""
    return {
        key: value.strip("{} ")[:500]
        for key, value in header.fields.items()
        if key not in _BULKY_FIELDS and len(value) <= 2000
    }


def check_data_size(header: EnviHeader, size: int, *, name: str) -> None:
    """Refuse data of ``size`` bytes that disagrees with the header: cut short, or a pixel or more too long.

    Fewer surplus bytes than one pixel's values are padding, and are ignored.
    """
    needed = header.header_offset + header.data_bytes
    if size < needed:
        raise SpectrumError(
            "truncated", f"{name}: the ENVI data holds {size} bytes, the header declares {needed}"
        )
    surplus = size - needed
    if surplus >= header.bands * header.dtype.itemsize:
        raise SpectrumError(
            "length_mismatch",
            f"{name}: the ENVI data holds {size} bytes, {surplus} more than the {header.samples}x"
            f"{header.lines}x{header.bands} image its header declares: header and data disagree",
        )
    if surplus:
        logger.debug("%s: %d bytes after the ENVI image are ignored", name, surplus)


def _cube(header: EnviHeader, data: bytes | npt.NDArray[np.uint8], *, name: str) -> npt.NDArray[np.float64]:
    """The image as (lines, samples, bands), whatever the interleave."""
    check_data_size(header, len(data), name=name)
    flat = np.frombuffer(
        data,
        dtype=header.dtype,
        count=header.samples * header.lines * header.bands,
        offset=header.header_offset,
    ).astype(np.float64)
    samples, lines, bands = header.samples, header.lines, header.bands
    if header.interleave == "bsq":
        return flat.reshape(bands, lines, samples).transpose(1, 2, 0)
    if header.interleave == "bil":
        return flat.reshape(lines, bands, samples).transpose(0, 2, 1)
    return flat.reshape(lines, samples, bands)


def check_pixels(samples: int, lines: int, limit: int, *, name: str, limit_name: str) -> None:
    """SpectrumError ``unreadable`` when a map of ``samples`` x ``lines`` has more than ``limit`` pixels
    (``limit_name`` says which limit, in the message); any map format's cube checks it here."""
    pixels = samples * lines
    if pixels > limit:
        raise SpectrumError(
            "unreadable",
            f"{name}: the map has {pixels} pixels ({samples}x{lines}), more than the {limit} {limit_name}",
        )


def spectra_from_envi(header_text: str, data: bytes | npt.NDArray[np.uint8], *, name: str) -> list[Spectrum]:
    """One spectrum per pixel of an ENVI image; pixels that fail validation are skipped.

    ``data`` is the data file's bytes, or its memory map.
    """
    header = parse_envi_header(header_text, name=name)
    check_pixels(
        header.samples,
        header.lines,
        MAX_SPECTRA_PIXELS,
        name=name,
        limit_name="read as separate spectra; identify it as a map",
    )
    wavenumbers = header_wavenumbers(header, name=name)
    cube = _cube(header, data, name=name)
    ignore = header.fields.get("data ignore value")
    if ignore:
        try:
            cube[cube == float(ignore)] = np.nan
        except ValueError:
            logger.debug("%s: data ignore value %r is not a number", name, ignore)
    y_unit = header_y_unit(header)
    description = header.fields.get("description", "").strip("{} ")
    technique = header_technique(header, y_unit)
    base: dict[str, Any] = {"map_shape": [header.lines, header.samples], "interleave": header.interleave}
    if description:
        base["description"] = description[:500]
    spectra: list[Spectrum] = []
    errors: list[SpectrumError] = []
    for row in range(header.lines):
        for column in range(header.samples):
            meta = dict(base, x=column, y=row)
            try:
                spectra.append(
                    Spectrum.create(
                        wavenumbers,
                        cube[row, column],
                        y_unit=y_unit,
                        technique=technique,
                        metadata=meta,
                        drop_missing=True,
                    )
                )
            except SpectrumError as exc:
                errors.append(exc)
    if not spectra:
        raise errors[0]
    if errors:
        logger.warning(
            "%s: %d of %d pixels skipped, first: %s", name, len(errors), len(errors) + len(spectra), errors[0]
        )
    return spectra


def envi_header_text(
    *,
    samples: int,
    lines: int,
    wavenumbers: npt.ArrayLike,
    interleave: str = "bip",
    data_type: int = 4,
    y_unit: str = "Absorbance",
    pixel_size_um: tuple[float, float] | None = None,
    description: str | None = None,
) -> str:
    """An ENVI header for an image of ``samples`` x ``lines`` pixels, one band per wavenumber (cm-1).

    Little-endian, no header offset; the pixel size is written in metres, as ENVI's default unit.

    >>> text = envi_header_text(samples=3, lines=2, wavenumbers=[1000, 1004], pixel_size_um=(5.0, 5.0))
    >>> header = parse_envi_header(text)
    >>> header.samples, header.lines, header.bands, header.pixel_size_um
    (3, 2, 2, (5.0, 5.0))
    """
    bands = np.asarray(wavenumbers, dtype=np.float64)
    records = [
        "ENVI",
        *([f"description = {{{description}}}"] if description else []),
        f"samples = {samples}",
        f"lines = {lines}",
        f"bands = {bands.size}",
        "header offset = 0",
        f"data type = {data_type}",
        f"interleave = {interleave}",
        "byte order = 0",
        f"z plot titles = {{Wavenumbers (cm-1), {y_unit}}}",
    ]
    if pixel_size_um is not None:
        x, y = (f"{size * 1e-6:.9g}" for size in pixel_size_um)
        records.append(f"pixel size = {{{x}, {y}, units=Meters}}")
    records.append("wavelength units = Wavenumber")
    records.append("wavelength = {" + ", ".join(f"{x:.6g}" for x in bands) + "}")
    return "\n".join(records) + "\n"


def envi_header_for(data_path: Path) -> Path | None:
    """The ENVI ``.hdr`` beside a binary data file, when there is one."""
    for candidate in (data_path.with_suffix(".hdr"), data_path.with_suffix(".HDR"), Path(f"{data_path}.hdr")):
        try:
            if candidate.is_file():
                with candidate.open("rb") as handle:
                    if handle.read(len(ENVI_MAGIC)) == ENVI_MAGIC:
                        return candidate
        except OSError:
            continue
    return None


def data_file_for(header_path: Path) -> Path:
    """The binary half of the ENVI pair whose header is ``header_path``; SpectrumError when there is none."""
    return _data_file(header_path)


def _data_file(header_path: Path) -> Path:
    for suffix in DATA_SUFFIXES:
        candidate = header_path.with_suffix(suffix)
        if candidate != header_path and candidate.is_file():
            return candidate
    tried = ", ".join(s or "no suffix" for s in DATA_SUFFIXES[:6])
    raise SpectrumError("no_spectrum", f"{header_path.name}: no ENVI data file beside it (tried {tried})")


def data_member(header: str, names: Iterable[str]) -> str | None:
    """Among ``names`` (a zip's members), the data of the ENVI header ``header``: same stem, a data suffix.

    Names are compared in any case, as zips come from any file system.

    >>> data_member("map/CA.hdr", ["map/CA.hdr", "map/ca.DAT", "readme.txt"])
    'map/ca.DAT'
    """
    lower = {name.lower(): name for name in names if name != header}
    stem = header[: -len(".hdr")].lower()
    for suffix in DATA_SUFFIXES:
        if stem + suffix.lower() in lower:
            return lower[stem + suffix.lower()]
    return None


def zip_envi_data(member: str, header: bytes, names: Iterable[str], *, name: str) -> str | None:
    """The data member of the zip ``name``'s member ``member`` when ``header`` (its bytes) is an ENVI
    header, else None; SpectrumError (``no_spectrum``) for a header with no data file beside it.
    """
    if not header.startswith(ENVI_MAGIC):
        return None
    data_name = data_member(member, names)
    if data_name is None:
        missing = f"{name}: ENVI header {short(member)!r} has no data file beside it"
        raise SpectrumError("no_spectrum", missing)
    return data_name


def _claim_data_file(path: Path) -> Path | None:
    """The header to read for a ``.dat`` that is the binary half of an ENVI image."""
    return envi_header_for(path) if path.suffix.lower() == ".dat" else None


@register("envi", suffixes=(".hdr",), magic=(ENVI_MAGIC,), claim=_claim_data_file)
def read_envi(path: Path) -> list[Spectrum]:
    """An ENVI image from its ``.hdr`` and the data file beside it, one spectrum per pixel.

    A ``.dat`` beside a header is claimed for this reader, which then reads the header.
    """
    header_text = decode_text(read_limited(path, limit=MAX_HEADER_BYTES))
    data_path = _data_file(path)
    try:
        data = np.memmap(data_path, dtype=np.uint8, mode="r")
    except ValueError as exc:  # numpy cannot map an empty file
        raise SpectrumError("empty_file", f"{data_path.name} is empty") from exc
    except OSError as exc:
        raise SpectrumError("not_accessible", f"cannot open {data_path.name}: {exc.strerror or exc}") from exc
    try:
        return spectra_from_envi(header_text, data, name=path.name)
    finally:
        del data
