"""``mpwatch run`` and ``mpwatch results``: the daemon and what it recorded."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from daemon.config import Config, ConfigError, load_config
from daemon.store.export import result_row
from daemon.store.ledger import FileState, Ledger, ResultStatus
from daemon.store.lock import StateLock

__all__ = ["add_parsers", "parse_time"]

logger = logging.getLogger("mpwatch")

DEMO_SAMPLES = Path(__file__).resolve().parents[2] / "engine" / "data" / "demo"
CONFIG_SEARCH = (Path("config.yaml"), Path("/etc/mpwatch/config.yaml"))


def _config_path(given: Path | None) -> Path:
    if given is not None:
        return given
    for candidate in CONFIG_SEARCH:
        if candidate.is_file():
            return candidate
    raise ConfigError("no configuration file: pass --config FILE (see config.yaml in the repository)")


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


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.service import Daemon

    path = _config_path(args.config)
    overrides = _overrides(args)
    config = load_config(path, overrides=overrides)
    logging.getLogger().setLevel(config.logging.level)
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


def parse_time(text: str) -> float:
    """Epoch seconds from epoch seconds, an ISO 8601 time, or an age such as ``30m``, ``2h``, ``1d``."""
    age = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if age:
        seconds = float(age.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[age.group(2)]
        return dt.datetime.now(dt.UTC).timestamp() - seconds
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--since {text!r}: give epoch seconds, an ISO time or an age like 2h") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


#: ``mpwatch results --status`` values that name files the daemon could not classify.
FILE_STATES = ("quarantined", "failed")


def _file_rows(ledger: Ledger, state: str) -> list[dict[str, Any]]:
    """Every file in ``state`` with its reason, oldest first."""
    rows: list[dict[str, Any]] = []
    while True:
        page = ledger.files(state=FileState(state), limit=1000, offset=len(rows))
        rows.extend(
            {
                "source": r.path,
                "state": str(r.state),
                "reason": r.reason or "",
                "attempts": r.attempts,
                "sha256": r.sha256,
                "updated_at": r.updated_at,
            }
            for r in page
        )
        if len(page) < 1000:
            return rows


def _print_files(rows: list[dict[str, Any]], *, form: str) -> None:
    if form == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
    elif form == "csv":
        writer = csv.DictWriter(
            sys.stdout, fieldnames=list(rows[0]) if rows else ["source"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table("source", "state", "attempts", "reason", "when")
        for row in rows:
            when = dt.datetime.fromtimestamp(row["updated_at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(Path(row["source"]).name, row["state"], str(row["attempts"]), row["reason"], when)
        Console().print(table)


def cmd_results(args: argparse.Namespace) -> int:
    state = Path(args.state)
    if not (state / "ledger.sqlite3").is_file():
        raise ConfigError(f"{state} holds no ledger (is it the daemon's state_dir?)")
    if args.status in FILE_STATES:
        with Ledger.in_state_dir(state) as ledger:
            _print_files(_file_rows(ledger, args.status), form=args.format)
        return 0
    since = parse_time(args.since) if args.since else None
    status = ResultStatus(args.status) if args.status else None
    rows: list[dict[str, Any]] = []
    with Ledger.in_state_dir(state) as ledger:
        while True:
            page = ledger.results(since=since, status=status, label=args.label, limit=1000, offset=len(rows))
            rows.extend(result_row(r) for r in page)
            if len(page) < 1000:
                break
    if args.format == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
    elif args.format == "csv":
        fields = [
            "result_id",
            "source",
            "index",
            "created_at",
            "status",
            "label",
            "material",
            "confidence",
            "model_version",
        ]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table("id", "source", "#", "status", "label", "confidence", "when")
        for row in rows:
            when = dt.datetime.fromtimestamp(row["created_at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(
                str(row["result_id"]),
                Path(row["source"]).name,
                str(row["index"]),
                row["status"],
                row["label"] or "",
                f"{row['confidence'] or 0:.2f}",
                when,
            )
        Console().print(table)
    return 0


def _daemon_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    config = load_config(_config_path(args.config))
    host = "127.0.0.1" if config.http.host in ("0.0.0.0", "::") else config.http.host
    return f"http://{host}:{config.http.port}"


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
    url = _daemon_url(args) + "/api/confirm"
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
    sys.stdout.write(json.dumps(outcome) + "\n")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon: watch inboxes, classify every new spectrum")
    p.add_argument(
        "--config", type=Path, help="configuration file (default: ./config.yaml, /etc/mpwatch/config.yaml)"
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
    p.add_argument("--config", type=Path, help="the daemon's configuration, to find its address")
    p.add_argument("--url", help="the daemon's address, e.g. http://127.0.0.1:9108")
    p.add_argument("--token", help="API token (or MPWATCH_TOKEN)")
    p.set_defaults(func=cmd_confirm)

    p = sub.add_parser("results", help="read back what the daemon recorded")
    p.add_argument("--state", required=True, metavar="DIR", help="the daemon's state folder")
    p.add_argument("--since", metavar="T", help="epoch seconds, ISO time, or an age like 30m, 2h, 1d")
    p.add_argument(
        "--status",
        choices=[*(s.value for s in ResultStatus), *FILE_STATES],
        help="only results of this outcome; quarantined or failed lists those files, with each one's reason",
    )
    p.add_argument("--label", help="only this polymer label")
    p.add_argument("--format", choices=("jsonl", "csv", "table"), default="table")
    p.set_defaults(func=cmd_results)
