"""Bruker OPUS files (``*.0``, ``*.1``, ``*.0000``): the result spectrum, or absorbance from the channels.

An OPUS file starts with a 24-byte header (magic ``0A 0A FE FE``, version,
directory offset, block counts) followed by a directory of typed blocks, 12
bytes each (type, size in 32-bit words, offset). The block type says what a
block holds: parameter blocks (three-letter keys such as ``RES``, ``INS``,
``SNM``), data-status blocks (``NPT``, ``FXV``, ``LXV``, ``CSF``, ``DXU``,
``DAT``, ``TIM``) and data blocks (float32 arrays), each data block paired with
the status block of the same type.

The reader returns the result spectrum (absorbance, transmittance, ATR,
reflectance ... in that order of preference), in the unit its block type or
its ``DYU`` parameter names. Without a result block but with both single
channels, absorbance is computed as ``-log10(ScSm / ScRf)`` on the sample's
axis. A file with only a reference channel or interferograms is refused with
``no_spectrum``.

The parser is written here rather than taken from ``brukeropus``: that
package loops forever on a parameter entry with a negative length and sizes
3-D arrays from header fields, and this reader must fail cleanly on any
input. ``brukeropus`` remains the cross-check in the tests.

>>> _block_type(0x0000100F)
BlockType(complex_part=3, channel=3, parameters=0, data=4, derivative=0, extended=0)
"""

from __future__ import annotations

import re
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import Spectrum, SpectrumError, normalise_y_unit
from engine.io._binary import read_binary
from engine.io.registry import register

__all__ = ["OPUS_MAGIC", "BlockType", "read_opus"]

OPUS_MAGIC = b"\x0a\x0a\xfe\xfe"
_HEADER_SIZE = 24
_ENTRY_SIZE = 12

# channel codes (second field of the block type)
_SAMPLE, _REFERENCE = 1, 2
# data codes (fourth field, modulo 32)
_SINGLE_CHANNEL, _INTERFEROGRAM, _PHASE = 1, 2, 3
_DIRECTORY = 13
# extended codes (sixth field)
_SERIES, _COMPACT, _REPORT = 2, 4, 5

#: Result spectra, most wanted first: data code -> (label, Spectrum y unit).
_RESULTS: dict[int, tuple[str, str]] = {
    4: ("Absorbance", "absorbance"),
    16: ("ATR", "absorbance"),
    19: ("Arithmetic result (absorbance-like)", "absorbance"),
    5: ("Transmittance", "transmittance"),
    18: ("Arithmetic result (transmittance-like)", "transmittance"),
    12: ("Reflectance", "reflectance"),
    15: ("log(Reflectance)", "arbitrary"),
    6: ("Kubelka-Munk", "arbitrary"),
    17: ("Photoacoustic", "arbitrary"),
    10: ("Raman", "counts"),
    11: ("Emission", "arbitrary"),
    14: ("Power", "arbitrary"),
}
_RESULT_PREFERENCE = {code: rank for rank, code in enumerate(_RESULTS)}
_RAMAN = 10

#: OPUS short codes for y units (``DYU``, ``PLF``), mapped to Spectrum units.
_OPUS_UNITS = {
    "AB": "absorbance",
    "TR": "transmittance",
    "REF": "reflectance",
    "RE": "reflectance",
    "KM": "arbitrary",
    "LRF": "arbitrary",
    "RAM": "counts",
    "ATR": "absorbance",
    "PAS": "arbitrary",
    "SC": "arbitrary",
}

#: Instrument parameters copied into the metadata: OPUS key -> metadata name.
_METADATA_KEYS = {
    "snm": "title",
    "sfm": "sample_form",
    "cnm": "operator",
    "ins": "instrument",
    "res": "resolution",
    "lwn": "laser_wavenumber",
    "bms": "beamsplitter",
    "src": "light_source",
    "dtc": "detector",
    "apt": "aperture",
    "nss": "sample_scans",
    "exp": "experiment",
    "plf": "result_spectrum",
}


class BlockType(NamedTuple):
    """The six fields packed into a directory entry's 32-bit type code."""

    complex_part: int
    channel: int
    parameters: int
    data: int
    derivative: int
    extended: int


class _Block(NamedTuple):
    kind: BlockType
    offset: int
    size: int
    complete: bool


class _Trace(NamedTuple):
    kind: BlockType
    offset: int
    wavenumbers: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    status: dict[str, Any]


def _block_type(code: int) -> BlockType:
    """Split a directory type code into its bit fields."""
    return BlockType(
        complex_part=code & 0x3,
        channel=(code >> 2) & 0x3,
        parameters=(code >> 4) & 0x3F,
        data=(code >> 10) & 0x7F,
        derivative=(code >> 17) & 0x3,
        extended=(code >> 19) & 0x7,
    )


def _directory(data: bytes) -> list[_Block]:
    if len(data) < _HEADER_SIZE:
        raise SpectrumError("truncated", f"the header needs {_HEADER_SIZE} bytes, the file has {len(data)}")
    if not data.startswith(OPUS_MAGIC):
        raise SpectrumError("unreadable", "the file does not start with the OPUS magic bytes 0A 0A FE FE")
    directory_offset, _max_blocks, n_blocks = struct.unpack_from("<iii", data, 12)
    if directory_offset < _HEADER_SIZE or n_blocks < 1:
        raise SpectrumError(
            "unreadable", f"the OPUS directory (offset {directory_offset}, {n_blocks} blocks) is malformed"
        )
    if directory_offset + n_blocks * _ENTRY_SIZE > len(data):
        raise SpectrumError(
            "truncated", f"the directory of {n_blocks} blocks at byte {directory_offset} runs past the end"
        )
    blocks = []
    for index in range(n_blocks):
        code, words, offset = struct.unpack_from("<Iii", data, directory_offset + index * _ENTRY_SIZE)
        if offset <= 0 or words < 0:
            continue
        size = 4 * words
        blocks.append(_Block(_block_type(code), offset, size, offset + size <= len(data)))
    return blocks


def _parameters(data: bytes, block: _Block) -> dict[str, Any]:
    """Decode a parameter block: entries of key, type, length in 16-bit words, value."""
    if not block.complete:
        raise SpectrumError("truncated", f"the parameter block at byte {block.offset} runs past the end")
    params: dict[str, Any] = {}
    pos, end = block.offset, block.offset + block.size
    while pos + 8 <= end:
        key = data[pos : pos + 3]
        if key == b"END":
            break
        dtype, words = struct.unpack_from("<hh", data, pos + 4)
        start, stop = pos + 8, pos + 8 + 2 * words
        if words < 0 or stop > end or not key.isalnum():
            raise SpectrumError("unreadable", f"the parameter block at byte {block.offset} is malformed")
        value: Any = None
        if dtype == 0 and words >= 2:
            value = struct.unpack_from("<i", data, start)[0]
        elif dtype == 1 and words >= 4:
            value = struct.unpack_from("<d", data, start)[0]
        elif dtype >= 2:
            value = data[start:stop].split(b"\0", 1)[0].decode("latin-1").strip()
        if value is not None:
            params[key.decode("ascii").lower()] = value
        pos = stop
    return params


def _axis(status: dict[str, Any], npt: int) -> tuple[npt.NDArray[np.float64], str]:
    """The x axis in cm-1 and what it is: ``spectral``, ``points`` or an unknown unit."""
    first, last = status.get("fxv"), status.get("lxv")
    if not isinstance(first, float) or not isinstance(last, float):
        raise SpectrumError("unreadable", "a data-status block lacks its first/last x values (FXV, LXV)")
    unit = str(status.get("dxu", "WN")).upper()
    x = np.linspace(first, last, npt)
    if unit == "WN":
        return x, "spectral"
    if unit == "MI":
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1e4 / x, "spectral"
    if unit == "LGW":
        with np.errstate(over="ignore"):
            return np.exp(x), "spectral"
    if unit == "PNT":
        return x, "points"
    return x, unit


def _trace(data: bytes, block: _Block, status: dict[str, Any]) -> _Trace | None:
    """The data block's values on its axis, or None when the axis is not spectral."""
    npt = status.get("npt")
    if not isinstance(npt, int) or npt < 1:
        raise SpectrumError("unreadable", f"the data block at byte {block.offset} has no valid point count")
    if not block.complete:
        raise SpectrumError("truncated", f"the data block at byte {block.offset} runs past the end")
    available = block.size // 4
    if npt > available:
        raise SpectrumError(
            "truncated", f"the data block at byte {block.offset} declares {npt} points but holds {available}"
        )
    dpf = status.get("dpf", 1)
    if dpf not in (1, 2):
        raise SpectrumError("unreadable", f"unknown OPUS data point format {dpf!r}")
    start = block.offset + 4 * (available - npt if block.kind.extended == _COMPACT else 0)
    raw = np.frombuffer(data, dtype="<f4" if dpf == 1 else "<i4", count=npt, offset=start)
    scale = status.get("csf", 1.0)
    values = raw.astype(np.float64) * (float(scale) if isinstance(scale, int | float) else 1.0)
    wavenumbers, kind = _axis(status, npt)
    if kind != "spectral":
        return None
    return _Trace(block.kind, block.offset, wavenumbers, values, status)


def _pair_key(kind: BlockType) -> tuple[int, ...]:
    return (kind.complex_part, kind.channel, kind.data, kind.derivative, kind.extended)


def _date(status: dict[str, Any]) -> str | None:
    """``DAT`` and ``TIM`` as an ISO timestamp (``28/10/2020`` + ``14:23:20.858 (GMT-5)``)."""
    day, time = status.get("dat"), status.get("tim")
    if not isinstance(day, str) or not day:
        return None
    text = f"{day} {time}" if isinstance(time, str) else day
    match = re.fullmatch(
        r"(\d+)/(\d+)/(\d+)\s+(\d+):(\d+):(\d+)(?:\.(\d+))?\s*(?:\(GMT([+-]\d+)(?::(\d+))?\))?", text.strip()
    )
    if match is None:
        return text
    a, b, c, hour, minute, second, fraction, tz_hours, tz_minutes = match.groups()
    year, month, mday = (int(a), int(b), int(c)) if len(a) == 4 else (int(c), int(b), int(a))
    micro = int((fraction or "0").ljust(6, "0")[:6])
    tz = None
    if tz_hours is not None:
        sign = -1 if tz_hours.startswith("-") else 1
        tz = timezone(sign * timedelta(hours=abs(int(tz_hours)), minutes=int(tz_minutes or 0)))
    try:
        return datetime(year, month, mday, int(hour), int(minute), int(second), micro, tzinfo=tz).isoformat()
    except ValueError:
        return text


def _unit(trace: _Trace) -> str:
    """The result spectrum's unit: the ``DYU`` parameter when it names one, else the block type."""
    declared = trace.status.get("dyu")
    if isinstance(declared, str) and declared:
        if declared.upper() in _OPUS_UNITS:
            return _OPUS_UNITS[declared.upper()]
        try:
            return normalise_y_unit(declared)
        except SpectrumError:
            pass
    return _RESULTS[trace.kind.data % 32][1]


def _absorbance(sample: _Trace, reference: _Trace) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``-log10(ScSm / ScRf)`` on the part of the sample's axis the reference covers."""
    order = np.argsort(reference.wavenumbers)
    ref_x, ref_y = reference.wavenumbers[order], reference.values[order]
    inside = (sample.wavenumbers >= ref_x[0]) & (sample.wavenumbers <= ref_x[-1])
    x = sample.wavenumbers[inside]
    ratio = sample.values[inside] / np.interp(x, ref_x, ref_y) if x.size else np.empty(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        absorbance = np.where(ratio > 0, -np.log10(np.where(ratio > 0, ratio, 1.0)), np.nan)
    return x, absorbance


def _result_rank(trace: _Trace) -> tuple[bool, int, int]:
    """Sort key: plain spectra before derivatives, then by preference, then the last stored."""
    return (trace.kind.derivative != 0, _RESULT_PREFERENCE[trace.kind.data % 32], -trace.offset)


def _read(data: bytes, name: str) -> Spectrum:
    blocks = _directory(data)
    params: dict[str, Any] = {}
    statuses: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    data_blocks: list[_Block] = []
    series = 0
    for block in blocks:
        kind = block.kind
        if kind.parameters == 1:
            statuses.setdefault(_pair_key(kind), []).append(_parameters(data, block))
        elif kind.parameters > 1 and kind.channel != _REFERENCE:
            try:
                params.update(_parameters(data, block))
            except SpectrumError:
                continue  # a damaged instrument-parameter block only costs metadata
        elif kind.parameters == 0 and kind.data % 32 not in (0, _DIRECTORY) and kind.extended != _REPORT:
            if kind.extended == _SERIES:
                series += 1
            else:
                data_blocks.append(block)
    used: dict[tuple[int, ...], int] = {}
    results: list[_Trace] = []
    samples: list[_Trace] = []
    references: list[_Trace] = []
    channel_errors: list[SpectrumError] = []
    interferograms = 0
    for block in data_blocks:
        key = _pair_key(block.kind)
        candidates = statuses.get(key, [])
        index = used.get(key, 0)
        if index >= len(candidates):
            continue  # a data block without its status block cannot be placed on an axis
        used[key] = index + 1
        code = block.kind.data % 32
        if code in (_INTERFEROGRAM, _PHASE):
            interferograms += code == _INTERFEROGRAM
            continue
        try:
            trace = _trace(data, block, candidates[index])
        except SpectrumError as exc:
            if code in _RESULTS:
                raise
            channel_errors.append(exc)  # fatal only if the channels are needed
            continue
        if trace is None:
            continue
        if code in _RESULTS:
            results.append(trace)
        elif code == _SINGLE_CHANNEL and block.kind.channel == _SAMPLE:
            samples.append(trace)
        elif code == _SINGLE_CHANNEL and block.kind.channel == _REFERENCE:
            references.append(trace)
    metadata: dict[str, Any] = {
        field: params[key] for key, field in _METADATA_KEYS.items() if params.get(key) not in (None, "")
    }
    if results:
        best = min(results, key=_result_rank)
        label = _RESULTS[best.kind.data % 32][0]
        metadata.update(block=label, date=_date(best.status))
        technique = "raman" if best.kind.data % 32 == _RAMAN else "ir"
        return Spectrum.create(
            best.wavenumbers, best.values, y_unit=_unit(best), technique=technique, metadata=metadata
        )
    if channel_errors:
        raise channel_errors[0]
    if samples and references:
        sample, reference = samples[-1], references[-1]
        x, absorbance = _absorbance(sample, reference)
        metadata.update(block="Absorbance computed from ScSm/ScRf", date=_date(sample.status))
        return Spectrum.create(
            x, absorbance, y_unit="absorbance", technique="ir", metadata=metadata, drop_missing=True
        )
    if references:
        raise SpectrumError(
            "no_spectrum", f"{name} holds only a background/reference single channel, no sample spectrum"
        )
    if samples:
        raise SpectrumError(
            "no_spectrum",
            f"{name} holds only a sample single channel, with no reference to compute absorbance against",
        )
    if series:
        raise SpectrumError("no_spectrum", f"{name} holds only 3-D data series, which are not read")
    if interferograms:
        raise SpectrumError("no_spectrum", f"{name} holds only interferograms, no spectrum")
    raise SpectrumError("no_spectrum", f"{name} holds no spectral data block")


@register(
    "opus",
    suffixes=(".0", ".1", ".2", ".3", ".4", ".5", ".6", ".7", ".8", ".9", ".0000", ".0001"),
    magic=(OPUS_MAGIC,),
)
def read_opus(path: Path) -> list[Spectrum]:
    """The spectrum of a Bruker OPUS file (one per file)."""
    return read_binary(path, lambda data, name: [_read(data, name)])
