"""The review console's drawings: spectra, bar charts and timelines as inline SVG.

Each drawing is a string of SVG that goes straight into a page, so the console
needs no external asset, no drawing script and no build step. Every label, title
and name that reaches a drawing passes through :func:`escape`. The colours are
Okabe-Ito, so classes and statuses stay apart for the common colour-vision
deficiencies.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from daemon.web.summary import Timeline

if TYPE_CHECKING:
    from daemon.web.context import HitRef
    from engine.core.spectrum import Spectrum
    from engine.models.served import IdentificationModel

__all__ = [
    "HIT_COLOURS",
    "QUERY_COLOUR",
    "STATUS_COLOURS",
    "Trace",
    "bar_svg",
    "escape",
    "evidence_plots",
    "hit_table",
    "line_swatch",
    "spectrum_svg",
    "status_legend",
    "timeline_svg",
    "utc",
]

#: Points per drawn curve at most; the 901-point model grid is thinned to this.
_MAX_POINTS: Final = 451

#: Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
STATUS_COLOURS: Final = {
    "known": "#0072B2",
    "unknown": "#E69F00",
    "low_quality": "#8C8C8C",
    "rejected": "#CC79A7",
}
QUERY_COLOUR: Final = "#111111"
HIT_COLOURS: Final = ("#D55E00", "#0072B2", "#009E73")


def escape(value: object) -> str:
    """``value`` as text safe inside HTML content and quoted attributes."""
    return html.escape(str(value), quote=True)


def utc(epoch: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """``epoch`` as UTC text, for a page or an axis label."""
    return time.strftime(fmt, time.gmtime(epoch)) + " UTC"


@dataclass(frozen=True)
class Trace:
    """One curve of a spectrum plot: values on the plot's wavenumbers (NaN where not measured)."""

    name: str
    values: npt.NDArray[np.floating[Any]]
    colour: str
    width: float = 1.2


def _scaled(values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    y = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(y)
    if not finite.any():
        return y
    lo, hi = float(np.min(y[finite])), float(np.max(y[finite]))
    return (y - lo) / (hi - lo) if hi > lo else np.where(finite, 0.5, np.nan)


def spectrum_svg(
    wavenumbers: npt.NDArray[np.floating[Any]],
    traces: Sequence[Trace],
    *,
    title: str,
    y_label: str,
    descending: bool = True,
    width: int = 680,
    height: int = 230,
) -> str:
    """Curves over a wavenumber axis as an inline SVG, each scaled to its own range (shapes compare).

    NaN points break a curve. ``descending`` draws high wavenumbers on the left, as
    infrared spectra are read.

    >>> curve = Trace("q", np.array([0.0, 1.0, np.nan]), "#111")
    >>> svg = spectrum_svg(np.array([400.0, 2000.0, 4000.0]), [curve], title="<q>", y_label="A")
    >>> "<polyline" in svg and "&lt;q&gt;" in svg and "<q>" not in svg
    True
    """
    x = np.asarray(wavenumbers, dtype=np.float64)
    left, right, top, bottom = 46, 12, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo or 1.0

    def px(w: float) -> float:
        fraction = (hi - w) / span if descending else (w - lo) / span
        return left + fraction * plot_w

    def py(v: float) -> float:
        return top + (1.0 - v) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>',
    ]
    step = 500.0 if span > 1500 else 100.0
    tick = math.ceil(lo / step) * step
    while tick <= hi:
        tx = px(tick)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{top + plot_h}" stroke="#eef1f4"/>'
            f'<text x="{tx:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick:.0f}</text>'
        )
        tick += step
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle">wavenumber / cm⁻¹</text>'
        f'<text transform="translate(12 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    thin = max(1, math.ceil(x.size / _MAX_POINTS))
    for trace in traces:
        y = _scaled(trace.values)
        keep = np.arange(0, x.size, thin)
        segment: list[str] = []
        segments: list[list[str]] = []
        for i in keep:
            if np.isfinite(y[i]):
                segment.append(f"{px(float(x[i])):.1f},{py(float(y[i])):.1f}")
            elif segment:
                segments.append(segment)
                segment = []
        if segment:
            segments.append(segment)
        for points in segments:
            parts.append(
                f'<polyline fill="none" stroke="{escape(trace.colour)}" stroke-width="{trace.width}" '
                f'stroke-linejoin="round" points="{" ".join(points)}">'
                f"<title>{escape(trace.name)}</title></polyline>"
            )
    parts.append("</svg>")
    return "".join(parts)


def bar_svg(rows: Sequence[tuple[str, int, str]], *, title: str, width: int = 560) -> str:
    """Horizontal bars: (label, count, colour) per row."""
    row_h, label_w, count_w = 22, 130, 60
    height = row_h * len(rows) + 8
    top = max((count for _, count, _ in rows), default=0) or 1
    bar_w = width - label_w - count_w
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for i, (label, count, colour) in enumerate(rows):
        y = 4 + i * row_h
        length = max(1.0, bar_w * count / top)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row_h - 6}" fill="{colour}">'
            f"<title>{escape(label)}: {count}</title></rect>"
            f'<text x="{label_w + length + 5:.1f}" y="{y + 15}">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(timeline: Timeline, *, width: int = 720, height: int = 190) -> str:
    """Stacked columns per time bucket: known, unknown, low quality."""
    left, right, top, bottom = 40, 10, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(timeline.counts)
    peak = max((sum(c.values()) for c in timeline.counts), default=0) or 1
    unit = "hour" if timeline.bucket_seconds == 3600 else "day"
    fmt = "%m-%d %H:00" if unit == "hour" else "%Y-%m-%d"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="spectra classified per {unit}">'
        f"<title>spectra classified per {unit}</title>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#8c959f"/>',
        f'<text x="{left - 6}" y="{top + 9}" text-anchor="end">{peak}</text>'
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    slot = plot_w / max(n, 1)
    bar = min(slot * 0.8, 40.0)
    for i, (start, counts) in enumerate(zip(timeline.starts, timeline.counts, strict=True)):
        x = left + (i + 0.5) * slot - bar / 2
        base = float(top + plot_h)
        label = utc(start, fmt)
        summary = ", ".join(f"{counts.get(s, 0)} {s.replace('_', ' ')}" for s in STATUS_COLOURS)
        for status, colour in STATUS_COLOURS.items():
            count = counts.get(status, 0)
            if not count:
                continue
            h = plot_h * count / peak
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(label)}: {escape(summary)}</title></rect>"
            )
    for i in sorted({0, n // 2, n - 1}) if n else []:
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        tx = left if anchor == "start" else left + plot_w if anchor == "end" else left + (i + 0.5) * slot
        parts.append(
            f'<text x="{tx:.1f}" y="{height - 8}" text-anchor="{anchor}">'
            f"{escape(utc(timeline.starts[i], fmt))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def status_legend() -> str:
    """A colour key to the result statuses, as drawn by :func:`timeline_svg`."""
    return " ".join(
        f'<svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true"><rect width="12" height="12" '
        f'fill="{colour}"/></svg> {escape(status.replace("_", " "))}'
        for status, colour in STATUS_COLOURS.items()
    )


def line_swatch(colour: str, *, thick: bool = False) -> str:
    """A short line in ``colour``, the key to one curve of :func:`spectrum_svg`."""
    return (
        '<svg width="22" height="10" viewBox="0 0 22 10" aria-hidden="true">'
        '<line x1="1" y1="5" x2="21" y2="5" '
        f'stroke="{colour}" stroke-width="{3 if thick else 2}"/></svg>'
    )


def evidence_plots(
    model: IdentificationModel, query: Spectrum, hits: Sequence[tuple[HitRef, Spectrum]], *, title: str
) -> str:
    """The query over its hits: absorbance on the model grid, and (folded) the model's features;
    ``title`` names the query ("result 12", "particle 7")."""
    grid_rows, features = model.features([query, *(s for _, s in hits)])
    wavenumbers = model.library.grid.wavenumbers
    descending = query.technique != "raman"
    names = ["this spectrum", *(f"hit {i + 1}: {h.label} (r = {h.r})" for i, (h, _) in enumerate(hits))]
    legend = (
        f'<p class="small">{line_swatch(QUERY_COLOUR, thick=True)} this spectrum '
        + " ".join(
            f"{line_swatch(HIT_COLOURS[i])} {i + 1} {escape(h.label)}" for i, (h, _) in enumerate(hits)
        )
        + "</p>"
    )
    colours = [QUERY_COLOUR, *HIT_COLOURS]

    def plot(rows: npt.NDArray[np.float32], what: str, y_label: str) -> str:
        traces = [Trace(names[i], rows[i], colours[i], 1.4) for i in range(1, len(names))]
        traces.append(Trace(names[0], rows[0], colours[0], 2.2))  # the query on top
        heading = f"{title}: {what} over the top hits"
        return spectrum_svg(wavenumbers, traces, title=heading, y_label=y_label, descending=descending)

    absorbance = plot(grid_rows, "absorbance", "absorbance (scaled)")
    derivative = plot(features, "model features", "features (scaled)")
    return (
        f"{absorbance}{legend}<details><summary>Model features (what Pearson r is computed on)</summary>"
        f"{derivative}</details>"
    )


def hit_table(hits: Sequence[HitRef], plotted: set[int | None]) -> str:
    """The best hits: rank (with its curve's colour where ``plotted`` drew it), label, material, r, id."""
    rows = []
    for i, hit in enumerate(hits):
        swatch = line_swatch(HIT_COLOURS[i]) if i < len(HIT_COLOURS) and hit.ref_id in plotted else ""
        r = f"{hit.r:.3f}" if hit.r is not None else "–"
        rows.append(
            f"<tr><td>{swatch} {i + 1}</td><td><strong>{escape(hit.label)}</strong></td>"
            f'<td>{escape(hit.material)}</td><td class="n">{escape(r)}</td>'
            f'<td class="n">{escape(hit.ref_id if hit.ref_id is not None else "–")}</td></tr>'
        )
    return (
        '<table><tr><th>#</th><th>label</th><th>material</th><th class="n">Pearson r</th>'
        f'<th class="n">ref id</th></tr>{"".join(rows)}</table>'
    )
