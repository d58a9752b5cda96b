"""The review console: web pages where an analyst sees what the daemon found, reviews unknowns and confirms.

| method | path | page |
|---|---|---|
| GET | / | overview: particles per sample folder, per polymer and over time; rates, versions, health |
| GET | /review | the open review queue (``?offset=``); each unknown plotted over its best library hits |
| GET | /library | classes and counts, version history, a rollback button per version |
| GET | /console.js | the pages' one script (served, never inlined, so the policy can forbid inline script) |

The pages are rendered on the server from the ledger, the served model and the
library folder; every value that comes from a file, a label, a path or the
configuration passes through :func:`html.escape` before it reaches the page.
Spectra are drawn as inline SVG, so the console needs no external asset and no
build step.

The pages only read. Every change goes through the JSON API
(``POST /api/confirm``, ``POST /api/library/rollback``) with ``fetch``, so the
same checks and the same library versioning apply as for any other client:
writes must be ``application/json`` (a cross-site form cannot send that without
a CORS preflight, which this server never grants), and when ``http.token`` is
set they need ``Authorization: Bearer <token>``. The analyst types the token
into a field on the page; it is kept in the tab's ``sessionStorage`` only.

Every console response carries :data:`SECURITY_HEADERS`: a Content-Security-Policy
that allows only the console's own script, the page's own (hashed) stylesheet
and requests back to this origin, forbids framing (``frame-ancestors 'none'``),
forms and plugins; ``X-Content-Type-Options: nosniff``; no caching.

>>> time_buckets([0.0, 10.0, 3700.0], now=7300.0).bucket_seconds
3600
>>> escape('<img src=x onerror=alert(1)>.csv')
'&lt;img src=x onerror=alert(1)&gt;.csv'
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from daemon.config import Config
from daemon.http import HttpError, HttpServer, Request, Response, all_checks_pass
from daemon.ledger import Ledger, ResultStatus, ReviewItem, ReviewState, StoredResult
from daemon.retrain import LibraryGrowth
from daemon.worker import ModelHolder
from engine.io import read_spectra
from engine.library import LibraryError, VersionInfo, library_log
from engine.model import IdentificationModel
from engine.spectrum import Spectrum, SpectrumError

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "REVIEW_PAGE_SIZE",
    "SECURITY_HEADERS",
    "ConsoleSource",
    "Overview",
    "Timeline",
    "Trace",
    "escape",
    "install_console",
    "sample_folder",
    "spectrum_svg",
    "summarise",
    "time_buckets",
]

logger = logging.getLogger(__name__)

#: Open reviews shown per page of /review.
REVIEW_PAGE_SIZE: Final = 20
#: Hits drawn over each unknown.
PLOTTED_HITS: Final = 3
#: Results the overview reads at most (the newest are what matter once this is exceeded).
MAX_OVERVIEW_RESULTS: Final = 200_000
_PAGE: Final = 5000
#: Points per drawn curve at most; the 901-point model grid is thinned to this.
_MAX_POINTS: Final = 451

#: Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
_STATUS_COLOURS: Final = {"known": "#0072B2", "unknown": "#E69F00", "low_quality": "#8C8C8C"}
_QUERY_COLOUR: Final = "#111111"
_HIT_COLOURS: Final = ("#D55E00", "#0072B2", "#009E73")

_CSS: Final = """
:root { color-scheme: light; --ink: #1b1f24; --muted: #59636e; --line: #d0d7de; --panel: #f6f8fa;
  --accent: #0b5cad; --good: #1a7f37; --bad: #cf222e; --warn: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink); background: #fff; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem 1.5rem; padding: 0.6rem 1.2rem;
  border-bottom: 1px solid var(--line); background: var(--panel); }
header .brand { font-weight: 700; font-size: 1.1rem; }
nav a { margin-right: 1rem; color: var(--accent); text-decoration: none; padding: 0.2rem 0; }
nav a.active { font-weight: 700; border-bottom: 2px solid var(--accent); }
.who { margin-left: auto; display: flex; flex-wrap: wrap; gap: 0.4rem 0.8rem; align-items: center;
  font-size: 0.85rem; color: var(--muted); }
.who input { width: 9rem; }
main { padding: 0.8rem 1.2rem 2rem; max-width: 1200px; }
h1 { font-size: 1.4rem; margin: 0.4rem 0 0.8rem; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 0.5rem; }
h3 { font-size: 1rem; margin: 0 0 0.3rem; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: 0.6rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 0.7rem; background: #fff; }
.card .k { font-size: 0.8rem; color: var(--muted); }
.card .v { font-size: 1.25rem; font-weight: 600; }
table { border-collapse: collapse; margin: 0.3rem 0 0.8rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid var(--line); padding: 0.25rem 0.6rem; text-align: left;
  vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: var(--good); font-weight: 600; }
.fail { color: var(--bad); font-weight: 600; }
.muted { color: var(--muted); }
.small { font-size: 0.8rem; }
.path { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.8rem; color: var(--muted);
  word-break: break-all; }
.badge { display: inline-block; padding: 0 0.4rem; border-radius: 4px; font-size: 0.8rem;
  border: 1px solid var(--line); background: var(--panel); margin-right: 0.25rem; }
.badge.flag { border-color: #e6a23c; background: #fff8e6; color: var(--warn); }
.review { border: 1px solid var(--line); border-radius: 6px; padding: 0.7rem 0.9rem; margin: 0 0 1rem; }
.review.decided { opacity: 0.75; background: var(--panel); }
.review .grid { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1rem; }
@media (max-width: 900px) { .review .grid { grid-template-columns: 1fr; } }
.actions { display: flex; flex-wrap: wrap; gap: 0.4rem; align-items: center; margin-top: 0.5rem; }
button { font: inherit; font-size: 0.9rem; padding: 0.25rem 0.7rem; border-radius: 5px; cursor: pointer;
  border: 1px solid #8c959f; background: #fff; }
button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
button.danger { color: var(--bad); border-color: var(--bad); }
button:disabled { opacity: 0.5; cursor: default; }
input[type=text], input[type=password] { font: inherit; font-size: 0.9rem; padding: 0.2rem 0.4rem;
  border: 1px solid #8c959f; border-radius: 4px; }
.status { min-height: 1.2rem; font-size: 0.9rem; margin: 0.4rem 0 0; }
.status.ok { color: var(--good); } .status.error { color: var(--bad); } .status.busy { color: var(--muted); }
svg { max-width: 100%; height: auto; }
svg text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: #444; }
details summary { cursor: pointer; color: var(--accent); font-size: 0.85rem; }
.split { display: flex; flex-wrap: wrap; gap: 0.5rem 2rem; align-items: flex-start; }
.pager { display: flex; gap: 1rem; margin: 0.5rem 0 1rem; }
#flash:empty { display: none; }
"""


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


#: The console's Content-Security-Policy: its own script, its own hashed stylesheet, fetch to itself.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        f"style-src '{_csp_hash(_CSS)}'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

#: Headers on every console response.
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_HTML: Final = "text/html; charset=utf-8"
_ACTIVE: Final = ' class="active" aria-current="page"'
_JS: Final = "text/javascript; charset=utf-8"


def escape(value: object) -> str:
    """``value`` as text safe inside HTML content and quoted attributes."""
    return html.escape(str(value), quote=True)


def _utc(epoch: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return time.strftime(fmt, time.gmtime(epoch)) + " UTC"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "–"


# --------------------------------------------------------------------------- summaries


def sample_folder(source: str, inboxes: Sequence[tuple[str, Path]]) -> str:
    """The sample folder of a spectrum file, named ``<inbox>/<folder inside it>``.

    >>> sample_folder("/data/ftir/2024-05/filter-3/p1.csv", [("ftir", Path("/data/ftir"))])
    'ftir/2024-05/filter-3'
    >>> sample_folder("/data/ftir/p1.csv", [("ftir", Path("/data/ftir"))])
    'ftir'
    >>> sample_folder("/elsewhere/p1.csv", [("ftir", Path("/data/ftir"))])
    '/elsewhere'
    """
    parent = Path(source).parent
    for name, root in inboxes:
        if parent == root or root in parent.parents:
            inside = parent.relative_to(root).as_posix()
            return name if inside == "." else f"{name}/{inside}"
    return str(parent)


def _category(result: StoredResult) -> str:
    """What a result counts as: its polymer label when known, else its status."""
    if result.status is ResultStatus.KNOWN and result.label:
        return result.label
    return str(result.status)


@dataclass(frozen=True)
class Timeline:
    """Results per time bucket (an hour or a day), oldest first, by status."""

    bucket_seconds: int
    starts: list[float]
    counts: list[Counter[str]]


def time_buckets(
    created: Iterable[float],
    *,
    now: float,
    statuses: Iterable[str] = (),
    max_buckets: int = 48,
    pad: bool = False,
) -> Timeline:
    """Bucket result times by hour (data spanning up to two days) or by day, up to ``now``.

    ``statuses`` runs parallel to ``created``; without it every result counts as ``known``.
    ``pad`` shows at least the last 24 hours or 14 days, so a young daemon's chart still
    reads as a timeline.

    >>> timeline = time_buckets([0.0, 100.0, 7300.0], now=7300.0, statuses=["known", "unknown", "known"])
    >>> [dict(c) for c in timeline.counts]
    [{'known': 1, 'unknown': 1}, {}, {'known': 1}]
    """
    times = list(created)
    kinds = list(statuses) or ["known"] * len(times)
    if not times:
        return Timeline(3600, [], [])
    first = min(times)
    size = 3600 if now - first <= 2 * 86400 else 86400
    last_bucket = math.floor(max(now, max(times)) / size)
    first_bucket = max(math.floor(first / size), last_bucket - max_buckets + 1)
    if pad:
        first_bucket = min(first_bucket, last_bucket - (24 if size == 3600 else 14) + 1)
    counts = [Counter[str]() for _ in range(last_bucket - first_bucket + 1)]
    for t, kind in zip(times, kinds, strict=True):
        index = math.floor(t / size) - first_bucket
        if index >= 0:
            counts[index][kind] += 1
    return Timeline(size, [float((first_bucket + i) * size) for i in range(len(counts))], counts)


@dataclass(frozen=True)
class Overview:
    """What the overview page shows, computed from stored results."""

    total: int
    by_status: Counter[str]
    by_category: Counter[str]
    by_folder: dict[str, Counter[str]]
    timeline: Timeline
    truncated: bool = False
    first_at: float | None = None
    last_at: float | None = None
    recent: Counter[str] = field(default_factory=Counter)


def summarise(
    results: Sequence[StoredResult],
    *,
    inboxes: Sequence[tuple[str, Path]],
    now: float,
    truncated: bool = False,
) -> Overview:
    """Counts per status, per polymer, per sample folder and over time, plus the last 24 h by status."""
    by_status: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    by_folder: dict[str, Counter[str]] = {}
    recent: Counter[str] = Counter()
    for r in results:
        status = str(r.status)
        by_status[status] += 1
        category = _category(r)
        by_category[category] += 1
        by_folder.setdefault(sample_folder(r.source_path, inboxes), Counter())[category] += 1
        if r.created_at >= now - 86400:
            recent[status] += 1
    timeline = time_buckets(
        [r.created_at for r in results], now=now, statuses=[str(r.status) for r in results], pad=True
    )
    return Overview(
        total=len(results),
        by_status=by_status,
        by_category=by_category,
        by_folder=dict(sorted(by_folder.items())),
        timeline=timeline,
        truncated=truncated,
        first_at=min((r.created_at for r in results), default=None),
        last_at=max((r.created_at for r in results), default=None),
        recent=recent,
    )


def _all_results(ledger: Ledger) -> tuple[list[StoredResult], bool]:
    out: list[StoredResult] = []
    while len(out) < MAX_OVERVIEW_RESULTS:
        page = ledger.results(limit=_PAGE, offset=len(out))
        out.extend(page)
        if len(page) < _PAGE:
            return out, False
    return out, True


# --------------------------------------------------------------------------- SVG


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


def _bar_svg(rows: Sequence[tuple[str, int, str]], *, title: str, width: int = 560) -> str:
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


def _timeline_svg(timeline: Timeline, *, width: int = 720, height: int = 190) -> str:
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
        label = _utc(start, fmt)
        summary = ", ".join(f"{counts.get(s, 0)} {s.replace('_', ' ')}" for s in _STATUS_COLOURS)
        for status, colour in _STATUS_COLOURS.items():
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
            f"{escape(_utc(timeline.starts[i], fmt))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend() -> str:
    return " ".join(
        f'<svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true"><rect width="12" height="12" '
        f'fill="{colour}"/></svg> {escape(status.replace("_", " "))}'
        for status, colour in _STATUS_COLOURS.items()
    )


def _swatch(colour: str, *, thick: bool = False) -> str:
    return (
        '<svg width="22" height="10" viewBox="0 0 22 10" aria-hidden="true">'
        '<line x1="1" y1="5" x2="21" y2="5" '
        f'stroke="{colour}" stroke-width="{3 if thick else 2}"/></svg>'
    )


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class _Context:
    ledger: Ledger
    models: ModelHolder
    library_dir: Callable[[], Path]
    readiness: Callable[[], Mapping[str, object]]
    inboxes: Callable[[], Sequence[tuple[str, Path]]]
    token_required: bool
    clock: Callable[[], float]


def _page(ctx: _Context, *, title: str, active: str, body: str) -> Response:
    open_reviews = ctx.ledger.review_counts()[ReviewState.OPEN]
    links = [
        ("/", "Overview", "overview"),
        ("/review", f"Review ({open_reviews})", "review"),
        ("/library", "Library", "library"),
    ]
    nav = "".join(
        f'<a href="{href}"{_ACTIVE if key == active else ""}>{escape(text)}</a>' for href, text, key in links
    )
    token = (
        '<label>write token <input type="password" id="token" autocomplete="off" '
        'placeholder="needed to confirm"></label> <button type="button" id="token-save">Use</button> '
        '<button type="button" id="token-forget">Forget</button> <span id="token-state"></span>'
        if ctx.token_required
        else '<span title="http.token is not set">writes need no token</span>'
    )
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · mpwatch</title>
<style>{_CSS}</style>
</head><body data-token-required="{str(ctx.token_required).lower()}">
<header><span class="brand">mpwatch</span><nav>{nav}</nav>
<div class="who"><label>analyst
<input type="text" id="analyst" autocomplete="off" placeholder="your name"></label>
{token}</div></header>
<main><p id="flash" class="status ok" aria-live="polite"></p>
{body}
</main>
<script src="/console.js"></script>
</body></html>
"""
    return Response(HTTPStatus.OK, document.encode("utf-8"), _HTML, dict(SECURITY_HEADERS))


def _check(value: object) -> str:
    return '<span class="ok">ok</span>' if value else '<span class="fail">failing</span>'


def _health(checks: Mapping[str, object]) -> str:
    rows = []
    for name, value in checks.items():
        if isinstance(value, Mapping):
            if not value:
                rows.append(f'<tr><td>{escape(name)}</td><td class="muted">none configured</td></tr>')
            for inner, ok in value.items():
                rows.append(f"<tr><td>{escape(name)}: {escape(inner)}</td><td>{_check(ok)}</td></tr>")
        else:
            rows.append(f"<tr><td>{escape(name)}</td><td>{_check(value)}</td></tr>")
    return f"<table><tr><th>check</th><th>state</th></tr>{''.join(rows)}</table>"


def _card(key: str, value: str, *, note: str = "") -> str:
    extra = f'<div class="small muted">{note}</div>' if note else ""
    return f'<div class="card"><div class="k">{escape(key)}</div><div class="v">{value}</div>{extra}</div>'


def _overview(ctx: _Context, request: Request) -> Response:
    now = ctx.clock()
    results, truncated = _all_results(ctx.ledger)
    summary = summarise(results, inboxes=list(ctx.inboxes()), now=now, truncated=truncated)
    model = ctx.models.get()
    library = model.library
    try:
        checks: Mapping[str, object] = dict(ctx.readiness())
    except Exception as exc:
        logger.exception("the readiness checks failed while rendering the overview")
        checks = {"readiness checks": False}
        health_note = f'<p class="fail">readiness checks failed: {escape(exc)}</p>'
    else:
        health_note = ""
    files = {str(state): n for state, n in ctx.ledger.counts().items()}
    reviews = {str(state): n for state, n in ctx.ledger.review_counts().items()}
    status = summary.by_status
    recent_total = sum(summary.recent.values())
    cards = "".join(
        [
            _card("spectra classified", escape(summary.total), note=f"{recent_total} in the last 24 h"),
            _card("known", escape(status.get("known", 0)), note=_pct(status.get("known", 0), summary.total)),
            _card(
                "unknown rate",
                escape(_pct(status.get("unknown", 0), summary.total)),
                note=f"last 24 h: {escape(_pct(summary.recent.get('unknown', 0), recent_total))}",
            ),
            _card(
                "low-quality rate",
                escape(_pct(status.get("low_quality", 0), summary.total)),
                note=f"last 24 h: {escape(_pct(summary.recent.get('low_quality', 0), recent_total))}",
            ),
            _card(
                "open reviews",
                f'<a href="/review">{escape(reviews.get("open", 0))}</a>',
                note=f"{reviews.get('confirmed', 0)} confirmed, {reviews.get('rejected', 0)} rejected",
            ),
            _card("model version", escape(model.version)),
            _card(
                "library version",
                escape(library.version or 0),
                note=f"{len(library)} references, {len(library.class_counts())} classes",
            ),
            _card(
                "files",
                escape(files.get("done", 0)) + " done",
                note=escape(", ".join(f"{n} {s}" for s, n in files.items() if s != "done")),
            ),
        ]
    )
    ready = all_checks_pass(checks)
    bars = [
        (category, count, _STATUS_COLOURS.get(category, _STATUS_COLOURS["known"]))
        for category, count in summary.by_category.most_common(24)
    ]
    category_rows = "".join(
        f'<tr><td>{escape(category)}</td><td class="n">{count}</td>'
        f'<td class="n">{escape(_pct(count, summary.total))}</td></tr>'
        for category, count in summary.by_category.most_common()
    )
    folder_rows = "".join(
        f'<tr><td class="path">{escape(folder)}</td><td class="n">{sum(counts.values())}</td>'
        + "".join(f'<td class="n">{counts.get(s, 0)}</td>' for s in ("unknown", "low_quality"))
        + "<td>"
        + escape(
            ", ".join(
                f"{label} {n}" for label, n in counts.most_common() if label not in ("unknown", "low_quality")
            )
            or "–"
        )
        + "</td></tr>"
        for folder, counts in summary.by_folder.items()
    )
    span = (
        f"from {escape(_utc(summary.first_at))} to {escape(_utc(summary.last_at))}"
        if summary.first_at is not None and summary.last_at is not None
        else "no results yet"
    )
    note = (
        f'<p class="fail">Only the first {MAX_OVERVIEW_RESULTS} results are counted here.</p>'
        if summary.truncated
        else ""
    )
    unit = "hour" if summary.timeline.bucket_seconds == 3600 else "day"
    body = f"""<h1>Overview</h1>
<div class="cards">{cards}</div>
{note}
<h2>Health: <span class="{"ok" if ready else "fail"}">{"ready" if ready else "not ready"}</span></h2>
{health_note}{_health(checks)}
<h2>Particles per polymer</h2>
<p class="small muted">All results, {span}. Unknown and low-quality spectra are counted by status.</p>
<div class="split">
{_bar_svg(bars, title="particles per polymer") if bars else '<p class="muted">No results yet.</p>'}
<table><tr><th>polymer or status</th><th class="n">particles</th><th class="n">share</th></tr>
{category_rows}</table></div>
<h2>Over time (per {unit}, UTC)</h2>
{_timeline_svg(summary.timeline) if summary.timeline.counts else '<p class="muted">No results yet.</p>'}
<p class="small">{_legend()}</p>
<h2>Per sample folder</h2>
<table><tr><th>sample folder</th><th class="n">particles</th><th class="n">unknown</th>
<th class="n">low quality</th><th>polymers</th></tr>
{folder_rows or '<tr><td colspan="5" class="muted">none</td></tr>'}</table>
"""
    return _page(ctx, title="Overview", active="overview", body=body)


@dataclass(frozen=True)
class _HitRef:
    label: str
    material: str
    r: float | None
    ref_id: int | None
    source: str


def _hits(payload: Mapping[str, Any]) -> list[_HitRef]:
    out = []
    for hit in payload.get("hits") or []:
        if not isinstance(hit, Mapping):
            continue
        r = hit.get("r")
        ref_id = hit.get("ref_id")
        out.append(
            _HitRef(
                label=str(hit.get("label") or "?"),
                material=str(hit.get("material") or ""),
                r=float(r) if isinstance(r, int | float) else None,
                ref_id=int(ref_id) if isinstance(ref_id, int) else None,
                source=str(hit.get("source") or ""),
            )
        )
    return out


class _Files:
    """The spectrum files one page needs, each read once (a map's spectra share one file)."""

    def __init__(self) -> None:
        self._read: dict[str, list[Spectrum] | LookupError] = {}

    def spectra(self, path: str) -> list[Spectrum]:
        if path not in self._read:
            try:
                self._read[path] = read_spectra(path)
            except (SpectrumError, OSError) as exc:
                self._read[path] = LookupError(f"cannot re-read the file: {exc}")
        found = self._read[path]
        if isinstance(found, LookupError):
            raise found
        return found


def _query_spectrum(result: StoredResult, files: _Files) -> Spectrum:
    """Re-read the spectrum a result was made from; refuse it if the file changed since."""
    spectra = files.spectra(result.source_path)
    if result.spectrum_index >= len(spectra):
        raise LookupError(f"the file no longer holds spectrum {result.spectrum_index}")
    spectrum = spectra[result.spectrum_index]
    if spectrum.metadata.get("sha256") not in (None, result.sha256):
        raise LookupError("the file changed since it was classified")
    return spectrum


def _plots(
    model: IdentificationModel, query: Spectrum, hits: Sequence[tuple[_HitRef, Spectrum]], *, result_id: int
) -> str:
    """The query over its hits: absorbance on the model grid, and (folded) the model's features."""
    grid_rows, features = model.features([query, *(s for _, s in hits)])
    wavenumbers = model.library.grid.wavenumbers
    descending = query.technique != "raman"
    names = ["this spectrum", *(f"hit {i + 1}: {h.label} (r = {h.r})" for i, (h, _) in enumerate(hits))]
    legend = (
        f'<p class="small">{_swatch(_QUERY_COLOUR, thick=True)} this spectrum '
        + " ".join(f"{_swatch(_HIT_COLOURS[i])} {i + 1} {escape(h.label)}" for i, (h, _) in enumerate(hits))
        + "</p>"
    )
    colours = [_QUERY_COLOUR, *_HIT_COLOURS]

    def traces(rows: npt.NDArray[np.float32]) -> list[Trace]:
        out = [Trace(names[i], rows[i], colours[i], 1.4) for i in range(1, len(names))]
        out.append(Trace(names[0], rows[0], colours[0], 2.2))  # the query on top
        return out

    absorbance = spectrum_svg(
        wavenumbers,
        traces(grid_rows),
        title=f"result {result_id}: absorbance over the top hits",
        y_label="absorbance (scaled)",
        descending=descending,
    )
    derivative = spectrum_svg(
        wavenumbers,
        traces(features),
        title=f"result {result_id}: model features over the top hits",
        y_label="features (scaled)",
        descending=descending,
    )
    return (
        f"{absorbance}{legend}<details><summary>Model features (what Pearson r is computed on)</summary>"
        f"{derivative}</details>"
    )


def _hit_table(hits: Sequence[_HitRef], plotted: set[int | None]) -> str:
    rows = []
    for i, hit in enumerate(hits):
        swatch = _swatch(_HIT_COLOURS[i]) if i < len(_HIT_COLOURS) and hit.ref_id in plotted else ""
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


def _quality(payload: Mapping[str, Any]) -> str:
    quality = payload.get("quality")
    if not isinstance(quality, Mapping):
        return '<p class="muted small">no quality assessment stored</p>'
    flags = quality.get("flags") or []
    badges = "".join(f'<span class="badge flag">{escape(flag)}</span>' for flag in flags) or (
        '<span class="badge">no flags</span>'
    )
    details = ", ".join(
        f"{escape(key)} {escape(quality[key])}" for key in ("snr", "coverage", "n_spikes") if key in quality
    )
    return f'<p class="small">quality: {badges} <span class="muted">{details}</span></p>'


def _aging(payload: Mapping[str, Any]) -> str:
    aging = payload.get("aging")
    if not aging:
        return ""
    if not isinstance(aging, Mapping):
        return f'<p class="small">aging: {escape(aging)}</p>'
    rows = "".join(
        f"<tr><td>{escape(key)}</td><td>"
        f"{escape(value if isinstance(value, str | int | float) else json.dumps(value, ensure_ascii=False))}"
        f"</td></tr>"
        for key, value in aging.items()
    )
    return f"<table><tr><th>aging index</th><th>value</th></tr>{rows}</table>"


def _review_card(
    item: ReviewItem,
    model: IdentificationModel,
    references: Mapping[int, tuple[dict[str, Any], Spectrum]],
    files: _Files,
) -> str:
    result = item.result
    payload = result.payload
    hits = _hits(payload)
    plotted_hits = [
        (hit, references[hit.ref_id][1])
        for hit in hits[:PLOTTED_HITS]
        if hit.ref_id is not None and hit.ref_id in references
    ]
    try:
        query = _query_spectrum(result, files)
        plot = _plots(model, query, plotted_hits, result_id=result.id)
    except LookupError as exc:
        plot = f'<p class="fail">No plot: {escape(exc)}</p>'
        plotted_hits = []
    except Exception as exc:
        logger.exception("cannot plot result %d", result.id)
        plot = f'<p class="fail">No plot: {escape(type(exc).__name__)}</p>'
        plotted_hits = []
    missing = [h for h in hits[:PLOTTED_HITS] if h.ref_id not in references]
    missing_note = (
        f'<p class="small muted">Not in the served library any more: '
        f"{escape(', '.join(f'{h.label} #{h.ref_id}' for h in missing))}</p>"
        if missing
        else ""
    )
    labels = list(dict.fromkeys(h.label for h in hits[:PLOTTED_HITS]))
    confirm_buttons = "".join(
        f'<button type="button" data-action="confirm" data-label="{escape(label)}">'
        f"Confirm as {escape(label)}</button>"
        for label in labels
    )
    name = Path(result.source_path).name
    candidate = payload.get("candidate")
    facts = []
    if candidate:
        facts.append(f"best class <strong>{escape(candidate)}</strong>")
    for key, text in (("candidate_r", "its r"), ("threshold", "threshold r"), ("vote_share", "vote share")):
        if isinstance(payload.get(key), int | float):
            facts.append(f"{text} {escape(payload[key])}")
    return f"""<article class="review" id="review-{result.id}" data-result-id="{result.id}">
<h3>{escape(name)} <span class="muted small">spectrum {result.spectrum_index} · result {result.id}</span></h3>
<div class="path">{escape(result.source_path)}</div>
<p class="small">{escape(result.status)} · {" · ".join(facts) or "no candidate"} ·
classified {escape(_utc(result.created_at))} by model {escape(result.model_version)}</p>
<div class="grid"><div>{plot}</div>
<div>{_hit_table(hits[:PLOTTED_HITS], {h.ref_id for h, _ in plotted_hits})}{missing_note}
{_quality(payload)}{_aging(payload)}</div></div>
<div class="actions">{confirm_buttons}
<label>new label <input type="text" data-role="new-label" placeholder="e.g. PET" autocomplete="off"></label>
<button type="button" class="primary" data-action="confirm-new">Confirm new label</button>
<button type="button" class="danger" data-action="reject">Reject</button></div>
<p class="status" data-role="status" aria-live="polite"></p>
</article>"""


def _offset(request: Request) -> int:
    raw = request.query_value("offset", "0") or "0"
    try:
        offset = int(raw)
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "offset must be an integer") from None
    if offset < 0:
        raise HttpError(HTTPStatus.BAD_REQUEST, "offset must be >= 0")
    return offset


def _review(ctx: _Context, request: Request) -> Response:
    offset = _offset(request)
    items = ctx.ledger.open_reviews(limit=REVIEW_PAGE_SIZE, offset=offset)
    total = ctx.ledger.review_counts()[ReviewState.OPEN]
    wanted = {
        hit.ref_id
        for item in items
        for hit in _hits(item.result.payload)[:PLOTTED_HITS]
        if hit.ref_id is not None
    }
    with ctx.models.lock:  # a confirmation changes the library in place; read one consistent state
        model = ctx.models.get()
        library = model.library
        references = {
            int(entry["ref_id"]): (dict(entry), spectrum)
            for entry, spectrum in zip(library.entries, library.measured, strict=True)
            if entry["ref_id"] in wanted
        }
    files = _Files()
    cards = "\n".join(_review_card(item, model, references, files) for item in items)
    pager = []
    if offset > 0:
        pager.append(f'<a href="/review?offset={max(0, offset - REVIEW_PAGE_SIZE)}">← previous</a>')
    if offset + len(items) < total:
        pager.append(f'<a href="/review?offset={offset + REVIEW_PAGE_SIZE}">next →</a>')
    shown = f"{offset + 1}–{offset + len(items)} of {total}" if items else f"0 of {total}"
    empty = (
        '<p class="ok">Nothing to review.</p>'
        if total == 0
        else '<p class="muted">No open reviews on this page; <a href="/review">go to the first page</a>.</p>'
    )
    body = f"""<h1>Review queue</h1>
<p class="small muted">Unknown spectra, oldest first ({shown}). Each is drawn over its best library hits,
each curve scaled to its own range. Confirming adds the spectrum to the library under that label
(a new library version, served at once); open reviews are then re-checked against it, so
<a href="/review">reload</a> after a confirmation to see what is still open.</p>
<div class="pager">{"".join(pager)}</div>
{cards or empty}
<div class="pager">{"".join(pager)}</div>
"""
    return _page(ctx, title="Review", active="review", body=body)


def _library(ctx: _Context, request: Request) -> Response:
    model = ctx.models.get()
    library = model.library
    info = library.info()
    try:
        log: list[VersionInfo] = library_log(ctx.library_dir())
    except (OSError, ValueError, KeyError, LibraryError) as exc:
        logger.exception("cannot read the library history")
        log = []
        log_note = f'<p class="fail">Cannot read the version history: {escape(exc)}</p>'
    else:
        log_note = ""
    classes: dict[str, int] = info["classes"]
    class_rows = "".join(
        f'<tr><td><strong>{escape(label)}</strong></td><td class="n">{count}</td></tr>'
        for label, count in classes.items()
    )
    bars = [(label, count, _STATUS_COLOURS["known"]) for label, count in list(classes.items())[:30]]
    version_rows = []
    for v in reversed(log):
        current = v.version == library.version
        action = (
            '<span class="badge">current</span>'
            if current
            else f'<button type="button" data-action="rollback" data-version="{v.version}">'
            f"Roll back to {v.version}</button>"
        )
        version_rows.append(
            f'<tr id="version-{v.version}"><td class="n">{v.version}</td>'
            f'<td class="n">{escape(v.parent if v.parent is not None else "–")}</td>'
            f"<td>{escape(v.created_at)}</td><td>{escape(v.message)}</td>"
            f'<td class="n">{v.n_spectra}</td><td class="n">{v.n_classes}</td><td>{action}</td></tr>'
        )
    contributors = "".join(
        f'<tr><td>{escape(who)}</td><td class="n">{n}</td></tr>' for who, n in info["confirmed_by"].items()
    )
    body = f"""<h1>Library</h1>
<div class="cards">{_card("version", escape(library.version or 0))}{_card("references", escape(len(library)))}
{_card("classes", escape(len(classes)))}{_card("model", escape(model.version))}</div>
<p class="path">{escape(ctx.library_dir())}</p>
<h2>Classes</h2>
<div class="split">{_bar_svg(bars, title="references per class") if bars else ""}
<table><tr><th>label</th><th class="n">references</th></tr>{class_rows}</table></div>
<h2>Version history</h2>
<p class="small muted">A rollback makes an old version's content current again as a new version;
nothing is deleted, so it can itself be rolled back.</p>
{log_note}
<table><tr><th class="n">version</th><th class="n">parent</th><th>created</th><th>what changed</th>
<th class="n">references</th><th class="n">classes</th><th></th></tr>{"".join(version_rows)}</table>
<p class="status" id="library-status" aria-live="polite"></p>
<h2>Who confirmed the references</h2>
<table><tr><th>confirmed by</th><th class="n">references</th></tr>{contributors}</table>
"""
    return _page(ctx, title="Library", active="library", body=body)


_SCRIPT: Final = r"""// mpwatch review console: writes go to the JSON API; nothing here builds HTML from data.
"use strict";
(function () {
  const TOKEN = "mpwatch.token";
  const ANALYST = "mpwatch.analyst";
  const FLASH = "mpwatch.flash";

  function show(element, text, kind) {
    if (!element) { return; }
    element.textContent = text;
    element.className = "status " + kind;
  }

  function analyst() {
    const field = document.getElementById("analyst");
    const name = field ? field.value.trim() : "";
    return name || "console";
  }

  async function post(path, body) {
    const headers = { "Content-Type": "application/json", "Accept": "application/json" };
    const token = sessionStorage.getItem(TOKEN);
    if (token) { headers["Authorization"] = "Bearer " + token; }
    const response = await fetch(path, {
      method: "POST", headers: headers, body: JSON.stringify(body),
      credentials: "omit", cache: "no-store", redirect: "error",
    });
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) {
      const message = data && data.error ? data.error : response.status + " " + response.statusText;
      if (response.status === 401) {
        throw new Error("the daemon needs its write token: enter it at the top of the page ("
          + message + ")");
      }
      throw new Error(message);
    }
    return data;
  }

  function setUpIdentity() {
    const name = document.getElementById("analyst");
    if (name) {
      name.value = localStorage.getItem(ANALYST) || "";
      name.addEventListener("change", function () { localStorage.setItem(ANALYST, name.value.trim()); });
    }
    const field = document.getElementById("token");
    const state = document.getElementById("token-state");
    if (!field) { return; }
    function refresh() {
      if (!state) { return; }
      state.textContent = sessionStorage.getItem(TOKEN) ? "token set for this tab" : "no token set";
    }
    document.getElementById("token-save").addEventListener("click", function () {
      const value = field.value.trim();
      if (value) { sessionStorage.setItem(TOKEN, value); } else { sessionStorage.removeItem(TOKEN); }
      field.value = "";
      refresh();
    });
    document.getElementById("token-forget").addEventListener("click", function () {
      sessionStorage.removeItem(TOKEN);
      refresh();
    });
    field.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { document.getElementById("token-save").click(); }
    });
    refresh();
  }

  function describe(outcome) {
    if (outcome.kind === "rejected") { return "Rejected."; }
    let text = "Confirmed as " + outcome.label;
    if (outcome.kind === "new_class") { text += ": a new class"; }
    if (outcome.kind === "positive") { text += " (it was already known; library unchanged)"; }
    text += ". Library version " + outcome.library_version + ", model " + outcome.model_version + ".";
    if (outcome.reviews_resolved) {
      text += " " + outcome.reviews_resolved + " other open reviews are now known.";
    }
    return text;
  }

  function setUpReviews() {
    document.querySelectorAll("article.review").forEach(function (card) {
      const resultId = Number(card.dataset.resultId);
      const status = card.querySelector("[data-role=status]");
      const input = card.querySelector("[data-role=new-label]");
      const buttons = card.querySelectorAll("button[data-action]");

      async function decide(body) {
        buttons.forEach(function (b) { b.disabled = true; });
        show(status, "Sending…", "busy");
        try {
          const request = Object.assign({ result_id: resultId, decided_by: analyst() }, body);
          const outcome = await post("/api/confirm", request);
          show(status, describe(outcome), "ok");
          card.classList.add("decided");
          card.dataset.decided = outcome.kind;
        } catch (error) {
          show(status, "Not saved: " + error.message, "error");
          buttons.forEach(function (b) { b.disabled = false; });
        }
      }

      buttons.forEach(function (button) {
        button.addEventListener("click", function () {
          const action = button.dataset.action;
          if (action === "confirm") {
            decide({ label: button.dataset.label });
          } else if (action === "confirm-new") {
            const label = input.value.trim();
            if (!label) { show(status, "Type the new label first.", "error"); input.focus(); return; }
            decide({ label: label });
          } else if (action === "reject") {
            decide({ reject: true });
          }
        });
      });
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter") { card.querySelector("button[data-action=confirm-new]").click(); }
      });
    });
  }

  function setUpRollback() {
    const status = document.getElementById("library-status");
    document.querySelectorAll("button[data-action=rollback]").forEach(function (button) {
      button.addEventListener("click", async function () {
        const version = Number(button.dataset.version);
        if (!window.confirm("Make library version " + version + " current again?\n\n"
            + "It becomes a new version; the daemon serves it at once.")) { return; }
        button.disabled = true;
        show(status, "Rolling back…", "busy");
        try {
          const outcome = await post("/api/library/rollback", { version: version });
          sessionStorage.setItem(FLASH, "Version " + outcome.restored + " restored as library version "
            + outcome.library_version + " (model " + outcome.model_version + ").");
          window.location.reload();
        } catch (error) {
          show(status, "Not rolled back: " + error.message, "error");
          button.disabled = false;
        }
      });
    });
  }

  function showFlash() {
    const message = sessionStorage.getItem(FLASH);
    if (message) {
      sessionStorage.removeItem(FLASH);
      show(document.getElementById("flash"), message, "ok");
    }
  }

  showFlash();
  setUpIdentity();
  setUpReviews();
  setUpRollback();
})();
"""


class ConsoleSource(Protocol):
    """What the console reads from the daemon (:class:`daemon.service.Daemon` is one)."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def models(self) -> ModelHolder: ...

    @property
    def growth(self) -> LibraryGrowth: ...

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    def readiness(self) -> Mapping[str, Any]: ...


def install_console(server: HttpServer, *, daemon: ConsoleSource) -> None:
    """Register the console's pages on ``server`` (where the JSON API is installed too).

    Everything is read from ``daemon`` when a page is rendered: the ledger (results,
    review queue), the served model and its library (classes, grid, reference
    spectra), the library folder (version history), the readiness checks (health),
    and the configured inboxes (to name sample folders). Whether writes need a token
    is fixed here, as the API fixes its token when it is installed.
    """
    ctx = _Context(
        ledger=daemon.ledger,
        models=daemon.models,
        library_dir=lambda: daemon.growth.library_dir,
        readiness=daemon.readiness,
        inboxes=lambda: [(inbox.name, inbox.path) for inbox in daemon.config.inboxes],
        token_required=bool(daemon.config.http.token),
        clock=daemon.clock,
    )

    def page(render: Callable[[_Context, Request], Response]) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            return render(ctx, request)

        return handler

    def script(request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return Response(HTTPStatus.OK, _SCRIPT.encode("utf-8"), _JS, headers)

    server.add_route("GET", "/", page(_overview))
    server.add_route("GET", "/review", page(_review))
    server.add_route("GET", "/library", page(_library))
    server.add_route("GET", "/console.js", script)
