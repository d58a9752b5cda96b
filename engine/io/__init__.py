"""Spectrum file readers, one module per format, chosen by magic bytes and suffix.

``read_spectra(path)`` returns every spectrum in a file (maps and multi-subfile
files hold several); ``read_spectrum(path)`` the first. Anything wrong with a
file is raised as :class:`engine.core.spectrum.SpectrumError` with a reason code.
Importing this package registers every reader.
"""

from __future__ import annotations

import importlib

from engine.io.registry import Reader, detect, read_spectra, read_spectrum, readers, register

#: Reader modules, imported for their registrations. Binary formats with magic
#: bytes come first; text formats that are recognised by sniffing come last.
READER_MODULES = (
    "opus",
    "omnic",
    "perkinelmer",
    "wdf",
    "spc",
    "labelled_set",
    "jcampdx",
    "asp",
    "envi",
    "openspecy",
    "delimited",
)

for _name in READER_MODULES:
    importlib.import_module(f"engine.io.{_name}")

__all__ = ["Reader", "detect", "read_spectra", "read_spectrum", "readers", "register"]
