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

from rich import box
from rich.table import Table

from daemon.cli.locate import add_state_argument, state_folder, with_ledger
from daemon.config import ConfigError
from daemon.store.export import result_row
from daemon.store.ledger import FileState, Ledger, ResultStatus, decided_by_model
from daemon.store.maps import PARTICLE_FIELDS
from daemon.store.records import iso_time
from engine.cli.common import stdout_console

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
FILE_STATES = ("quarantined", "failed", "ignored")


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
                "updated_at": iso_time(r.updated_at),
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
            when = row["updated_at"].replace("T", " ").removesuffix("+00:00")
            table.add_row(Path(row["source"]).name, row["state"], str(row["attempts"]), row["reason"], when)
        stdout_console().print(table)


#: Columns of ``mpwatch results --format csv``: flat, ISO 8601 times, a decision in five columns.
CSV_FIELDS = (
    "result_id",
    "sample",
    "source",
    "index",
    "created_at",
    "status",
    "label",
    "material",
    "confidence",
    "vote_share",
    "best_hit",
    "best_r",
    "decision",
    "decided_by",
    "decided_at",
    "original_status",
    "original_label",
    "duplicate_of",
    "model_version",
)


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    decision = row.get("decision") or {}
    return {
        **row,
        "decision": decision.get("state", ""),
        "decided_by": decision.get("by", ""),
        "decided_at": decision.get("at", ""),
        "original_status": decision.get("original_status", ""),
        "original_label": decision.get("original_label", ""),
    }


def _shown_status(row: dict[str, Any]) -> str:
    """The status a person reads: ``confirmed`` for a result an analyst confirmed."""
    decision = row.get("decision") or {}
    if decision.get("state") == "confirmed" and not decided_by_model(str(decision.get("by", ""))):
        return "confirmed"
    return str(row["status"])


#: How the table marks a file whose bytes were classified under another name.
DUPLICATE_MARK = " (dup)"


def middle_cut(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters: file names differ at both ends.

    >>> middle_cut("particle_00042_exported.csv", 16)
    'particle…ted.csv'
    """
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + "…" + text[-tail:]


def results_table(rows: list[dict[str, Any]], *, width: int) -> Table:
    """The rows as a table that fits ``width`` columns (80 and up): one line per result.

    The spectrum index shows only when a file holds several spectra, the time only when
    there is room; long names are cut in the middle, never wrapped, and a duplicate file
    is marked ``(dup)``.
    """
    with_index = any(row["index"] for row in rows)
    with_time = width >= 100
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("id", justify="right", no_wrap=True)
    name_width = 24 if with_time else 16
    table.add_column("sample", no_wrap=True, max_width=12)
    table.add_column("file", no_wrap=True, max_width=name_width)
    if with_index:
        table.add_column("#", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("label", no_wrap=True, overflow="ellipsis", max_width=8)
    table.add_column("conf", justify="right", no_wrap=True)
    table.add_column("best hit (r)", no_wrap=True, overflow="ellipsis", max_width=14)
    if with_time:
        table.add_column("classified (UTC)", no_wrap=True)
    for row in rows:
        name = middle_cut(Path(row["source"]).name, name_width)
        if row.get("duplicate_of"):  # the original's name is in duplicate_of (jsonl, csv)
            name = middle_cut(Path(row["source"]).name, name_width - len(DUPLICATE_MARK)) + DUPLICATE_MARK
        confidence = row["confidence"]
        best = f"{row['best_hit']} ({row['best_r']:.3f})" if row.get("best_hit") else ""  # 0.997 is no 1.00
        cells = [str(row["result_id"]), middle_cut(row["sample"], 12), name]
        if with_index:
            cells.append(str(row["index"]))
        cells += [
            _shown_status(row),
            row["label"] or "",
            "" if confidence is None else f"{confidence:.2f}",
            best,
        ]
        if with_time:
            cells.append(str(row["created_at"]).replace("T", " ").removesuffix("+00:00"))
        table.add_row(*cells)
    return table


def _particle_rows(
    ledger: Ledger,
    *,
    sample: str | None,
    label: str | None,
    status: str | None = None,
    since: float | None = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    read = 0
    while True:
        page = ledger.particles(sample=sample, limit=1000, offset=read)
        read += len(page)
        rows.extend(p.as_row() for p in page if since is None or p.created_at >= since)
        if len(page) < 1000:
            return [
                row
                for row in rows
                if (label is None or row["label"] == label) and (status is None or row["status"] == status)
            ]


def _print_particles(rows: list[dict[str, Any]], *, form: str) -> None:
    """Particles of maps as JSON lines, CSV (flat: hits and aging left out) or a table."""
    if form == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
    elif form == "csv":
        writer = csv.DictWriter(
            sys.stdout, fieldnames=PARTICLE_FIELDS, extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in rows)
    else:
        console = stdout_console()
        console.print(particles_table(rows, width=console.width))


def particles_table(rows: list[dict[str, Any]], *, width: int) -> Table:
    """Particles as a table that fits ``width`` columns (80 and up): one line per particle.

    ``id`` is what ``mpwatch confirm --particle`` takes. Sizes are in µm with a pixel size, else
    in pixels; the particle's index in its map and its pixel count show only when there is room,
    and names are cut in the middle, never wrapped.
    """
    wide = width >= 100
    names = ["id", "sample", "map", *(["#"] if wide else []), "status", "label", "conf"]
    names += ["pixels"] if wide else []
    names += ["feret max", "area"]
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True
    )
    for name in names:
        left = name in ("sample", "map", "status", "label")
        table.add_column(name, no_wrap=True, justify="left" if left else "right")
    for row in rows:
        unit, suffix = ("µm", "um") if row["feret_max_um"] is not None else ("px", "px")
        confidence = row["confidence"]
        cells = [
            str(row["id"]),
            middle_cut(row["sample"], 12 if wide else 8),
            middle_cut(Path(row["source"]).name, 24 if wide else 10),
            *([str(row["index"])] if wide else []),
            row["status"],
            middle_cut(row["label"] or "", 16 if wide else 8),
            "" if confidence is None else f"{confidence:.2f}",
            *([str(row["n_pixels"])] if wide else []),
            f"{row[f'feret_max_{suffix}']:.1f} {unit}",
            f"{row['area_um2' if suffix == 'um' else 'area_px']:.0f} {unit}²",
        ]
        table.add_row(*cells)
    return table


def cmd_results(args: argparse.Namespace) -> int:
    state = with_ledger(state_folder(args))
    if args.particles:
        with Ledger.in_state_dir(state) as ledger:
            since = parse_time(args.since) if args.since else None
            particles = _particle_rows(
                ledger, sample=args.sample, label=args.label, status=args.status, since=since
            )
            _print_particles(particles, form=args.format)
        return 0
    if args.status in FILE_STATES:
        with Ledger.in_state_dir(state) as ledger:
            _print_files(_file_rows(ledger, args.status), form=args.format)
        return 0
    since = parse_time(args.since) if args.since else None
    status = ResultStatus(args.status) if args.status else None
    rows: list[dict[str, Any]] = []
    with Ledger.in_state_dir(state) as ledger:
        maps = ledger.maps(sample=args.sample, limit=100_000) if since is None else []
        while True:
            page = ledger.results(
                since=since,
                status=status,
                label=args.label,
                sample=args.sample,
                duplicates=True,
                limit=1000,
                offset=len(rows),
            )
            rows.extend(result_row(r) for r in page)
            if len(page) < 1000:
                break
    if args.format == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in rows)
    else:
        console = stdout_console()
        console.print(results_table(rows, width=console.width))
        in_maps = sum(m.n_particles for m in maps)
        if in_maps:  # a map gives particles, not a result per spectrum: say where they are
            sys.stderr.write(
                f"mpwatch: the {len(maps)} imaging map(s) hold {in_maps} particles, listed apart: "
                "add --particles\n"
            )
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("results", help="read back what the daemon recorded")
    add_state_argument(p)
    p.add_argument("--config", type=Path, help="the daemon's configuration, to find its state folder")
    p.add_argument("--since", metavar="T", help="epoch seconds, ISO time, or an age like 30m, 2h, 1d")
    p.add_argument(
        "--status",
        choices=[*(s.value for s in ResultStatus), *FILE_STATES],
        help="only results of this outcome; quarantined, failed or ignored lists those files, with reasons",
    )
    p.add_argument("--label", help="only this polymer label (the final one: an analyst's decision counts)")
    p.add_argument(
        "--sample", metavar="NAME", help="only the sample folder NAME (its name, or the end of its path)"
    )
    p.add_argument(
        "--particles",
        action="store_true",
        help="list the particles of imaging maps (sizes, positions, labels) instead of results",
    )
    p.add_argument("--format", choices=("jsonl", "csv", "table"), default="table")
    p.set_defaults(func=cmd_results)
