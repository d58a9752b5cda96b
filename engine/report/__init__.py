"""A sample report a lab can file: particles counted per polymer and size class, a procedural blank
subtracted, a bar chart and the method, written as a self-contained, printable ``report.html`` with
``particles.csv`` and ``summary.csv`` beside it.

It takes plain records (:class:`ParticleRecord`, one per particle of a map or per particle file) and
knows nothing of where they were stored; ``build_report`` counts, ``write_report`` writes.
:func:`sizes_from_metadata` reads a particle's size from what a per-particle file (LDIR) says.
"""

from __future__ import annotations

from engine.report.counts import (
    DEFAULT_SIZE_CLASSES,
    CountTable,
    ParticleRecord,
    SizeClasses,
    blank_level,
    count_particles,
    is_blank_name,
)
from engine.report.render import MapImage, SampleReport, build_report, report_html, write_report
from engine.report.sizes import sizes_from_metadata

__all__ = [
    "DEFAULT_SIZE_CLASSES",
    "CountTable",
    "MapImage",
    "ParticleRecord",
    "SampleReport",
    "SizeClasses",
    "blank_level",
    "build_report",
    "count_particles",
    "is_blank_name",
    "report_html",
    "sizes_from_metadata",
    "write_report",
]
