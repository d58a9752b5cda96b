"""The reader registry: the one place that decides which reader handles a file or a zip member.

A reader registers with :func:`register` (a function of a path) or with
:func:`register_parser` (a function of bytes and a name: the registry reads a
file whole for it, and the same function reads zip members). Either way it
declares its :class:`Recognition`, and the registry tries, in this order:

1. ``magic``: byte prefixes at offset 0 that identify the format whatever the name;
2. ``claim`` (files only): a function of the path that may hand the reader
   another file to open (ENVI claims a ``.dat`` beside its ``.hdr`` and reads the header);
3. ``suffixes`` with ``sniff``: a specific reader of the suffix, confirmed by
   its sniff of the first bytes (a reader without a sniff takes every such file);
4. ``sniff_anywhere``: a sniff that recognises the format under any name
   (JCAMP-DX text after a comment or a blank line);
5. ``fallback``: the generic reader of the suffix (delimited text);
6. the first specific reader of the suffix, whose own error says what is wrong.

A folder goes to the ``directory`` reader. :func:`detect` picks the reader of a
path (``unsupported_format`` when none fits); :func:`detect_data` and
:func:`parse_data` do the same for bytes under a name, among the readers that
parse bytes (``None`` when none fits). Registration order only breaks ties
between readers that match at the same step. :func:`read_spectra` is the only
way in for files: it picks the reader, attaches provenance (source, sha256,
format, index) and guarantees that nothing but
:class:`~engine.core.spectrum.SpectrumError` escapes. A file that no reader
recognises (none fits, or the generic reader of its suffix finds nothing in it)
and that is plainly a note, not a spectrum (:func:`engine.io._text.is_prose`), is
refused as ``not_a_spectrum`` rather than as a damaged file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Protocol, TypedDict, Unpack

from engine.core.spectrum import Spectrum, SpectrumError
from engine.io._text import MAX_TEXT_BYTES, PROSE_BYTES, is_prose, read_limited

__all__ = [
    "Parser",
    "Reader",
    "ReaderFn",
    "Recognition",
    "detect",
    "detect_data",
    "parse_data",
    "read_spectra",
    "read_spectrum",
    "readers",
    "register",
    "register_parser",
]

logger = logging.getLogger(__name__)

ReaderFn = Callable[[Path], list[Spectrum]]

#: Where a reader that claims a path is to read instead (``None``: not claimed).
Claim = Callable[[Path], Path | None]


class Parser(Protocol):
    """Every spectrum in ``data``; ``name`` (a file or zip member name) is for messages."""

    def __call__(self, data: bytes, *, name: str) -> list[Spectrum]: ...


#: Bytes read from the head of a file to match magic numbers and sniff text.
HEAD_BYTES = 4096

#: Files larger than this are refused before any reader sees them.
MAX_FILE_BYTES = 512 * 1024 * 1024


class Recognition(TypedDict, total=False):
    """How the registry recognises a reader's files; see the module docstring for each rule."""

    suffixes: tuple[str, ...]
    magic: tuple[bytes, ...]
    sniff: Callable[[bytes], bool] | None
    sniff_anywhere: bool
    claim: Claim | None
    fallback: bool
    directory: bool


@dataclass(frozen=True)
class Reader:
    """A registered reader.

    ``fn`` reads a path; ``parse``, when set, reads bytes held in memory (zip
    members) and is what ``fn`` calls after reading the file. ``suffixes`` are
    lower-case with the dot. The other fields are its :class:`Recognition`.
    """

    name: str
    fn: ReaderFn
    parse: Parser | None = None
    suffixes: tuple[str, ...] = ()
    magic: tuple[bytes, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    sniff_anywhere: bool = False
    claim: Claim | None = None
    fallback: bool = False
    directory: bool = False


_READERS: list[Reader] = []


def register(
    name: str, *, parse: Parser | None = None, **how: Unpack[Recognition]
) -> Callable[[ReaderFn], ReaderFn]:
    """Decorator registering a reader of paths under ``name`` (``parse`` reads the same format from bytes)."""
    rules: Recognition = {**how, "suffixes": tuple(s.lower() for s in how.get("suffixes", ()))}

    def deco(fn: ReaderFn) -> ReaderFn:
        _READERS.append(Reader(name=name, fn=fn, parse=parse, **rules))
        return fn

    return deco


def register_parser(
    name: str, *, limit: int = MAX_TEXT_BYTES, **how: Unpack[Recognition]
) -> Callable[[Parser], Parser]:
    """Decorator registering a reader of bytes under ``name``.

    A file is read whole for it (empty files and files over ``limit`` bytes
    are refused) and parsed under its file name; zip members are parsed as they are.
    """

    def deco(parse: Parser) -> Parser:
        def read(path: Path) -> list[Spectrum]:
            return parse(read_limited(path, limit=limit), name=path.name)

        read.__doc__ = parse.__doc__
        register(name, parse=parse, **how)(read)
        return parse

    return deco


def readers() -> list[Reader]:
    """All registered readers, in registration order."""
    return list(_READERS)


def _by_magic(head: bytes, candidates: Sequence[Reader]) -> Reader | None:
    for reader in candidates:
        if reader.magic and head.startswith(reader.magic):
            return reader
    return None


def _by_name_and_content(name: str, head: bytes, candidates: Sequence[Reader]) -> Reader | None:
    """Steps 3 to 6 of the module docstring: suffix and sniff, sniff anywhere, fallback, first of suffix."""
    suffix = PurePosixPath(name).suffix.lower()
    by_suffix = [r for r in candidates if suffix in r.suffixes]
    specific = [r for r in by_suffix if not r.fallback]
    for reader in specific:
        if reader.sniff is None or reader.sniff(head):
            return reader
    for reader in candidates:
        if reader.sniff_anywhere and reader.sniff is not None and reader.sniff(head):
            return reader
    for reader in by_suffix:
        if reader.fallback:
            return reader
    return specific[0] if specific else None  # its own error says what is wrong


def _choose(path: Path) -> tuple[Reader, Path]:
    """The reader for ``path`` and the file it is to open (another one when a reader claims the path)."""
    if path.is_dir():
        for reader in _READERS:
            if reader.directory and reader.sniff is None:
                return reader, path
        raise SpectrumError("unsupported_format", f"{path.name} is a folder, not a labelled set")
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as exc:
        raise SpectrumError("not_accessible", f"cannot open {path.name}: {exc.strerror}") from exc
    if not head:
        raise SpectrumError("empty_file", f"{path.name} is empty")
    found = _by_magic(head, _READERS)
    if found is not None:
        return found, path
    for reader in _READERS:
        target = reader.claim(path) if reader.claim is not None else None
        if target is not None:
            return reader, target
    found = _by_name_and_content(path.name, head, _READERS)
    if found is not None:
        return found, path
    suffix = path.suffix.lower()
    raise SpectrumError(
        "unsupported_format",
        f"no reader recognises {path.name} (suffix {suffix or 'none'}); see the formats table in the README",
    )


def detect(path: str | Path) -> Reader:
    """The reader for ``path``: magic bytes, path claims, then suffix and sniffing (module docstring)."""
    return _choose(Path(path))[0]


def detect_data(name: str, head: bytes) -> Reader | None:
    """The reader for bytes named ``name`` (a zip member) whose first bytes are ``head``; ``None``: none.

    The rules of :func:`detect`, among the readers that parse bytes; paths are
    never claimed, since the bytes have none.
    """
    candidates = [r for r in _READERS if r.parse is not None]
    head = head[:HEAD_BYTES]
    return _by_magic(head, candidates) or _by_name_and_content(name, head, candidates)


def parse_data(name: str, data: bytes) -> list[Spectrum] | None:
    """Every spectrum in ``data`` by the reader :func:`detect_data` picks; ``None`` when none does.

    The reader's own errors propagate (a :class:`SpectrumError`, as a rule).
    """
    reader = detect_data(name, data)
    if reader is None or reader.parse is None:
        return None
    return reader.parse(data, name=name)


def read_spectra(path: str | Path) -> list[Spectrum]:
    """Every spectrum in ``path``, each with provenance in its metadata.

    Raises :class:`SpectrumError` for any problem, whatever the reader hit.
    """
    path = Path(path)
    try:
        reader, target = _choose(path)
    except SpectrumError as exc:
        if exc.reason == "unsupported_format":
            _refuse_a_note(path, exc)
        raise
    sha = None
    if path.is_file():
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpectrumError("unreadable", f"{path.name} is {size} bytes, over the {MAX_FILE_BYTES} limit")
        from engine.io.identity import content_sha256  # its readers register here: imported late

        sha = content_sha256(path)
    try:
        spectra = reader.fn(target)
    except SpectrumError as exc:
        if reader.fallback:  # the suffix's generic reader: a guess, not a recognition
            _refuse_a_note(path, exc)
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
        # A reader never overwrites provenance.
        out.append(replace(spectrum, metadata={**spectrum.metadata, **provenance}))
    return out


def _refuse_a_note(path: Path, error: SpectrumError) -> None:
    """Raise ``not_a_spectrum`` for a file no reader recognised when it is plainly a note (prose).

    Otherwise return, and ``error`` stands: the file may be a damaged spectrum or one of
    an unknown format, which whoever reads it must hear about.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(PROSE_BYTES)
    except OSError:  # a folder, or gone: the error stands
        return
    if is_prose(head):
        raise SpectrumError(
            "not_a_spectrum", f"{path.name} is text without a table of numbers (a note?)"
        ) from error


def read_spectrum(path: str | Path) -> Spectrum:
    """The first spectrum in ``path`` (files usually hold exactly one)."""
    return read_spectra(path)[0]
