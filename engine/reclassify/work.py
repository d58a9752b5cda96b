"""What a worker does with one task: read its sources, classify their spectra in one batch, write one file.

:func:`classify_task` is the function the cluster runs. It never raises for one bad
source: a source that cannot be read becomes a row with status ``unreadable`` and the
reader's reason, and the task goes on. The model it receives is the one scattered to
every worker once; :func:`library_hash` names that model by its content.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import read_spectra
from engine.maps import MapIdentification, identify_map
from engine.models.served import IdentificationModel
from engine.reclassify.dataset import (
    PARTICLES,
    SPECTRA,
    particle_row,
    result_row,
    unreadable_row,
    write_partition,
)
from engine.reclassify.tasks import Task

__all__ = ["TaskOutcome", "classify_task", "library_hash"]


@dataclass
class TaskOutcome:
    """What one task did: rows written, counts by status, seconds spent, the files written."""

    task_id: str
    rows: int = 0
    #: Statuses of the rows of files and labelled sets; a map's pixels are counted apart.
    by_status: dict[str, int] = field(default_factory=dict)
    #: Rows that are a map's pixels (written like any spectrum), and the statuses of its particles.
    pixels: int = 0
    particles_by_status: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)


def library_hash(model: IdentificationModel) -> str:
    """A sha256 of what decides the model's answers: every served library's content, the model's
    configuration and the mpwatch release. Two models with the same hash answer alike."""
    digest = hashlib.sha256()
    try:
        digest.update(f"mpwatch {metadata.version('mpwatch')}\n".encode())
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        digest.update(b"mpwatch (source)\n")
    digest.update(json.dumps(asdict(model.config), sort_keys=True, default=str).encode())
    for served in (model, *sorted(model.companions.values(), key=lambda m: m.technique)):
        library = served.library
        digest.update(f"\n{served.technique} {served.version}\n".encode())
        digest.update(json.dumps(library.pipeline_spec, sort_keys=True, default=str).encode())
        digest.update("\n".join(library.labels).encode())
        digest.update(library.ref_ids.tobytes())
        digest.update(library.preprocessed.tobytes())
    return digest.hexdigest()


def _particles(
    model: IdentificationModel, path: str, *, sha256: str | None, library_hash: str
) -> list[dict[str, Any]]:
    """The particle rows of the map at ``path`` (none when it cannot be segmented: its pixels are rows)."""
    try:
        found: MapIdentification = identify_map(model, Path(path))
    except Exception:  # the spectra rows already record whether the map could be read
        return []
    return [
        particle_row(
            p, source=path, sha256=sha256, model_version=found.model_version, library_hash=library_hash
        )
        for p in found.particles
    ]


def classify_task(model: IdentificationModel, task: Task, out: str, *, library_hash: str) -> TaskOutcome:
    """Classify the task's spectra with ``model`` and write their rows as the task's file in its partition.

    Each source is answered as ``classify`` answers it: all its spectra in one batch. A map's
    particles (:func:`engine.maps.identify_map`) go to the particles dataset, in a file of the
    same name.
    """
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    particles: list[dict[str, Any]] = []
    counted: Counter[str] = Counter()  # the statuses of files and sets; a map's pixels apart
    pixels = 0
    for source in task.sources:
        reason = source.reason
        spectra: list[Spectrum] = []
        if reason is None:
            try:
                spectra = read_spectra(Path(source.path))
            except SpectrumError as exc:
                reason = str(exc)
            except Exception as exc:  # one source never stops the task
                reason = f"{Path(source.path).name}: {type(exc).__name__}: {exc}"
        if reason is not None:
            rows.append(
                unreadable_row(
                    source.path,
                    sha256=source.sha256,
                    reason=reason,
                    model_version=model.version,
                    library_hash=library_hash,
                )
            )
            counted[str(rows[-1]["status"])] += 1
            continue
        for spectrum, result in zip(spectra, model.classify(spectra, aging=False), strict=True):
            rows.append(
                result_row(
                    result,
                    source=str(spectrum.metadata.get("source", source.path)),
                    index=int(spectrum.metadata.get("index", 0)),
                    sha256=source.sha256,
                    library_hash=library_hash,
                )
            )
            if source.kind != "map":
                counted[result.status] += 1
        if source.kind == "map":
            pixels += len(spectra)
            particles.extend(_particles(model, source.path, sha256=source.sha256, library_hash=library_hash))
    outcome = TaskOutcome(task.task_id, rows=len(rows), pixels=pixels)
    outcome.by_status = dict(counted)
    outcome.particles_by_status = dict(Counter(str(p["status"]) for p in particles))
    if particles:  # before the spectra: a task whose spectra file is there has its particles too
        outcome.files.append(str(write_partition(Path(out), PARTICLES, task.sample, task.task_id, particles)))
    outcome.files.append(str(write_partition(Path(out), SPECTRA, task.sample, task.task_id, rows)))
    outcome.seconds = time.perf_counter() - started
    return outcome
