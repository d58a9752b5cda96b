"""What every binary reader does around its parser: read the bytes, refuse an empty file, name the file.

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

__all__ = ["read_binary"]

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
