"""What binary readers share: reading the bytes around a parser, and decoding fixed-size header strings.

>>> from pathlib import Path
>>> import tempfile
>>> empty = Path(tempfile.mkdtemp()) / "x.spa"
>>> _ = empty.write_bytes(b"")
>>> read_binary(empty, lambda data, name: [])
Traceback (most recent call last):
...
engine.core.spectrum.SpectrumError: empty_file: x.spa is empty
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.core.spectrum import Spectrum, SpectrumError

__all__ = ["c_string", "read_binary"]

Parser = Callable[[bytes, str], list[Spectrum]]


def read_binary(path: Path, parse: Parser) -> list[Spectrum]:
    """``parse(data, name)`` on the file's bytes; every SpectrumError message starts with the file name."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpectrumError("not_accessible", f"cannot read {path.name}: {exc.strerror}") from exc
    if not data:
        raise SpectrumError("empty_file", f"{path.name} is empty")
    try:
        with np.errstate(all="ignore"):  # NaN/inf in damaged data is caught by Spectrum.create
            return parse(data, path.name)
    except SpectrumError as exc:
        if exc.message.startswith(path.name):
            raise
        raise SpectrumError(exc.reason, f"{path.name}: {exc.message}") from exc


def c_string(raw: bytes) -> str:
    """A NUL-terminated header string, stripped: UTF-8 when it decodes as such, else Latin-1.

    >>> c_string(b"PE pellet\\0junk"), c_string(b"\\xb5m\\0")
    ('PE pellet', 'µm')
    """
    text = raw.split(b"\0", 1)[0]
    try:
        return text.decode("utf-8").strip()
    except UnicodeDecodeError:
        return text.decode("latin-1").strip()
