"""``mpwatch run`` and ``mpwatch confirm``: start the daemon, and send a decision to the running one."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from daemon.cli.locate import CONFIG_SEARCH, PACKAGED_CONFIG, daemon_address, load_configuration
from daemon.config import Config, ConfigError
from daemon.store.lock import StateLock

__all__ = ["add_parsers", "seed_demo"]

logger = logging.getLogger("mpwatch")


DEMO_SAMPLES = Path(__file__).resolve().parents[2] / "engine" / "data" / "demo"
def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.inbox:
        out["inboxes"] = [
            {
                "path": str(Path(p).resolve()),
                "name": re.sub(r"[^A-Za-z0-9_-]", "_", Path(p).resolve().name)[:40] or "inbox",
            }
            for p in args.inbox
        ]
    if args.state:
        out["state_dir"] = str(Path(args.state).resolve())
    if args.library:
        out["library"] = str(Path(args.library).resolve())
    http: dict[str, Any] = {}
    if args.metrics_port is not None:
        http["port"] = args.metrics_port
    if args.host:
        http["host"] = args.host
    if http:
        out["http"] = http
    return out


def seed_demo(config: Config) -> int:
    """Copy the bundled demo spectra into the first inbox when it holds no files yet."""
    inbox = config.inboxes[0].path
    inbox.mkdir(parents=True, exist_ok=True)
    if any(p.is_file() for p in inbox.rglob("*")):
        return 0
    shutil.copytree(DEMO_SAMPLES, inbox, dirs_exist_ok=True)
    return sum(1 for p in inbox.rglob("*") if p.is_file())


def _use_packaged_defaults(config: Config, *, own_inbox: bool) -> None:
    """Say that the packaged defaults are in use; make their inbox, which nobody else will."""
    if own_inbox:
        for inbox in config.inboxes:
            inbox.path.mkdir(parents=True, exist_ok=True)
    logger.info(
        "no configuration file found (none of %s): using the packaged defaults daemon/cli/%s "
        "(inbox %s, state %s); pass --config FILE to use your own",
        ", ".join(map(str, CONFIG_SEARCH)),
        PACKAGED_CONFIG,
        ", ".join(str(inbox.path) for inbox in config.inboxes),
        config.state_dir,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.service import Daemon

    overrides = _overrides(args)
    config, path = load_configuration(args.config, overrides)
    logging.getLogger().setLevel(config.logging.level)
    if path is None:
        _use_packaged_defaults(config, own_inbox=not args.inbox)
    # refuse a second daemon on this state folder now, before minutes of loading models;
    # Daemon.start holds the lock for good
    probe = StateLock(config.state_dir)
    probe.acquire()
    probe.release()
    if args.seed_demo:
        copied = seed_demo(config)
        if copied:
            logger.info("copied %d demo spectra into %s", copied, config.inboxes[0].path)
    daemon = Daemon(config, config_path=path, overrides=overrides)
    daemon.install_signal_handlers()
    logger.info(
        "mpwatch running: model %s; results in %s; stop with Ctrl-C",
        daemon.models.get().version,
        config.state_dir / "results",
    )
    daemon.run()
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    """Send a confirmation (or a rejection) to the running daemon's API."""
    import urllib.error
    import urllib.request

    body: dict[str, Any] = {"result_id": args.result_id, "decided_by": args.by}
    if args.reject:
        body["reject"] = True
    elif args.label:
        body.update(label=args.label, add=args.add)
    else:
        raise ConfigError("give --label LABEL or --reject")
    url = daemon_address(args) + "/api/confirm"
    headers = {"Content-Type": "application/json"}
    token = args.token or os.environ.get("MPWATCH_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            outcome = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise ConfigError(f"the daemon refused: {detail}") from exc
    except urllib.error.URLError as exc:
        raise ConfigError(
            f"cannot reach the daemon at {url}: {exc.reason} (is 'mpwatch run' running?)"
        ) from exc
    sys.stderr.write(describe_outcome(args.result_id, outcome) + "\n")
    sys.stdout.write(json.dumps(outcome) + "\n")
    return 0


#: What each kind of confirmation outcome did, in words.
_DID = {
    "new_class": "a new class in the library",
    "added": "added to the library",
    "positive": "the classifier had it right; the library is unchanged",
    "rejected": "rejected; the library is unchanged",
    "unchanged": "nothing changed",
}


def describe_outcome(result_id: int, outcome: Mapping[str, Any]) -> str:
    """One line for the analyst: what the daemon did with a decision.

    >>> print(describe_outcome(28, {"kind": "new_class", "label": "PVC", "library_version": 7,
    ...     "seconds_to_serve": 0.007, "reviews_resolved": 0, "note": ""}))
    result 28: PVC, a new class in the library (version 7, served after 7 ms)
    """
    kind = str(outcome.get("kind"))
    if kind == "unchanged" and outcome.get("note"):
        return str(outcome["note"])
    parts = [f"result {result_id}: " + (f"{outcome['label']}, " if outcome.get("label") else "")]
    parts.append(_DID.get(kind, kind))
    if kind in ("new_class", "added"):
        served = outcome.get("seconds_to_serve")
        took = f", served after {served * 1000:.0f} ms" if isinstance(served, int | float) else ""
        parts.append(f" (version {outcome.get('library_version')}{took})")
    if outcome.get("reviews_resolved"):
        parts.append(f"; {outcome['reviews_resolved']} more open reviews are now known to the model")
    if outcome.get("note"):
        parts.append(f"; {outcome['note']}")
    return "".join(parts)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon: watch inboxes, classify every new spectrum")
    p.add_argument(
        "--config",
        type=Path,
        help="configuration file (default: ./config.yaml, /etc/mpwatch/config.yaml, else the packaged "
        "defaults: inbox ./inbox, state ./mpwatch-state)",
    )
    p.add_argument(
        "--inbox", action="append", metavar="DIR", help="folder to watch, replaces the configured ones"
    )
    p.add_argument("--state", metavar="DIR", help="state folder (ledger, results, quarantine)")
    p.add_argument("--library", metavar="LIBDIR", help="reference library folder")
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="HTTP port; 0 picks a free one and logs it"
    )
    p.add_argument("--host", help="HTTP bind address")
    p.add_argument(
        "--seed-demo", action="store_true", help="copy the bundled demo spectra into an empty inbox"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("confirm", help="confirm (or reject) a result; the running daemon learns from it")
    p.add_argument("result_id", type=int, help="the result_id from 'mpwatch results'")
    p.add_argument("--label", help="the polymer it really is")
    p.add_argument("--reject", action="store_true", help="mark the result wrong without adding anything")
    p.add_argument(
        "--add", action="store_true", help="add to the library even when it confirms a known result"
    )
    p.add_argument("--by", default=os.environ.get("USER", "analyst"), help="who decided (kept as provenance)")
    p.add_argument(
        "--state", metavar="DIR", help="the daemon's state folder: its address is read from DIR/daemon.json"
    )
    p.add_argument(
        "--config", type=Path, help="the daemon's configuration (its state folder), to find its address"
    )
    p.add_argument("--url", help="the daemon's address, e.g. http://127.0.0.1:9108 (overrides the others)")
    p.add_argument("--token", help="API token (or MPWATCH_TOKEN)")
    p.set_defaults(func=cmd_confirm)
