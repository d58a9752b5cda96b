"""The daemon's HTTP endpoints on the standard library: metrics, liveness, readiness, and room for more.

:class:`HttpServer` runs a :class:`http.server.ThreadingHTTPServer` in a background
thread. Routes are plain functions ``handler(request) -> Response`` registered on a
small :class:`Router` with :meth:`HttpServer.add_route`; a path segment written
``{name}`` matches any one segment and reaches the handler as
``request.path_params["name"]`` (for the review and confirm API to come). Built in:

- ``GET /metrics``: the Prometheus exposition of the registry, in the format the
  scraper asks for (text or OpenMetrics; gzip when accepted).
- ``GET /healthz``: liveness. ``200 ok`` while the main loop's heartbeat is fresh,
  ``503`` once it is older than ``max_heartbeat_age`` (a hung loop; the supervisor
  should restart the process).
- ``GET /readyz``: readiness. ``{"ready": bool, "checks": {...}}`` with ``200`` when
  every check passes (nested mappings such as ``watchers_up`` must pass throughout),
  ``503`` otherwise.

Behaviour every route shares:

- A request body larger than ``max_body_bytes`` is refused with ``413`` before it is
  read; a chunked body (no length) with ``411``.
- An unknown path gives ``404``, a known path with another method ``405`` with
  ``Allow``; errors are JSON ``{"error": ..., "status": ...}``.
- A handler may raise :class:`HttpError` for a deliberate error status. Any other
  exception is logged with its traceback and answered ``500``; the server goes on.
  (:class:`Request`, :class:`Response` and :class:`HttpError` live in
  :mod:`daemon.web.messages` and are importable from here too.)
- ``HEAD`` is answered by the ``GET`` handler without the body.
- :meth:`HttpServer.shutdown` stops accepting, lets requests in flight finish (up to a
  timeout), closes the socket and joins the thread.

>>> server = HttpServer("127.0.0.1", 0)
>>> def hello(request: Request) -> Response:
...     return Response.text(f"hi {request.path_params['name']}")
>>> server.add_route("GET", "/hello/{name}", hello)
>>> server.start()
>>> from urllib.request import urlopen
>>> urlopen(f"{server.url}/hello/PE").read()
b'hi PE'
>>> server.shutdown()
"""

from __future__ import annotations

import gzip
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Self
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from daemon.web.messages import Handler, HttpError, Request, Response

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEARTBEAT_AGE",
    "DEFAULT_PORT",
    "Handler",
    "Heartbeat",
    "HttpError",
    "HttpServer",
    "Request",
    "Response",
    "Router",
    "all_checks_pass",
]

logger = logging.getLogger(__name__)

#: The daemon's default metrics port (Prometheus' exporter port allocation).
DEFAULT_PORT: Final = 9108
#: Request bodies above this are refused with 413.
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
#: /healthz turns 503 once the main loop has not beaten for this many seconds.
DEFAULT_MAX_HEARTBEAT_AGE: Final = 60.0

_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: tuple[str, ...]
    handler: Handler

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        if len(segments) != len(self.pattern):
            return None
        params: dict[str, str] = {}
        for expected, actual in zip(self.pattern, segments, strict=True):
            if expected.startswith("{") and expected.endswith("}"):
                if not actual:
                    return None
                params[expected[1:-1]] = unquote(actual)
            elif expected != unquote(actual):
                return None
        return params


def _split(path: str) -> tuple[str, ...]:
    if not path.startswith("/"):
        raise ValueError(f"a route path starts with '/', got {path!r}")
    return tuple(path.split("/")[1:])


class Router:
    """Maps (method, path) to a handler; literal segments win over ``{name}`` segments.

    >>> router = Router()
    >>> router.add_route("GET", "/reviews/{result_id}", lambda request: Response.text("one"))
    >>> router.add_route("GET", "/reviews/open", lambda request: Response.text("open"))
    >>> handler, params = router.resolve("GET", "/reviews/17")
    >>> params
    {'result_id': '17'}
    >>> router.resolve("GET", "/reviews/open")[0](Request("GET", "/reviews/open")).body
    b'open'
    """

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self._lock = threading.Lock()

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` (GET, POST, ...) on ``path``.

        Raises:
            ValueError: an unsupported method, a path not starting with ``/``, or a
                route already registered for this method and path.
        """
        verb = method.upper()
        if verb not in _METHODS:
            raise ValueError(f"unsupported method {method!r}; expected one of {', '.join(_METHODS)}")
        route = _Route(verb, _split(path), handler)
        with self._lock:
            if any(r.method == verb and r.pattern == route.pattern for r in self._routes):
                raise ValueError(f"{verb} {path} is already routed")
            self._routes.append(route)
            # Literal segments before parameters, so /reviews/open beats /reviews/{id}.
            self._routes.sort(key=lambda r: tuple(s.startswith("{") for s in r.pattern))

    def routes(self) -> list[tuple[str, str]]:
        """Every registered (method, path pattern)."""
        with self._lock:
            return [(route.method, "/" + "/".join(route.pattern)) for route in self._routes]

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler for a request and its path parameters.

        ``HEAD`` falls back to the ``GET`` handler.

        Raises:
            HttpError: 404 when no route has this path, 405 (with ``Allow``) when routes
                have it for other methods only.
        """
        segments = _split(path)
        verb = method.upper()
        with self._lock:
            routes = list(self._routes)
        allowed: dict[str, tuple[Handler, dict[str, str]]] = {}
        for route in routes:
            params = route.match(segments)
            if params is not None and route.method not in allowed:
                allowed[route.method] = (route.handler, params)
        if not allowed:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no route for {path}")
        if verb in allowed:
            return allowed[verb]
        if verb == "HEAD" and "GET" in allowed:
            return allowed["GET"]
        methods = sorted({*allowed, *(["HEAD"] if "GET" in allowed else [])})
        raise HttpError(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{verb} is not allowed on {path}",
            headers={"Allow": ", ".join(methods)},
        )


class Heartbeat:
    """The main loop's pulse for ``/healthz``: the loop calls :meth:`beat` each turn.

    >>> now = [100.0]
    >>> heartbeat = Heartbeat(clock=lambda: now[0])
    >>> now[0] = 112.5
    >>> heartbeat.age()
    12.5
    >>> heartbeat.beat()
    >>> heartbeat.age()
    0.0
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        """The loop is alive now."""
        self._last = self._clock()

    def age(self) -> float:
        """Seconds since the last beat (since creation before the first)."""
        return max(0.0, self._clock() - self._last)


def all_checks_pass(checks: Mapping[str, object]) -> bool:
    """Whether every readiness check passes; nested mappings must pass throughout.

    >>> all_checks_pass({"model_loaded": True, "watchers_up": {"ftir": True, "raman": False}})
    False
    """
    for value in checks.values():
        if isinstance(value, Mapping):
            if not all_checks_pass(value):
                return False
        elif not value:
            return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], app: HttpServer) -> None:
        self.app = app
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("HTTP connection from %s failed", client_address)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "mpwatch"
    #: Seconds an idle keep-alive connection is held open.
    timeout = 15

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        app = self.server.app
        with app._in_flight():
            if app._stopping.is_set():
                self.close_connection = True
                self._send(self.command, Response.error(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down"))
                return
            body, refusal = self._read_body(app.max_body_bytes)
            if refusal is not None:
                self.close_connection = True
                self._send(self.command, refusal)
                return
            parts = urlsplit(self.path)
            request = Request(
                method=self.command,
                path=parts.path or "/",
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
            )
            self._send(self.command, app.respond(request))

    def _read_body(self, limit: int) -> tuple[bytes, Response | None]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"", Response.error(HTTPStatus.LENGTH_REQUIRED, "a request body needs a Content-Length")
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b"", None
        try:
            length = int(declared)
            if length < 0:
                raise ValueError(declared)
        except ValueError:
            return b"", Response.error(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {declared!r}")
        if length > limit:
            return b"", Response.error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the request body is {length} bytes; the limit is {limit}",
            )
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            return b"", Response.error(HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive in time")
        if len(body) < length:
            return b"", Response.error(
                HTTPStatus.BAD_REQUEST, f"the request body ended after {len(body)} of {length} bytes"
            )
        return body, None

    def _send(self, method: str, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(response.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as error:
            self.close_connection = True
            logger.debug("client %s went away: %s", self.address_string(), error)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class HttpServer:
    """The daemon's HTTP server: ``/metrics``, ``/healthz``, ``/readyz`` and any added routes.

    Args:
        host: address to bind (``0.0.0.0`` in a container, ``::`` for IPv6).
        port: port to bind; 0 picks a free one, readable as :attr:`port` after :meth:`start`.
        registry: served on ``/metrics``; without one there is no ``/metrics`` route.
        heartbeat_age: seconds since the main loop last beat (e.g. :meth:`Heartbeat.age`);
            without one ``/healthz`` answers ``ok`` whenever the server answers at all.
        max_heartbeat_age: ``/healthz`` answers 503 above this age.
        readiness: returns the readiness checks, e.g. ``{"model_loaded": True,
            "ledger_open": True, "watchers_up": {"ftir": True}}``; without one the
            service is always ready.
        max_body_bytes: larger request bodies are refused with 413.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        registry: CollectorRegistry | None = None,
        heartbeat_age: Callable[[], float] | None = None,
        max_heartbeat_age: float = DEFAULT_MAX_HEARTBEAT_AGE,
        readiness: Callable[[], Mapping[str, object]] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {max_body_bytes}")
        if max_heartbeat_age <= 0:
            raise ValueError(f"max_heartbeat_age must be > 0, got {max_heartbeat_age}")
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.max_heartbeat_age = max_heartbeat_age
        self.router = Router()
        self._requested_port = port
        self._registry = registry
        self._heartbeat_age = heartbeat_age
        self._readiness = readiness
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._active = 0
        self._idle = threading.Condition()
        if registry is not None:
            self.add_route("GET", "/metrics", self._metrics)
        self.add_route("GET", "/healthz", self._healthz)
        self.add_route("GET", "/readyz", self._readyz)

    # ------------------------------------------------------------------ routes

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Register ``handler(request) -> Response`` for ``method`` on ``path`` (see :class:`Router`)."""
        self.router.add_route(method, path, handler)

    def respond(self, request: Request) -> Response:
        """Route one request and run its handler; never raises.

        This is what the server calls for every request; tests may call it directly.
        """
        try:
            handler, params = self.router.resolve(request.method, request.path)
            return handler(
                Request(
                    method=request.method,
                    path=request.path,
                    query=request.query,
                    headers=request.headers,
                    body=request.body,
                    path_params=params,
                )
            )
        except HttpError as error:
            return Response.error(error.status, error.message, headers=error.headers)
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return Response.error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error")

    def _metrics(self, request: Request) -> Response:
        assert self._registry is not None  # the route exists only with a registry
        encoder, content_type = choose_encoder(request.header("accept") or "")
        body = encoder(self._registry)
        headers: dict[str, str] = {}
        accepted = {
            token.split(";")[0].strip().lower()
            for token in (request.header("accept-encoding") or "").split(",")
        }
        if "gzip" in accepted:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Response(HTTPStatus.OK, body, content_type, headers)

    def _healthz(self, request: Request) -> Response:
        if self._heartbeat_age is None:
            return Response.text("ok\n")
        age = float(self._heartbeat_age())
        if age <= self.max_heartbeat_age:
            return Response.text("ok\n")
        return Response.text(
            f"stale: the main loop last beat {age:.1f} s ago (limit {self.max_heartbeat_age:g} s)\n",
            status=HTTPStatus.SERVICE_UNAVAILABLE,
        )

    def _readyz(self, request: Request) -> Response:
        if self._readiness is None:
            return Response.json({"ready": True, "checks": {}})
        try:
            checks = dict(self._readiness())
        except Exception as error:
            logger.exception("the readiness checks failed")
            return Response.json(
                {"ready": False, "checks": {}, "error": f"readiness checks failed: {error}"},
                status=HTTPStatus.SERVICE_UNAVAILABLE,
            )
        ready = all_checks_pass(checks)
        return Response.json(
            {"ready": ready, "checks": checks},
            status=HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
        )

    # ------------------------------------------------------------------ life cycle

    @property
    def port(self) -> int:
        """The bound port (the chosen one when constructed with port 0).

        Raises:
            RuntimeError: the server has not been started.
        """
        if self._httpd is None:
            raise RuntimeError("the HTTP server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind and serve in a background thread.

        Raises:
            OSError: the address cannot be bound (in use, not permitted).
            RuntimeError: already started.
        """
        if self._httpd is not None:
            raise RuntimeError("the HTTP server is already started")
        server_class = _IPv6Server if ":" in self.host else _Server
        self._stopping.clear()
        self._httpd = server_class((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"mpwatch-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        paths = sorted({path for _, path in self.router.routes()})
        logger.info("HTTP server listening on %s (%s)", self.url, ", ".join(paths))

    def shutdown(self, *, timeout: float = 5.0) -> None:
        """Stop accepting, wait up to ``timeout`` s for requests in flight, close and join.

        Safe to call more than once and before :meth:`start`.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and (remaining := deadline - time.monotonic()) > 0:
                self._idle.wait(remaining)
            if self._active:
                logger.warning("HTTP server stopped with %d requests still in flight", self._active)
        httpd.server_close()
        thread.join(max(0.0, deadline - time.monotonic()))
        self._httpd = None
        self._thread = None
        logger.info("HTTP server on %s:%s stopped", self.host, httpd.server_address[1])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count a request in flight so :meth:`shutdown` can wait for it."""
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
