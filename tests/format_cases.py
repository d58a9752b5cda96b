"""One row per vendor sample file under ``shared/data/formats``: what reading it must give.

Rows are split by reader family (``format_cases_text.TEXT_CASES`` and the binary
readers' list) and checked by one parametrised test. Expected values come from
the files' own headers, ``formats/SOURCE.md`` and independent parsers, never
only from what our readers print.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FormatCase:
    """The expected result of reading one sample file.

    ``path`` is relative to the formats folder (``"jcamp/isas_PE1800.DX"``);
    ``format`` is the reader name expected to handle it; ``first_values`` are
    the first values of spectrum 0 in ascending-axis order. ``error`` is the
    :class:`~engine.core.spectrum.SpectrumError` reason when the file must be
    refused, in which case the other expectations may be ``None``.
    """

    path: str
    format: str | None
    n_spectra: int | None
    n_points: int | None
    wavenumber_min: float | None
    wavenumber_max: float | None
    first_values: tuple[float, ...]
    y_unit: str | None
    error: str | None
    note: str = ""
