"""The ``mpwatch`` command line: one subcommand per job, each a thin layer over engine/ and daemon/.

Exit codes: 0 success, 1 a failure while working, 2 bad input (a file that
cannot be read, a bad argument or configuration), with one readable line on
standard error.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.core.spectrum import SpectrumError
from engine.io import read_spectra

# The rest (scikit-learn, FAISS, the daemon) is imported where it is used: this module is the
# program's __main__, which every helper process imports again, and the helpers must stay small.

__all__ = ["main"]

logger = logging.getLogger("mpwatch")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 2."""


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


# -- inspect --------------------------------------------------------------------------------------


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
    _stdout().print(table)
    return EXIT_OK


# -- library --------------------------------------------------------------------------------------


def _count_inputs(folder: Path) -> int:
    from engine.io.labelled_set import is_labelled_set, load_labelled_set

    if is_labelled_set(folder):
        return len(load_labelled_set(folder))
    return sum(1 for p in folder.rglob("*") if p.is_file())


def cmd_library_build(args: argparse.Namespace) -> int:
    from engine.cli.commands import progress_bar
    from engine.core.library import ReferenceLibrary

    folders = [Path(f) for f in args.sources]
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"--from {folder}: no such folder")
    out = Path(args.out)
    lib = (
        ReferenceLibrary.load(out) if (out / "HEAD.json").exists() else ReferenceLibrary.empty(args.pipeline)
    )
    with progress_bar() as progress:
        for folder in folders:
            task = progress.add_task(f"importing {folder.name}", total=_count_inputs(folder))
            lib.import_folder(folder, progress=lambda n, t=task: progress.advance(t, n))
    if len(lib) == 0:
        raise UsageError("no readable spectra found in " + ", ".join(map(str, folders)))
    names = ", ".join(f.name for f in folders)
    version = lib.save(out, message=f"build from {names}")
    sys.stderr.write(
        f"library {out}: version {version}, {lib.technique} ({lib.pipeline_spec['name']} pipeline), "
        f"{len(lib)} spectra, {len(lib.class_counts())} classes\n"
    )
    return EXIT_OK


def cmd_library_info(args: argparse.Namespace) -> int:
    from engine.core.library import ReferenceLibrary

    info = ReferenceLibrary.load(args.libdir).info()
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return EXIT_OK
    console = _stdout()
    console.print(
        f"[bold]{args.libdir}[/]  version {info['version']}  ·  {info['n_spectra']} spectra  ·  "
        f"{info['n_classes']} classes  ·  pipeline {info['pipeline']['name']}"
    )
    table = Table("class", "spectra", title="classes")
    for label, count in info["classes"].items():
        table.add_row(label, str(count))
    console.print(table)
    for key in ("organisations", "confirmed_by", "techniques"):
        console.print(f"[bold]{key}[/]: " + ", ".join(f"{k} ({v})" for k, v in info[key].items()))
    return EXIT_OK


def cmd_library_log(args: argparse.Namespace) -> int:
    from engine.core.library import library_log

    table = Table("version", "parent", "created", "spectra", "classes", "message")
    for v in library_log(args.libdir):
        table.add_row(
            str(v.version), str(v.parent or ""), v.created_at, str(v.n_spectra), str(v.n_classes), v.message
        )
    _stdout().print(table)
    return EXIT_OK


def cmd_library_rollback(args: argparse.Namespace) -> int:
    from engine.core.library import rollback

    new = rollback(args.libdir, args.version)
    sys.stderr.write(f"library {args.libdir}: version {args.version} restored as version {new}\n")
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from daemon.cli import commands as cli_service
    from engine.cli import commands as cli_engine

    parser = argparse.ArgumentParser(
        prog="mpwatch",
        description="Identify microplastic particles from their FTIR or Raman spectra.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="read one spectrum file and describe it")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_inspect)

    lib = sub.add_parser("library", help="build and look after reference libraries")
    lsub = lib.add_subparsers(dest="library_command", required=True, metavar="ACTION")
    p = lsub.add_parser("build", help="build (or extend) a library from labelled folders")
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="DIR",
        help="a labelled-set folder, or a folder with one subfolder per label (repeatable)",
    )
    p.add_argument("--out", required=True, metavar="LIBDIR", help="library folder to create or extend")
    p.add_argument(
        "--pipeline",
        default=None,
        help="preprocessing pipeline for a new library (unset: default for IR, raman for Raman spectra)",
    )
    p.set_defaults(func=cmd_library_build)
    p = lsub.add_parser("info", help="classes, counts, version and provenance")
    p.add_argument("libdir", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_library_info)
    p = lsub.add_parser("log", help="every version of a library")
    p.add_argument("libdir", type=Path)
    p.set_defaults(func=cmd_library_log)
    p = lsub.add_parser("rollback", help="make an earlier version current again (as a new version)")
    p.add_argument("libdir", type=Path)
    p.add_argument("version", type=int)
    p.set_defaults(func=cmd_library_rollback)

    cli_engine.add_parsers(sub)
    cli_service.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from daemon.config import ConfigError
    from engine.core.library import LibraryError

    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as their own bytes
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except SpectrumError as exc:
        sys.stderr.write(f"mpwatch: {getattr(args, 'file', '')}: {exc}\n")
        return EXIT_BAD_INPUT
    except (UsageError, LibraryError, ConfigError, FileNotFoundError) as exc:
        sys.stderr.write(f"mpwatch: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader stopped early (`mpwatch classify ... | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
        return EXIT_OK

