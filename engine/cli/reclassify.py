"""``mpwatch reclassify``: identify a whole archive again with the served model, on Dask distributed.

The archive is walked as ``mpwatch classify`` walks folders (spectrum files, labelled
sets, maps), cut into tasks of bounded size and classified on a LocalCluster sized to
the machine (``--workers N`` sets its size) or on a running cluster (``--scheduler
tcp://host:port``). The rows go to a Parquet dataset under ``--out``, partitioned by
sample folder; what the same model already answered there is skipped, so a run that
stopped can simply be started again. A progress bar shows while it runs (on a
terminal), a summary at the end: spectra per second and counts by status (of the files'
and sets' spectra; a map's particles apart, its pixels in neither).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from engine.cli.classify import add_library_argument, served_model
from engine.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, UsageError, progress_bar, stdout_console

if TYPE_CHECKING:
    from engine.reclassify import Summary, TaskOutcome

__all__ = ["add_parsers", "summary_table"]


def summary_table(summary: Summary, *, of: str = "spectra") -> Table:
    """The counts by status of a run, with their shares: of the spectra of files and sets, or
    (``of="particles"``) of the maps' particles. A map's pixels are in neither."""
    counts = summary.by_status if of == "spectra" else summary.particles_by_status
    table = Table("status", of, "share")
    total = sum(counts.values()) or 1
    for status, count in counts.most_common():
        table.add_row(status, str(count), f"{count / total:.1%}")
    return table


def cmd_reclassify(args: argparse.Namespace) -> int:
    # imported here: Dask is needed by this command only
    from engine.reclassify import cluster_client, reclassify
    from engine.reclassify.tasks import DEFAULT_TASK_SPECTRA

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.task_spectra is not None and args.task_spectra < 1:
        raise UsageError(f"--task-spectra must be at least 1, got {args.task_spectra}")
    missing = [str(p) for p in args.archives if not p.exists()]
    if missing:
        raise UsageError(f"no such archive: {', '.join(missing)}")
    model = served_model(args.library)
    console = stdout_console()
    # Dask's own loggers say every start, connection and stop at INFO; they follow mpwatch's -v
    logging.getLogger("distributed").setLevel(logging.getLogger().getEffectiveLevel())
    with (
        cluster_client(workers=args.workers, scheduler=args.scheduler) as client,
        progress_bar() as progress,
    ):
        bar = progress.add_task("reclassifying", total=None)

        def planned(spectra: int) -> None:
            progress.update(bar, total=spectra)

        def finished(outcome: TaskOutcome) -> None:
            progress.advance(bar, outcome.rows)

        summary = reclassify(
            client,
            model,
            args.archives,
            args.out,
            task_spectra=args.task_spectra or DEFAULT_TASK_SPECTRA,
            on_planned=planned,
            on_task=finished,
        )
    console.print(
        f"reclassified {summary.spectra} spectra in {summary.tasks} tasks, {summary.seconds:.1f} s "
        f"({summary.spectra_per_second:.1f} spectra/s); {summary.skipped_sources} inputs already done "
        f"with this model; results in {args.out}"
    )
    if summary.by_status:
        console.print(summary_table(summary))
    if summary.pixels:  # the background of a map is no spectrum to count as low quality
        console.print(f"{summary.pixels} map pixels among the spectra (in spectra/); the maps' particles:")
        console.print(summary_table(summary, of="particles"))
    for failure in summary.failed:
        console.print(f"failed: {failure}")
    if summary.failed:
        return EXIT_FAILURE
    if not summary.spectra and not summary.skipped_sources:
        return EXIT_BAD_INPUT
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "reclassify",
        help="identify a whole archive again on Dask distributed, into Parquet datasets by sample folder",
    )
    p.add_argument("archives", nargs="+", type=Path, metavar="ARCHIVE", help="a folder of spectra (walked)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the Parquet datasets' folder")
    add_library_argument(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, metavar="N", help="a LocalCluster of N workers (default: one per core)"
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786"
    )
    p.add_argument(
        "--task-spectra",
        type=int,
        metavar="N",
        help="at most N spectra per task (default 2000; a larger labelled set or map is a task of its own)",
    )
    p.set_defaults(func=cmd_reclassify)
