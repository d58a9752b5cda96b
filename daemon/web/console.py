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
build step. The drawings are in :mod:`daemon.web.charts`, the numbers they
show in :mod:`daemon.web.summary`; this module puts them into pages.

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

>>> escape('<img src=x onerror=alert(1)>.csv')
'&lt;img src=x onerror=alert(1)&gt;.csv'
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from daemon.config import Config
from daemon.web.charts import (
    HIT_COLOURS,
    QUERY_COLOUR,
    STATUS_COLOURS,
    Trace,
    bar_svg,
    escape,
    line_swatch,
    spectrum_svg,
    status_legend,
    timeline_svg,
    utc,
)
from daemon.web.summary import MAX_OVERVIEW_RESULTS, all_results, summarise
from daemon.web.http import HttpError, HttpServer, Request, Response, all_checks_pass
from daemon.store.ledger import Ledger, ReviewItem, ReviewState, StoredResult
from daemon.growth.library import LibraryGrowth
from daemon.pipeline.worker import ModelHolder
from engine.core.conventions import AcquisitionProfile, resolve
from engine.io import read_spectra
from engine.core.library import LibraryError, VersionInfo, library_log
from engine.models.served import IdentificationModel
from engine.core.spectrum import Spectrum, SpectrumError

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "REVIEW_PAGE_SIZE",
    "SECURITY_HEADERS",
    "ConsoleSource",
    "install_console",
]

logger = logging.getLogger(__name__)

#: Open reviews shown per page of /review.
REVIEW_PAGE_SIZE: Final = 20
#: Hits drawn over each unknown.
PLOTTED_HITS: Final = 3

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


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "–"


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
    profile_for: Callable[[str], AcquisitionProfile | None]


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
    results, truncated = all_results(ctx.ledger)
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
        (category, count, STATUS_COLOURS.get(category, STATUS_COLOURS["known"]))
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
        f"from {escape(utc(summary.first_at))} to {escape(utc(summary.last_at))}"
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
{bar_svg(bars, title="particles per polymer") if bars else '<p class="muted">No results yet.</p>'}
<table><tr><th>polymer or status</th><th class="n">particles</th><th class="n">share</th></tr>
{category_rows}</table></div>
<h2>Over time (per {unit}, UTC)</h2>
{timeline_svg(summary.timeline) if summary.timeline.counts else '<p class="muted">No results yet.</p>'}
<p class="small">{status_legend()}</p>
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
        f'<p class="small">{line_swatch(QUERY_COLOUR, thick=True)} this spectrum '
        + " ".join(
            f"{line_swatch(HIT_COLOURS[i])} {i + 1} {escape(h.label)}" for i, (h, _) in enumerate(hits)
        )
        + "</p>"
    )
    colours = [QUERY_COLOUR, *HIT_COLOURS]

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


def _references(model: IdentificationModel, wanted: set[int]) -> dict[int, tuple[dict[str, Any], Spectrum]]:
    """The entries and measured spectra of ``model``'s references whose ids are ``wanted``."""
    library = model.library
    return {
        int(entry["ref_id"]): (dict(entry), spectrum)
        for entry, spectrum in zip(library.entries, library.measured, strict=True)
        if entry["ref_id"] in wanted
    }


def _review_card(
    item: ReviewItem,
    model: IdentificationModel,
    references: Mapping[int, tuple[dict[str, Any], Spectrum]],
    files: _Files,
    *,
    profile: AcquisitionProfile | None = None,
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
        query = resolve(_query_spectrum(result, files), profile=profile)
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
classified {escape(utc(result.created_at))} by model {escape(result.model_version)}</p>
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
        served = ctx.models.get()
        # a result's hits are references of its technique's library (reference ids are per library)
        models = {
            item.result.id: served.model_for(item.result.payload.get("technique")) or served for item in items
        }
        references = {
            id(model): _references(model, wanted) for model in {id(m): m for m in models.values()}.values()
        }
    files = _Files()
    cards = "\n".join(
        _review_card(
            item,
            models[item.result.id],
            references[id(models[item.result.id])],
            files,
            profile=ctx.profile_for(item.result.source_path),
        )
        for item in items
    )
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
    bars = [(label, count, STATUS_COLOURS["known"]) for label, count in list(classes.items())[:30]]
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
<div class="split">{bar_svg(bars, title="references per class") if bars else ""}
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

    def profile_for(self, path: str | Path) -> AcquisitionProfile | None: ...


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
        profile_for=daemon.profile_for,
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
