"""Tests of daemon.web.http: routing, limits, error isolation, /metrics, /healthz, /readyz, life cycle.

Every test starts a real server on 127.0.0.1 with port 0 and talks to it over a socket.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.web.http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    Heartbeat,
    HttpError,
    HttpServer,
    Request,
    Response,
    Router,
    all_checks_pass,
)
from daemon.web.metrics import Metrics

NOW = 1_700_000_000.0


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: HttpServer,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


ServerFactory = Callable[..., HttpServer]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    started: list[HttpServer] = []

    def make(**kwargs: Any) -> HttpServer:
        server = HttpServer("127.0.0.1", 0, **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.shutdown()


@pytest.fixture
def server(make_server: ServerFactory) -> HttpServer:
    return make_server()


def echo(request: Request) -> Response:
    return Response.json(
        {
            "method": request.method,
            "path": request.path,
            "query": {k: list(v) for k, v in request.query.items()},
            "params": dict(request.path_params),
            "length": len(request.body),
            "agent": request.header("X-Agent"),
        }
    )


class TestRouting:
    def test_a_registered_route_answers(self, server: HttpServer) -> None:
        server.add_route("GET", "/api/echo", echo)
        reply = call(
            server, "GET", "/api/echo?since=10&status=unknown&status=known", headers={"X-Agent": "t"}
        )
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == {
            "method": "GET",
            "path": "/api/echo",
            "query": {"since": ["10"], "status": ["unknown", "known"]},
            "params": {},
            "length": 0,
            "agent": "t",
        }

    def test_path_parameters(self, server: HttpServer) -> None:
        server.add_route("POST", "/api/reviews/{result_id}/confirm", echo)
        reply = call(server, "POST", "/api/reviews/42/confirm", body=b"{}")
        assert reply.status == 200
        assert reply.json()["params"] == {"result_id": "42"}
        assert reply.json()["length"] == 2

    def test_literal_segments_win_over_parameters(self, server: HttpServer) -> None:
        server.add_route("GET", "/api/reviews/{result_id}", lambda r: Response.text("one"))
        server.add_route("GET", "/api/reviews/open", lambda r: Response.text("open"))
        assert call(server, "GET", "/api/reviews/open").body == b"open"
        assert call(server, "GET", "/api/reviews/7").body == b"one"

    def test_json_body(self, server: HttpServer) -> None:
        server.add_route("POST", "/api/confirm", lambda r: Response.json({"got": r.json()}, status=201))
        reply = call(server, "POST", "/api/confirm", body=json.dumps({"label": "PE"}).encode())
        assert reply.status == 201
        assert reply.json() == {"got": {"label": "PE"}}

    @pytest.mark.parametrize("body", [b"", b"{not json", b"\xff\xfe"])
    def test_a_bad_json_body_is_a_400(self, server: HttpServer, body: bytes) -> None:
        server.add_route("POST", "/api/confirm", lambda r: Response.json(r.json()))
        reply = call(server, "POST", "/api/confirm", body=body)
        assert reply.status == 400
        assert reply.json()["status"] == 400

    def test_unknown_path_is_a_json_404(self, server: HttpServer) -> None:
        reply = call(server, "GET", "/nowhere")
        assert reply.status == 404
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == {"error": "no route for /nowhere", "status": 404}

    def test_wrong_method_is_a_405_with_allow(self, server: HttpServer) -> None:
        server.add_route("POST", "/api/confirm", echo)
        reply = call(server, "DELETE", "/api/confirm")
        assert reply.status == 405
        assert reply.headers["allow"] == "POST"
        reply = call(server, "POST", "/healthz", body=b"")
        assert reply.status == 405
        assert reply.headers["allow"] == "GET, HEAD"

    def test_head_uses_the_get_handler_without_a_body(self, server: HttpServer) -> None:
        reply = call(server, "HEAD", "/healthz")
        assert reply.status == 200
        assert reply.body == b""
        assert reply.headers["content-length"] == "3"

    def test_a_route_is_registered_once(self) -> None:
        router = Router()
        router.add_route("GET", "/a", echo)
        with pytest.raises(ValueError, match="already routed"):
            router.add_route("get", "/a", echo)
        with pytest.raises(ValueError, match="unsupported method"):
            router.add_route("BREW", "/a", echo)
        with pytest.raises(ValueError, match="starts with '/'"):
            router.add_route("GET", "a", echo)
        assert router.routes() == [("GET", "/a")]


class TestLimits:
    def test_an_oversized_body_is_refused_before_it_is_read(self, server: HttpServer) -> None:
        server.add_route("POST", "/api/upload", echo)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.putrequest("POST", "/api/upload")
            connection.putheader("Content-Length", str(DEFAULT_MAX_BODY_BYTES + 1))
            connection.endheaders()  # the body is never sent
            response = connection.getresponse()
            assert response.status == 413
            assert json.loads(response.read())["status"] == 413
            assert response.getheader("Connection") == "close"
        finally:
            connection.close()

    def test_the_limit_is_configurable_and_inclusive(self, make_server: ServerFactory) -> None:
        server = make_server(max_body_bytes=16)
        server.add_route("POST", "/api/upload", echo)
        assert call(server, "POST", "/api/upload", body=b"x" * 16).json()["length"] == 16
        assert call(server, "POST", "/api/upload", body=b"x" * 17).status == 413

    def test_a_bad_content_length_is_a_400(self, server: HttpServer) -> None:
        server.add_route("POST", "/api/upload", echo)
        reply = call(server, "POST", "/api/upload", headers={"Content-Length": "-5"})
        assert reply.status == 400

    def test_a_truncated_body_is_a_400(self, server: HttpServer) -> None:
        server.add_route("POST", "/api/upload", echo)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
            raw.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"ended after 5 of 100 bytes" in answer
        assert call(server, "GET", "/healthz").status == 200

    def test_a_chunked_body_needs_a_length(self, server: HttpServer) -> None:
        server.add_route("POST", "/api/upload", echo)
        # The whole request goes out in one write: the server answers 411 after the headers and
        # closes, which must not race with a client still sending its body.
        request = (
            b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            answer = sock.makefile("rb").readline()
        assert answer.startswith(b"HTTP/1.") and b" 411 " in answer


class TestErrors:
    def test_a_failing_handler_is_a_500_and_the_server_goes_on(
        self, server: HttpServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(request: Request) -> Response:
            raise RuntimeError("ledger exploded")

        server.add_route("GET", "/broken", broken)
        with caplog.at_level(logging.ERROR, logger="daemon.web.http"):
            for _ in range(3):
                reply = call(server, "GET", "/broken")
                assert reply.status == 500
                assert reply.json() == {"error": "internal server error", "status": 500}
        assert "ledger exploded" in caplog.text  # the traceback is logged, not sent
        assert b"ledger exploded" not in reply.body
        assert call(server, "GET", "/healthz").status == 200
        assert server.running

    def test_http_error_sets_the_status(self, server: HttpServer) -> None:
        def conflict(request: Request) -> Response:
            raise HttpError(409, "already confirmed", headers={"X-Review": "17"})

        server.add_route("POST", "/api/reviews/{result_id}/confirm", conflict)
        reply = call(server, "POST", "/api/reviews/17/confirm", body=b"{}")
        assert reply.status == 409
        assert reply.headers["x-review"] == "17"
        assert reply.json() == {"error": "already confirmed", "status": 409}

    def test_respond_never_raises(self) -> None:
        server = HttpServer("127.0.0.1", 0)
        server.add_route("GET", "/nan", lambda r: Response.json({"x": float("nan")}))
        assert server.respond(Request("GET", "/nan")).status == 500
        assert server.respond(Request("GET", "/missing")).status == 404


class TestMetricsEndpoint:
    @pytest.fixture
    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        Metrics(registry, inbox_roots=["ftir"]).file_finished("done", now=NOW, seconds=0.01)
        return registry

    def test_text_exposition(self, make_server: ServerFactory, registry: CollectorRegistry) -> None:
        server = make_server(registry=registry)
        reply = call(server, "GET", "/metrics")
        assert reply.status == 200
        assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert b'mpwatch_files_total{outcome="done"} 1.0' in reply.body
        assert b'mpwatch_watcher_up{root="ftir"} 0.0' in reply.body

    def test_openmetrics_when_asked(self, make_server: ServerFactory, registry: CollectorRegistry) -> None:
        server = make_server(registry=registry)
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        reply = call(server, "GET", "/metrics", headers={"Accept": accept})
        assert reply.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert reply.body.endswith(b"# EOF\n")

    def test_gzip_when_accepted(self, make_server: ServerFactory, registry: CollectorRegistry) -> None:
        server = make_server(registry=registry)
        reply = call(server, "GET", "/metrics", headers={"Accept-Encoding": "gzip, deflate"})
        assert reply.headers["content-encoding"] == "gzip"
        assert b"mpwatch_files_total" in gzip.decompress(reply.body)

    def test_no_registry_no_metrics_route(self, server: HttpServer) -> None:
        assert call(server, "GET", "/metrics").status == 404


class TestHealth:
    def test_ok_without_a_heartbeat(self, server: HttpServer) -> None:
        reply = call(server, "GET", "/healthz")
        assert (reply.status, reply.body) == (200, b"ok\n")

    def test_follows_the_heartbeat(self, make_server: ServerFactory) -> None:
        now = [0.0]
        heartbeat = Heartbeat(clock=lambda: now[0])
        server = make_server(heartbeat_age=heartbeat.age, max_heartbeat_age=30.0)
        now[0] = 30.0
        assert call(server, "GET", "/healthz").status == 200
        now[0] = 30.5
        reply = call(server, "GET", "/healthz")
        assert reply.status == 503
        assert reply.body.startswith(b"stale: the main loop last beat 30.5 s ago")
        heartbeat.beat()
        assert call(server, "GET", "/healthz").status == 200


class TestReadiness:
    @staticmethod
    def checks(*, model: bool = True, ledger: bool = True, raman: bool = True) -> dict[str, object]:
        return {"model_loaded": model, "ledger_open": ledger, "watchers_up": {"ftir": True, "raman": raman}}

    def test_ready_when_every_check_passes(self, make_server: ServerFactory) -> None:
        server = make_server(readiness=self.checks)
        reply = call(server, "GET", "/readyz")
        assert reply.status == 200
        assert reply.json() == {"ready": True, "checks": self.checks()}

    @pytest.mark.parametrize("failing", ["model", "ledger", "raman"])
    def test_not_ready_when_one_check_fails(self, make_server: ServerFactory, failing: str) -> None:
        checks = self.checks(**{failing: False})
        server = make_server(readiness=lambda: checks)
        reply = call(server, "GET", "/readyz")
        assert reply.status == 503
        assert reply.json() == {"ready": False, "checks": checks}

    def test_a_failing_check_is_not_ready(
        self, make_server: ServerFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken() -> dict[str, object]:
            raise OSError("database disk image is malformed")

        server = make_server(readiness=broken)
        with caplog.at_level(logging.ERROR, logger="daemon.web.http"):
            reply = call(server, "GET", "/readyz")
        assert reply.status == 503
        assert reply.json()["ready"] is False
        assert "malformed" in reply.json()["error"]
        assert "readiness checks failed" in caplog.text

    def test_ready_without_checks(self, server: HttpServer) -> None:
        reply = call(server, "GET", "/readyz")
        assert (reply.status, reply.json()) == (200, {"ready": True, "checks": {}})

    def test_all_checks_pass(self) -> None:
        assert all_checks_pass({})
        assert all_checks_pass({"a": True, "b": {"c": True, "d": {}}})
        assert not all_checks_pass({"a": True, "b": {"c": {"d": False}}})
        assert not all_checks_pass({"watchers_up": {"ftir": 0}})


class TestLifecycle:
    def test_port_zero_picks_a_free_port_and_logs_it(self, caplog: pytest.LogCaptureFixture) -> None:
        server = HttpServer("127.0.0.1", 0)
        with pytest.raises(RuntimeError, match="not started"):
            _ = server.port
        with caplog.at_level(logging.INFO, logger="daemon.web.http"):
            server.start()
        try:
            assert server.port > 0
            assert server.url == f"http://127.0.0.1:{server.port}"
            assert f"listening on http://127.0.0.1:{server.port}" in caplog.text
            assert call(server, "GET", "/healthz").status == 200
        finally:
            server.shutdown()

    def test_shutdown_stops_serving_and_joins(self) -> None:
        server = HttpServer("127.0.0.1", 0)
        server.start()
        port = server.port
        assert server.running
        server.shutdown()
        assert not server.running
        assert not any(t.name == f"mpwatch-http-{port}" for t in threading.enumerate())
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        server.shutdown()  # a second call does nothing

    def test_shutdown_lets_a_request_in_flight_finish(self, server: HttpServer) -> None:
        entered, release = threading.Event(), threading.Event()

        def slow(request: Request) -> Response:
            entered.set()
            release.wait(10)
            return Response.text("finished")

        server.add_route("GET", "/slow", slow)
        replies: list[Reply] = []
        client = threading.Thread(target=lambda: replies.append(call(server, "GET", "/slow")))
        client.start()
        assert entered.wait(10)
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        stopper.join(0.2)
        assert stopper.is_alive()  # waiting for the request in flight
        release.set()
        stopper.join(10)
        client.join(10)
        assert not stopper.is_alive()
        assert [(r.status, r.body) for r in replies] == [(200, b"finished")]

    def test_context_manager_and_restart_guard(self) -> None:
        with HttpServer("127.0.0.1", 0) as server:
            assert call(server, "GET", "/healthz").status == 200
            with pytest.raises(RuntimeError, match="already started"):
                server.start()
        assert not server.running

    def test_a_port_in_use_fails_at_start(self, server: HttpServer) -> None:
        other = HttpServer("127.0.0.1", server.port)
        with pytest.raises(OSError):
            other.start()

    def test_arguments_are_checked(self) -> None:
        with pytest.raises(ValueError, match="port"):
            HttpServer("127.0.0.1", 70000)
        with pytest.raises(ValueError, match="max_body_bytes"):
            HttpServer("127.0.0.1", 0, max_body_bytes=-1)
        with pytest.raises(ValueError, match="max_heartbeat_age"):
            HttpServer("127.0.0.1", 0, max_heartbeat_age=0)
        assert DEFAULT_PORT == 9108
