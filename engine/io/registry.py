"""The reader registry: which reader handles a file, chosen by magic bytes, then suffix.

A reader is a function ``(path) -> list[Spectrum]``; most files hold one
spectrum, maps and multi-subfile files hold several. Readers register
themselves with :func:`register`. :func:`read_spectra` is the only way in:
it picks the reader, attaches provenance (source, sha256, format, index) and
guarantees that nothing but :class:`~engine.core.spectrum.SpectrumError` escapes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.core.spectrum import Spectrum, SpectrumError, file_sha256

__all__ = ["Reader", "ReaderFn", "detect", "read_spectra", "read_spectrum", "readers", "register"]

logger = logging.getLogger(__name__)

ReaderFn = Callable[[Path], list[Spectrum]]

#: Bytes read from the head of a file to match magic numbers and sniff text.
HEAD_BYTES = 4096

#: Files larger than this are refused before any reader sees them.
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Reader:
    """A registered reader.

    ``magic`` are byte prefixes (at offset 0) that identify the format
    regardless of suffix; ``sniff`` is an optional predicate on the head bytes
    for formats without a fixed magic; ``suffixes`` are lower-case with the dot.
    """

    name: str
    fn: ReaderFn
    suffixes: tuple[str, ...] = ()
    magic: tuple[bytes, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    directory: bool = False


_READERS: list[Reader] = []


def register(
    name: str,
    *,
    suffixes: Sequence[str] = (),
    magic: Sequence[bytes] = (),
    sniff: Callable[[bytes], bool] | None = None,
    directory: bool = False,
) -> Callable[[ReaderFn], ReaderFn]:
    """Decorator registering a reader under ``name``."""

    def deco(fn: ReaderFn) -> ReaderFn:
        _READERS.append(
            Reader(
                name=name,
                fn=fn,
                suffixes=tuple(s.lower() for s in suffixes),
                magic=tuple(magic),
                sniff=sniff,
                directory=directory,
            )
        )
        return fn

    return deco


def readers() -> list[Reader]:
    """All registered readers, in registration order."""
    return list(_READERS)


def detect(path: str | Path) -> Reader:
    """The reader for ``path``: magic bytes first, then sniffing, then the suffix."""
    path = Path(path)
    if path.is_dir():
        for reader in _READERS:
            if reader.directory and reader.sniff is None:
                return reader
        raise SpectrumError("unsupported_format", f"{path.name} is a folder, not a labelled set")
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as exc:
        raise SpectrumError("not_accessible", f"cannot open {path.name}: {exc.strerror}") from exc
    if not head:
        raise SpectrumError("empty_file", f"{path.name} is empty")
    for reader in _READERS:
        if reader.magic and head.startswith(reader.magic):
            return reader
    suffix = path.suffix.lower()
    by_suffix = [r for r in _READERS if suffix in r.suffixes]
    for reader in by_suffix:
        if reader.sniff is None or reader.sniff(head):
            return reader
    for reader in _READERS:
        if not reader.directory and reader.sniff is not None and not reader.suffixes and reader.sniff(head):
            return reader
    if by_suffix:
        return by_suffix[0]
    raise SpectrumError(
        "unsupported_format",
        f"no reader recognises {path.name} (suffix {suffix or 'none'}); see the formats table in the README",
    )


def read_spectra(path: str | Path) -> list[Spectrum]:
    """Every spectrum in ``path``, each with provenance in its metadata.

    Raises :class:`SpectrumError` for any problem, whatever the reader hit.
    """
    path = Path(path)
    reader = detect(path)
    sha = None
    if path.is_file():
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpectrumError("unreadable", f"{path.name} is {size} bytes, over the {MAX_FILE_BYTES} limit")
        sha = file_sha256(path)
    try:
        spectra = reader.fn(path)
    except SpectrumError:
        raise
    except MemoryError as exc:
        raise SpectrumError("unreadable", f"{path.name}: declared size too large to read") from exc
    except Exception as exc:  # a third-party parser's own error types
        logger.debug("reader %s failed on %s", reader.name, path, exc_info=True)
        raise SpectrumError(
            "unreadable", f"{path.name} is not a valid {reader.name} file ({type(exc).__name__}: {exc})"
        ) from exc
    if not spectra:
        raise SpectrumError("no_spectrum", f"{path.name} holds no spectrum")
    out = []
    for index, spectrum in enumerate(spectra):
        provenance: dict[str, object] = {"format": reader.name, "source": str(path), "index": index}
        if sha is not None:
            provenance["sha256"] = sha
        meta = {**spectrum.metadata, **provenance}  # a reader never overwrites provenance
        out.append(
            Spectrum(
                wavenumbers=spectrum.wavenumbers,
                values=spectrum.values,
                y_unit=spectrum.y_unit,
                technique=spectrum.technique,
                metadata=meta,
            )
        )
    return out


def read_spectrum(path: str | Path) -> Spectrum:
    """The first spectrum in ``path`` (files usually hold exactly one)."""
    return read_spectra(path)[0]
