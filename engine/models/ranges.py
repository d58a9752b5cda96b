"""A model per acquisition range: spectra that cover only part of the library's window.

An LDIR or QCL instrument measures about 975-1800 cm-1, an FPA detector about
900-3800, a spectrum may be cut by its ATR crystal. Compared on the library's
whole window, such a spectrum is mostly "not measured" and nothing matches it
well. So a spectrum is routed by how much of the library's span it covers
(:func:`route`):

- ``full``: the overlap of the spectrum and the span (where most references were
  measured) is at least :data:`FULL_COVERAGE` of the span and of the spectrum, and
  what the spectrum lacks of the grid holds little of what tells the references apart
  (:data:`MAX_LOST_SHARE`); the library's own model identifies it;
- ``range``: less than that (an LDIR spectrum against a mid-IR library, a Raman
  spectrum to 3500 cm-1 against references that end at 2000, an ATR spectrum cut at
  750 cm-1, below which PS has its strongest band), but the overlap is
  at least :data:`MIN_OVERLAP_CM` wide and :data:`MIN_OVERLAP_POINTS` points on the
  library's grid: a model of the library *cut to the overlap* identifies it: its
  references preprocessed again on that window, its synthetic spectra regenerated,
  its reject thresholds recalibrated (:meth:`engine.core.library.ReferenceLibrary.restricted`);
- ``narrow``: the overlap is too small to identify anything: ``low_quality``
  with the flag ``narrow_range``, the overlap reported.

The overlap is rounded to :data:`WINDOW_ROUNDING_CM`, inwards unless an edge is
within two grid steps of the next multiple, so spectra of one instrument share
one window (976.8-1799.8 cm-1 becomes 975-1800) and the query measured all but
an edge point or two of it.

A spectrum sampled much more coarsely than the library's grid (an instrument at 16
cm-1) gets a range model whose references are sampled as that instrument samples
(:func:`coarse_step`, :func:`~engine.core.preprocess.coarsely_sampled`): averaged
over the step, one point per step, then on the library's grid as the spectrum is.
On FLOPP pristine -> FLOPP-e at 16 cm-1 this costs 2.6 points of accuracy against
5.3 for the earlier model on a grid of the coarse step itself, whose derivative,
three points wide, smoothed away what the 4 cm-1 grid keeps.
Range models are built on first sight and kept in a :class:`RangeModelCache`
(least recently used out first; about 4-5 MB each on the bundled library).

>>> route((975.0, 1800.0), span=(650.0, 4000.0), step=4.0)
RangeRoute(kind='range', overlap=(975.0, 1800.0), window=(975.0, 1800.0), step=4.0)
>>> route((600.0, 4000.0), span=(650.0, 4000.0), step=4.0).kind
'full'
>>> route((750.0, 4000.0), span=(400.0, 4000.0), step=4.0, lost_share=0.4).window
(750.0, 4000.0)
>>> route((1458.0, 1477.0), span=(650.0, 4000.0), step=4.0).kind
'narrow'
>>> route((150.0, 3500.0), span=(314.0, 1984.0), step=4.0, grid=(100.0, 3500.0)).window
(325.0, 1975.0)
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "COARSE_STEPS",
    "FULL_COVERAGE",
    "MAX_LOST_SHARE",
    "MIN_OVERLAP_CM",
    "MIN_OVERLAP_POINTS",
    "WINDOW_ROUNDING_CM",
    "FeatureMass",
    "RangeModelCache",
    "RangeRoute",
    "coarse_step",
    "route",
]

#: A spectrum covering at least this share of the library's span uses the library's own model.
FULL_COVERAGE = 0.8
#: Narrower overlaps than this (cm-1) cannot identify anything: ``narrow_range``.
MIN_OVERLAP_CM = 150.0
#: ... and so can overlaps with fewer points than this on the library's grid.
MIN_OVERLAP_POINTS = 32
#: A spectrum goes to a range model when, for more than a tenth of the references, more than this
#: share of their features (the sum of squares of their preprocessed rows) lies where it was not measured.
MAX_LOST_SHARE = 0.1
#: A spectrum sampled more than this many grid steps apart gets a model at its own resolution.
COARSE_FACTOR = 2.5
#: The grid steps (cm-1) of models for coarse instruments.
COARSE_STEPS = (8.0, 16.0, 32.0)
#: Range-model windows are rounded inwards to multiples of this (cm-1).
WINDOW_ROUNDING_CM = 25.0

Window = tuple[float, float]
#: A range model's key: (low, high, grid step), cm-1.
RangeKey = tuple[float, float, float]
M = TypeVar("M")


@dataclass(frozen=True)
class RangeRoute:
    """Where a spectrum goes: ``full``, ``range`` (the model's ``window`` and the ``step`` its references
    are sampled at, the grid's for a spectrum that is not coarse) or ``narrow``."""

    kind: str
    overlap: Window
    window: Window | None = None
    step: float | None = None


def coarse_step(spacing: float, step: float) -> float | None:
    """The step to sample the references at for a spectrum sampled every ``spacing`` cm-1, on a library
    grid of ``step``.

    None when the spectrum is fine enough for the library's own grid; else the
    smallest of :data:`COARSE_STEPS` that holds the spacing.

    >>> coarse_step(1.9, 4.0), coarse_step(8.0, 4.0), coarse_step(15.4, 4.0), coarse_step(31.0, 4.0)
    (None, None, 16.0, 32.0)
    """
    if spacing <= COARSE_FACTOR * step:
        return None
    for candidate in COARSE_STEPS:
        if candidate >= 0.9 * spacing:
            return candidate
    return COARSE_STEPS[-1]


def route(
    measured: Window,
    *,
    span: Window,
    step: float,
    grid: Window | None = None,
    spacing: float | None = None,
    lost_share: float = 0.0,
) -> RangeRoute:
    """Route a spectrum measured over ``measured`` against a library whose references cover ``span``.

    ``grid`` is the library's whole window (default: ``span``). The spectrum is compared
    where it and most references were both measured: on the whole grid (``full``) when
    that is most of the span *and* most of the spectrum, else on that overlap alone.
    A spectrum sampled more coarsely than the grid (``spacing`` cm-1) gets a range model
    whose references are sampled as it was (``RangeRoute.step``).
    ``lost_share`` is the share of the references' features that lies where the spectrum
    was not measured (the 90th percentile over references); above :data:`MAX_LOST_SHARE`
    the library's own model would miss too much of them.
    """
    bounds = grid or span
    usable = (max(measured[0], bounds[0]), min(measured[1], bounds[1]))
    low, high = max(usable[0], span[0]), min(usable[1], span[1])
    overlap = (round(low, 1), round(high, 1))
    width = high - low
    if width < MIN_OVERLAP_CM or width / step + 1 < MIN_OVERLAP_POINTS:
        return RangeRoute("narrow", overlap if width > 0 else (0.0, 0.0))
    coarse = coarse_step(spacing, step) if spacing is not None else None
    full = width >= FULL_COVERAGE * (span[1] - span[0]) and width >= FULL_COVERAGE * (usable[1] - usable[0])
    full = full and lost_share <= MAX_LOST_SHARE
    if full and coarse is None:
        return RangeRoute("full", overlap)
    if full:
        low, high = usable
    grain, slack = WINDOW_ROUNDING_CM, 2 * (coarse or step)  # an edge a step or two short still rounds out
    window = (math.ceil((low - slack) / grain) * grain, math.floor((high + slack) / grain) * grain)
    window = (max(window[0], bounds[0]), min(window[1], bounds[1]))
    if window[1] - window[0] < MIN_OVERLAP_CM:
        window = (low, high)
    return RangeRoute("range", overlap, window, coarse or step)


class FeatureMass:
    """Where on the grid the references' features lie, to tell what a partial spectrum lacks.

    Each reference's preprocessed row is a unit of "mass" (its sum of squares, what Pearson r
    weighs) spread over the grid; :meth:`lost_share` is the share of it outside a measured
    range, the 90th percentile over references (at most ``max_rows`` of them, evenly chosen,
    held as float16: about 0.9 MB on a 900-point grid).

    >>> x = np.arange(400.0, 4000.0, 4.0)
    >>> rows = np.exp(-(((x - 700.0) / 10) ** 2))[None, :]  # one band, at 700 cm-1
    >>> mass = FeatureMass(rows, x)
    >>> round(mass.lost_share((650.0, 4000.0)), 3), round(mass.lost_share((750.0, 4000.0)), 3)
    (0.0, 1.0)
    """

    def __init__(self, rows: npt.ArrayLike, wavenumbers: npt.ArrayLike, *, max_rows: int = 500) -> None:
        X = np.asarray(rows, dtype=np.float64)
        if X.shape[0] > max_rows:
            X = X[np.linspace(0, X.shape[0] - 1, max_rows).astype(int)]
        mass = X**2
        total = mass.sum(axis=1, keepdims=True)
        mass /= np.where(total > 0, total, 1.0)
        self.wavenumbers = np.asarray(wavenumbers, dtype=np.float64)
        self._cumulative = np.pad(np.cumsum(mass, axis=1), ((0, 0), (1, 0))).astype(np.float16)
        self._known: dict[tuple[int, int], float] = {}

    def lost_share(self, measured: Window) -> float:
        """The share of the references' features outside ``measured`` (cm-1), 90th percentile."""
        lo = int(np.searchsorted(self.wavenumbers, measured[0], side="left"))
        hi = int(np.searchsorted(self.wavenumbers, measured[1], side="right"))
        if (lo, hi) not in self._known:
            if len(self._known) >= 1024:  # instruments repeat their ranges: a few keys in practice
                self._known.clear()
            c = self._cumulative
            lost = c[:, lo].astype(np.float32) + (c[:, -1] - c[:, max(hi, lo)])
            self._known[(lo, hi)] = float(np.percentile(lost, 90)) if lost.size else 0.0
        return self._known[(lo, hi)]


class RangeModelCache(Generic[M]):
    """Range models by (low, high, step), built with ``build(key)`` on first sight, at most ``capacity`` kept.

    Thread-safe; a build happens outside no lock of its own, so callers that
    share a model serialise through the model's lock as they do for classifying.
    """

    def __init__(self, build: Callable[[RangeKey], M], *, capacity: int = 8) -> None:
        self.build = build
        self.capacity = capacity
        self._models: OrderedDict[RangeKey, M] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0
        self.hits = 0
        self.evictions = 0
        self.last_build_seconds = 0.0

    def __len__(self) -> int:
        return len(self._models)

    def windows(self) -> list[RangeKey]:
        """The cached (low, high, step) keys, least recently used first."""
        return list(self._models)

    def get(self, window: RangeKey) -> M:
        with self._lock:
            if window in self._models:
                self._models.move_to_end(window)
                self.hits += 1
                return self._models[window]
        started = time.perf_counter()
        model = self.build(window)
        with self._lock:
            self.last_build_seconds = time.perf_counter() - started
            self.builds += 1
            self._models[window] = model
            self._models.move_to_end(window)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
                self.evictions += 1
        return model

    def clear(self) -> None:
        """Forget every range model (the library changed)."""
        with self._lock:
            self._models.clear()
