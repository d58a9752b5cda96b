"""The ``mpwatch`` program: :func:`main` and the parser, the engine's commands then the daemon's.

The commands that need only the engine (inspect, library, classify, evaluate)
live in :mod:`engine.cli`; the daemon's own live here, one module per job:

- :mod:`daemon.cli.run`: ``run`` (the daemon), ``confirm`` (a decision sent to it) and
  ``clusters`` (its review queue in clusters, each decided with ``confirm --cluster``);
- :mod:`daemon.cli.results`: ``results``, what the daemon recorded;
- :mod:`daemon.cli.report`: ``report``, a sample report a lab can file.

Exit codes: 0 success, 1 a failure while working, 2 bad input (a file that
cannot be read, a bad argument or configuration), with one readable line on
standard error.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence

# Everything else (rich, scikit-learn, FAISS, the daemon) is imported where it is used: this module
# is the program's __main__, which every helper process imports again, and the helpers must stay small.

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from daemon.cli import report, results, run
    from engine.cli import add_parsers as add_engine_parsers

    parser = argparse.ArgumentParser(
        prog="mpwatch",
        description="Identify microplastic particles from their FTIR or Raman spectra.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_engine_parsers(sub)
    run.add_parsers(sub)
    results.add_parsers(sub)
    report.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from daemon.config import ConfigError
    from engine.cli.common import EXIT_BAD_INPUT, EXIT_OK, UsageError
    from engine.core.library import LibraryError
    from engine.core.spectrum import SpectrumError

    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as their own bytes
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    # The daemon's log is a record (times, levels, modules); a one-shot command says a word per line.
    record = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    plain = args.command != "run" and not args.verbose
    logging.basicConfig(level=level, format="mpwatch: %(message)s" if plain else record)
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
