"""The run on a Dask cluster: a LocalCluster sized to the machine, or a running scheduler.

:func:`reclassify` surveys the archive on the workers (hashing is read-bound, and
spreads), plans the tasks the output does not hold yet, scatters the model to every
worker once and submits one Dask task per planned task. A task lost with its worker
is run again by the scheduler; ``retries`` reruns one that raised. A task's file has
a name fixed by its content, so running it twice replaces its file: each spectrum
keeps exactly one row.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client, LocalCluster, as_completed

from engine.models.served import IdentificationModel
from engine.reclassify.dataset import DoneKeys
from engine.reclassify.tasks import (
    DEFAULT_TASK_BYTES,
    DEFAULT_TASK_SPECTRA,
    archive_inputs,
    plan_tasks,
    survey_many,
)
from engine.reclassify.work import TaskOutcome, classify_task, library_hash

__all__ = ["Summary", "cluster_client", "default_workers", "reclassify"]

#: Imported by each worker as it starts, so that the first task does not pay for the engine's imports.
PRELOAD = "engine.reclassify.work"
#: Inputs surveyed (stat, sha256, rows counted) per Dask task.
SURVEY_CHUNK = 500
#: Temporary files of a partition older than this are left over from a lost writer, and removed.
STALE_TMP_SECONDS = 3600.0


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


@contextlib.contextmanager
def cluster_client(
    *, workers: int | None = None, scheduler: str | None = None, processes: bool = True
) -> Iterator[Client]:
    """A client of the running cluster at ``scheduler``, or of a LocalCluster of ``workers`` one-thread
    worker processes (default: one per core), closed on leaving."""
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or default_workers(),
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            preload=[PRELOAD] if processes else [],
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@dataclass
class Summary:
    """What a run did: spectra written, counts by status, tasks, what it skipped, how long it took."""

    spectra: int = 0
    #: Statuses of the spectra of files and labelled sets; a map's pixels are counted apart.
    by_status: Counter[str] = field(default_factory=Counter)
    pixels: int = 0
    particles_by_status: Counter[str] = field(default_factory=Counter)
    tasks: int = 0
    skipped_sources: int = 0  # already answered by this model
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)

    @property
    def spectra_per_second(self) -> float:
        return self.spectra / self.seconds if self.seconds > 0 else 0.0


def _sweep_stale(out: Path) -> None:
    """Remove partition temporaries a lost writer left behind (readers never see them: hidden names)."""
    now = time.time()
    for tmp in out.glob("*/sample=*/.*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()


def _sweep_orphans(out: Path, task_ids: set[str]) -> None:
    """Remove the temporaries this run's tasks left: a worker killed mid-write cannot remove its own,
    and the task's retry wrote the file under another temporary name. Only this run's task ids
    are touched, so another run writing into ``out`` keeps its files in progress."""
    for tmp in out.glob("*/sample=*/.*.tmp"):
        task_id = tmp.name[1:].partition(".parquet.")[0]
        if task_id in task_ids:
            with contextlib.suppress(OSError):
                tmp.unlink()


def reclassify(
    client: Client,
    model: IdentificationModel,
    roots: Sequence[Path],
    out: Path,
    *,
    task_spectra: int = DEFAULT_TASK_SPECTRA,
    task_bytes: int = DEFAULT_TASK_BYTES,
    retries: int = 3,
    on_planned: Callable[[int], None] | None = None,
    on_task: Callable[[TaskOutcome], None] | None = None,
) -> Summary:
    """Classify every spectrum of the archives ``roots`` with ``model`` into ``out``, on ``client``'s cluster.

    ``on_planned`` gets the number of spectra planned, ``on_task`` each task's outcome as it
    comes (a progress bar). A task that fails for good is named in :attr:`Summary.failed`.
    """
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _sweep_stale(out)
    served = library_hash(model)
    inputs = archive_inputs(roots)
    chunks = [inputs[i : i + SURVEY_CHUNK] for i in range(0, len(inputs), SURVEY_CHUNK)]
    sources = [s for part in client.gather(client.map(survey_many, chunks, pure=False)) for s in part]
    done = DoneKeys.from_output(out, library_hash=served)
    tasks = plan_tasks(
        sources, done=done, served_key=served, task_spectra=task_spectra, task_bytes=task_bytes
    )
    summary = Summary(tasks=len(tasks))
    summary.skipped_sources = sum(1 for source in sources if source.key in done)
    if on_planned is not None:
        on_planned(sum(task.n_spectra for task in tasks))
    if tasks:
        scattered = client.scatter(model, broadcast=True, hash=False)
        futures = [
            client.submit(
                classify_task,
                scattered,
                task,
                str(out),
                library_hash=served,
                key=f"reclassify-{task.task_id}",
                retries=retries,
                pure=False,
            )
            for task in tasks
        ]
        for future in as_completed(futures):
            try:
                outcome: TaskOutcome = future.result()
            except Exception as exc:  # lost for good (its workers kept dying) or failed every retry
                summary.failed.append(f"{future.key}: {type(exc).__name__}: {exc}")
                continue
            summary.spectra += outcome.rows
            summary.by_status.update(outcome.by_status)
            summary.pixels += outcome.pixels
            summary.particles_by_status.update(outcome.particles_by_status)
            if on_task is not None:
                on_task(outcome)
            future.release()
        _sweep_orphans(out, {task.task_id for task in tasks})
    summary.seconds = time.perf_counter() - started
    return summary
