"""Other labs' conventions: the same spectra delivered as files the way other instruments write them.

Instruments in other labs deliver the same spectra in many conventions (see
``../shared/DATA.md``, "Conventions labs use"): %T on 0-100 or 0-1,
absorbance raw or normalised, files with a unit header, a bare header or
none, decimal commas, partial spectral ranges (LDIR and QCL about
975-1800 cm-1), coarser resolution with noise. A :class:`Convention`
describes one of them and :data:`CONVENTIONS` is the table of those the
robustness matrix (:mod:`engine.analysis.robustness`) tries;
:func:`render_values` renders one spectrum in a convention, and
:func:`render_set` writes a labelled set in it as an instrument would, one
two-column CSV file per spectrum, no unit stated unless the convention
states it. The labels never change, so every rendering is honest test data.

>>> import tempfile
>>> from engine.io import read_spectra
>>> wavenumbers = np.linspace(400.0, 4000.0, 1801)
>>> pct_t = 100.0 - 60.0 * np.exp(-(((wavenumbers - 2916.0) / 15.0) ** 2))
>>> convention = by_name("t_fraction")
>>> convention.describe()
'T (0-1), bare header, comma'
>>> with tempfile.TemporaryDirectory() as tmp:
...     [path] = render_set(pct_t[None, :], wavenumbers, convention, tmp, seed=0, y_units="%T")
...     head = path.read_text(encoding="utf-8").splitlines()[:2]
...     spectrum = read_spectra(path)[0]
>>> head
['wavenumber,intensity', '400.0000,1']
>>> spectrum.n_points, round(float(spectrum.values.min()), 3)
(1801, 0.4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import normalise_y_unit

__all__ = [
    "CONVENTIONS",
    "HEADERS",
    "NATIVE",
    "Y_RENDERINGS",
    "Convention",
    "by_name",
    "measured_mask",
    "render_set",
    "render_values",
]

#: The name of the native form (the labelled-set folder read as it is) in reports.
NATIVE = "native"

#: The y renderings: what the file's second column holds, and how a unit header names it.
Y_RENDERINGS: dict[str, str] = {
    "percent_transmittance": "%T",
    "transmittance": "transmittance",
    "absorbance": "absorbance",
    "absorbance_max1": "absorbance",
    "absorbance_max100": "absorbance",
}

#: How each y rendering reads in a description.
_Y_WORDS: dict[str, str] = {
    "percent_transmittance": "%T (0-100)",
    "transmittance": "T (0-1)",
    "absorbance": "absorbance",
    "absorbance_max1": "absorbance, max 1",
    "absorbance_max100": "absorbance, max 100",
}

#: Header styles: ``none`` (data from the first line), ``bare`` (``wavenumber,intensity``:
#: no unit declared) and ``unit`` (``wavenumber (cm-1),%T``: the unit declared).
HEADERS = ("none", "bare", "unit")

#: Transmittance below this (percent) is clipped before it becomes absorbance, as an opaque
#: band reads as (almost) zero transmittance.
MIN_PERCENT_TRANSMITTANCE = 0.01

_DELIMITER_WORDS = {",": "comma", ";": "semicolon", "\t": "tab"}


@dataclass(frozen=True)
class Convention:
    """How a lab's instrument delivers a spectrum as a file.

    ``y`` is one of :data:`Y_RENDERINGS`; ``header`` one of :data:`HEADERS`;
    ``delimiter`` and ``decimal`` separate fields and the integer part of
    numbers; ``x_range`` (cm-1, inclusive) cuts the axis to an instrument's
    range; ``step`` (cm-1) resamples to that spacing by averaging the points
    within each step (a coarser resolution, not just fewer points);
    ``noise`` adds seeded Gaussian noise after resampling, its standard
    deviation that share of the spectrum's range (0.01: S/N about 100).

    >>> Convention("ldir", y="absorbance", x_range=(975.0, 1800.0)).describe()
    'absorbance, bare header, comma, 975-1800 cm-1'
    """

    name: str
    y: str = "percent_transmittance"
    header: str = "bare"
    delimiter: str = ","
    decimal: str = "."
    x_range: tuple[float, float] | None = None
    step: float | None = None
    noise: float = 0.0

    def __post_init__(self) -> None:
        if self.y not in Y_RENDERINGS:
            raise ValueError(f"y must be one of {', '.join(Y_RENDERINGS)}, got {self.y!r}")
        if self.header not in HEADERS:
            raise ValueError(f"header must be one of {', '.join(HEADERS)}, got {self.header!r}")
        if self.delimiter not in _DELIMITER_WORDS:
            raise ValueError(f"delimiter must be one of {list(_DELIMITER_WORDS)}, got {self.delimiter!r}")
        if self.decimal not in (".", ",") or self.decimal == self.delimiter:
            raise ValueError(f"decimal {self.decimal!r} does not go with delimiter {self.delimiter!r}")
        if self.x_range is not None and not self.x_range[0] < self.x_range[1]:
            raise ValueError(f"x_range must be (low, high), got {self.x_range!r}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be positive, got {self.step!r}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise!r}")

    def describe(self) -> str:
        """A short description for tables: unit, header, delimiter, then range and resolution."""
        parts = [_Y_WORDS[self.y], f"{self.header} header" if self.header != "none" else "no header"]
        parts.append(_DELIMITER_WORDS[self.delimiter])
        if self.decimal == ",":
            parts.append("decimal comma")
        if self.x_range is not None:
            parts.append(f"{self.x_range[0]:g}-{self.x_range[1]:g} cm-1")
        if self.step is not None:
            parts.append(f"{self.step:g} cm-1 steps")
        if self.noise:
            parts.append(f"noise {self.noise:.0%} of range")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


#: The matrix of the project's issue: every y convention with a bare header (no unit declared),
#: the file-format conventions on %T (a unit header as the control), the LDIR/QCL and a mid
#: range cut as absorbance and as %T, an FTIR microscope's MCT detector (from 750 cm-1), and
#: coarser resolutions with noise.
CONVENTIONS: tuple[Convention, ...] = (
    Convention("pct_t", y="percent_transmittance"),
    Convention("t_fraction", y="transmittance"),
    Convention("absorbance", y="absorbance"),
    Convention("absorbance_max1", y="absorbance_max1"),
    Convention("absorbance_max100", y="absorbance_max100"),
    Convention("pct_t_unit_header", header="unit"),
    Convention("pct_t_no_header", header="none"),
    Convention("t_fraction_no_header", y="transmittance", header="none"),
    Convention("pct_t_decimal_comma", delimiter=";", decimal=","),
    Convention("absorbance_975_1800", y="absorbance", x_range=(975.0, 1800.0)),
    Convention("pct_t_975_1800", x_range=(975.0, 1800.0)),
    Convention("absorbance_1200_3200", y="absorbance", x_range=(1200.0, 3200.0)),
    Convention("pct_t_1200_3200", x_range=(1200.0, 3200.0)),
    Convention("pct_t_750_4000", x_range=(750.0, 4000.0)),
    Convention("pct_t_4cm_noise", step=4.0, noise=0.01),
    Convention("pct_t_8cm_noise", step=8.0, noise=0.01),
    Convention("pct_t_16cm_noise", step=16.0, noise=0.01),
    Convention("absorbance_8cm_noise", y="absorbance", step=8.0, noise=0.01),
)


def by_name(name: str) -> Convention:
    """The convention of :data:`CONVENTIONS` called ``name``; KeyError when there is none."""
    for convention in CONVENTIONS:
        if convention.name == name:
            return convention
    raise KeyError(f"no convention {name!r}; known: {', '.join(c.name for c in CONVENTIONS)}")


# -- rendering ------------------------------------------------------------------------------------


def measured_mask(values: npt.ArrayLike, *, y_unit: str) -> npt.NDArray[np.bool_]:
    """The points a spectrum was measured at: not NaN and, for transmittance, not zero-filled at an end.

    A %T of exactly 0 before the first or after the last non-zero point is
    an instrument's "not measured" (FLOPP's edge below ~675 cm-1), as the
    labelled-set reader reads it.

    >>> measured_mask([0.0, 0.0, 95.0, np.nan, 80.0, 0.0], y_unit="%T").tolist()
    [False, False, True, False, True, False]
    """
    row = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(row)
    if normalise_y_unit(y_unit) == "transmittance":
        nonzero = np.flatnonzero(keep & (row != 0))
        if nonzero.size:
            keep[: nonzero[0]] = False
            keep[nonzero[-1] + 1 :] = False
        else:
            keep[:] = False
    return keep


def _absorbance(values: npt.NDArray[np.float64], y_unit: str) -> npt.NDArray[np.float64]:
    """``values`` in ``y_unit`` as absorbance; transmittance above 1.5 anywhere is percent."""
    unit = normalise_y_unit(y_unit)
    if unit == "absorbance":
        return values
    if unit == "transmittance":
        percent = values if np.max(values) > 1.5 else values * 100.0
        return -np.log10(np.clip(percent, MIN_PERCENT_TRANSMITTANCE, None) / 100.0)
    raise ValueError(f"only transmittance and absorbance sets can be rendered, not {unit}")


def _percent_transmittance(values: npt.NDArray[np.float64], y_unit: str) -> npt.NDArray[np.float64]:
    """``values`` in ``y_unit`` as %T (0-100).

    Transmittance is kept (as percent). Absorbance is shifted so its minimum
    is 0 and scaled so its maximum is 1 (a realistic %T of 10 at the
    strongest band), then T = 100 * 10^-A.
    """
    unit = normalise_y_unit(y_unit)
    if unit == "transmittance":
        return values if np.max(values) > 1.5 else values * 100.0
    if unit == "absorbance":
        shifted = values - np.min(values)
        top = float(np.max(shifted))
        return 100.0 * np.power(10.0, -(shifted / top if top > 0 else shifted))
    raise ValueError(f"only transmittance and absorbance sets can be rendered, not {unit}")


def _scaled_to_max(absorbance: npt.NDArray[np.float64], top: float) -> npt.NDArray[np.float64]:
    """Absorbance scaled so its maximum is ``top``; a baseline below 0 stays below 0."""
    peak = float(np.max(absorbance))
    if peak > 0:
        return absorbance * (top / peak)
    shifted = absorbance - np.min(absorbance)
    return shifted * (top / max(float(np.max(shifted)), 1e-12))


def _resample(
    wavenumbers: npt.NDArray[np.float64], values: npt.NDArray[np.float64], step: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The mean of the points within step/2 of each multiple of ``step``; steps with no point are left out."""
    grid = np.arange(np.ceil(wavenumbers[0] / step) * step, wavenumbers[-1] + step * 1e-9, step)
    lo = np.searchsorted(wavenumbers, grid - step / 2, side="left")
    hi = np.searchsorted(wavenumbers, grid + step / 2, side="right")
    sums = np.concatenate([[0.0], np.cumsum(values)])
    count = hi - lo
    filled = count > 0
    means = (sums[hi[filled]] - sums[lo[filled]]) / count[filled]
    return grid[filled], means


def render_values(
    wavenumbers: npt.ArrayLike,
    values: npt.ArrayLike,
    convention: Convention,
    *,
    y_unit: str,
    rng: np.random.Generator | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One spectrum (``values`` in ``y_unit`` on ascending ``wavenumbers``) in ``convention``: axis, values.

    Points not measured (see :func:`measured_mask`) are dropped; the y unit
    is converted (%T to absorbance as A = -log10(T/100), T clipped to 0.01 %
    first; absorbance to %T as in :func:`_percent_transmittance`); the axis
    is cut, then resampled; absorbance is scaled to its maximum; noise is
    added last, drawn from ``rng`` (required when the convention adds noise).
    """
    x = np.asarray(wavenumbers, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    keep = measured_mask(y, y_unit=y_unit)
    x, y = x[keep], y[keep]
    if x.size == 0:
        raise ValueError("the spectrum has no measured point")
    if convention.y in ("percent_transmittance", "transmittance"):
        y = _percent_transmittance(y, y_unit)
        if convention.y == "transmittance":
            y = y / 100.0
    else:
        y = _absorbance(y, y_unit)
    if convention.x_range is not None:
        inside = (x >= convention.x_range[0]) & (x <= convention.x_range[1])
        x, y = x[inside], y[inside]
        if x.size == 0:
            raise ValueError(f"the spectrum has no point in {convention.x_range}")
    if convention.step is not None:
        x, y = _resample(x, y, convention.step)
    if convention.y == "absorbance_max1":
        y = _scaled_to_max(y, 1.0)
    elif convention.y == "absorbance_max100":
        y = _scaled_to_max(y, 100.0)
    if convention.noise:
        if rng is None:
            raise ValueError(f"convention {convention.name} adds noise: give an rng")
        y = y + rng.normal(0.0, convention.noise * float(np.ptp(y)), size=y.size)
    return x, y


def _header(convention: Convention) -> str | None:
    d = convention.delimiter
    if convention.header == "bare":
        return f"wavenumber{d}intensity"
    if convention.header == "unit":
        return f"wavenumber (cm-1){d}{Y_RENDERINGS[convention.y]}"
    return None


def _csv_text(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], convention: Convention) -> str:
    """The file's text: header line (if any), then ``wavenumber<delimiter>value`` lines."""
    d = convention.delimiter
    pairs = zip(x.tolist(), y.tolist(), strict=True)
    if convention.decimal == ",":
        lines = [f"{a:.4f}".replace(".", ",") + d + f"{b:.6g}".replace(".", ",") for a, b in pairs]
    else:
        lines = [f"{a:.4f}{d}{b:.6g}" for a, b in pairs]
    header = _header(convention)
    return "\n".join([header, *lines] if header else lines) + "\n"


def render_set(
    spectra: npt.ArrayLike,
    wavenumbers: npt.ArrayLike,
    convention: Convention,
    out_dir: str | Path,
    *,
    seed: int,
    y_units: str | Sequence[str],
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Write each row of ``spectra`` as one CSV file in ``convention``; the paths, in row order.

    ``spectra`` is a labelled set's matrix (one spectrum per row, NaN where
    not measured) on ``wavenumbers``; ``y_units`` is the unit of all rows or
    one per row (``%T``, ``T``, ``absorbance``). The files are
    ``00000.csv``, ``00001.csv``... in ``out_dir``; the labels, when given,
    are kept apart in ``labels.csv`` (file, label), as a lab keeps its sheet.
    Row ``i``'s noise is drawn from a generator seeded with ``(seed, i)``, so
    a row renders the same whatever else is rendered with it.
    """
    matrix = np.atleast_2d(np.asarray(spectra, dtype=np.float64))
    axis = np.asarray(wavenumbers, dtype=np.float64)
    units = [y_units] * len(matrix) if isinstance(y_units, str) else list(y_units)
    if len(units) != len(matrix):
        raise ValueError(f"{len(matrix)} spectra but {len(units)} y units")
    if labels is not None and len(labels) != len(matrix):
        raise ValueError(f"{len(matrix)} spectra but {len(labels)} labels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (row, unit) in enumerate(zip(matrix, units, strict=True)):
        rng = np.random.default_rng((seed, i)) if convention.noise else None
        x, y = render_values(axis, row, convention, y_unit=unit, rng=rng)
        path = out / f"{i:05d}.csv"
        path.write_text(_csv_text(x, y, convention), encoding="utf-8")
        paths.append(path)
    if labels is not None:
        rows = [f"{p.name},{label}" for p, label in zip(paths, labels, strict=True)]
        (out / "labels.csv").write_text("\n".join(["file,label", *rows]) + "\n", encoding="utf-8")
    return paths
