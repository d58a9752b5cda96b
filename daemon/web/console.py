"""The review console: web pages where an analyst sees what the daemon found, reviews unknowns and confirms.

| method | path | page |
|---|---|---|
| GET | / | overview: particles per sample folder, per polymer and over time; rates, versions, health |
| GET | /review | the open review queue (``?offset=``): its clusters, then each unknown over its best hits |
| GET | /library | classes and counts, version history, a rollback button per version |
| GET | /maps | imaging maps drawn with their particles (:mod:`daemon.web.maps`) |
| GET | /console.js | the pages' one script (served, never inlined, so the policy can forbid inline script) |

The pages are rendered on the server from the ledger, the served model and the
library folder; every value that comes from a file, a label, a path or the
configuration passes through :func:`html.escape` before it reaches the page.
Spectra are drawn as inline SVG, so the console needs no external asset and no
build step; its stylesheet and script are files of this package, read once by
:mod:`daemon.web.assets`. The drawings are in :mod:`daemon.web.charts`, the numbers
they show in :mod:`daemon.web.summary`, what the pages read (the daemon, a result's
hits and spectra) in :mod:`daemon.web.context`; this module puts them into pages.

The pages only read. Every change goes through the JSON API (``POST /api/confirm``,
``POST /api/clusters/{id}/confirm``, ``POST /api/library/rollback``) with ``fetch``, so the
same checks and the same library versioning apply as for any other client:
writes must be ``application/json`` (a cross-site form cannot send that without
a CORS preflight, which this server never grants), and when ``http.token`` is
set they need ``Authorization: Bearer <token>``. The analyst types the token
into a field on the page; it is kept in the tab's ``sessionStorage`` only.

Every console response carries :data:`SECURITY_HEADERS` (defined in
:mod:`daemon.web.assets` with the files they admit): a Content-Security-Policy
that allows only the console's own script, the page's own (hashed) stylesheet
and requests back to this origin, forbids framing (``frame-ancestors 'none'``),
forms and plugins; ``X-Content-Type-Options: nosniff``; no caching.

>>> escape('<img src=x onerror=alert(1)>.csv')
'&lt;img src=x onerror=alert(1)&gt;.csv'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

from daemon.store.ledger import ReviewItem, ReviewState, StoredResult
from daemon.web.api import install_cluster_api
from daemon.web.assets import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, STYLE, serve_script
from daemon.web.cards import decision_controls
from daemon.web.charts import (
    STATUS_COLOURS,
    bar_svg,
    escape,
    evidence_plots,
    hit_table,
    status_legend,
    timeline_svg,
    utc,
)
from daemon.web.clusters import cluster_note, cluster_section, open_clusters
from daemon.web.context import (
    PLOTTED_HITS,
    ConsoleSource,
    Context,
    References,
    SpectrumFiles,
    hit_references,
    query_spectrum,
    stored_hits,
)
from daemon.web.http import HttpError, HttpServer, Request, Response, all_checks_pass
from daemon.web.maps import map_image, maps_page
from daemon.web.summary import MAX_OVERVIEW_RESULTS, all_particles, summarise
from engine.core.conventions import AcquisitionProfile, resolve
from engine.core.library import LibraryError, VersionInfo, library_log
from engine.models.served import MEMBERS_DISAGREE, IdentificationModel

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
#: Decisions listed under the review queue.
RECENT_DECISIONS: Final = 20
#: The statuses the per-folder table counts in their own columns (everything else is a polymer).
UNLABELLED: Final = ("unknown", "low_quality", "rejected")


_HTML: Final = "text/html; charset=utf-8"
_ACTIVE: Final = ' class="active" aria-current="page"'


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "–"


# --------------------------------------------------------------------------- pages


def _page(ctx: Context, *, title: str, active: str, body: str) -> Response:
    open_reviews = ctx.ledger.review_counts()[ReviewState.OPEN]
    links = [
        ("/", "Overview", "overview"),
        ("/review", f"Review ({open_reviews})", "review"),
        ("/maps", f"Maps ({ctx.ledger.particle_review_counts()[ReviewState.OPEN]} to decide)", "maps"),
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
<style>{STYLE}</style>
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


def _overview(ctx: Context, request: Request) -> Response:
    now = ctx.clock()
    results, truncated = all_particles(ctx.ledger)
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
    particles = ctx.ledger.particle_review_counts()  # maps' particles wait beside the results
    reviews = {str(state): n + particles[state] for state, n in ctx.ledger.review_counts().items()}
    status = summary.by_status
    recent_total = sum(summary.recent.values())
    counted = f"{summary.in_maps} of them in maps; {recent_total} in the last 24 h"
    cards = "".join(
        [
            _card("particles", escape(summary.total), note=counted),
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
        + "".join(f'<td class="n">{counts.get(s, 0)}</td>' for s in UNLABELLED)
        + "<td>"
        + escape(
            ", ".join(f"{label} {n}" for label, n in counts.most_common() if label not in UNLABELLED) or "–"
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
        f'<p class="fail">Only the first {MAX_OVERVIEW_RESULTS} particles are counted here.</p>'
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
<p class="small muted">All results and map particles, {span}. Unknown and low-quality ones by status.</p>
<div class="split">
{bar_svg(bars, title="particles per polymer") if bars else '<p class="muted">No results yet.</p>'}
<table><tr><th>polymer or status</th><th class="n">particles</th><th class="n">share</th></tr>
{category_rows}</table></div>
<h2>Over time (per {unit}, UTC)</h2>
{timeline_svg(summary.timeline) if summary.timeline.counts else '<p class="muted">No results yet.</p>'}
<p class="small">{status_legend()}</p>
<h2>Per sample folder</h2>
<table><tr><th>sample folder</th><th class="n">particles</th><th class="n">unknown</th>
<th class="n">low quality</th><th class="n">rejected</th><th>polymers</th></tr>
{folder_rows or '<tr><td colspan="6" class="muted">none</td></tr>'}</table>
"""
    return _page(ctx, title="Overview", active="overview", body=body)


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


def _evidence(
    result: StoredResult,
    model: IdentificationModel,
    references: References,
    files: SpectrumFiles,
    *,
    profile: AcquisitionProfile | None = None,
) -> tuple[str, set[int | None]]:
    """A result's spectrum drawn over its best hits still in the library, and the ref ids it drew."""
    plotted_hits = [
        (hit, references[hit.ref_id][1])
        for hit in stored_hits(result.payload)[:PLOTTED_HITS]
        if hit.ref_id is not None and hit.ref_id in references
    ]
    try:
        query = resolve(query_spectrum(result, files), profile=profile)
        plot = evidence_plots(model, query, plotted_hits, title=f"result {result.id}")
        return plot, {h.ref_id for h, _ in plotted_hits}
    except LookupError as exc:
        return f'<p class="fail">No plot: {escape(exc)}</p>', set()
    except Exception as exc:
        logger.exception("cannot plot result %d", result.id)
        return f'<p class="fail">No plot: {escape(type(exc).__name__)}</p>', set()


def _review_card(
    item: ReviewItem,
    references: References,
    evidence: tuple[str, set[int | None]],
    *,
    cluster: str = "",
) -> str:
    result = item.result
    payload = result.payload
    hits = stored_hits(payload)
    plot, plotted = evidence
    missing = [h for h in hits[:PLOTTED_HITS] if h.ref_id not in references]
    missing_note = (
        f'<p class="small muted">Not in the served library any more: '
        f"{escape(', '.join(f'{h.label} #{h.ref_id}' for h in missing))}</p>"
        if missing
        else ""
    )
    name = Path(result.source_path).name
    candidate = payload.get("candidate")
    facts = []
    if candidate:
        facts.append(f"best class <strong>{escape(candidate)}</strong>")
    for key, text in (("candidate_r", "its r"), ("threshold", "threshold r"), ("vote_share", "vote share")):
        if isinstance(payload.get(key), int | float):
            facts.append(f"{text} {escape(payload[key])}")
    cnn = [m["label"] for m in payload.get("members") or () if m.get("name") == "cnn" and m.get("label")]
    if payload.get("reason") == MEMBERS_DISAGREE and cnn:
        facts.append(f"held for review: the CNN says <strong>{escape(cnn[0])}</strong>")
    return f"""<article class="review" id="review-{result.id}" data-result-id="{result.id}">
<h3>{escape(name)} <span class="muted small">spectrum {result.spectrum_index} · result {result.id}</span></h3>
<div class="path">{escape(result.source_path)}</div>
<p class="small">{escape(result.status)} · {" · ".join(facts) or "no candidate"} ·
classified {escape(utc(result.created_at))} by model {escape(result.model_version)}</p>{cluster}
<div class="grid"><div>{plot}</div>
<div>{hit_table(hits[:PLOTTED_HITS], plotted)}{missing_note}
{_quality(payload)}{_aging(payload)}</div></div>
{decision_controls(h.label for h in hits[:PLOTTED_HITS])}
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


def _review(ctx: Context, request: Request) -> Response:
    offset = _offset(request)
    items = ctx.ledger.open_reviews(limit=REVIEW_PAGE_SIZE, offset=offset)
    total = ctx.ledger.review_counts()[ReviewState.OPEN]
    clusters, representatives, trouble = open_clusters(ctx)
    results = [item.result for item in items] + list(representatives.values())
    found = hit_references(ctx.models, results, hits=PLOTTED_HITS)
    files = SpectrumFiles()

    def evidence(result: StoredResult) -> tuple[str, set[int | None]]:
        model, references = found[result.id]
        return _evidence(result, model, references, files, profile=ctx.profile_for(result.source_path))

    in_cluster = {result_id: cluster for cluster in clusters for result_id in cluster.result_ids}
    cards = "\n".join(
        _review_card(
            item,
            found[item.result.id][1],
            evidence(item.result),
            cluster=cluster_note(in_cluster.get(item.result.id)),
        )
        for item in items
    )
    grouped = trouble + cluster_section(
        clusters, representatives, min_r=ctx.clusters.settings().min_r, plot=lambda r: evidence(r)[0]
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
{grouped}
<div class="pager">{"".join(pager)}</div>
{cards or empty}
<div class="pager">{"".join(pager)}</div>
{_decisions(ctx.ledger.decisions(limit=RECENT_DECISIONS))}
"""
    return _page(ctx, title="Review", active="review", body=body)


def _decisions(items: Sequence[ReviewItem]) -> str:
    """The latest decisions: what the classifier said, what was decided, by whom and when."""
    if not items:
        return ""
    rows = []
    for item in items:
        result, decision = item.result, item.result.decision
        if decision is None:
            continue
        was = decision.original_label or decision.original_status
        now = result.label if decision.state is ReviewState.CONFIRMED else "rejected"
        rows.append(
            f'<tr id="decision-{result.id}"><td class="n">{result.id}</td>'
            f'<td class="path">{escape(Path(result.source_path).name)}</td>'
            f"<td>{escape(was)}</td><td><strong>{escape(now)}</strong></td>"
            f"<td>{escape(decision.decided_by)}</td><td>{escape(utc(decision.decided_at))}</td></tr>"
        )
    return f"""<h2>Recent decisions</h2>
<p class="small muted">The final label counts everywhere: the overview, <code>mpwatch results</code>,
and each sample's results.jsonl and summary.csv.</p>
<table><tr><th class="n">result</th><th>file</th><th>classified as</th><th>final</th><th>by</th>
<th>when</th></tr>{"".join(rows)}</table>"""


def _library(ctx: Context, request: Request) -> Response:
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


def install_console(server: HttpServer, *, daemon: ConsoleSource) -> None:
    """Register the console's pages on ``server`` (where the JSON API is installed too).

    Everything is read from ``daemon`` when a page is rendered: the ledger (results,
    review queue), the served model and its library (classes, grid, reference
    spectra), the library folder (version history), the readiness checks (health),
    and the configured inboxes (to name sample folders). Whether writes need a token
    is fixed here, as the API fixes its token when it is installed. The API's cluster
    routes are installed here too: they decide the clusters this console lists.
    """
    ctx = Context.of(daemon)
    http = daemon.config.http
    install_cluster_api(
        server, clusters=ctx.clusters, growth=daemon.growth, token=http.token, loopback_only=not http.exposed
    )

    def page(render: Callable[[Context, Request], Response]) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            return render(ctx, request)

        return handler

    server.add_route("GET", "/", page(_overview))
    server.add_route("GET", "/review", page(_review))
    server.add_route("GET", "/library", page(_library))
    server.add_route("GET", "/maps", page(partial(maps_page, frame=_page)))
    server.add_route("GET", "/maps/{image}", page(map_image))
    server.add_route("GET", "/console.js", serve_script)
