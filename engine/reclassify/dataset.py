"""The output: Parquet datasets partitioned by sample folder, one file per task, each written atomically.

``OUT/spectra/sample=<folder>/<task id>.parquet`` holds one row per spectrum;
``OUT/particles/...`` one row per particle of a map. The folder name is the sample
folder, URI-encoded as Hive partitioning reads it back. A task's file is written to a
hidden temporary file beside it, then renamed over its final name, so a reader never
sees half a file and a task run twice (a worker lost after writing) leaves one file,
not two. :class:`DoneKeys` reads back what a model has already answered, so that a
second run over the same archive skips it.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine.core.storage import atomic_writer
from engine.maps import Particle
from engine.models.result import Hit, Result

__all__ = [
    "PARTICLES",
    "PARTICLES_SCHEMA",
    "SPECTRA",
    "SPECTRA_SCHEMA",
    "DoneKeys",
    "particle_row",
    "read_dataset",
    "result_row",
    "unreadable_row",
    "write_partition",
]

SPECTRA = "spectra"
PARTICLES = "particles"

HIT = pa.struct(
    [
        ("label", pa.string()),
        ("material", pa.string()),
        ("r", pa.float64()),
        ("ref_id", pa.int64()),
        ("source", pa.string()),
    ]
)
_COMMON = [
    ("sha256", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("label", pa.string()),
    ("material", pa.string()),
    ("family", pa.string()),
    ("confidence", pa.float64()),
    ("candidate", pa.string()),
    ("candidate_r", pa.float64()),
    ("hits", pa.list_(HIT)),
    ("model_version", pa.string()),
    ("library_hash", pa.string()),
]
#: A particle's measures as :class:`engine.maps.Particle` names them (um; None without a pixel size).
PARTICLE_MEASURES = ("n_pixels", "area_um2", "feret_max_um", "feret_min_um", "x_um", "y_um")
SPECTRA_SCHEMA = pa.schema([("source", pa.string()), ("index", pa.int64()), *_COMMON])
PARTICLES_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("index", pa.int64()),
        *_COMMON,
        ("n_pixels", pa.int64()),
        *((name, pa.float64()) for name in PARTICLE_MEASURES[1:]),
    ]
)
SCHEMAS = {SPECTRA: SPECTRA_SCHEMA, PARTICLES: PARTICLES_SCHEMA}


def _hit(h: Hit) -> dict[str, Any]:
    return {
        "label": h.label,
        "material": h.material,
        "r": float(h.r),
        "ref_id": int(h.ref_id),
        "source": h.source,
    }


def result_row(
    result: Result, *, source: str, index: int, sha256: str | None, library_hash: str
) -> dict[str, Any]:
    """One spectrum's row: where it came from, and what the served model answered."""
    candidate_r = result.extra.get("candidate_r")
    return {
        "source": source,
        "index": index,
        "sha256": sha256,
        "status": result.status,
        "reason": result.extra.get("reason"),
        "label": result.label,
        "material": result.material,
        "family": result.family,
        "confidence": float(result.confidence),
        "candidate": result.candidate,
        "candidate_r": None if candidate_r is None else float(candidate_r),
        "hits": [_hit(h) for h in result.hits],
        "model_version": result.model_version,
        "library_hash": library_hash,
    }


def particle_row(
    particle: Particle, *, source: str, sha256: str | None, model_version: str, library_hash: str
) -> dict[str, Any]:
    """One particle of a map: its place and size, and what the model answered for its mean spectrum."""
    return {
        "source": source,
        "index": particle.index,
        "sha256": sha256,
        "status": particle.status,
        "label": particle.label,
        "material": particle.material,
        "family": particle.family,
        "confidence": float(particle.confidence),
        "hits": [_hit(h) for h in particle.hits],
        "model_version": model_version,
        "library_hash": library_hash,
        **{name: getattr(particle, name) for name in PARTICLE_MEASURES},
    }


def unreadable_row(
    source: str, *, sha256: str | None, reason: str, model_version: str, library_hash: str
) -> dict[str, Any]:
    """The row of a source that could not be read: status ``unreadable``, its reason, no index."""
    return {
        "source": source,
        "index": None,
        "sha256": sha256,
        "status": "unreadable",
        "reason": reason,
        "confidence": 0.0,
        "hits": [],
        "model_version": model_version,
        "library_hash": library_hash,
    }


def partition_dir(out: Path, dataset: str, sample: str) -> Path:
    """The folder of ``sample``'s partition of ``dataset`` (Hive style, the folder name URI-encoded)."""
    return out / dataset / f"sample={urllib.parse.quote(sample, safe='')}"


def write_partition(out: Path, dataset: str, sample: str, task_id: str, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as the task's file in ``sample``'s partition, atomically; return its path."""
    table = pa.Table.from_pylist(rows, schema=SCHEMAS[dataset])
    path = partition_dir(out, dataset, sample) / f"{task_id}.parquet"
    with atomic_writer(path) as handle:
        pq.write_table(table, handle)
    return path


def read_dataset(out: Path, dataset: str = SPECTRA, *, columns: list[str] | None = None) -> pa.Table:
    """The whole of ``dataset`` under ``out`` (with its ``sample`` column), empty when nothing was written."""
    folder = out / dataset
    schema = SCHEMAS[dataset].append(pa.field("sample", pa.string()))
    if not folder.is_dir():
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    partitioning = ds.partitioning(pa.schema([("sample", pa.string())]), flavor="hive")
    dataset_ = ds.dataset(folder, schema=schema, format="parquet", partitioning=partitioning)
    return dataset_.to_table(columns=columns)


class DoneKeys:
    """The sources a model (by its ``library_hash``) has answered in a spectra dataset: their
    :attr:`~engine.reclassify.tasks.Source.key`, held as 16-byte digests in a sorted array
    (an archive of 10^7 files costs 160 MB here, not gigabytes of strings).

    A source is done when a row of it is there: a task's rows are written together.
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = np.unique(np.array([self._digest(k) for k in keys], dtype="S16"))

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.blake2b(key.encode(), digest_size=16).digest()

    def __len__(self) -> int:
        return int(self._digests.size)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or not self._digests.size:
            return False
        digest = np.array(self._digest(key), dtype="S16")
        at = int(np.searchsorted(self._digests, digest))
        return at < self._digests.size and bool(self._digests[at] == digest)

    @classmethod
    def from_output(cls, out: Path, *, library_hash: str) -> DoneKeys:
        """What ``out``'s spectra dataset holds of the model ``library_hash``."""
        table = read_dataset(out, SPECTRA, columns=["source", "sha256", "library_hash"])
        table = table.filter(pc.equal(table["library_hash"], library_hash))
        hashed = pc.unique(table["sha256"].drop_null()).to_pylist()
        unhashed = pc.unique(table.filter(pc.is_null(table["sha256"]))["source"]).to_pylist()
        return cls([*hashed, *(f"path:{source}" for source in unhashed)])
