"""Maps and their particles: what an imaging map gave, recorded once per content, read back per sample.

A map file is one row of ``maps`` (its size, pixel size, counts and drawing) and one row of
``particles`` per particle, keyed by ``(sha256, particle_index)`` as results are keyed by
``(sha256, spectrum_index)``: a map is identified once, however often its file is delivered.
Both are written by :meth:`~daemon.store.files.FileStates.complete` in the same transaction as the
file's ``done`` state, and superseded with a file's results when the file is rewritten. Each
particle's mean spectrum is kept, and an unknown particle's review opened, in the same transaction
(:mod:`daemon.store.particle_reviews`); every particles view lays an analyst's decision over
the classifier's answer, as results views do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from daemon.store.connection import LedgerConnection, check_sha256, payload_json
from daemon.store.records import Decision, _decision, _from_row, iso_time
from daemon.store.results import _where_file
from engine.core.families import family_of
from engine.core.spectrum import Spectrum

__all__ = [
    "PARTICLE_COLUMNS",
    "PARTICLE_FIELDS",
    "PARTICLE_JOINS",
    "MapQueries",
    "MapRecord",
    "StoredMap",
    "StoredParticle",
    "insert_map",
    "stored_particle",
]

#: The particle columns stored as columns (the rest of a particle's fields go into its payload).
_COLUMNS: Final = (
    "status",
    "label",
    "material",
    "family",
    "confidence",
    "n_pixels",
    "area_um2",
    "feret_max_um",
    "feret_min_um",
    "x_um",
    "y_um",
    "area_px",
    "feret_max_px",
    "feret_min_px",
    "x_px",
    "y_px",
)

#: The fields of a particle as ``mpwatch results --particles`` and particles views give them.
PARTICLE_FIELDS: Final = (
    "id",
    "sample",
    "source",
    "index",
    *_COLUMNS,
    "sha256",
    "model_version",
    "created_at",
    "decision",
    "decided_by",
    "decided_at",
    "original_status",
    "original_label",
)

#: The map's own fields kept as columns; the rest of its summary goes into its payload.
_MAP_KEYS: Final = ("lines", "samples", "bands", "pixel_size_um", "pixel_size_source", "model_version")


@dataclass(frozen=True)
class MapRecord:
    """What a map gave, as the ledger stores it: its summary (without particles), its particles as
    dicts (:meth:`engine.maps.Particle.as_dict`) and where its drawing was written."""

    summary: Mapping[str, Any]
    particles: Sequence[Mapping[str, Any]]
    image_path: str | None = None
    #: The mean spectrum of each particle, by particle index: kept; an unknown one's opens a review.
    spectra: Mapping[int, Spectrum] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredMap:
    """A recorded map."""

    id: int
    sha256: str
    source_path: str
    created_at: float
    lines: int
    samples: int
    bands: int
    pixel_size_um: float | None
    pixel_size_source: str
    n_particles: int
    image_path: str | None
    model_version: str
    payload: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_path,
            "sample": PurePosixPath(self.source_path).parent.name,
            "sha256": self.sha256,
            "created_at": iso_time(self.created_at),
            "lines": self.lines,
            "samples": self.samples,
            "bands": self.bands,
            "pixel_size_um": self.pixel_size_um,
            "pixel_size_source": self.pixel_size_source,
            "n_particles": self.n_particles,
            "image": self.image_path,
            "model_version": self.model_version,
            **{k: v for k, v in self.payload.items() if k not in ("particles", "source")},
        }


@dataclass(frozen=True)
class StoredParticle:
    """A recorded particle of a map; sizes in micrometres are None when the map had no pixel size."""

    id: int
    sha256: str
    index: int
    source_path: str
    created_at: float
    values: dict[str, Any]
    model_version: str
    payload: dict[str, Any] = field(default_factory=dict)
    #: The analyst's decision laid over ``values`` (None: nobody decided yet).
    decision: Decision | None = None
    #: When the map was rewritten and its particles identified again (None: this one is current).
    superseded_at: float | None = None

    @property
    def sample(self) -> str:
        return PurePosixPath(self.source_path).parent.name

    @property
    def status(self) -> str:
        """``known``, ``unknown``, ``low_quality`` or ``rejected``, final as a result's."""
        return str(self.values["status"])

    @property
    def label(self) -> str | None:
        return self.values["label"]

    def as_row(self) -> dict[str, Any]:
        """The particle as ``mpwatch results --particles`` prints it: its fields, sample and source."""
        return {
            "id": self.id,
            "sample": self.sample,
            "source": self.source_path,
            "index": self.index,
            **self.values,
            "sha256": self.sha256,
            "model_version": self.model_version,
            "created_at": iso_time(self.created_at),
            "hits": self.payload.get("hits", []),
            "aging": self.payload.get("aging", {}),
            "bbox": self.payload.get("bbox"),
            "decision": None if self.decision is None else self.decision.as_dict(),
        }


def insert_map(
    conn: sqlite3.Connection, sha256: str, source_path: str, record: MapRecord, *, now: float
) -> int:
    """Store a map and its particles (inside the caller's transaction); a repeat writes nothing.

    Returns the number of particles written.
    """
    summary = record.summary
    extra = {k: v for k, v in summary.items() if k not in (*_MAP_KEYS, "particles", "source", "n_particles")}
    conn.execute(
        "INSERT INTO maps (sha256, source_path, created_at, lines, samples, bands, pixel_size_um, "
        "pixel_size_source, n_particles, image_path, payload, model_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
        (
            sha256,
            source_path,
            now,
            int(summary["lines"]),
            int(summary["samples"]),
            int(summary["bands"]),
            summary.get("pixel_size_um"),
            str(summary.get("pixel_size_source") or "none"),
            len(record.particles),
            record.image_path,
            payload_json(extra),
            str(summary["model_version"]),
        ),
    )
    columns = ", ".join(_COLUMNS)
    marks = ", ".join("?" * (len(_COLUMNS) + 5))
    written = conn.executemany(
        f"INSERT INTO particles (sha256, particle_index, source_path, created_at, {columns}, payload) "
        f"VALUES ({marks}) ON CONFLICT (sha256, particle_index) DO NOTHING",
        (
            (
                sha256,
                int(p["index"]),
                source_path,
                now,
                *(p.get(c) for c in _COLUMNS),
                payload_json({k: v for k, v in p.items() if k not in (*_COLUMNS, "index")}),
            )
            for p in record.particles
        ),
    ).rowcount
    return max(written, 0)


_MAP_SELECT: Final = (
    "SELECT m.id, m.sha256, m.source_path, m.created_at, m.lines, m.samples, m.bands, m.pixel_size_um, "
    "m.pixel_size_source, m.n_particles, m.image_path, m.payload, m.model_version FROM maps AS m"
)
#: A particle's final values: an analyst's decision overrides the classifier's answer (see
#: :data:`daemon.store.connection.FINAL_STATUS`); the confidence holds for the classifier's label only.
_FINAL: Final = {
    "status": "CASE d.state WHEN 'confirmed' THEN 'known' WHEN 'rejected' THEN 'rejected' ELSE p.status END",
    "label": "CASE d.state WHEN 'confirmed' THEN d.label WHEN 'rejected' THEN NULL ELSE p.label END",
    "material": "CASE WHEN d.state IS NULL THEN p.material ELSE d.material END",
    "family": "CASE WHEN d.state IS NULL THEN p.family END",
    "confidence": "CASE WHEN d.state IS NULL OR (d.state = 'confirmed' AND p.status = 'known' "
    "AND d.label = p.label) THEN p.confidence END",
}
PARTICLE_COLUMNS: Final = (
    "p.id, p.sha256, p.particle_index, p.source_path, p.created_at, "
    + ", ".join(f"({_FINAL[c]}) AS {c}" if c in _FINAL else f"p.{c}" for c in _COLUMNS)
    + ", p.payload, m.model_version, d.state AS decision_state, d.label AS decision_label, "
    "d.decided_by AS decision_by, d.decided_at AS decision_at, d.ref_ids AS decision_ref_ids, "
    "p.status AS original_status, p.label AS original_label, p.confidence AS original_confidence, "
    "p.superseded_at"
)
#: The map of particle ``p`` and the decision laid over it (a review that is no longer open).
PARTICLE_JOINS: Final = (
    "JOIN maps AS m ON m.sha256 = p.sha256 "
    "LEFT JOIN particle_review AS d ON d.particle_id = p.id AND d.state != 'open'"
)
_PARTICLE_SELECT: Final = f"SELECT {PARTICLE_COLUMNS} FROM particles AS p {PARTICLE_JOINS}"


def _stored_map(row: sqlite3.Row) -> StoredMap:
    return _from_row(StoredMap, row)


def stored_particle(row: sqlite3.Row) -> StoredParticle:
    """A particle from a row of :data:`PARTICLE_COLUMNS`; a confirmed label's family is its own."""
    values = {c: row[c] for c in _COLUMNS}
    decision = _decision(row)
    if decision is not None and decision.label is not None:
        values["family"] = family_of(decision.label)
    given = {"values": values, "decision": decision}
    return _from_row(StoredParticle, row, given=given, index="particle_index")


class MapQueries(LedgerConnection):
    """Reading the ``maps`` and ``particles`` tables (current ones unless history is asked for)."""

    def maps(
        self,
        *,
        sample: str | None = None,
        folder: str | Path | None = None,
        sha256: str | None = None,
        limit: int = 100,
        offset: int = 0,
        superseded: bool = False,
    ) -> list[StoredMap]:
        """Recorded maps, oldest first, filtered as :meth:`~daemon.store.results.ResultQueries.results`."""
        where, params = _where_file(
            "m.source_path", *_current("m", sha256, superseded=superseded), folder=folder, sample=sample
        )
        rows = self._page(f"{_MAP_SELECT} {where} ORDER BY m.id", params, limit=limit, offset=offset)
        return [_stored_map(row) for row in rows]

    def particle(self, particle_id: int) -> StoredParticle | None:
        """One particle by its id (current or not), or None."""
        with self._read() as conn:
            row = conn.execute(f"{_PARTICLE_SELECT} WHERE p.id = ?", (particle_id,)).fetchone()
        return None if row is None else stored_particle(row)

    def particles(
        self,
        *,
        sample: str | None = None,
        folder: str | Path | None = None,
        sha256: str | None = None,
        limit: int = 1000,
        offset: int = 0,
        superseded: bool = False,
    ) -> list[StoredParticle]:
        """Recorded particles of maps, map by map in index order."""
        where, params = _where_file(
            "p.source_path", *_current("p", sha256, superseded=superseded), folder=folder, sample=sample
        )
        query = f"{_PARTICLE_SELECT} {where} ORDER BY m.id, p.particle_index"
        return [stored_particle(row) for row in self._page(query, params, limit=limit, offset=offset)]


def _current(alias: str, sha256: str | None, *, superseded: bool) -> tuple[list[str], list[object]]:
    clauses: list[str] = [] if superseded else [f"{alias}.superseded_at IS NULL"]
    params: list[object] = []
    if sha256 is not None:
        clauses.append(f"{alias}.sha256 = ?")
        params.append(check_sha256(sha256))
    return clauses, params
