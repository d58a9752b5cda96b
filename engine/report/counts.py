"""Particles counted per polymer and size class, and a procedural blank subtracted from those counts.

A particle is sized by its largest Feret diameter, as ISO 24187 sizes microplastics, and falls in the
class ``[low, high)`` that holds it. A particle measured in pixels (a map without a pixel size) is
classed on the same bounds read as pixels, and its class says so; a particle whose size nobody
measured is counted under :data:`UNKNOWN_SIZE`.

>>> classes = SizeClasses.of([(1, 10), (10, 20)])
>>> classes.label_of(12.5, "um"), classes.label_of(0.5, "um"), classes.label_of(3, "px")
('10-20 µm', '< 1 µm', '1-10 px')
>>> a = ParticleRecord(sample="s", source="m.hdr", index=0, status="known", label="PE",
...     feret_max=12.0, unit="um")
>>> b = ParticleRecord(sample="s", source="m.hdr", index=1, status="unknown", label=None,
...     feret_max=4.0, unit="um")
>>> table = count_particles([a, b], classes)
>>> table.cell("PE", "10-20 µm"), table.cell("unknown", "1-10 µm"), table.total()
(1, 1, 2)
>>> blank = count_particles([ParticleRecord(sample="b", source="x", index=0, status="known", label="PE",
...     feret_max=15.0, unit="um")] * 3, classes)
>>> table.corrected(blank_level([blank])).cell("PE", "10-20 µm")
0
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "DEFAULT_SIZE_CLASSES",
    "OTHER_ROWS",
    "PARTICLE_FIELDS",
    "UNKNOWN_SIZE",
    "CountTable",
    "ParticleRecord",
    "SizeClasses",
    "blank_level",
    "count_particles",
    "is_blank_name",
    "row_of",
]

#: The default size classes in micrometres, by largest Feret diameter (ISO 24187 style).
DEFAULT_SIZE_CLASSES: Final[tuple[tuple[float, float], ...]] = (
    (1, 10),
    (10, 20),
    (20, 50),
    (50, 100),
    (100, 500),
    (500, 1000),
    (1000, 5000),
)

#: The class of a particle whose size is not known.
UNKNOWN_SIZE: Final = "size unknown"

#: The rows below the polymers: particles without a polymer label, by why they have none.
OTHER_ROWS: Final = ("unknown", "low_quality", "rejected")

_UNIT_SIGN = {"um": "µm", "px": "px"}


@dataclass(frozen=True)
class ParticleRecord:
    """One particle as a report counts it: a map's particle, or the particle of a per-particle file.

    ``status`` and ``label`` are final (an analyst's decision counts). Sizes are in ``unit``: ``"um"``
    (micrometres), ``"px"`` (pixels of a map without a pixel size) or None when no size is known.
    ``origin`` is ``"map"`` or ``"file"``.
    """

    sample: str
    source: str
    index: int
    status: str
    label: str | None
    material: str | None = None
    family: str | None = None
    confidence: float | None = None
    feret_max: float | None = None
    feret_min: float | None = None
    area: float | None = None
    x: float | None = None
    y: float | None = None
    unit: str | None = None
    origin: str = "file"
    decision: str | None = None

    def as_row(self, classes: SizeClasses) -> dict[str, Any]:
        """The particle as a row of particles.csv, with its size class."""
        return {
            "sample": self.sample,
            "source": self.source,
            "index": self.index,
            "origin": self.origin,
            "status": self.status,
            "label": self.label or "",
            "material": self.material or "",
            "family": self.family or "",
            "confidence": "" if self.confidence is None else round(self.confidence, 4),
            "size_class": classes.label_of(self.feret_max, self.unit),
            "feret_max": _number(self.feret_max),
            "feret_min": _number(self.feret_min),
            "area": _number(self.area),
            "x": _number(self.x),
            "y": _number(self.y),
            "unit": self.unit or "",
            "decision": self.decision or "",
        }


#: Columns of particles.csv.
PARTICLE_FIELDS: Final = (
    "sample",
    "source",
    "index",
    "origin",
    "status",
    "label",
    "material",
    "family",
    "confidence",
    "size_class",
    "feret_max",
    "feret_min",
    "area",
    "x",
    "y",
    "unit",
    "decision",
)


def _number(value: float | None) -> float | str:
    return "" if value is None else round(float(value), 3)


@dataclass(frozen=True)
class SizeClasses:
    """Size classes ``[low, high)`` in ascending order, without gaps or overlaps."""

    bounds: tuple[tuple[float, float], ...]

    @classmethod
    def of(cls, bounds: Iterable[Sequence[float]]) -> SizeClasses:
        """Checked classes from ``(low, high)`` pairs.

        >>> SizeClasses.of([(10, 20), (1, 10)])
        Traceback (most recent call last):
        ...
        ValueError: size classes must ascend without overlap, got [(10.0, 20.0), (1.0, 10.0)]
        """
        pairs = tuple((float(low), float(high)) for low, high in bounds)
        if not pairs or any(low < 0 or high <= low for low, high in pairs):
            raise ValueError(f"size classes must be (low, high) pairs, 0 <= low < high, got {list(pairs)}")
        if any(pairs[i][1] > pairs[i + 1][0] for i in range(len(pairs) - 1)):
            raise ValueError(f"size classes must ascend without overlap, got {list(pairs)}")
        return cls(pairs)

    def labels(self, unit: str = "um") -> list[str]:
        """Every class's label in ``unit``, smallest first."""
        sign = _UNIT_SIGN[unit]
        return [f"{_g(low)}-{_g(high)} {sign}" for low, high in self.bounds]

    def label_of(self, size: float | None, unit: str | None) -> str:
        """The class of a particle of largest Feret diameter ``size`` in ``unit``."""
        if size is None or unit not in _UNIT_SIGN:
            return UNKNOWN_SIZE
        sign = _UNIT_SIGN[unit]
        for low, high in self.bounds:
            if low <= size < high:
                return f"{_g(low)}-{_g(high)} {sign}"
        if size < self.bounds[0][0]:
            return f"< {_g(self.bounds[0][0])} {sign}"
        if size >= self.bounds[-1][1]:
            return f">= {_g(self.bounds[-1][1])} {sign}"
        return f"between classes {sign}"

    def order(self, labels: Iterable[str]) -> list[str]:
        """``labels`` in reading order: µm classes small to large, then pixel classes, then unknown size."""
        known = [*_edge_first(self, "um"), *_edge_first(self, "px"), UNKNOWN_SIZE]
        present = set(labels)
        ordered = [label for label in known if label in present]
        return ordered + sorted(present - set(ordered))


def _edge_first(classes: SizeClasses, unit: str) -> list[str]:
    sign = _UNIT_SIGN[unit]
    low, high = classes.bounds[0][0], classes.bounds[-1][1]
    return [f"< {_g(low)} {sign}", *classes.labels(unit), f">= {_g(high)} {sign}", f"between classes {sign}"]


def _g(value: float) -> str:
    return f"{value:g}"


def row_of(particle: ParticleRecord) -> str:
    """The row a particle is counted in: its polymer label, or why it has none."""
    if particle.status == "known" and particle.label:
        return particle.label
    return particle.status if particle.status in OTHER_ROWS else "unknown"


@dataclass
class CountTable:
    """Counts (or a blank's mean counts) per row (polymer, or unknown / low_quality / rejected) and class."""

    cells: dict[tuple[str, str], float] = field(default_factory=dict)

    def cell(self, row: str, size_class: str) -> float:
        value = self.cells.get((row, size_class), 0)
        return int(value) if float(value).is_integer() else value

    def rows(self) -> list[str]:
        """Polymers by count (most first, then by name), then the unlabelled rows."""
        totals: dict[str, float] = {}
        for (row, _), n in self.cells.items():
            totals[row] = totals.get(row, 0) + n
        polymers = sorted((r for r in totals if r not in OTHER_ROWS), key=lambda r: (-totals[r], r))
        return polymers + [r for r in OTHER_ROWS if r in totals]

    def size_classes(self) -> list[str]:
        return sorted({size_class for _, size_class in self.cells})

    def row_total(self, row: str) -> float:
        return sum(n for (r, _), n in self.cells.items() if r == row)

    def total(self, *, polymers_only: bool = False) -> float:
        return sum(n for (r, _), n in self.cells.items() if not (polymers_only and r in OTHER_ROWS))

    def corrected(self, blank: CountTable) -> CountTable:
        """These counts less ``blank``'s, cell by cell, floored at 0."""
        keys = set(self.cells) | set(blank.cells)
        return CountTable({key: max(0.0, self.cells.get(key, 0) - blank.cells.get(key, 0)) for key in keys})


def count_particles(particles: Iterable[ParticleRecord], classes: SizeClasses) -> CountTable:
    """Particles per row and size class."""
    table = CountTable()
    for particle in particles:
        key = (row_of(particle), classes.label_of(particle.feret_max, particle.unit))
        table.cells[key] = table.cells.get(key, 0) + 1
    return table


def blank_level(blanks: Sequence[CountTable]) -> CountTable:
    """What a sample carries from the procedure: the blanks' counts per cell, averaged over the blanks."""
    level = CountTable()
    for blank in blanks:
        for key, n in blank.cells.items():
            level.cells[key] = level.cells.get(key, 0) + n / len(blanks)
    return level


def is_blank_name(sample: str, *, pattern: str = "blank*", named: Iterable[str] = ()) -> bool:
    """Whether a sample folder is a procedural blank: named in the configuration or matching ``pattern``.

    >>> is_blank_name("Blank-2024-05"), is_blank_name("filter-3"), is_blank_name("f0", named=["f0"])
    (True, False, True)
    """
    return sample in set(named) or fnmatch.fnmatch(sample.lower(), pattern.lower())
