"""The console's maps: each imaging map drawn with its particles outlined and coloured by polymer.

| method | path | page |
|---|---|---|
| GET | /maps | every current map, newest first (``?offset=``): drawing, pixel size, particles per polymer |
| GET | /maps/{sha256}.png | a map's drawing (written by the worker into ``<state_dir>/maps/``) |

Particles per polymer are final: an analyst's decision counts. Under each map, its unknown
particles wait for a decision, each with its best library hits and the buttons of a review
card (confirm as a hit's class or a new label, or reject; ``POST /api/confirm`` with its
``particle_id``), so a lab imaging its filters closes the loop where it sees the particles.

The drawing is served only for a map the ledger holds, from the path the ledger recorded; the
sha256 in the path is checked to be 64 hex digits first, so no path from a request reaches the disk.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import Final

from daemon.store.ledger import ParticleReview, StoredMap, StoredParticle
from daemon.web.assets import SECURITY_HEADERS
from daemon.web.cards import decision_controls
from daemon.web.charts import escape, evidence_plots, hit_table, utc
from daemon.web.context import PLOTTED_HITS, Context, library_references, stored_hits
from daemon.web.http import HttpError, Request, Response
from engine.core.conventions import resolve

__all__ = ["MAPS_PAGE_SIZE", "PARTICLE_REVIEWS_SHOWN", "map_image", "maps_page"]

logger = logging.getLogger(__name__)

#: Maps shown per page of /maps.
MAPS_PAGE_SIZE: Final = 10

_SHA256 = re.compile(r"[0-9a-f]{64}")

#: How the console's page frame is drawn (:func:`daemon.web.console._page`).
PageFrame = Callable[..., Response]


#: Unknown particles of one map shown for a decision (the rest: ``mpwatch results --particles``).
PARTICLE_REVIEWS_SHOWN: Final = 20


def _by_label(particles: Sequence[StoredParticle]) -> str:
    """Known particles per final label, the most frequent first."""
    counts = Counter(p.label for p in particles if p.status == "known" and p.label)
    if not counts:
        return '<span class="muted">no identified particles</span>'
    return ", ".join(f"{escape(label)}: {n}" for label, n in counts.most_common())


def _size(p: StoredParticle) -> str:
    um = p.values.get("feret_max_um")
    return f"{um:.1f} µm" if um is not None else f"{p.values['feret_max_px']:.1f} px"


def _evidence(ctx: Context, p: StoredParticle) -> tuple[str, set[int | None]]:
    """The particle's mean spectrum drawn over its best hits still in the library, and the ref ids drawn."""
    hits = stored_hits(p.payload)[:PLOTTED_HITS]
    try:
        query = resolve(ctx.ledger.particle_spectrum(p.id), profile=ctx.profile_for(p.source_path))
        with ctx.models.lock:
            served = ctx.models.get()
            model = served.model_for(query.technique) or served
            references = library_references(model, {h.ref_id for h in hits if h.ref_id is not None})
        plotted = [(h, references[h.ref_id][1]) for h in hits if h.ref_id in references]
        drawing = evidence_plots(model, query, plotted, title=f"particle {p.id}")
        return drawing, {h.ref_id for h, _ in plotted}
    except Exception as exc:
        logger.exception("cannot plot particle %d", p.id)
        return f'<p class="fail">No plot: {escape(type(exc).__name__)}</p>', set()


def _particle_card(ctx: Context, review: ParticleReview) -> str:
    """An unknown particle drawn over its best hits, with the decision buttons (static/console.js)."""
    p = review.particle
    hits = stored_hits(p.payload)[:PLOTTED_HITS]
    drawing, plotted = _evidence(ctx, p)
    return f"""<article class="review particle-review" id="particle-{p.id}" data-particle-id="{p.id}">
<h3>particle {p.id} <span class="muted small">number {p.index} of this map · {p.values["n_pixels"]} pixels ·
largest Feret {escape(_size(p))} · at ({p.values["x_px"]:.0f}, {p.values["y_px"]:.0f}) px</span></h3>
<div class="grid"><div>{drawing}</div><div>{hit_table(hits, plotted)}</div></div>
{decision_controls(h.label for h in hits)}
</article>"""


def _reviews(ctx: Context, m: StoredMap) -> str:
    """The map's unknown particles that wait for a decision."""
    reviews = ctx.ledger.open_particle_reviews(sha256=m.sha256, limit=PARTICLE_REVIEWS_SHOWN + 1)
    if not reviews:
        return ""
    more = (
        f'<p class="small muted">The first {PARTICLE_REVIEWS_SHOWN} are shown; list them all with '
        f"<code>mpwatch results --particles --status unknown</code> and decide with "
        f"<code>mpwatch confirm --particle ID</code>.</p>"
        if len(reviews) > PARTICLE_REVIEWS_SHOWN
        else ""
    )
    cards = "\n".join(_particle_card(ctx, r) for r in reviews[:PARTICLE_REVIEWS_SHOWN])
    return f"""<h3>Unknown particles to decide</h3>
<p class="small muted">Confirming adds the particle's mean spectrum to the library under that label (a
new library version, served at once); the map's counts, the sample's summary and its report then count
the label.</p>{more}
{cards}"""


def _card(ctx: Context, m: StoredMap) -> str:
    name = PurePosixPath(m.source_path).name
    sample = PurePosixPath(m.source_path).parent.name
    size = (
        f"{m.pixel_size_um:g} µm per pixel ({escape(m.pixel_size_source)})"
        if m.pixel_size_um
        else ("no pixel size: sizes in pixels")
    )
    image = (
        f'<img class="map" src="/maps/{m.sha256}.png" alt="map {escape(name)}, particles by polymer">'
        if m.image_path
        else '<p class="muted">no drawing (see the daemon log)</p>'
    )
    particles = ctx.ledger.particles(sha256=m.sha256, limit=max(m.n_particles, 1))
    unknown = m.payload.get("n_unknown_pixels", 0)
    low = m.payload.get("n_low_quality_pixels", 0)
    return f"""<section class="card map-card" data-sha256="{m.sha256}">
<h2>{escape(name)} <span class="muted small">sample {escape(sample)}</span></h2>
{image}
<table>
<tr><th>particles</th><td>{m.n_particles}</td></tr>
<tr><th>per polymer</th><td>{_by_label(particles)}</td></tr>
<tr><th>map</th><td>{m.lines} x {m.samples} pixels, {m.bands} bands; {size}</td></tr>
<tr><th>pixels unknown / low quality</th><td>{int(unknown)} / {int(low)}</td></tr>
<tr><th>identified</th><td>{escape(utc(m.created_at))} by {escape(m.model_version)}</td></tr>
</table>
{_reviews(ctx, m)}
</section>"""


def maps_page(ctx: Context, request: Request, *, frame: PageFrame) -> Response:
    """The maps, newest first, a page at a time."""
    raw = request.query_value("offset", "0") or "0"
    if not raw.isdigit():
        raise HttpError(HTTPStatus.BAD_REQUEST, "offset must be an integer >= 0")
    offset = int(raw)
    total = _count(ctx)
    newest_first = max(0, total - offset - MAPS_PAGE_SIZE)
    shown = ctx.ledger.maps(limit=MAPS_PAGE_SIZE, offset=newest_first)[: max(0, total - offset)][::-1]
    cards = "".join(_card(ctx, m) for m in shown) or '<p class="muted">No maps yet.</p>'
    more = (
        f'<p><a href="/maps?offset={offset + MAPS_PAGE_SIZE}">older maps</a></p>'
        if offset + MAPS_PAGE_SIZE < total
        else ""
    )
    body = f"<h1>Maps ({total})</h1>\n{cards}\n{more}"
    return frame(ctx, title="Maps", active="maps", body=body)


def _count(ctx: Context) -> int:
    with ctx.ledger._read() as conn:
        return int(conn.execute("SELECT count(*) FROM maps WHERE superseded_at IS NULL").fetchone()[0])


def map_image(ctx: Context, request: Request) -> Response:
    """A map's drawing, as the ledger recorded it."""
    name = request.path_params.get("image", "")
    sha = name.removesuffix(".png")
    if not name.endswith(".png") or not _SHA256.fullmatch(sha):
        raise HttpError(HTTPStatus.NOT_FOUND, "no such map")
    found = ctx.ledger.maps(sha256=sha, limit=1, superseded=True)
    if not found or not found[0].image_path or not Path(found[0].image_path).is_file():
        raise HttpError(HTTPStatus.NOT_FOUND, "no drawing of this map")
    headers = dict(SECURITY_HEADERS)
    return Response(HTTPStatus.OK, Path(found[0].image_path).read_bytes(), "image/png", headers)
