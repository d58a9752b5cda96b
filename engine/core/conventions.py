"""What a spectrum's numbers mean: its y unit and its technique, declared or inferred, never assumed.

Instruments and labs write spectra in many conventions: %T on 0-100 or 0-1,
absorbance raw or normalised to any maximum, reflectance, Raman counts. A
file that says what it holds is believed; a file that does not is judged by
the *shape* of its data, not by its value range alone:

- **band polarity**: after a running median (about 60 cm-1) is taken off,
  do the sharp excursions point up (absorbance, Raman) or down
  (transmittance)?
- **baseline position**: is the median of the spectrum near its bottom
  (absorbance: a low baseline with bands rising from it) or near its top
  (transmittance: a high baseline with bands dipping from it)?
- **offset**: transmittance sits far from zero (its lowest point is a large
  share of its highest); absorbance hugs zero.

The three give a score from -1 (transmittance) to +1 (absorbance); its size
is the confidence. Below :data:`UNCERTAIN_SCORE` the spectrum is still
identified under the likelier unit, and its result is flagged
``unit_uncertain``.

The technique is what the reader or the inbox profile says, else ``raman``
when the unit is counts or the axis reaches down to a Raman shift no mid-IR
instrument measures (below 350 cm-1), else ``ir``.

Precedence, for both: the inbox profile, then the file (header, meta.csv,
vendor field), then the data. Every resolved spectrum says where its unit came
from in ``metadata``: ``y_unit_source`` (``profile``, ``declared`` or
``inferred``) and ``y_unit_confidence``.

>>> import numpy as np
>>> x = np.linspace(650.0, 4000.0, 1676)
>>> bands = np.exp(-((x - 2915) / 12) ** 2) + 0.6 * np.exp(-((x - 1470) / 8) ** 2)
>>> percent_t = Spectrum.create(x, 92 - 60 * bands)           # no unit stated
>>> resolved = resolve(percent_t)
>>> resolved.y_unit, resolved.metadata["y_unit_source"], resolved.technique
('transmittance', 'inferred', 'ir')
>>> resolve(Spectrum.create(x, 100 * bands)).y_unit            # absorbance scaled to 100
'absorbance'
>>> resolve(percent_t, profile=AcquisitionProfile(y_unit="absorbance")).metadata["y_unit_source"]
'profile'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.ndimage import median_filter

from engine.core.spectrum import Spectrum, mean_spacing, normalise_y_unit

__all__ = [
    "RAMAN_AXIS_BELOW",
    "TECHNIQUES",
    "UNCERTAIN_SCORE",
    "AcquisitionProfile",
    "UnitEvidence",
    "infer_technique",
    "infer_y_unit",
    "measured_range",
    "resolve",
    "resolve_all",
]

#: The techniques a library (and so a model) holds.
TECHNIQUES = ("ir", "raman")

#: A unit score closer to 0 than this is flagged ``unit_uncertain``.
UNCERTAIN_SCORE = 0.15

#: A measured axis starting below this (cm-1) is a Raman shift: mid-IR instruments stop above it.
RAMAN_AXIS_BELOW = 350.0

#: Width (cm-1) of the running median that separates bands from the baseline.
BAND_WINDOW_CM = 60.0
#: Spectra sampled more finely are judged on every n-th point, about this far apart (cm-1).
JUDGE_STEP_CM = 4.0


@dataclass(frozen=True)
class AcquisitionProfile:
    """What an inbox (or a caller) states about its spectra; ``None`` leaves a field to the file and the data.

    ``range`` is the (low, high) cm-1 window the instrument measures; spectra are cut to it.
    """

    technique: str | None = None
    y_unit: str | None = None
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.technique is not None and self.technique not in TECHNIQUES:
            raise ValueError(f"technique must be one of {', '.join(TECHNIQUES)}, got {self.technique!r}")
        if self.y_unit is not None:
            object.__setattr__(self, "y_unit", normalise_y_unit(self.y_unit))
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range must be (low, high) with low < high, got {self.range!r}")


@dataclass(frozen=True)
class UnitEvidence:
    """The data's vote on its unit: ``score`` in [-1, 1], transmittance below 0, absorbance above."""

    y_unit: str
    score: float
    polarity: float
    baseline: float
    offset: float

    @property
    def confidence(self) -> float:
        """How sure the vote is, 0 to 1 (1 from a score of 0.5 on)."""
        return float(min(1.0, abs(self.score) / 0.5))

    @property
    def uncertain(self) -> bool:
        return abs(self.score) < UNCERTAIN_SCORE


def _measured_stretch(s: Spectrum, *, min_points: int) -> slice:
    """The points a spectrum really measured: its axis without zero-filled ends (all of it
    when fewer than ``min_points`` are non-zero)."""
    nonzero = np.flatnonzero(s.values != 0)
    if nonzero.size < min_points:
        return slice(None)
    return slice(nonzero[0], nonzero[-1] + 1)


def measured_range(s: Spectrum) -> tuple[float, float]:
    """The (low, high) cm-1 a spectrum really measured: its axis without zero-filled ends."""
    x = s.wavenumbers[_measured_stretch(s, min_points=2)]
    return float(x[0]), float(x[-1])


def _measured(s: Spectrum) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    keep = _measured_stretch(s, min_points=16)
    return s.wavenumbers[keep], s.values[keep]


def infer_y_unit(s: Spectrum) -> UnitEvidence:
    """Judge from the data alone whether ``s`` is transmittance-like or absorbance-like.

    Raman spectra are counts whatever their shape. A transmittance vote picks
    no scale: :func:`engine.core.spectrum.to_absorbance` reads values above 1.5 as
    percent, and a constant factor is a constant offset in absorbance, which
    the derivative and the normalisation remove.
    """
    x, y = _measured(s)
    step = mean_spacing(x)
    stride = max(1, int(JUDGE_STEP_CM / max(step, 1e-9)))  # finer sampling tells nothing more
    x, y, step = x[::stride], y[::stride], step * stride
    window = max(5, round(BAND_WINDOW_CM / max(step, 1e-9)) | 1)
    window = min(window, max(5, (y.size // 2) | 1))
    high_pass = y - median_filter(y, size=window, mode="nearest")
    up, down = np.percentile(high_pass, 99), -np.percentile(high_pass, 1)
    polarity = float((up - down) / (up + down)) if up + down > 0 else 0.0
    p2, p50, p98 = np.percentile(y, [2, 50, 98])
    spread = p98 - p2
    baseline = float((p98 + p2 - 2 * p50) / spread) if spread > 0 else 0.0
    offset = float(p2 / p98) if p2 > 0 and p98 > 0 else 0.0
    score = 0.5 * polarity + 0.5 * baseline - 2.0 * max(0.0, offset - 0.5)
    score = float(np.clip(score, -1.0, 1.0))
    unit = "transmittance" if score < 0 else "absorbance"
    return UnitEvidence(unit, score, polarity, baseline, offset)


def infer_technique(s: Spectrum) -> str:
    """``raman`` or ``ir`` for a spectrum whose file did not say."""
    if s.technique in TECHNIQUES:
        return s.technique
    low, high = measured_range(s)
    if s.y_unit == "counts" or (low < RAMAN_AXIS_BELOW and high < 3700.0):
        return "raman"
    return "ir"


def resolve(s: Spectrum, *, profile: AcquisitionProfile | None = None) -> Spectrum:
    """``s`` with its technique and y unit settled, and where each came from in its metadata.

    Idempotent: a spectrum already resolved is returned as it is.
    """
    if "y_unit_source" in s.metadata:
        return s
    profile = profile or AcquisitionProfile()
    meta = dict(s.metadata)
    technique = profile.technique or infer_technique(s)
    meta["technique_source"] = (
        "profile" if profile.technique else ("declared" if s.technique in TECHNIQUES else "inferred")
    )
    if profile.y_unit is not None:
        unit, source, confidence = profile.y_unit, "profile", 1.0
    elif s.y_unit != "arbitrary":
        unit, source, confidence = s.y_unit, "declared", 1.0
    elif technique == "raman":
        unit, source, confidence = "counts", "inferred", 1.0
    else:
        evidence = infer_y_unit(s)
        unit, source, confidence = evidence.y_unit, "inferred", evidence.confidence
        meta["y_unit_score"] = round(evidence.score, 3)
        if evidence.uncertain:
            meta["unit_uncertain"] = True
    meta["y_unit_source"] = source
    meta["y_unit_confidence"] = round(confidence, 3)
    x, y = s.wavenumbers, s.values
    if profile.range is not None:
        inside = (x >= profile.range[0]) & (x <= profile.range[1])
        if np.count_nonzero(inside) >= 16:
            x, y = x[inside], y[inside]
    return Spectrum(x, y, unit, technique, meta)


def resolve_all(spectra: Sequence[Spectrum], *, profile: AcquisitionProfile | None = None) -> list[Spectrum]:
    """:func:`resolve` for each spectrum."""
    return [resolve(s, profile=profile) for s in spectra]
