"""``mpwatch report``: a sample report a lab can file, per sample folder, from the daemon's ledger.

For each sample folder (or the one ``--sample`` names) it writes ``OUT/<sample>/report.html``
(self-contained, printable), ``particles.csv`` and ``summary.csv``; :mod:`engine.report` counts and
writes them, :mod:`daemon.store.reports` gathers the particles from the ledger. No daemon is needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.cli.locate import add_state_argument, load_configuration, with_ledger
from daemon.config import ConfigError
from daemon.store.connection import in_sample
from daemon.store.export import report_settings
from daemon.store.ledger import Ledger
from daemon.store.reports import sample_folders, write_sample_report

__all__ = ["add_parsers"]


def _out_names(folders: list[str]) -> dict[str, str]:
    """A folder name per sample under OUT; samples of the same name get a number.

    >>> _out_names(["/in/a/f1", "/in/b/f1", "/in/b/f2"])
    {'/in/a/f1': 'f1', '/in/b/f1': 'f1-2', '/in/b/f2': 'f2'}
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for folder in folders:
        base = PurePosixPath(folder).name or "root"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        names[folder] = name
    return names


def cmd_report(args: argparse.Namespace) -> int:
    config, _ = load_configuration(args.config)
    if args.state:
        config = config.model_copy(update={"state_dir": Path(args.state)})
    state = with_ledger(config.state_dir)
    settings = report_settings(config)
    with Ledger.in_state_dir(state) as ledger:
        folders = sample_folders(ledger)
        chosen = [f for f in folders if args.sample is None or in_sample(f + "/x", args.sample.strip("/"))]
        if not chosen:
            what = f"a sample {args.sample}" if args.sample else "any sample"
            raise ConfigError(f"the ledger in {state} holds no results for {what}")
        names = _out_names(chosen)
        for folder in chosen:
            paths = write_sample_report(ledger, folder, args.out / names[folder], settings, folders=folders)
            sys.stdout.write(f"{names[folder]}: {paths['report.html']}\n")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("report", help="write a sample report (HTML, particles.csv, summary.csv) per sample")
    add_state_argument(p)
    p.add_argument("--config", type=Path, help="the daemon's configuration (size classes, blanks, libraries)")
    p.add_argument(
        "--sample", metavar="NAME", help="only the sample folder NAME (its name, or the end of its path)"
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the reports are written")
    p.set_defaults(func=cmd_report)
