"""``mpwatch inspect``: read one spectrum file and describe it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from engine.cli.common import EXIT_OK, stdout_console
from engine.io import read_spectra

__all__ = ["add_parsers"]


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.core.conventions import resolve

    spectra = read_spectra(args.file)
    first = resolve(spectra[0])
    summary = {
        **first.summary(),
        "n_spectra": len(spectra),
        "technique": first.technique,
        "technique_source": first.metadata["technique_source"],
        "y_unit_source": first.metadata["y_unit_source"],
        "y_unit_confidence": first.metadata["y_unit_confidence"],
    }
    hidden = ("source", "format", "index", *summary)
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return EXIT_OK
    table = Table(title=str(args.file), show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    extra = {k: v for k, v in first.metadata.items() if k not in hidden}
    for key, value in list(extra.items())[:20]:
        table.add_row(f"[dim]{key}[/]", f"[dim]{str(value)[:100]}[/]")
    stdout_console().print(table)
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("inspect", help="read one spectrum file and describe it")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_inspect)
