"""``mpwatch results``: read back what the daemon recorded in its state folder (no daemon needed)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from daemon.config import ConfigError
from daemon.store.export import result_row
from daemon.store.ledger import FileState, Ledger, ResultStatus

__all__ = ["add_parsers", "parse_time"]


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


def add_parsers(sub: Any) -> None:
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
