"""A sample's report put together and written: ``report.html`` (self-contained, printable),
``particles.csv`` and ``summary.csv``.

:func:`build_report` counts a sample's particles per polymer and size class, subtracts its procedural
blanks (their mean counts, cell by cell, floored at 0) and notes what the numbers rest on (sizes in
pixels, sizes unknown). :func:`write_report` writes the three files atomically. The HTML is rendered
from ``templates/report.html`` with every value escaped; its chart and map images are inlined as
base64 PNGs, so the file can be mailed or filed alone.

>>> from engine.report.counts import ParticleRecord
>>> p = ParticleRecord(sample="f1", source="m.hdr", index=0, status="known", label="PP",
...     feret_max=30.0, unit="um")
>>> report = build_report("f1", [p], generated_at="2024-05-01T10:00:00+00:00")
>>> report.raw.cell("PP", "20-50 µm"), report.corrected is None
(1, True)
>>> "<table" in report_html(report)
True
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, StrictUndefined

from engine.core.storage import atomic_write_text
from engine.report.counts import (
    DEFAULT_SIZE_CLASSES,
    OTHER_ROWS,
    PARTICLE_FIELDS,
    UNKNOWN_SIZE,
    CountTable,
    ParticleRecord,
    SizeClasses,
    blank_level,
    count_particles,
)

__all__ = ["SUMMARY_FIELDS", "MapImage", "SampleReport", "build_report", "report_html", "write_report"]

#: Columns of the report's summary.csv: one row per polymer (or unlabelled row) and size class.
SUMMARY_FIELDS: Final = ("sample", "row", "size_class", "raw", "blank", "corrected")

#: Particles listed in the HTML (all of them are in particles.csv).
HTML_PARTICLE_ROWS: Final = 500


@dataclass(frozen=True)
class MapImage:
    """A map drawn with its particles, for the report: a caption and the PNG's bytes."""

    caption: str
    png: bytes


@dataclass
class SampleReport:
    """Everything one sample's report shows; :func:`build_report` makes it."""

    sample: str
    particles: list[ParticleRecord]
    classes: SizeClasses
    raw: CountTable
    blank: CountTable | None
    corrected: CountTable | None
    blank_samples: list[str]
    is_blank: bool
    method: dict[str, str]
    notes: list[str]
    images: list[MapImage] = field(default_factory=list)
    generated_at: str = ""

    @property
    def final(self) -> CountTable:
        """The counts a lab reports: blank-corrected when there is a blank, else raw."""
        return self.corrected if self.corrected is not None else self.raw

    def size_classes(self) -> list[str]:
        """The classes shown: every class in µm (pixels too when a map had no pixel size), then any other."""
        tables = [t for t in (self.raw, self.blank) if t is not None]
        present = {c for t in tables for c in t.size_classes()}
        units = {p.unit for p in self.particles}
        shown = set(present)
        if "um" in units or not units - {"px"}:
            shown |= set(self.classes.labels("um"))
        if "px" in units:
            shown |= set(self.classes.labels("px"))
        return self.classes.order(shown)

    def rows(self) -> list[str]:
        tables = [t for t in (self.raw, self.blank) if t is not None]
        merged = CountTable({key: 1 for t in tables for key in t.cells})
        counted = {r: self.raw.row_total(r) for r in merged.rows()}
        polymers = sorted((r for r in counted if r not in OTHER_ROWS), key=lambda r: (-counted[r], r))
        return polymers + [r for r in OTHER_ROWS if r in counted]

    def summary_rows(self) -> list[dict[str, Any]]:
        """summary.csv: every row and size class that holds a particle or a blank's, with its totals."""
        out: list[dict[str, Any]] = []
        for row in self.rows():
            for size_class in [*self.size_classes(), "all"]:
                raw = _sum(self.raw, row, size_class)
                blank = _sum(self.blank, row, size_class) if self.blank is not None else None
                if size_class != "all" and not raw and not blank:
                    continue
                corrected = _sum(self.corrected, row, size_class) if self.corrected is not None else raw
                out.append(
                    {
                        "sample": self.sample,
                        "row": row,
                        "size_class": size_class,
                        "raw": _fmt(raw),
                        "blank": "" if blank is None else _fmt(blank),
                        "corrected": _fmt(corrected),
                    }
                )
        return out


def _sum(table: CountTable | None, row: str, size_class: str) -> float:
    if table is None:
        return 0.0
    if size_class == "all":
        return table.row_total(row)
    return float(table.cell(row, size_class))


def _fmt(value: float) -> str:
    """A count as a person reads it: integers plain, a blank's mean to two decimals.

    >>> _fmt(3.0), _fmt(1.5), _fmt(2 / 3)
    ('3', '1.5', '0.67')
    """
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}".rstrip("0")


def build_report(
    sample: str,
    particles: Iterable[ParticleRecord],
    *,
    classes: SizeClasses | Sequence[Sequence[float]] = DEFAULT_SIZE_CLASSES,
    blanks: Mapping[str, Sequence[ParticleRecord]] | None = None,
    is_blank: bool = False,
    method: Mapping[str, object] | None = None,
    images: Sequence[MapImage] = (),
    generated_at: str | None = None,
) -> SampleReport:
    """The report of ``sample``: its counts, its blanks' level and the corrected counts, and notes.

    Args:
        sample: the sample's name.
        particles: the sample's particles, final labels.
        classes: size classes ``(low, high)`` in micrometres.
        blanks: the particles of each procedural blank that applies to this sample, by blank name;
            their mean counts are subtracted. A blank itself gets none.
        is_blank: this sample is itself a procedural blank.
        method: what the numbers were made with (instrument, library, model, thresholds), in order.
        images: the sample's maps, drawn.
        generated_at: ISO 8601 time of writing (now when None).
    """
    classes = classes if isinstance(classes, SizeClasses) else SizeClasses.of(classes)
    particles = sorted(particles, key=lambda p: (p.source, p.index))
    raw = count_particles(particles, classes)
    blank_names = sorted(blanks or {}) if not is_blank else []
    level = corrected = None
    if blank_names:
        level = blank_level([count_particles((blanks or {})[name], classes) for name in blank_names])
        corrected = raw.corrected(level)
    notes = _notes(particles, blank_names, is_blank=is_blank)
    return SampleReport(
        sample=sample,
        particles=particles,
        classes=classes,
        raw=raw,
        blank=level,
        corrected=corrected,
        blank_samples=blank_names,
        is_blank=is_blank,
        method={str(k): _text(v) for k, v in (method or {}).items()},
        notes=notes,
        images=list(images),
        generated_at=generated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _text(value: object) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple | set):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _notes(particles: Sequence[ParticleRecord], blank_names: Sequence[str], *, is_blank: bool) -> list[str]:
    notes = []
    in_pixels = sum(1 for p in particles if p.unit == "px")
    if in_pixels:
        notes.append(
            f"Sizes of {in_pixels} particle{'s' * (in_pixels != 1)} are in pixels (px), not micrometres: "
            "their map states no pixel size. Size classes marked px use the same bounds in pixels."
        )
    unsized = sum(1 for p in particles if p.unit not in ("um", "px") or p.feret_max is None)
    if unsized:
        notes.append(
            f"The size of {unsized} particle{'s' * (unsized != 1)} is unknown: "
            f"{'their files state' if unsized != 1 else 'its file states'} none. "
            f"They are counted under '{UNKNOWN_SIZE}'."
        )
    if is_blank:
        notes.append("This sample is a procedural blank: its counts are subtracted from its sibling samples.")
    elif blank_names:
        notes.append(
            f"Blank correction: the mean counts of the procedural blank{'s' * (len(blank_names) != 1)} "
            f"{', '.join(blank_names)} are subtracted per polymer and size class, floored at 0."
        )
    else:
        notes.append("No procedural blank applies to this sample: the counts are not blank-corrected.")
    return notes


def chart_png(report: SampleReport) -> bytes:
    """A bar chart of the reported counts per polymer, stacked by size class (PNG bytes)."""
    from matplotlib.figure import Figure

    table = report.final
    rows = [r for r in report.rows() if table.row_total(r) > 0] or ["(none)"]
    classes = [c for c in report.size_classes() if any(table.cell(r, c) for r in rows)]
    figure = Figure(figsize=(7.5, 3.2), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    bottom = [0.0] * len(rows)
    for size_class in classes:
        heights = [float(table.cell(r, size_class)) for r in rows]
        axes.bar(rows, heights, bottom=bottom, label=size_class)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    what = "blank-corrected particles" if report.corrected is not None else "particles"
    axes.set_ylabel(what)
    axes.set_title(f"{report.sample}: {what} per polymer and size class", fontsize=10)
    axes.tick_params(axis="x", labelrotation=30, labelsize=8)
    if classes:
        axes.legend(fontsize=7, title="largest Feret diameter", title_fontsize=7, loc="upper right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def report_html(report: SampleReport) -> str:
    """The report as one self-contained HTML page (every value escaped, images inline)."""
    template = resources.files("engine.report").joinpath("templates/report.html").read_text(encoding="utf-8")
    environment = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    classes = report.size_classes()
    rows = report.rows()

    def table(counts: CountTable | None) -> list[dict[str, Any]] | None:
        if counts is None:
            return None
        return [
            {
                "row": row,
                "cells": [_fmt(float(counts.cell(row, c))) for c in classes],
                "total": _fmt(counts.row_total(row)),
            }
            for row in rows
        ]

    def totals(counts: CountTable | None) -> list[str]:
        if counts is None:
            return []
        return [_fmt(sum(float(counts.cell(r, c)) for r in rows)) for c in classes] + [_fmt(counts.total())]

    fields = [f for f in PARTICLE_FIELDS if f not in ("sample", "decision")]
    particles = [p.as_row(report.classes) for p in report.particles[:HTML_PARTICLE_ROWS]]
    return environment.from_string(template).render(
        report=report,
        classes=classes,
        raw=table(report.raw),
        blank=table(report.blank),
        corrected=table(report.corrected),
        raw_totals=totals(report.raw),
        blank_totals=totals(report.blank),
        corrected_totals=totals(report.corrected),
        polymers=_fmt(report.final.total(polymers_only=True)),
        unlabelled={r: _fmt(report.raw.row_total(r)) for r in OTHER_ROWS},
        chart=_data_uri(chart_png(report)),
        images=[{"caption": image.caption, "src": _data_uri(image.png)} for image in report.images],
        fields=fields,
        particles=particles,
        more=max(0, len(report.particles) - HTML_PARTICLE_ROWS),
    )


def _csv(rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_report(report: SampleReport, folder: Path) -> dict[str, Path]:
    """Write ``report.html``, ``particles.csv`` and ``summary.csv`` into ``folder``, each atomically."""
    paths = {name: folder / name for name in ("report.html", "particles.csv", "summary.csv")}
    particles = (p.as_row(report.classes) for p in report.particles)
    atomic_write_text(paths["particles.csv"], _csv(particles, PARTICLE_FIELDS))
    atomic_write_text(paths["summary.csv"], _csv(report.summary_rows(), SUMMARY_FIELDS))
    atomic_write_text(paths["report.html"], report_html(report))
    return paths
