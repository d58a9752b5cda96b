"""Re-classify an archive on a Dask cluster: every spectrum of years of files, labelled sets and maps
identified again with the served model, into Parquet datasets partitioned by sample folder.

:mod:`~engine.reclassify.tasks` walks the archive and cuts it into tasks of bounded size;
:mod:`~engine.reclassify.work` is what a worker does with one task;
:mod:`~engine.reclassify.dataset` writes each task's rows atomically and reads back what a
model has already answered (a second run adds nothing); :mod:`~engine.reclassify.cluster`
runs it all on a LocalCluster or a running scheduler (``mpwatch reclassify``).
"""

from __future__ import annotations

from engine.reclassify.cluster import Summary, cluster_client, default_workers, reclassify
from engine.reclassify.dataset import PARTICLES, SPECTRA, DoneKeys, read_dataset
from engine.reclassify.tasks import Source, Task, archive_inputs, plan_tasks, survey
from engine.reclassify.work import TaskOutcome, classify_task, library_hash

__all__ = [
    "PARTICLES",
    "SPECTRA",
    "DoneKeys",
    "Source",
    "Summary",
    "Task",
    "TaskOutcome",
    "archive_inputs",
    "classify_task",
    "cluster_client",
    "default_workers",
    "library_hash",
    "plan_tasks",
    "read_dataset",
    "reclassify",
    "survey",
]
