"""Where the running daemon answers: ``<state_dir>/daemon.json``, so client commands find it.

The daemon writes the file (atomically) once its HTTP server listens, with the
address clients should call, and removes it when it stops. ``mpwatch confirm
--state DIR`` reads it, so a daemon started with ``--metrics-port 0`` or any other
port is found from its state folder alone. A file left by a daemon that was killed
names a process that no longer runs; :func:`daemon_url` says so instead of
letting the client wait for a connection that cannot come.

>>> import tempfile
>>> state = Path(tempfile.mkdtemp())
>>> _ = write_address(state, host="0.0.0.0", port=9123, pid=os.getpid(), now=0.0)
>>> daemon_url(state)
'http://127.0.0.1:9123'
>>> remove_address(state)
>>> daemon_url(state)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
daemon.web.address.AddressError: no daemon is running on the state folder ... (it has no daemon.json); ...
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Final

from daemon.store.records import iso_time
from engine.core.storage import atomic_write_text

__all__ = [
    "ADDRESS_FILE",
    "AddressError",
    "announce",
    "client_url",
    "daemon_url",
    "remove_address",
    "withdraw",
    "write_address",
]

logger = logging.getLogger(__name__)

#: The address file's name in the state folder.
ADDRESS_FILE: Final = "daemon.json"

#: Bind addresses that mean "every interface": clients call the loopback address instead.
_ANY_V4, _ANY_V6 = "0.0.0.0", "::"


class AddressError(Exception):
    """No running daemon can be found from a state folder."""


def client_url(host: str, port: int) -> str:
    """The URL a client on this machine calls for a server bound to ``host``:``port``.

    >>> client_url("::", 9108), client_url("10.0.0.5", 80)
    ('http://[::1]:9108', 'http://10.0.0.5:80')
    """
    if host == _ANY_V4 or not host:
        host = "127.0.0.1"
    elif host == _ANY_V6:
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def write_address(state_dir: Path, *, host: str, port: int, pid: int, now: float) -> Path:
    """Record where the daemon of ``state_dir`` answers (replacing any earlier file atomically)."""
    path = Path(state_dir) / ADDRESS_FILE
    record = {
        "url": client_url(host, port),
        "host": host,
        "port": port,
        "pid": pid,
        "started_at": iso_time(now),
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def remove_address(state_dir: Path, *, pid: int | None = None) -> None:
    """Forget the address (the daemon stops); no error when it is already gone.

    With ``pid``, only an address that process wrote: a daemon refused on a state folder
    another one holds leaves that one's address alone.
    """
    path = Path(state_dir) / ADDRESS_FILE
    if pid is not None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(record, dict) or record.get("pid") != pid:
            return
    path.unlink(missing_ok=True)


def announce(state_dir: Path, *, host: str, port: int, now: float) -> None:
    """:func:`write_address` for this process; a failure is logged, never raised (clients then need --url)."""
    try:
        write_address(state_dir, host=host, port=port, pid=os.getpid(), now=now)
    except OSError as exc:
        logger.error("cannot write the daemon's address into %s: %s", state_dir, exc)


def withdraw(state_dir: Path) -> None:
    """:func:`remove_address` of this process's address, a failure logged, never raised (it is stopping)."""
    try:
        remove_address(state_dir, pid=os.getpid())
    except OSError as exc:
        logger.warning("cannot remove the daemon's address file from %s: %s", state_dir, exc)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def daemon_url(state_dir: Path) -> str:
    """The URL of the daemon running on ``state_dir``.

    Raises:
        AddressError: no daemon wrote its address there, the file is unreadable, or the
            process that wrote it has stopped.
    """
    path = Path(state_dir) / ADDRESS_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AddressError(
            f"no daemon is running on the state folder {state_dir} (it has no {ADDRESS_FILE}); "
            "start one with 'mpwatch run', or give --url"
        ) from None
    except (OSError, ValueError) as exc:
        raise AddressError(f"cannot read {path}: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("url"), str):
        raise AddressError(f"{path} does not name a daemon's address")
    pid = record.get("pid")
    if isinstance(pid, int) and not _running(pid):
        raise AddressError(
            f"the daemon that wrote {path} (process {pid}) is no longer running; start it with 'mpwatch run'"
        )
    return str(record["url"])
