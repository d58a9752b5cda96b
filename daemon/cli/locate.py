"""Where the commands find the daemon's configuration, its state folder and its address.

- :func:`load_configuration`: ``--config``, else the first of :data:`CONFIG_SEARCH`,
  else the packaged defaults (:data:`PACKAGED_CONFIG`) against the working directory;
- :func:`state_folder`: ``--state``, else the configuration's ``state_dir``;
- :func:`daemon_address`: ``--url``, else the address the running daemon wrote into
  its state folder (:mod:`daemon.web.address`), else the configured port.

So ``mpwatch results`` and ``mpwatch confirm`` run in the folder of ``mpwatch run``
find that daemon with no option at all, and ``--state DIR`` finds any other.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from daemon.config import Config, ConfigError, load_config
from daemon.store.ledger import LEDGER_FILENAME
from daemon.web.address import ADDRESS_FILE, AddressError, client_url, daemon_url

__all__ = [
    "CONFIG_SEARCH",
    "PACKAGED_CONFIG",
    "daemon_address",
    "load_configuration",
    "state_folder",
    "with_ledger",
]

#: Where a configuration is looked for when ``--config`` is not given, in this order.
CONFIG_SEARCH = (Path("config.yaml"), Path("/etc/mpwatch/config.yaml"))
#: The packaged defaults (in this package) used when no configuration file is found: an inbox
#: and a state folder, relative to the working directory; every other key has its schema default.
PACKAGED_CONFIG = "default_config.yaml"


def _config_path(given: Path | None) -> Path | None:
    """The configuration file: ``given``, else the first of :data:`CONFIG_SEARCH`; None: none found."""
    if given is not None:
        return given
    for candidate in CONFIG_SEARCH:
        if candidate.is_file():
            return candidate
    return None


def load_configuration(
    given: Path | None, overrides: Mapping[str, Any] | None = None
) -> tuple[Config, Path | None]:
    """The configuration and the file it came from (None: the packaged defaults, against the cwd)."""
    path = _config_path(given)
    if path is not None:
        return load_config(path, overrides=overrides), path
    with resources.as_file(resources.files("daemon.cli") / PACKAGED_CONFIG) as packaged:
        return load_config(packaged, overrides=overrides, base=Path.cwd()), None


def add_state_argument(parser: argparse.ArgumentParser) -> None:
    """``--state DIR``, which :func:`state_folder` reads (the commands that read the daemon's ledger)."""
    parser.add_argument(
        "--state", metavar="DIR", help="the daemon's state folder (default: the configuration's state_dir)"
    )


def state_folder(args: argparse.Namespace) -> Path:
    """The state folder a command reads: ``--state``, else the configuration's."""
    if getattr(args, "state", None):
        return Path(args.state)
    config, _ = load_configuration(getattr(args, "config", None))
    return config.state_dir


def with_ledger(state: Path) -> Path:
    """``state``, checked to hold the daemon's ledger: what the commands that read it start from.

    Raises:
        ConfigError: no ledger is there (a mistyped folder, or a daemon that never ran).
    """
    if not (state / LEDGER_FILENAME).is_file():
        raise ConfigError(f"{state} holds no ledger (is it the daemon's state_dir? give --state DIR)")
    return state


def daemon_address(args: argparse.Namespace) -> str:
    """The running daemon's URL: ``--url``; else the address file in the state folder (``--state``,
    else the configuration's); else, for a configuration whose daemon wrote none, the configured port.

    Raises:
        ConfigError: ``--state`` names a folder no running daemon wrote its address into.
    """
    if getattr(args, "url", None):
        return str(args.url).rstrip("/")
    try:
        if getattr(args, "state", None):
            return daemon_url(Path(args.state))
        config, _ = load_configuration(getattr(args, "config", None))
        if (config.state_dir / ADDRESS_FILE).exists():
            return daemon_url(config.state_dir)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None
    return client_url(config.http.host, config.http.port)
