"""An archive walked into sources, and the sources cut into tasks of bounded size.

A source is what ``mpwatch classify`` reads as one input: a spectrum file, a
labelled-set folder or a map. :func:`survey` settles its sample folder (the
partition its rows go to), its sha256 and how many spectra it holds, and never
raises: a source that cannot be examined is still a source, to be recorded as
unreadable. :func:`plan_tasks` bundles the sources of one sample folder into tasks of
at most ``task_spectra`` spectra and ``task_bytes`` bytes, and leaves out what the
output already holds.

A source is never cut: ``classify`` answers each source as one batch, and the float32
nearest-neighbour search can differ in its last bits with the batch's size (on the
Open Specy set, one candidate r in 636 rounded the other way). A source larger than
the bounds is a task of its own; the readers bound it (``MAX_SPECTRA``, ``MAX_FILE_BYTES``).

>>> Source("a/s1/x.csv", "a/s1", "ab12", 1, 10, "file").key
'ab12'
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.cli.classify import spectrum_inputs
from engine.core.spectrum import file_sha256
from engine.io.identity import content_sha256
from engine.io.labelled_set import is_labelled_set
from engine.maps import is_map
from engine.maps.cube import map_shape

__all__ = [
    "DEFAULT_TASK_BYTES",
    "DEFAULT_TASK_SPECTRA",
    "Source",
    "Task",
    "archive_inputs",
    "plan_tasks",
    "survey",
    "survey_many",
]

#: At most this many spectra per task (a larger labelled set or map is a task of its own).
DEFAULT_TASK_SPECTRA = 2000
#: At most this many bytes of files per task (a single larger file is a task of its own).
DEFAULT_TASK_BYTES = 64 << 20
#: The files that make a labelled set what it is, hashed in this order.
SET_FILES = ("spectra.npy", "wavenumbers.npy", "labels.txt", "meta.csv")
#: Data files that an ENVI header beside them claims: the map is read once, through its header.
ENVI_DATA_SUFFIXES = (".dat", ".img", ".raw", "")


@dataclass(frozen=True)
class Source:
    """One input of the archive, as surveyed."""

    path: str  # as ``classify`` names it (its ``source``)
    sample: str  # the sample folder: the partition of its rows
    sha256: str | None  # None: the source could not be read to hash it
    n_spectra: int  # rows of a labelled set, pixels of a map, 1 for another file
    n_bytes: int
    kind: str  # file | set | map
    reason: str | None = None  # why the survey could not examine it

    @property
    def key(self) -> str:
        """What the output records of this source having been answered: its content hash (else its path)."""
        return self.sha256 or f"path:{self.path}"


@dataclass(frozen=True)
class Task:
    """The unit of work sent to a worker: sources of one sample folder, named by their content."""

    task_id: str
    sample: str
    sources: tuple[Source, ...]

    @property
    def n_spectra(self) -> int:
        return sum(source.n_spectra for source in self.sources)


def sample_of(path: Path, root: Path) -> str:
    """The sample folder of ``path`` found under ``root``: its folder, from the archive's own name on.

    A source given directly (``path`` is ``root``) belongs to the folder it lies in.
    """
    path, root = path.absolute(), root.absolute()
    anchor = root.parent if path != root else root.parent.parent
    return path.parent.relative_to(anchor).as_posix() or "."


def _set_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in SET_FILES:
        part = folder / name
        if part.is_file():
            digest.update(f"{name}:{file_sha256(part)}\n".encode())
    return digest.hexdigest()


def claimed_by_header(path: Path) -> bool:
    """Whether ``path`` is ENVI data with its header beside it (the map is read once, by its header)."""
    if path.suffix.lower() not in ENVI_DATA_SUFFIXES:
        return False
    return any(path.with_suffix(suffix).is_file() for suffix in (".hdr", ".HDR"))


def archive_inputs(roots: Sequence[Path]) -> list[tuple[Path, Path]]:
    """``(input, root)`` for every input of the archives ``roots``, found by ``classify``'s own walk."""
    return [
        (path, root)
        for root in roots
        for path in spectrum_inputs([root])
        if not (path.is_file() and claimed_by_header(path))
    ]


def survey(path: Path, root: Path) -> Source:
    """What ``path`` (found under ``root``) is: sample folder, sha256, spectra, bytes. Never raises."""
    sample = sample_of(path, root)
    try:
        if is_labelled_set(path):
            n = int(np.load(path / "spectra.npy", mmap_mode="r", allow_pickle=False).shape[0])
            size = sum((path / name).stat().st_size for name in SET_FILES if (path / name).is_file())
            return Source(str(path), sample, _set_sha256(path), n, size, "set")
        size = path.stat().st_size
        if is_map(path):
            lines, samples = map_shape(path) or (1, 1)
            kind, n = "map", lines * samples
        else:
            kind, n = "file", 1
        return Source(str(path), sample, content_sha256(path), n, size, kind)
    except (OSError, ValueError) as exc:
        return Source(str(path), sample, None, 1, 0, "file", reason=f"{path.name}: {exc}")


def survey_many(pairs: Sequence[tuple[Path, Path]]) -> list[Source]:
    """:func:`survey` of each ``(path, root)``, in order (one call per chunk of the archive)."""
    return [survey(path, root) for path, root in pairs]


def _task(sample: str, sources: Sequence[Source], served_key: str) -> Task:
    digest = hashlib.sha256(f"{served_key}\n{sample}\n".encode())
    for source in sources:
        digest.update(f"{source.path}\n{source.key}\n".encode())
    return Task(digest.hexdigest()[:24], sample, tuple(sources))


def plan_tasks(
    sources: Iterable[Source],
    *,
    done: Container[str] = frozenset(),
    served_key: str = "",
    task_spectra: int = DEFAULT_TASK_SPECTRA,
    task_bytes: int = DEFAULT_TASK_BYTES,
) -> list[Task]:
    """The tasks that cover ``sources``, less those whose :attr:`Source.key` is in ``done``.

    Each task holds sources of one sample folder, in the order given, at most
    ``task_spectra`` spectra and ``task_bytes`` bytes (a larger source is a task of its
    own). Its id hashes ``served_key`` (the model) and its sources, so the same work
    always has the same id.
    """
    if task_spectra < 1:
        raise ValueError(f"task_spectra must be at least 1, got {task_spectra}")
    tasks: list[Task] = []
    bundles: dict[str, tuple[list[Source], int, int]] = {}  # sample -> sources, spectra, bytes
    for source in sources:
        if source.key in done:
            continue
        bundle, spectra, size = bundles.get(source.sample, ([], 0, 0))
        over = spectra + source.n_spectra > task_spectra or size + source.n_bytes > task_bytes
        if bundle and over:
            tasks.append(_task(source.sample, bundle, served_key))
            bundle, spectra, size = [], 0, 0
        bundle.append(source)
        bundles[source.sample] = (bundle, spectra + source.n_spectra, size + source.n_bytes)
    tasks.extend(_task(sample, bundle, served_key) for sample, (bundle, _, _) in bundles.items() if bundle)
    return tasks
