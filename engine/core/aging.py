"""Weathering (aging) indices of a particle from its FTIR spectrum.

An index is the area of an oxidation band divided by the area of a reference
band of the polymer itself, both taken on the baseline-corrected absorbance
spectrum, so that particle size, contact pressure and ATR penetration cancel:

* **carbonyl index** by the specified-area-under-band method (SAUB; Almond et
  al. 2020, e-Polymers 20:369-381): area 1850-1650 cm-1 over the area of the
  reference band 1500-1420 cm-1, for PE and PP;
* **hydroxyl index**: area 3700-3100 cm-1 (O-H stretch of hydroperoxides,
  alcohols and acids) over the same reference band;
* **vinyl index** (PE only): area of the 909 cm-1 vinyl band over the reference.

Which windows apply to which polymer is the table :data:`REFERENCE_BANDS`,
every row with its literature source. Where an index is undefined (a polymer
with C=O in its repeat unit, a Raman spectrum, a spectrum that does not cover
a window) it is reported as ``None`` with a reason, never as 0.

**Baseline.** One asymmetrically reweighted penalised least squares baseline
(arPLS, pybaselines) is fitted to the whole absorbance spectrum and subtracted
before the windows are integrated. A straight line between each window's end
points (the usual instrument-software "peak area") was tried first and rejected:
on environmental particles the 1650 cm-1 end of the carbonyl window sits on top
of a broad band near 1640 cm-1 (water, biofilm amide I, carboxylate), so the
chord passes above the carbonyl band and gives *negative* carbonyl indices for
most FLOPP-e particles (median -0.44 for PE). arPLS follows the slow ATR and
scattering background but not bands, provided it is stiff enough not to follow
the 600 cm-1 wide O-H band: ``lam`` is 1e8 for a 2 cm-1 point spacing (a
smoothing length of about 100 points, 200 cm-1) and is rescaled as
``(2 / spacing) ** 4`` so that the baseline has the same stiffness in cm-1 on
any axis. The atmospheric CO2 band (2280-2400 cm-1), an artefact that would pull
the baseline down, is bridged linearly before fitting. docs/AGING.md shows how
the FLOPP results move with ``lam``.

>>> import numpy as np
>>> from engine.core.spectrum import Spectrum
>>> x = np.arange(600.0, 4000.5, 1.0)
>>> def band(centre, height, width):  # Gaussian exp(-((x - c) / w) ** 2); area = height * width * sqrt(pi)
...     return height * np.exp(-(((x - centre) / width) ** 2))
>>> absorbance = band(2900.0, 0.30, 15.0) + band(1460.0, 0.50, 10.0) + band(1715.0, 0.20, 20.0)
>>> s = Spectrum.create(x, absorbance, y_unit="absorbance")
>>> result = aging_indices(s, "HDPE")
>>> round(result.carbonyl, 3)  # (0.20 * 20) / (0.50 * 10), by hand
0.8
>>> abs(result.hydroxyl) < 1e-3 and abs(result.vinyl) < 1e-3  # defined: no O-H or vinyl band here
True
>>> aging_indices(s, "PET").not_applicable["carbonyl"]
'PET has C=O in its repeat unit (ester): the 1850-1650 cm-1 band is the polymer itself, not oxidation'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.labels import canonical_label
from engine.core.spectrum import CO2_REGION, Spectrum, to_absorbance

__all__ = [
    "BASELINE_LAM",
    "INDICES",
    "REFERENCE_BANDS",
    "AgingIndices",
    "BandWindow",
    "ReferenceBands",
    "aging_indices",
]

FloatArray = npt.NDArray[np.float64]

#: The indices computed, in report order.
INDICES = ("carbonyl", "hydroxyl", "vinyl")

#: arPLS smoothness for a 2 cm-1 point spacing; rescaled by ``(2 / spacing) ** 4``.
BASELINE_LAM = 1e8

#: A gap wider than this (cm-1) between measured points inside a window makes it unusable.
MAX_GAP = 24.0

#: A window needs at least this many measured points.
MIN_WINDOW_POINTS = 5

#: The reference band's peak must exceed this many noise standard deviations.
MIN_REFERENCE_SNR = 5.0


@dataclass(frozen=True)
class BandWindow:
    """An integration window ``low``-``high`` (cm-1) and what absorbs there."""

    low: float
    high: float
    assignment: str

    def __str__(self) -> str:
        return f"{self.high:g}-{self.low:g} cm-1"


@dataclass(frozen=True)
class ReferenceBands:
    """One polymer's row of :data:`REFERENCE_BANDS`.

    A window is ``None`` where the index is undefined; ``not_applicable`` then
    says why, and ``source`` names the literature the defined windows follow.
    """

    reference: BandWindow | None
    carbonyl: BandWindow | None
    hydroxyl: BandWindow | None
    vinyl: BandWindow | None
    not_applicable: Mapping[str, str]
    source: str

    def window(self, index: str) -> BandWindow | None:
        """The window of ``index`` (one of :data:`INDICES`)."""
        window: BandWindow | None = getattr(self, index)
        return window


_ALMOND = (
    "Almond J., Sugumaar P., Wenzel M.N., Hill G., Wallis C. (2020) Determination of the carbonyl index of "
    "polyethylene and polypropylene using specified area under band methodology with ATR-FTIR spectroscopy. "
    "e-Polymers 20:369-381 (SAUB: A(1850-1650) / A(1500-1420), PE and PP)"
)
_HYDROXYL = (
    "hydroxyl window 3700-3100 cm-1 over the SAUB reference band, as used for beached and at-sea PE/PP "
    "particles by Brandon J., Goldstein M., Ohman M.D. (2016) Mar. Pollut. Bull. 110:299-308"
)
_VINYL = (
    "vinyl end groups (RCH=CH2, =CH2 wag at 909 cm-1) formed by Norrish II chain scission in weathered PE: "
    "Gulmine J.V., Janissek P.R., Heise H.M., Akcelrud L. (2003) Polym. Degrad. Stab. 79:385-397"
)

_CARBONYL_WINDOW = BandWindow(1650.0, 1850.0, "C=O stretch: ketones, aldehydes, acids, esters, lactones")
_HYDROXYL_WINDOW = BandWindow(3100.0, 3700.0, "O-H stretch: hydroperoxides, alcohols, carboxylic acids")


def _no_reference(polymer: str) -> str:
    return f"no reference band is defined for {polymer} in this table (SAUB covers PE and PP only)"


def _own_carbonyl(polymer: str, group: str) -> str:
    return (
        f"{polymer} has C=O in its repeat unit ({group}): the 1850-1650 cm-1 band is the polymer itself, "
        "not oxidation"
    )


def _in_hydroxyl_window(absorber: str) -> str:
    return f"{absorber} lies inside the 3700-3100 cm-1 hydroxyl window"


def _intrinsic(polymer: str, *, carbonyl: str, hydroxyl: str | None = None) -> ReferenceBands:
    """A row for a polymer whose own structure occupies the oxidation windows."""
    return ReferenceBands(
        reference=None,
        carbonyl=None,
        hydroxyl=None,
        vinyl=None,
        not_applicable={
            "carbonyl": carbonyl,
            "hydroxyl": hydroxyl or _no_reference(polymer),
            "vinyl": _no_reference(polymer),
        },
        source=_ALMOND + "; the index is undefined where the polymer's repeat unit absorbs in the window",
    )


#: Polymers with C=O in their repeat unit: the group that holds it, and what of the polymer's own
#: absorbs in the hydroxyl window as well (``None``: nothing).
_OWN_CARBONYL: dict[str, tuple[str, str | None]] = {
    "PET": ("ester", None),
    "PES": ("ester", None),
    "PA": ("amide I", "the amide N-H stretch (~3300 cm-1) of PA"),
    "PMMA": ("ester", None),
    "EVA": ("acetate ester", None),
    "PVAc": ("acetate ester", None),
    "EAA": ("carboxylic acid", "the acid O-H stretch of EAA"),
    "PU": ("urethane", "the urethane N-H stretch (~3300 cm-1) of PU"),
    "CA": ("acetate ester", "residual cellulose O-H of CA"),
    "PC": ("carbonate", None),
    "PLA": ("ester", None),
}

#: Per-polymer windows, keyed by canonical label (:func:`engine.core.labels.canonical_label`).
REFERENCE_BANDS: dict[str, ReferenceBands] = {
    "PE": ReferenceBands(
        reference=BandWindow(1420.0, 1500.0, "CH2 scissoring (1472/1463 cm-1)"),
        carbonyl=_CARBONYL_WINDOW,
        hydroxyl=_HYDROXYL_WINDOW,
        vinyl=BandWindow(898.0, 920.0, "vinyl =CH2 out-of-plane wag (909 cm-1)"),
        not_applicable={},
        source=f"{_ALMOND}; {_HYDROXYL}; {_VINYL}",
    ),
    "PP": ReferenceBands(
        reference=BandWindow(1420.0, 1500.0, "CH3 asymmetric deformation and CH2 scissoring (1455 cm-1)"),
        carbonyl=_CARBONYL_WINDOW,
        hydroxyl=_HYDROXYL_WINDOW,
        vinyl=None,
        not_applicable={
            "vinyl": "no isolated vinyl band in PP: its own CH3 rocking and C-C bands (899, 841 cm-1) "
            "overlap the vinylidene band (888 cm-1) that PP oxidation forms",
        },
        source=f"{_ALMOND}; {_HYDROXYL}",
    ),
    "PS": ReferenceBands(
        reference=None,
        carbonyl=None,
        hydroxyl=None,
        vinyl=None,
        not_applicable={
            "carbonyl": "PS aromatic overtone and combination bands (2000-1650 cm-1) lie inside the SAUB "
            "carbonyl window, and SAUB is defined for PE and PP only",
            "hydroxyl": _no_reference("PS"),
            "vinyl": _no_reference("PS"),
        },
        source=_ALMOND,
    ),
    **{
        polymer: _intrinsic(
            polymer,
            carbonyl=_own_carbonyl(polymer, group),
            hydroxyl=None if absorber is None else _in_hydroxyl_window(absorber),
        )
        for polymer, (group, absorber) in _OWN_CARBONYL.items()
    },
    "cellulose": _intrinsic(
        "cellulose",
        carbonyl=_no_reference("cellulose"),
        hydroxyl="cellulose O-H groups fill the 3700-3100 cm-1 hydroxyl window",
    ),
}


@dataclass(frozen=True)
class AgingIndices:
    """A particle's weathering indices; ``None`` with a reason in ``not_applicable`` when undefined."""

    polymer: str
    carbonyl: float | None
    hydroxyl: float | None
    vinyl: float | None
    not_applicable: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict.

        >>> AgingIndices("PS", None, None, None, {"carbonyl": "why"}).as_dict()["not_applicable"]
        {'carbonyl': 'why'}
        """
        return {
            "polymer": self.polymer,
            "carbonyl": self.carbonyl,
            "hydroxyl": self.hydroxyl,
            "vinyl": self.vinyl,
            "not_applicable": dict(self.not_applicable),
        }


def _all_not_applicable(polymer: str, reason: str) -> AgingIndices:
    return AgingIndices(polymer, None, None, None, dict.fromkeys(INDICES, reason))


def _measured_absorbance(spectrum: Spectrum) -> tuple[FloatArray, FloatArray]:
    """The spectrum in absorbance, without points that were not measured.

    A transmittance or reflectance at or below zero is a zero-filled point (an
    instrument's "not measured"), not an opaque band, so it is dropped rather
    than clipped into a huge absorbance.
    """
    x, y = spectrum.wavenumbers, spectrum.values
    if spectrum.y_unit in ("transmittance", "reflectance"):
        keep = y > 0
        x, y = x[keep], y[keep]
        if x.size < 2:
            return x, y
        y = to_absorbance(Spectrum(x, y, spectrum.y_unit, spectrum.technique, spectrum.metadata)).values
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _corrected_on_grid(x: FloatArray, y: FloatArray, *, lam: float) -> tuple[FloatArray, FloatArray]:
    """arPLS-corrected absorbance on an even grid spanning the measured axis."""
    from pybaselines import Baseline
    from pybaselines.utils import ParameterWarning

    step = float(np.median(np.diff(x)))
    n = math.floor((x[-1] - x[0]) / step + 1e-9) + 1
    grid = x[0] + step * np.arange(n, dtype=np.float64)
    values = np.interp(grid, x, y)
    co2_low, co2_high = CO2_REGION
    if grid[0] < co2_low and grid[-1] > co2_high:
        inside = (grid >= co2_low) & (grid <= co2_high)
        ends = np.interp([co2_low, co2_high], grid, values)
        values[inside] = np.interp(grid[inside], [co2_low, co2_high], ends)
    with warnings.catch_warnings():
        # pybaselines warns when a spectrum sits almost wholly above its baseline (a clean,
        # normalised absorbance); the baseline is still the one wanted, and the warning would
        # reach the user's terminal once per particle
        warnings.simplefilter("ignore", category=ParameterWarning)
        baseline, _ = Baseline(x_data=grid).arpls(values, lam=lam * (2.0 / step) ** 4)
    return grid, values - np.asarray(baseline, dtype=np.float64)


def _coverage_problem(x: FloatArray, window: BandWindow) -> str | None:
    """Why the measured axis ``x`` cannot give the window's area, or None when it can."""
    if x.size == 0 or x[0] > window.low or x[-1] < window.high:
        span = f"{x[0]:.0f}-{x[-1]:.0f} cm-1" if x.size else "nothing"
        return f"the spectrum (measured {span}) does not cover {window}"
    inside = x[(x >= window.low) & (x <= window.high)]
    edges = np.concatenate(([window.low], inside, [window.high]))
    if inside.size < MIN_WINDOW_POINTS or np.max(np.diff(edges)) > MAX_GAP:
        return f"the spectrum has a gap or too few points in {window}"
    return None


def _area(grid: FloatArray, corrected: FloatArray, window: BandWindow) -> float:
    """Trapezoid area of the corrected absorbance between the window's exact limits."""
    inside = (grid > window.low) & (grid < window.high)
    xs = np.concatenate(([window.low], grid[inside], [window.high]))
    return float(np.trapezoid(np.interp(xs, grid, corrected), xs))


def _noise_sd(corrected: FloatArray) -> float:
    """Robust point-to-point noise of the corrected spectrum (MAD of first differences)."""
    return float(1.4826 * np.median(np.abs(np.diff(corrected))) / math.sqrt(2.0))


def aging_indices(
    spectrum: Spectrum,
    polymer: str,
    *,
    table: Mapping[str, ReferenceBands] | None = None,
    lam: float = BASELINE_LAM,
) -> AgingIndices:
    """The carbonyl, hydroxyl and vinyl indices of one particle of ``polymer``.

    ``polymer`` is any name :func:`engine.core.labels.canonical_label` knows
    (``"HDPE"`` is PE). ``table`` replaces :data:`REFERENCE_BANDS` (to try
    other windows); ``lam`` is the arPLS smoothness for a 2 cm-1 spacing.
    Never raises for a usable :class:`Spectrum` and a non-empty ``polymer``:
    every index that cannot be computed is ``None`` with its reason in
    ``not_applicable``.
    """
    bands_table = REFERENCE_BANDS if table is None else table
    label = canonical_label(polymer)
    if spectrum.technique == "raman":
        return _all_not_applicable(
            label, "Raman spectrum: these band-area indices are defined on FTIR absorbance spectra"
        )
    if spectrum.y_unit == "counts":
        return _all_not_applicable(label, "values are counts, which cannot be converted to absorbance")
    row = bands_table.get(label)
    if row is None:
        known = ", ".join(k for k, v in bands_table.items() if v.reference is not None)
        return _all_not_applicable(
            label, f"no reference band is defined for {label!r}; indices are defined for {known}"
        )
    reasons: dict[str, str] = {}
    for index in INDICES:
        if row.window(index) is None:
            reasons[index] = row.not_applicable.get(index, f"the {index} index is not defined for {label}")
    if row.reference is None:
        for index in INDICES:
            reasons.setdefault(index, f"no reference band is defined for {label}")
        return AgingIndices(label, None, None, None, reasons)

    x, y = _measured_absorbance(spectrum)
    problem = _coverage_problem(x, row.reference)
    if problem is not None:
        return _all_not_applicable(label, f"reference band: {problem}")
    grid, corrected = _corrected_on_grid(x, y, lam=lam)
    reference_area = _area(grid, corrected, row.reference)
    in_reference = (grid >= row.reference.low) & (grid <= row.reference.high)
    peak = float(np.max(corrected[in_reference]))
    if reference_area <= 0.0 or peak <= MIN_REFERENCE_SNR * _noise_sd(corrected):
        return _all_not_applicable(
            label,
            f"the {label} reference band ({row.reference}) is absent or within the noise "
            f"(area {reference_area:.3g}, peak {peak:.3g}): is the polymer right?",
        )
    values: dict[str, float | None] = {}
    for index in INDICES:
        window = row.window(index)
        if window is None:
            values[index] = None
            continue
        problem = _coverage_problem(x, window)
        if problem is not None:
            values[index] = None
            reasons[index] = problem
            continue
        values[index] = _area(grid, corrected, window) / reference_area
    return AgingIndices(label, values["carbonyl"], values["hydroxyl"], values["vinyl"], reasons)
