"""``mpwatch run`` and ``mpwatch confirm``: start the daemon, and send a decision to the running one."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich import box
from rich.table import Table

from daemon.cli.locate import CONFIG_SEARCH, PACKAGED_CONFIG, daemon_address, load_configuration
from daemon.cli.results import middle_cut
from daemon.config import Config, ConfigError
from daemon.store.lock import StateLock
from engine.cli.common import stdout_console

__all__ = ["add_parsers", "call_daemon", "clusters_table", "describe_outcome", "seed_demo"]

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


def call_daemon(args: argparse.Namespace, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """The running daemon's JSON answer to ``GET path``, or to ``POST path`` with ``body``.

    Raises:
        ConfigError: the daemon cannot be reached, or refused (its reason, one line).
    """
    import urllib.error
    import urllib.request

    url = daemon_address(args) + path
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    token = getattr(args, "token", None) or os.environ.get("MPWATCH_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    method = "GET" if body is None else "POST"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise ConfigError(f"the daemon refused: {detail}") from exc
    except urllib.error.URLError as exc:
        raise ConfigError(
            f"cannot reach the daemon at {url}: {exc.reason} (is 'mpwatch run' running?)"
        ) from exc


def cmd_confirm(args: argparse.Namespace) -> int:
    """Send a confirmation (or a rejection) of a result, a cluster or a map's particle to the running
    daemon's API."""
    if sum(x is not None for x in (args.result_id, args.cluster, args.particle)) != 1:
        raise ConfigError(
            "give a RESULT_ID, --cluster ID (from 'mpwatch clusters') or --particle ID "
            "(from 'mpwatch results --particles'), one of them"
        )
    body: dict[str, Any] = {"decided_by": args.by}
    if args.reject:
        body["reject"] = True
    elif args.label:
        body.update(label=args.label, add=args.add)
    else:
        raise ConfigError("give --label LABEL or --reject")
    if args.cluster is not None:
        cluster = quote(args.cluster, safe="")
        outcome = call_daemon(args, f"/api/clusters/{cluster}/confirm", body)
        what = f"cluster {args.cluster} ({len(outcome.get('result_ids') or [])} results)"
    elif args.particle is not None:
        outcome = call_daemon(args, "/api/confirm", {"particle_ids": args.particle, **body})
        what = f"particle{'s' if len(args.particle) > 1 else ''} {', '.join(map(str, args.particle))}"
    else:
        outcome = call_daemon(args, "/api/confirm", {"result_id": args.result_id, **body})
        what = f"result {args.result_id}"
    sys.stderr.write(describe_outcome(what, outcome) + "\n")
    sys.stdout.write(json.dumps(outcome) + "\n")
    return 0


def clusters_table(clusters: Sequence[Mapping[str, Any]]) -> Table:
    """The clusters as ``GET /api/clusters`` gives them, one line each (80 columns): what an analyst
    decides on. ``mean r`` and ``min r`` are the representative's mean and lowest Pearson r to the
    other members; the closest class is the one most members came closest to, with their mean r.

    The cluster id is never cut (``confirm --cluster`` takes it); the closest class wraps.
    """
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    ids = max((len(str(c["cluster_id"])) for c in clusters), default=7)
    table.add_column("cluster", no_wrap=True, min_width=ids)
    for name in ("size", "mean r", "min r"):
        table.add_column(name, no_wrap=True, justify="right")
    table.add_column("closest class", overflow="fold", ratio=1)
    table.add_column("tech", no_wrap=True)
    table.add_column("representative", no_wrap=True, overflow="ellipsis", max_width=24)
    for cluster in clusters:
        candidate, its_r = cluster.get("candidate"), cluster.get("candidate_r")
        closest = f"{candidate}: {cluster['candidate_count']} of {cluster['size']}" if candidate else "–"
        if candidate and its_r is not None:
            closest += f" (r {its_r:.2f})"
        row = cluster.get("representative_result") or {}
        name = middle_cut(Path(row["source"]).name, 16) if row.get("source") else ""
        table.add_row(
            str(cluster["cluster_id"]),
            str(cluster["size"]),
            f"{cluster['mean_r']:.3f}",
            f"{cluster['lowest_r']:.3f}",
            closest,
            str(cluster["technique"]),
            f"{cluster['representative']} {name}".strip(),
        )
    return table


def cmd_clusters(args: argparse.Namespace) -> int:
    """List the clusters of the running daemon's review queue."""
    clusters = call_daemon(args, "/api/clusters")
    if args.format == "jsonl":
        for cluster in clusters:
            sys.stdout.write(json.dumps(cluster) + "\n")
    elif not clusters:
        sys.stderr.write("no clusters: no two open reviews look alike\n")
    else:
        stdout_console().print(clusters_table(clusters))
        sys.stderr.write("decide one with: mpwatch confirm --cluster ID --label LABEL (or --reject)\n")
    return 0


#: What each kind of confirmation outcome did, in words.
_DID = {
    "new_class": "a new class in the library",
    "added": "added to the library",
    "positive": "the classifier had it right; the library is unchanged",
    "rejected": "rejected",
    "unchanged": "nothing changed",
}


def describe_outcome(what: str, outcome: Mapping[str, Any]) -> str:
    """One line for the analyst: what the daemon did with a decision on ``what`` (a result, a cluster).

    >>> print(describe_outcome("result 28", {"kind": "new_class", "label": "PVC", "library_version": 7,
    ...     "seconds_to_serve": 0.007, "reviews_resolved": 0, "note": ""}))
    result 28: PVC, a new class in the library (version 7, served after 7 ms)
    """
    kind = str(outcome.get("kind"))
    if kind == "unchanged" and outcome.get("note"):
        return str(outcome["note"])
    parts = [f"{what}: " + (f"{outcome['label']}, " if outcome.get("label") else "")]
    parts.append(_DID.get(kind, kind))
    if kind in ("new_class", "added"):
        served = outcome.get("seconds_to_serve")
        took = f", served after {served * 1000:.0f} ms" if isinstance(served, int | float) else ""
        parts.append(f" (version {outcome.get('library_version')}{took})")
    if kind == "rejected" and not outcome.get("note"):
        parts.append("; the library is unchanged")  # else the note says which references were taken back
    if outcome.get("reviews_resolved"):
        parts.append(f"; {outcome['reviews_resolved']} more open reviews are now known to the model")
    if outcome.get("note"):
        parts.append(f"; {outcome['note']}")
    return "".join(parts)


def _daemon_options(p: argparse.ArgumentParser) -> None:
    """How a command finds the running daemon (:func:`daemon.cli.locate.daemon_address`)."""
    p.add_argument(
        "--state", metavar="DIR", help="the daemon's state folder: its address is read from DIR/daemon.json"
    )
    p.add_argument(
        "--config", type=Path, help="the daemon's configuration (its state folder), to find its address"
    )
    p.add_argument("--url", help="the daemon's address, e.g. http://127.0.0.1:9108 (overrides the others)")


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

    p = sub.add_parser(
        "confirm",
        help="confirm (or reject) a result, a cluster or a map's particle; the running daemon learns from it",
    )
    p.add_argument("result_id", type=int, nargs="?", help="the result_id from 'mpwatch results'")
    p.add_argument(
        "--cluster",
        metavar="ID",
        help="decide a whole cluster from 'mpwatch clusters' instead: one library version for all of it",
    )
    p.add_argument(
        "--particle",
        type=int,
        nargs="+",
        metavar="ID",
        help="decide unknown particles of maps instead (their ids from 'mpwatch results --particles'); "
        "several confirmed together make one library version",
    )
    p.add_argument("--label", help="the polymer it really is")
    p.add_argument("--reject", action="store_true", help="mark the result wrong without adding anything")
    p.add_argument(
        "--add", action="store_true", help="add to the library even when it confirms a known result"
    )
    p.add_argument("--by", default=os.environ.get("USER", "analyst"), help="who decided (kept as provenance)")
    _daemon_options(p)
    p.add_argument("--token", help="API token (or MPWATCH_TOKEN)")
    p.set_defaults(func=cmd_confirm)

    p = sub.add_parser("clusters", help="list the running daemon's review queue grouped into clusters")
    _daemon_options(p)
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.set_defaults(func=cmd_clusters)
