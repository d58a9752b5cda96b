"""What the ``mpwatch`` commands share: exit codes, :class:`UsageError`, a console, the progress bar.

Exit codes: 0 success, 1 a failure while working, 2 bad input (a file that
cannot be read, a bad argument or configuration), with one readable line on
standard error.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "UsageError",
    "progress_bar",
    "stdout_console",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 2."""


def stdout_console() -> Console:
    """A console on standard output that prints text as given (no highlighting, no forced wraps)."""
    return Console(highlight=False, soft_wrap=True)


def progress_bar(*, show: bool = True) -> Progress:
    """A progress bar on standard error, shown on a terminal only (and only with ``show``).

    Results written to standard output while it runs stay untouched there: only when
    standard output is the terminal too are they printed above the bar. Lines written
    to standard error go above the bar.
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
        disable=not (show and sys.stderr.isatty()),
        redirect_stdout=sys.stdout.isatty(),
    )
