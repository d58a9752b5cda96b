"""The reviews of maps' particles: the mean spectrum an analyst decides on, and the decision.

A map gives particles, not results, so its particles wait in a queue of their own
(``particle_review``): the unknown ones opened with the map in the same transaction as the
file's ``done`` state (:func:`open_particle_reviews`), any other when an analyst decides it.
Every particle's mean spectrum is kept (``particle_spectra``: float32 bytes of the map's axis
and of the mean, in the map's own unit, as the cube holds them: about 7 KB for 900 bands),
since a map of 10^6 pixels is not read again to decide one particle. A decision (``confirmed``
with a label, or ``rejected``) replaces an earlier one; the particles views lay it over the
classifier's answer (:data:`daemon.store.maps.PARTICLE_COLUMNS`), so ``mpwatch results
--particles``, a sample's summary and its report count the final label.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from daemon.store.connection import LedgerConnection, check_sha256, payload_json
from daemon.store.maps import PARTICLE_COLUMNS, PARTICLE_JOINS, StoredParticle, stored_particle
from daemon.store.records import ReviewState, UnknownReviewError
from daemon.store.reviews import counted_states, record_decision
from engine.core.spectrum import Spectrum

__all__ = ["ParticleReview", "ParticleReviews", "open_particle_reviews"]

#: How a kept spectrum's axis and values are stored: little-endian float32, as maps are read.
_STORED: Final = "<f4"


@dataclass(frozen=True)
class ParticleReview:
    """The review of one map particle, with the particle (its values final) it is about."""

    particle: StoredParticle
    state: ReviewState
    label: str | None
    decided_by: str | None
    decided_at: float | None
    opened_at: float


def open_particle_reviews(
    conn: sqlite3.Connection, sha256: str, spectra: Mapping[int, Spectrum], *, now: float
) -> int:
    """Keep the mean spectrum of each particle of map ``sha256`` that ``spectra`` holds, and open a
    review for each of them that is ``unknown`` (inside the caller's transaction); a particle kept
    already keeps what it has. Returns how many reviews opened."""
    conn.executemany(
        "INSERT INTO particle_spectra (particle_id, wavenumbers, spectrum, y_unit, technique, metadata) "
        "SELECT id, ?, ?, ?, ?, ? FROM particles WHERE sha256 = ? AND particle_index = ? "
        "ON CONFLICT (particle_id) DO NOTHING",
        (
            (
                np.asarray(spectrum.wavenumbers, dtype=_STORED).tobytes(),
                np.asarray(spectrum.values, dtype=_STORED).tobytes(),
                spectrum.y_unit,
                spectrum.technique,
                payload_json(dict(spectrum.metadata)),
                sha256,
                int(index),
            )
            for index, spectrum in spectra.items()
        ),
    )
    return int(
        conn.execute(
            "INSERT INTO particle_review (particle_id, state, opened_at) SELECT p.id, 'open', ? "
            "FROM particles AS p JOIN particle_spectra AS s ON s.particle_id = p.id "
            "WHERE p.sha256 = ? AND p.status = 'unknown' ON CONFLICT (particle_id) DO NOTHING",
            (now, sha256),
        ).rowcount
    )


#: Reviews with their particles, final values and decisions.
_REVIEWED: Final = (
    f"SELECT {PARTICLE_COLUMNS}, v.state AS review_state, v.label AS review_label, "
    "v.decided_by AS review_by, v.decided_at AS review_at, v.opened_at "
    f"FROM particle_review AS v JOIN particles AS p ON p.id = v.particle_id {PARTICLE_JOINS}"
)


def _review(row: sqlite3.Row) -> ParticleReview:
    return ParticleReview(
        particle=stored_particle(row),
        state=ReviewState(row["review_state"]),
        label=row["review_label"],
        decided_by=row["review_by"],
        decided_at=row["review_at"],
        opened_at=row["opened_at"],
    )


class ParticleReviews(LedgerConnection):
    """Maps' particles: their kept mean spectra, their review queue and the decisions on them."""

    def open_particle_reviews(
        self, *, sha256: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ParticleReview]:
        """Open reviews of current particles (of map ``sha256`` alone, if given), map by map in
        particle order."""
        where = "v.state = 'open' AND p.superseded_at IS NULL" + (" AND p.sha256 = ?" if sha256 else "")
        rows = self._page(
            f"{_REVIEWED} WHERE {where} ORDER BY m.id, p.particle_index",
            (check_sha256(sha256),) if sha256 else (),
            limit=limit,
            offset=offset,
        )
        return [_review(row) for row in rows]

    def particle_review(self, particle_id: int) -> ParticleReview | None:
        """The review of one particle (by the particle's id), or None."""
        with self._read() as conn:
            row = conn.execute(f"{_REVIEWED} WHERE v.particle_id = ?", (particle_id,)).fetchone()
        return None if row is None else _review(row)

    def particle_spectrum(self, particle_id: int) -> Spectrum:
        """The mean spectrum kept for a particle.

        Raises:
            UnknownReviewError: no spectrum is kept for it (no such particle, or one of a map
                identified before spectra were kept).
        """
        with self._read() as conn:
            row = conn.execute(
                "SELECT wavenumbers, spectrum, y_unit, technique, metadata FROM particle_spectra "
                "WHERE particle_id = ?",
                (particle_id,),
            ).fetchone()
        if row is None:
            raise UnknownReviewError(f"particle {particle_id} has no spectrum kept")
        return Spectrum.create(
            np.frombuffer(row["wavenumbers"], dtype=_STORED).astype(np.float64),
            np.frombuffer(row["spectrum"], dtype=_STORED).astype(np.float64),
            y_unit=row["y_unit"],
            technique=row["technique"],
            metadata=json.loads(row["metadata"]),
        )

    def enqueue_particle_review(self, particle_id: int, *, now: float) -> bool:
        """Ask for a decision on any particle whose spectrum is kept (unknown ones are queued with
        their map). Returns False if it already has a review.

        Raises:
            UnknownReviewError: no spectrum is kept for it.
        """
        with self._write() as conn:
            kept = conn.execute("SELECT 1 FROM particle_spectra WHERE particle_id = ?", (particle_id,))
            if kept.fetchone() is None:
                raise UnknownReviewError(f"particle {particle_id} has no spectrum kept")
            cursor = conn.execute(
                "INSERT INTO particle_review (particle_id, state, opened_at) VALUES (?, 'open', ?) "
                "ON CONFLICT (particle_id) DO NOTHING",
                (particle_id, now),
            )
            return cursor.rowcount > 0

    def decide_particle_review(
        self,
        particle_id: int,
        *,
        state: ReviewState,
        label: str | None,
        decided_by: str,
        now: float,
        material: str | None = None,
        ref_ids: Sequence[int] = (),
    ) -> ParticleReview:
        """Record an analyst's decision on a particle; a later decision replaces an earlier one.

        As :meth:`~daemon.store.reviews.ReviewQueue.decide_review` decides a result's review.

        Raises:
            UnknownReviewError: the particle has no review.
            ValueError: ``state`` is ``open``, or ``confirmed`` without a label.
        """
        with self._write() as conn:
            record_decision(
                conn,
                "particle_review",
                "particle_id",
                particle_id,
                state=state,
                label=label,
                decided_by=decided_by,
                now=now,
                material=material,
                ref_ids=ref_ids,
            )
            row = conn.execute(f"{_REVIEWED} WHERE v.particle_id = ?", (particle_id,)).fetchone()
        return _review(row)

    def particle_review_counts(self) -> dict[ReviewState, int]:
        """Number of reviews of current particles in each state, every state present."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT v.state, COUNT(*) FROM particle_review AS v JOIN particles AS p "
                "ON p.id = v.particle_id WHERE p.superseded_at IS NULL GROUP BY v.state"
            ).fetchall()
        return counted_states(rows)
