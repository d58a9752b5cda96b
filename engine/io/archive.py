"""Zips of spectrum files (Open Specy's upload format): every member a reader recognises.

Each member is read by the reader that the registry chooses for its name and
first bytes (:func:`engine.io.registry.parse_data`): the rules that choose a
file's reader, among the readers that parse bytes (the text formats). Members
no reader takes are skipped; a member that its reader cannot read makes the
whole zip unreadable.
Every spectrum keeps the name of its member in ``metadata["member"]``.

An ENVI map is two members, a ``.hdr`` header and its data beside it: such
pairs are found first and read as one image (one spectrum per pixel).
Declared sizes are checked before anything is decompressed, so zip bombs are
refused; nested zips are not opened.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from engine.core.spectrum import Spectrum, SpectrumError
from engine.io._text import MAX_SPECTRA, decode_text, read_limited, short
from engine.io.envi import MAX_ENVI_BYTES, spectra_from_envi, zip_envi_data
from engine.io.registry import parse_data, register

__all__ = ["MAX_ZIP_BYTES", "read_zip", "spectra_from_zip"]

logger = logging.getLogger(__name__)

#: The members of one zip may expand to at most this many bytes in all.
MAX_ZIP_BYTES = MAX_ENVI_BYTES

#: A member expanding more than this many times its compressed size is treated as a zip bomb.
MAX_COMPRESSION_RATIO = 200

#: At most this many members are looked at.
MAX_ZIP_MEMBERS = 10_000


def _check_sizes(infos: list[zipfile.ZipInfo], *, name: str) -> None:
    """Refuse zip bombs from the declared sizes, before anything is decompressed."""
    if len(infos) > MAX_ZIP_MEMBERS:
        raise SpectrumError("unreadable", f"{name} has {len(infos)} members, more than {MAX_ZIP_MEMBERS}")
    total = 0
    for info in infos:
        total += info.file_size
        if info.file_size > MAX_ZIP_BYTES or total > MAX_ZIP_BYTES:
            raise SpectrumError(
                "unreadable",
                f"{name}: members expand to over {MAX_ZIP_BYTES // (1024 * 1024)} MiB (zip bomb?)",
            )
        ratio = info.file_size // max(info.compress_size, 1)
        if info.file_size > 1024 * 1024 and ratio > MAX_COMPRESSION_RATIO:
            raise SpectrumError(
                "unreadable", f"{name}: member {short(info.filename)!r} expands {ratio} times (zip bomb?)"
            )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, name: str) -> bytes:
    if info.flag_bits & 0x1:
        raise SpectrumError("unreadable", f"{name}: member {short(info.filename)!r} is encrypted")
    with archive.open(info) as handle:
        data = handle.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise SpectrumError(
            "unreadable", f"{name}: member {short(info.filename)!r} does not match its declared size"
        )
    return data


def _skip(member: str) -> bool:
    path = PurePosixPath(member)
    return member.endswith("/") or path.name.startswith(".") or "__MACOSX" in path.parts


def _zip_spectra(archive: zipfile.ZipFile, *, name: str) -> list[Spectrum]:
    infos = [info for info in archive.infolist() if not _skip(info.filename)]
    _check_sizes(infos, name=name)
    by_name = {info.filename: info for info in infos}
    used: set[str] = set()
    spectra: list[Spectrum] = []
    for info in infos:
        member = info.filename
        if member in used or PurePosixPath(member).suffix.lower() != ".hdr":
            continue
        header = _read_member(archive, info, name=name)
        data_name = zip_envi_data(member, header, by_name, name=name)
        if data_name is None:
            continue
        used.update({member, data_name})
        pixels = spectra_from_envi(
            decode_text(header), _read_member(archive, by_name[data_name], name=name), name=member
        )
        spectra.extend(_tag(pixels, member=member))
    for info in infos:
        member = info.filename
        if member in used:
            continue
        data = _read_member(archive, info, name=name)
        found = parse_data(member, data)
        if found is None:
            logger.debug("%s: member %s is not a spectrum file, skipped", name, member)
            continue
        spectra.extend(_tag(found, member=member))
        if len(spectra) > MAX_SPECTRA:
            raise SpectrumError("unreadable", f"{name} holds more than {MAX_SPECTRA} spectra")
    if not spectra:
        members = ", ".join(short(i.filename, 30) for i in infos[:10]) or "none"
        raise SpectrumError("no_spectrum", f"{name} holds no spectrum file (members: {members})")
    return spectra


def _tag(spectra: list[Spectrum], *, member: str) -> list[Spectrum]:
    return [replace(s, metadata={**s.metadata, "member": member}) for s in spectra]


def spectra_from_zip(data: bytes, *, name: str) -> list[Spectrum]:
    """Every spectrum in a zip held in memory: ENVI maps, Open Specy files and other text spectra."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return _zip_spectra(archive, name=name)
    except SpectrumError:
        raise
    except Exception as exc:  # zipfile and its decompressors raise many types on corrupt input
        raise SpectrumError(
            "unreadable", f"{name} is not a readable zip ({type(exc).__name__}: {short(str(exc), 100)})"
        ) from exc


@register("zip", suffixes=(".zip",), magic=(b"PK\x03\x04",))
def read_zip(path: Path) -> list[Spectrum]:
    """A zip of spectrum files or an ENVI map (Open Specy's upload format)."""
    return spectra_from_zip(read_limited(path, limit=MAX_ZIP_BYTES), name=path.name)
