"""The :class:`Spectrum` value type and its validation.

A spectrum is an ascending wavenumber axis (cm-1; Raman shift for Raman),
the measured values on that axis, the unit of those values and metadata
(source file, sha256, instrument fields when the file carries them).

Every problem with a spectrum, from an unreadable file to a flat signal, is
raised as :class:`SpectrumError`, whose ``reason`` is a short machine-readable
code (see :data:`REASONS`) and whose message is one readable sentence.

>>> import numpy as np
>>> x = np.linspace(4000.0, 400.0, 1801)  # a descending axis is sorted, not rejected
>>> s = Spectrum.create(x, np.exp(-((x - 2900.0) / 30.0) ** 2), y_unit="%T")
>>> s.wavenumbers[0], s.wavenumbers[-1], s.y_unit
(np.float64(400.0), np.float64(4000.0), 'transmittance')
>>> Spectrum.create(x, np.zeros(1801), y_unit="absorbance")
Traceback (most recent call last):
...
engine.core.spectrum.SpectrumError: constant_signal: the signal is constant (0), there is nothing to identify
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CO2_REGION",
    "MIN_POINTS",
    "REASONS",
    "Y_UNITS",
    "Spectrum",
    "SpectrumError",
    "file_sha256",
    "mean_spacing",
    "median_spacing",
    "normalise_y_unit",
    "to_absorbance",
    "wavenumbers_from_wavelengths",
]

#: Atmospheric CO2 asymmetric stretch, flattened in IR spectra (cm-1).
CO2_REGION = (2280.0, 2400.0)

#: The units a spectrum's values may be in.
Y_UNITS = ("absorbance", "transmittance", "reflectance", "counts", "arbitrary")

#: Machine-readable reasons carried by :class:`SpectrumError`.
REASONS = {
    "not_accessible": "the file cannot be opened or read now (vanished, locked, no permission)",
    "unsupported_format": "no reader recognises the file",
    "not_a_spectrum": "the file is plainly not a spectrum (a note: text without a table of numbers)",
    "unreadable": "the file could not be parsed",
    "empty_file": "the file is empty",
    "truncated": "the file ends before its declared content",
    "no_spectrum": "the file holds no usable spectrum (for example only an interferogram)",
    "non_finite": "values contain NaN or infinity",
    "too_few_points": "too few points to be a spectrum",
    "not_monotone": "the wavenumber axis is not strictly monotone",
    "length_mismatch": "axis and values differ in length",
    "constant_signal": "the signal is constant",
    "implausible_range": "the wavenumber axis is outside any plausible IR or Raman range",
    "unknown_unit": "the y unit is not recognised",
}

#: Fewer points than this cannot be matched against a library.
MIN_POINTS = 16

#: Wavenumbers (cm-1) outside this window are implausible for mid/near-IR and Raman.
PLAUSIBLE_RANGE = (-500.0, 15000.0)

_UNIT_ALIASES = {
    "absorbance": "absorbance",
    "abs": "absorbance",
    "a": "absorbance",
    "au": "absorbance",
    "absorbance units": "absorbance",
    "transmittance": "transmittance",
    "%t": "transmittance",
    "t": "transmittance",
    "percent transmittance": "transmittance",
    "% transmittance": "transmittance",
    "reflectance": "reflectance",
    "%r": "reflectance",
    "r": "reflectance",
    "counts": "counts",
    "raman": "counts",
    "intensity": "arbitrary",
    "arbitrary": "arbitrary",
    "arbitrary units": "arbitrary",
    "a.u.": "arbitrary",
    "": "arbitrary",
}


class SpectrumError(ValueError):
    """A spectrum or spectrum file that cannot be used, with a machine-readable reason.

    >>> err = SpectrumError("too_few_points", "3 points, need at least 16")
    >>> err.reason
    'too_few_points'
    >>> str(err)
    'too_few_points: 3 points, need at least 16'
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown SpectrumError reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.message))


def normalise_y_unit(unit: str | None) -> str:
    """Map the many spellings of a y unit to one of :data:`Y_UNITS`.

    >>> normalise_y_unit("%T"), normalise_y_unit("Absorbance"), normalise_y_unit(None)
    ('transmittance', 'absorbance', 'arbitrary')
    """
    key = (unit or "").strip().lower()
    if key in _UNIT_ALIASES:
        return _UNIT_ALIASES[key]
    if "absorb" in key or "kubelka" in key or key.replace(" ", "") in ("log(1/r)", "km", "k-m"):
        return "absorbance"  # log(1/R) and Kubelka-Munk rise with absorption, as absorbance does
    if "transm" in key:
        return "transmittance"
    if "reflect" in key:
        return "reflectance"
    if "count" in key or "raman" in key:
        return "counts"
    raise SpectrumError("unknown_unit", f"y unit {unit!r} is not one of {', '.join(Y_UNITS)}")


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Spectrum:
    """One validated spectrum: ascending ``wavenumbers`` (cm-1), ``values``, ``y_unit``.

    Build it with :meth:`create`, which validates; the constructor trusts its input.
    ``metadata`` holds at least ``source`` and ``sha256`` when the spectrum came from a
    file, ``format`` (the reader's name) and, when the file has them, instrument fields.
    ``technique`` is ``"ir"``, ``"raman"`` or ``None`` when unknown.
    """

    wavenumbers: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    y_unit: str = "arbitrary"
    technique: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        wavenumbers: Sequence[float] | npt.ArrayLike,
        values: Sequence[float] | npt.ArrayLike,
        *,
        y_unit: str | None = "arbitrary",
        technique: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        drop_missing: bool = False,
    ) -> Spectrum:
        """Validate and build a spectrum; raise :class:`SpectrumError` when it is unusable.

        A descending axis is reversed. With ``drop_missing=True`` points whose value
        is NaN (not measured) are removed first instead of being rejected, which is
        how labelled-set rows mark wavenumbers outside a spectrum's measured range
        and how a text export marks a gap (a blanked CO2 region); a gap inside the
        measured range is counted in ``metadata["points_not_measured"]``.
        """
        try:
            x = np.asarray(wavenumbers, dtype=np.float64).ravel()
            y = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError) as exc:
            raise SpectrumError("unreadable", f"axis or values are not numeric ({exc})") from exc
        if x.shape != y.shape:
            raise SpectrumError("length_mismatch", f"{x.size} wavenumbers but {y.size} values")
        metadata = dict(metadata or {})
        if drop_missing:
            keep = ~np.isnan(y)
            measured = np.flatnonzero(keep)
            gaps = int(measured[-1] - measured[0] + 1 - measured.size) if measured.size else 0
            if gaps:
                metadata["points_not_measured"] = gaps
            x, y = x[keep], y[keep]
        if not np.all(np.isfinite(x)):
            raise SpectrumError("non_finite", "the wavenumber axis contains NaN or infinity")
        if not np.all(np.isfinite(y)):
            bad = int(np.count_nonzero(~np.isfinite(y)))
            raise SpectrumError("non_finite", f"{bad} of {y.size} values are NaN or infinite")
        if x.size < MIN_POINTS:
            raise SpectrumError("too_few_points", f"{x.size} points, need at least {MIN_POINTS}")
        steps = np.diff(x)
        if np.all(steps < 0):
            x, y = x[::-1].copy(), y[::-1].copy()
        elif not np.all(steps > 0):
            raise SpectrumError(
                "not_monotone",
                "the wavenumber axis repeats or changes direction "
                f"({int(np.count_nonzero(steps == 0))} repeated, "
                f"{int(np.count_nonzero(steps > 0))} rising and "
                f"{int(np.count_nonzero(steps < 0))} falling steps)",
            )
        lo, hi = PLAUSIBLE_RANGE
        if x[0] < lo or x[-1] > hi:
            raise SpectrumError(
                "implausible_range",
                f"axis spans {x[0]:.6g} to {x[-1]:.6g} cm-1, outside {lo:g} to {hi:g} cm-1",
            )
        if np.ptp(y) <= 1e-12 * max(1.0, float(np.max(np.abs(y)))):
            raise SpectrumError(
                "constant_signal",
                f"the signal is constant ({y[0]:.6g}), there is nothing to identify",
            )
        x.flags.writeable = False
        y.flags.writeable = False
        return cls(
            wavenumbers=x,
            values=y,
            y_unit=normalise_y_unit(y_unit),
            technique=technique,
            metadata=metadata,
        )

    @property
    def n_points(self) -> int:
        """Number of points on the axis."""
        return int(self.wavenumbers.size)

    @property
    def spacing(self) -> float:
        """The mean step between points (cm-1, :func:`mean_spacing`)."""
        return mean_spacing(self.wavenumbers)

    def with_values(self, values: npt.ArrayLike, *, y_unit: str | None = None) -> Spectrum:
        """A copy with new values on the same axis (validated again)."""
        return Spectrum.create(
            self.wavenumbers,
            values,
            y_unit=y_unit or self.y_unit,
            technique=self.technique,
            metadata=self.metadata,
        )

    def summary(self) -> dict[str, Any]:
        """The facts ``mpwatch inspect`` prints."""
        return {
            "n_points": self.n_points,
            "wavenumber_min": float(self.wavenumbers[0]),
            "wavenumber_max": float(self.wavenumbers[-1]),
            "y_unit": self.y_unit,
            "format": self.metadata.get("format"),
        }


def mean_spacing(wavenumbers: npt.ArrayLike) -> float:
    """The mean step between the points of an ascending axis (cm-1); the median would cost a sort.

    >>> mean_spacing([400.0, 402.0, 406.0])
    3.0
    """
    x = np.asarray(wavenumbers, dtype=np.float64)
    return float(x[-1] - x[0]) / max(x.size - 1, 1)


def median_spacing(wavenumbers: npt.ArrayLike) -> float:
    """The median step between the points of an ascending axis (cm-1), as ``np.median`` gives it
    without its overhead (it runs per spectrum as each meets the grid).

    >>> median_spacing([400.0, 402.0, 406.0, 407.0]), median_spacing([400.0, 402.0, 406.0])
    (2.0, 3.0)
    """
    steps = np.diff(np.asarray(wavenumbers, dtype=np.float64))
    if steps.size == 0:
        return 0.0
    half = steps.size // 2
    if steps.size % 2:
        return float(np.partition(steps, half)[half])
    return float(np.partition(steps, [half - 1, half])[half - 1 : half + 1].mean())


#: cm-1 = WAVELENGTH_SCALES[unit] / wavelength.
WAVELENGTH_SCALES = {"micrometre": 1e4, "nanometre": 1e7}


def wavenumbers_from_wavelengths(x: npt.ArrayLike, unit: str, *, where: str) -> npt.NDArray[np.float64]:
    """A wavelength axis in ``unit`` (``micrometre`` or ``nanometre``) as wavenumbers (cm-1).

    >>> wavenumbers_from_wavelengths([2.5, 10.0], "micrometre", where="t").tolist()
    [4000.0, 1000.0]
    """
    wavelengths = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(wavelengths)) or np.any(wavelengths <= 0):
        raise SpectrumError("implausible_range", f"{where}: wavelengths must be positive to convert to cm-1")
    return np.asarray(WAVELENGTH_SCALES[unit] / wavelengths, dtype=np.float64)


def to_absorbance(s: Spectrum, *, floor: float = 1e-4) -> Spectrum:
    """%T, transmittance and reflectance as absorbance; other units pass unchanged.

    Transmittance above 1.5 anywhere is read as percent. Reflectance becomes
    the pseudo-absorbance log10(1/R). Values at or below zero are clipped to
    ``floor`` first, as an opaque band reads as zero transmittance.

    >>> x = np.linspace(400.0, 4000.0, 32)
    >>> a = to_absorbance(Spectrum.create(x, np.full(32, 10.0) + x / 4000, y_unit="%T"))
    >>> a.y_unit, round(float(a.values[0]), 2)
    ('absorbance', 1.0)
    """
    if s.y_unit not in ("transmittance", "reflectance"):
        return s
    fraction = s.values / 100.0 if np.nanmax(s.values) > 1.5 else s.values
    absorbance = -np.log10(np.clip(fraction, floor, None))
    return Spectrum(s.wavenumbers, absorbance, "absorbance", s.technique, s.metadata)
