"""PerkinElmer ``.sp`` spectra (the ``PEPE`` block format written by Spectrum and Spotlight).

The file is ``PEPE``, a 40-byte description, then a tree of blocks: each block
is a uint16 id and an int32 size followed by its content. A block whose
content starts with a type tag (two bytes, the second ``0x75``) is a leaf
holding one typed value; any other block contains further blocks. The
spectrum lives in the leaves directly under the outermost block:

- 35698: first and last x (two float64 after tag 29981);
- 35701: the number of points (uint32 after tag 29995);
- 35708: the values (a uint32 byte count, then float64, after tag 29974);
- 35703 / 35704: x and y unit text, 35707 the data type, 35713 the name.

Nested blocks carry the history and the instrument (35837 model, 35838
serial number, 35841 detector, 35842 source, 35843 beamsplitter). The same
ids are reused deeper in the tree with other meanings, which is why the
spectrum is read from the outermost level only.

>>> _tree(b"")
[]
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from engine.core.spectrum import Spectrum, SpectrumError, normalise_y_unit
from engine.io._binary import read_binary
from engine.io.registry import register

__all__ = ["PE_MAGIC", "read_perkinelmer"]

PE_MAGIC = b"PEPE"
_PREAMBLE = 4 + 40
_BLOCK_HEADER = 6
_LEAF_MARK = 0x75
_MAX_DEPTH = 32

_TAG_STRING, _TAG_DOUBLE_PAIR, _TAG_INT32, _TAG_DOUBLES = 29987, 29981, 29995, 29974
_X_RANGE, _N_POINTS, _X_UNIT, _Y_UNIT = 35698, 35701, 35703, 35704
_DATA_TYPE, _VALUES, _NAME = 35707, 35708, 35713
_INSTRUMENT_TEXT = {
    35837: "instrument",
    35838: "serial_number",
    35841: "detector",
    35842: "light_source",
    35843: "beamsplitter",
}
_HISTORY_DATE = 35700


class _Leaf(NamedTuple):
    block_id: int
    depth: int
    tag: int
    content: bytes


def _tree(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[_Leaf]:
    """Every leaf under ``data[start:end]``, in file order, with its nesting depth."""
    end = len(data) if end is None else end
    if depth > _MAX_DEPTH:
        raise SpectrumError("unreadable", f"blocks nest deeper than {_MAX_DEPTH} levels")
    leaves: list[_Leaf] = []
    pos = start
    while pos + _BLOCK_HEADER <= end:
        block_id, size = struct.unpack_from("<Hi", data, pos)
        content = pos + _BLOCK_HEADER
        if size < 0 or content + size > end:
            raise SpectrumError(
                "truncated", f"block {block_id} at byte {pos} declares {size} bytes, past its parent's end"
            )
        if size >= 2 and data[content + 1] == _LEAF_MARK:
            (tag,) = struct.unpack_from("<H", data, content)
            leaves.append(_Leaf(block_id, depth, tag, data[content + 2 : content + size]))
        else:
            try:
                leaves.extend(_tree(data, content, content + size, depth + 1))
            except SpectrumError:
                if depth == 0:
                    raise
                # its content does not parse as blocks: an opaque value, skipped
        pos = content + size
    return leaves


def _string(leaf: _Leaf) -> str | None:
    if leaf.tag != _TAG_STRING or len(leaf.content) < 2:
        return None
    (length,) = struct.unpack_from("<H", leaf.content, 0)
    return leaf.content[2 : 2 + length].decode("latin-1").strip()


def _value(leaves: dict[int, _Leaf], block_id: int, tag: int, what: str) -> _Leaf:
    leaf = leaves.get(block_id)
    if leaf is None or leaf.tag != tag:
        raise SpectrumError("unreadable", f"the {what} (block {block_id}) is missing")
    return leaf


def _read(data: bytes, name: str) -> Spectrum:
    if not data.startswith(PE_MAGIC):
        raise SpectrumError("unreadable", f"{name} does not start with 'PEPE'")
    if len(data) < _PREAMBLE + _BLOCK_HEADER:
        raise SpectrumError("truncated", f"{name} ends inside its {_PREAMBLE}-byte preamble")
    leaves = _tree(data, _PREAMBLE)
    top = {leaf.block_id: leaf for leaf in leaves if leaf.depth == 1}
    x_range = _value(top, _X_RANGE, _TAG_DOUBLE_PAIR, "x range").content
    count = _value(top, _N_POINTS, _TAG_INT32, "point count").content
    values_leaf = _value(top, _VALUES, _TAG_DOUBLES, "data").content
    if len(x_range) < 16 or len(count) < 4 or len(values_leaf) < 4:
        raise SpectrumError("truncated", "the x range, point count or data block is cut short")
    first, last = struct.unpack_from("<dd", x_range, 0)
    (n_points,) = struct.unpack_from("<I", count, 0)
    (n_bytes,) = struct.unpack_from("<I", values_leaf, 0)
    if n_bytes != 8 * n_points or n_bytes > len(values_leaf) - 4:
        raise SpectrumError(
            "truncated",
            f"{n_points} points declared, the data block holds {(len(values_leaf) - 4) // 8} "
            f"(byte count {n_bytes})",
        )
    if not (np.isfinite(first) and np.isfinite(last)):
        raise SpectrumError("unreadable", "the x range is not finite")
    values = np.frombuffer(values_leaf, dtype="<f8", count=n_points, offset=4)
    wavenumbers = np.linspace(first, last, n_points)
    texts = {block_id: _string(leaf) for block_id, leaf in top.items()}
    metadata: dict[str, Any] = {}
    if texts.get(_NAME):
        metadata["title"] = texts[_NAME]
    if texts.get(_DATA_TYPE):
        metadata["data_type"] = texts[_DATA_TYPE]
    x_unit = texts.get(_X_UNIT) or "cm-1"
    metadata["x_unit"] = x_unit
    if "cm" not in x_unit.lower():
        raise SpectrumError("no_spectrum", f"{name} has an x axis in {x_unit!r}, not wavenumbers")
    for leaf in leaves:
        field = _INSTRUMENT_TEXT.get(leaf.block_id)
        text = _string(leaf) if field else None
        if field and text:
            metadata.setdefault(field, text)
    history = [leaf for leaf in leaves if leaf.block_id == _HISTORY_DATE and leaf.depth > 1]
    dates = [date for date in map(_string, history) if date]
    if dates:
        metadata["date"] = dates[-1]  # the innermost history entry: when the data set was created
    y_text = texts.get(_Y_UNIT) or ""
    metadata["y_label"] = y_text
    try:
        y_unit = normalise_y_unit(y_text)
    except SpectrumError:
        y_unit = "arbitrary"
    return Spectrum.create(wavenumbers, values, y_unit=y_unit, technique="ir", metadata=metadata)


@register("perkinelmer", suffixes=(".sp",), magic=(PE_MAGIC,))
def read_perkinelmer(path: Path) -> list[Spectrum]:
    """The spectrum of a PerkinElmer ``.sp`` file."""
    return read_binary(path, lambda data, name: [_read(data, name)])
