"""The daemon's JSON API: review queue, confirmations, library versions and results.

| method | path | what |
|---|---|---|
| GET | /api/reviews | open review queue (unknowns), newest last |
| GET | /api/particle-reviews | maps' unknown particles waiting for a decision, map by map |
| POST | /api/confirm | ``{"result_id" or "particle_id(s)", "label", "decided_by"?, "reject"?, "add"?}`` |
| GET | /api/library | classes, counts, version and history |
| POST | /api/library/rollback | ``{"version"}``: make an old version current (as a new one) |
| POST | /api/library/remove | ``{"ref_ids": [...]}``: undo a wrong confirmation |
| GET | /api/results | ``?since=&status=&label=&sample=&limit=``: final labels, each with its ``decision`` |
| GET | /api/clusters | open reviews grouped by likeness, the largest first, each with its representative |
| POST | /api/clusters/{id}/confirm | ``{"label", "decided_by"?, "reject"?, "add"?}``: the whole cluster |

The cluster routes (:func:`install_cluster_api`) are installed with the review
console, which lists the same clusters: one :class:`~daemon.growth.clusters.ReviewClusters`
keeps the features it read and the cluster ids it handed out for both.

Write routes need ``Content-Type: application/json`` (a cross-site form
cannot send that without a CORS preflight, which this server never grants)
and, when ``http.token`` is set, ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from daemon.growth.clusters import ReviewClusters
from daemon.growth.library import ConfirmError, GrowthOutcome, LibraryGrowth
from daemon.growth.particles import ParticleDecisions
from daemon.store.export import result_row
from daemon.store.ledger import Ledger, ResultStatus
from daemon.web.http import HttpError, HttpServer, Request, Response
from engine.core.library import LibraryError, ReferenceLibrary, library_log, rollback

__all__ = ["guarded_write", "install_api", "install_cluster_api", "require_write_access"]


#: Host names a loopback-bound daemon answers writes for (DNS rebinding defence).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _hostname(value: str) -> str:
    """``host`` of ``host:port`` or ``[v6]:port``, lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def require_write_access(request: Request, token: str | None, *, loopback_only: bool = False) -> None:
    """Refuse a write that is not JSON, comes from another origin, or lacks the configured bearer token.

    ``loopback_only`` (the daemon binds to localhost) also refuses a ``Host``
    that is not a loopback name, so a web page that rebinds its own domain to
    127.0.0.1 still cannot write.
    """
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "write requests must be application/json")
    host = request.header("host") or ""
    if loopback_only and _hostname(host) not in LOOPBACK_HOSTS:
        raise HttpError(
            HTTPStatus.FORBIDDEN, f"writes are accepted for localhost only, not for Host {host!r}"
        )
    origin = request.header("origin")  # "null": a sandboxed frame or a file:// page, never the console
    if origin and (origin == "null" or origin.split("://", 1)[-1].lower() != host.lower()):
        raise HttpError(HTTPStatus.FORBIDDEN, "cross-origin writes are refused")
    if token:
        given = (request.header("authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HttpError(
                HTTPStatus.UNAUTHORIZED, "a valid token is required", headers={"WWW-Authenticate": "Bearer"}
            )


#: The largest id SQLite stores (a signed 64-bit integer).
MAX_ID = 2**63 - 1

#: The most rows one request returns.
MAX_LIMIT = 10_000


def _int(value: Any, name: str, *, low: int = 1, high: int = MAX_ID) -> int:
    """``value`` as an integer in [``low``, ``high``], else a 400 naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer") from None
    if not low <= number <= high:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be between {low} and {high}")
    return number


def guarded_write(
    handler: Callable[[Request], Response], *, token: str | None, loopback_only: bool
) -> Callable[[Request], Response]:
    """``handler`` behind :func:`require_write_access`; a refused decision is a 422, a missing
    library version a 404."""

    def guarded(request: Request) -> Response:
        require_write_access(request, token, loopback_only=loopback_only)
        try:
            return handler(request)
        except ConfirmError as exc:
            raise HttpError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from exc
        except LibraryError as exc:
            raise HttpError(HTTPStatus.NOT_FOUND, str(exc)) from exc

    return guarded


def _decision(body: Any) -> tuple[str | None, str]:
    """The label (None: a rejection) and the decider of a confirm request's body, else a 400."""
    if not isinstance(body, dict):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    decided_by = str(body.get("decided_by") or "api")
    if body.get("reject"):
        return None, decided_by
    label = body.get("label")
    if not isinstance(label, str) or not label.strip():
        raise HttpError(HTTPStatus.BAD_REQUEST, "label is required (or reject: true)")
    return label, decided_by


def install_api(
    server: HttpServer,
    *,
    ledger: Ledger,
    growth: LibraryGrowth,
    token: str | None,
    library_dir: Callable[[], Any],
    loopback_only: bool = False,
) -> None:
    """Register the API routes on ``server``."""

    def write(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        return guarded_write(handler, token=token, loopback_only=loopback_only)

    particles = ParticleDecisions(growth)

    def reviews(request: Request) -> Response:
        limit = _int(request.query_value("limit", "100"), "limit", high=MAX_LIMIT)
        items = ledger.open_reviews(limit=limit)
        return Response.json(
            [{**result_row(i.result), "review_state": str(i.state), "opened_at": i.opened_at} for i in items]
        )

    def particle_reviews(request: Request) -> Response:
        limit = _int(request.query_value("limit", "100"), "limit", high=MAX_LIMIT)
        items = ledger.open_particle_reviews(limit=limit)
        return Response.json(
            [{**i.particle.as_row(), "review_state": str(i.state), "opened_at": i.opened_at} for i in items]
        )

    def confirm(request: Request) -> Response:
        body = request.json()
        label, decided_by = _decision(body)
        if body.get("particle_id") is not None or body.get("particle_ids") is not None:
            if body.get("result_id") is not None:
                raise HttpError(HTTPStatus.BAD_REQUEST, "give result_id or particle_id(s), not both")
            ids = body.get("particle_ids") or [body.get("particle_id")]
            if not isinstance(ids, list):
                raise HttpError(HTTPStatus.BAD_REQUEST, "particle_ids must be a list")
            particle_ids = [_int(i, "particle_ids") for i in ids]
            if label is None:
                outcome = particles.reject(particle_ids, decided_by=decided_by)
            else:
                outcome = particles.confirm(particle_ids, label, decided_by=decided_by)
            return Response.json({**outcome.as_dict(), "particle_ids": particle_ids})
        result_id = _int(body.get("result_id"), "result_id")
        if label is None:
            outcome = growth.reject(result_id, decided_by=decided_by)
        else:
            outcome = growth.confirm(result_id, label=label, decided_by=decided_by, add=bool(body.get("add")))
        return Response.json(outcome.as_dict())

    def library(request: Request) -> Response:
        lib = growth.models.get().library
        return Response.json({**lib.info(), "log": [v.__dict__ for v in library_log(library_dir())]})

    def do_rollback(request: Request) -> Response:
        body = request.json()
        version = _int(body.get("version") if isinstance(body, dict) else None, "version")
        ReferenceLibrary.load(library_dir(), version=version)  # 404 for a version that does not exist
        new = rollback(library_dir(), version)
        growth.sync_with_disk()
        return Response.json(
            {"restored": version, "library_version": new, "model_version": growth.models.get().version}
        )

    def remove(request: Request) -> Response:
        body = request.json()
        ids = body.get("ref_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            raise HttpError(HTTPStatus.BAD_REQUEST, "ref_ids must be a non-empty list")
        outcome = growth.remove(
            [_int(i, "ref_ids") for i in ids], decided_by=str(body.get("decided_by") or "api")
        )
        return Response.json(outcome.as_dict())

    def results(request: Request) -> Response:
        status = request.query_value("status")
        statuses = [s.value for s in ResultStatus]
        if status is not None and status not in statuses:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"status must be one of {', '.join(statuses)}")
        since = request.query_value("since")
        try:
            since_time = float(since) if since else None
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "since must be epoch seconds") from None
        rows = ledger.results(
            since=since_time,
            status=ResultStatus(status) if status else None,
            label=request.query_value("label"),
            sample=request.query_value("sample") or None,
            limit=_int(request.query_value("limit", "100"), "limit", high=MAX_LIMIT),
        )
        return Response.json([result_row(r) for r in rows])

    server.add_route("GET", "/api/reviews", reviews)
    server.add_route("GET", "/api/particle-reviews", particle_reviews)
    server.add_route("POST", "/api/confirm", write(confirm))
    server.add_route("GET", "/api/library", library)
    server.add_route("POST", "/api/library/rollback", write(do_rollback))
    server.add_route("POST", "/api/library/remove", write(remove))
    server.add_route("GET", "/api/results", results)


def install_cluster_api(
    server: HttpServer,
    *,
    clusters: ReviewClusters,
    growth: LibraryGrowth,
    token: str | None,
    loopback_only: bool = False,
) -> None:
    """Register ``GET /api/clusters`` and ``POST /api/clusters/{cluster_id}/confirm`` on ``server``.

    A cluster is decided as a whole: confirmed as one label (one library version for all
    its spectra) or rejected. Its id names exactly the results it had when it was listed,
    so a decision never reaches a spectrum the analyst did not see; an id no listing
    handed out (or one from before a restart) is a 409 that says to list them again.
    """

    def listing(request: Request) -> Response:
        out = []
        for cluster in clusters.current():
            representative = growth.ledger.result(cluster.representative)
            out.append(
                {
                    **cluster.as_dict(),
                    "representative_result": None if representative is None else result_row(representative),
                }
            )
        return Response.json(out)

    def decide(request: Request) -> Response:
        body = request.json()
        label, decided_by = _decision(body)
        try:
            members = clusters.members(request.path_params["cluster_id"])
        except ConfirmError as exc:
            raise HttpError(HTTPStatus.CONFLICT, str(exc)) from exc
        outcome: GrowthOutcome
        if label is None:
            outcome = growth.reject_results(members, decided_by=decided_by)
        else:
            outcome = growth.confirm_results(members, label, decided_by=decided_by, add=bool(body.get("add")))
        return Response.json({**outcome.as_dict(), "result_ids": list(members)})

    server.add_route("GET", "/api/clusters", listing)
    server.add_route(
        "POST",
        "/api/clusters/{cluster_id}/confirm",
        guarded_write(decide, token=token, loopback_only=loopback_only),
    )
