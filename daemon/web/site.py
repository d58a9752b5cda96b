"""The daemon's HTTP site put together: the server, the review API and the console on one port."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from daemon.config import Config, ConfigError
from daemon.web.address import announce, withdraw
from daemon.web.api import install_api
from daemon.web.console import ConsoleSource, install_console
from daemon.web.http import HttpServer

__all__ = ["hang_up", "listen", "site"]


def site(
    daemon: ConsoleSource, *, registry: CollectorRegistry, heartbeat_age: Callable[[], float]
) -> HttpServer:
    """The server answering /metrics, /healthz, /readyz, the API and the console (not started).

    Everything is read from ``daemon`` (:class:`daemon.service.Daemon` is one): its
    configuration, readiness checks, ledger and library growth.
    """
    config = daemon.config
    server = HttpServer(
        config.http.host,
        config.http.port,
        registry=registry,
        heartbeat_age=heartbeat_age,
        readiness=daemon.readiness,
    )
    install_api(
        server,
        ledger=daemon.ledger,
        growth=daemon.growth,
        token=config.http.token,
        library_dir=lambda: daemon.growth.library_dir,
        loopback_only=not config.http.exposed,
    )
    install_console(server, daemon=daemon)
    return server


def listen(server: HttpServer, config: Config, *, now: float) -> None:
    """Start ``server`` and write its address into the state folder (:mod:`daemon.web.address`).

    A port that cannot be bound is one clear line (ConfigError), not a traceback.
    """
    try:
        server.start()
    except OSError as exc:
        host, port = config.http.host, config.http.port
        raise ConfigError(
            f"http.port: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "is another daemon running? Choose another port with --metrics-port"
        ) from None
    announce(config.state_dir, host=config.http.host, port=server.port, now=now)


def hang_up(server: HttpServer, config: Config) -> None:
    """Stop ``server`` and take back the address :func:`listen` wrote (if this process wrote it)."""
    withdraw(config.state_dir)
    server.shutdown()
