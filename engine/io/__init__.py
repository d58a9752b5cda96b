"""Spectrum file readers, one module per format; the registry alone decides which one reads a file.

``read_spectra(path)`` returns every spectrum in a file (maps and multi-subfile
files hold several); ``read_spectrum(path)`` the first. Anything wrong with a
file is raised as :class:`engine.core.spectrum.SpectrumError` with a reason code.

Each reader module registers its reader with :mod:`engine.io.registry`, saying
how its format is recognised (magic bytes, a claim on the path, suffixes and a
sniff of the first bytes, or a sniff trusted under any name); the generic
delimited-text reader registers as the fallback of its suffixes. The registry
picks the reader for a file (:func:`detect`) and for bytes under a name
(:func:`engine.io.registry.detect_data`, for the members of a zip). No reader
calls another one. Importing this package registers every reader.
"""

from __future__ import annotations

import importlib

from engine.io.registry import Reader, detect, read_spectra, read_spectrum, readers, register

#: Reader modules, imported for their registrations: binary formats with magic
#: bytes, then text formats. The registry's rules (magic, claim, suffix and
#: sniff, content sniff, fallback) decide between readers; the order below only
#: breaks ties between two readers that both match at the same step.
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
    "archive",
)

for _name in READER_MODULES:
    importlib.import_module(f"engine.io.{_name}")

__all__ = ["Reader", "detect", "read_spectra", "read_spectrum", "readers", "register"]
