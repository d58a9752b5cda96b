"""The review queue: the results an analyst should look at, and the analyst's decisions.

Unknown results are queued when they are written; any result can be queued by
hand. A decision (``confirmed`` with a label, or ``rejected``) replaces an earlier
one. Reviews of superseded results leave the queue with them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from daemon.store.connection import REVIEW_SELECT, LedgerConnection
from daemon.store.records import (
    MODEL_DECIDER,
    ReviewItem,
    ReviewState,
    UnknownReviewError,
    _review_item,
    path_from_db,
)

__all__ = ["ReviewQueue", "counted_states", "record_decision", "reopen_model_decisions"]


def record_decision(
    conn: sqlite3.Connection,
    table: str,
    key: str,
    value: int,
    *,
    state: ReviewState,
    label: str | None,
    decided_by: str,
    now: float,
    material: str | None = None,
    ref_ids: Sequence[int] = (),
) -> None:
    """Write a decision on the review of ``table`` (``review`` or ``particle_review``) whose ``key`` is
    ``value``, inside the caller's transaction.

    Raises:
        UnknownReviewError: there is no such review.
        ValueError: ``state`` is ``open``, or ``confirmed`` without a label, or nobody decided.
    """
    decision = ReviewState(state)
    what = key.removesuffix("_id")
    if decision is ReviewState.OPEN:
        raise ValueError("a decision is 'confirmed' or 'rejected', not 'open'")
    if decision is ReviewState.CONFIRMED and not label:
        raise ValueError(f"confirming a {what} needs the label the analyst assigns")
    if not decided_by:
        raise ValueError("decided_by must name who decided")
    cursor = conn.execute(
        f"UPDATE {table} SET state = ?, label = ?, material = ?, decided_by = ?, decided_at = ?, "
        f"ref_ids = ? WHERE {key} = ?",
        (
            str(decision),
            label,
            material if material is not None else label,
            decided_by,
            now,
            json.dumps([int(i) for i in ref_ids]),
            value,
        ),
    )
    if cursor.rowcount == 0:
        raise UnknownReviewError(f"{what} {value} has no review")


class ReviewQueue(LedgerConnection):
    """The ``review`` table: queued results and decisions."""

    def enqueue_review(self, result_id: int, *, now: float) -> bool:
        """Ask an analyst to look at any result (unknowns are queued automatically).

        Returns False if the result already has a review.

        Raises:
            LookupError: no such result.
        """
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM results WHERE id = ?", (result_id,)).fetchone() is None:
                raise UnknownReviewError(f"no result {result_id}")
            cursor = conn.execute(
                "INSERT INTO review (result_id, state, opened_at) VALUES (?, 'open', ?) "
                "ON CONFLICT (result_id) DO NOTHING",
                (result_id, now),
            )
            return cursor.rowcount > 0

    def open_reviews(self, *, limit: int = 100, offset: int = 0) -> list[ReviewItem]:
        """Open reviews, the oldest result first."""
        rows = self._page(
            f"{REVIEW_SELECT} WHERE v.state = 'open' AND r.superseded_at IS NULL ORDER BY v.result_id",
            limit=limit,
            offset=offset,
        )
        return [_review_item(row) for row in rows]

    def decisions(self, *, limit: int = 100, offset: int = 0) -> list[ReviewItem]:
        """Decided reviews of current results, the latest decision first."""
        rows = self._page(
            f"{REVIEW_SELECT} WHERE v.state != 'open' AND r.superseded_at IS NULL "
            "ORDER BY v.decided_at DESC, v.result_id DESC",
            limit=limit,
            offset=offset,
        )
        return [_review_item(row) for row in rows]

    def review(self, result_id: int) -> ReviewItem | None:
        """The review of one result, or None."""
        with self._read() as conn:
            row = conn.execute(f"{REVIEW_SELECT} WHERE v.result_id = ?", (result_id,)).fetchone()
        return None if row is None else _review_item(row)

    def decide_review(
        self,
        result_id: int,
        *,
        state: ReviewState,
        label: str | None,
        decided_by: str,
        now: float,
        material: str | None = None,
        ref_ids: Sequence[int] = (),
    ) -> ReviewItem:
        """Record an analyst's decision; a later decision replaces an earlier one.

        ``confirmed`` needs the polymer ``label`` the analyst assigns; ``rejected`` (not
        a polymer, or not worth adding) may leave it None. ``material`` is the label as the
        analyst wrote it (default: ``label``); ``ref_ids`` are the library references the
        decision added. The result's own row is never changed: every view lays the decision
        over it (:attr:`~daemon.store.records.StoredResult.decision`).

        Raises:
            UnknownReviewError: the result has no review.
            ValueError: ``state`` is ``open``, or ``confirmed`` without a label.
        """
        with self._write() as conn:
            record_decision(
                conn,
                "review",
                "result_id",
                result_id,
                state=state,
                label=label,
                decided_by=decided_by,
                now=now,
                material=material,
                ref_ids=ref_ids,
            )
            row = conn.execute(f"{REVIEW_SELECT} WHERE v.result_id = ?", (result_id,)).fetchone()
        return _review_item(row)

    def reopen_reviews_decided_by_model(self, labels: Sequence[str]) -> list[str]:
        """Open again the reviews of results and of maps' particles that a grown model closed as one of
        ``labels`` (:func:`reopen_model_decisions`); return the source files they are about."""
        with self._write() as conn:
            results = reopen_model_decisions(conn, "review", "result_id", labels)
            particles = reopen_model_decisions(conn, "particle_review", "particle_id", labels)
            sources = [
                str(row[0])
                for table, ids in (("results", results), ("particles", particles))
                for row in conn.execute(
                    f"SELECT source_path FROM {table} WHERE id IN ({', '.join('?' * len(ids))})", ids
                )
            ]
        return [path_from_db(path) for path in dict.fromkeys(sources)]

    def review_counts(self) -> dict[ReviewState, int]:
        """Number of reviews in each state, every state present."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT v.state, COUNT(*) FROM review AS v JOIN results AS r ON r.id = v.result_id "
                "WHERE r.superseded_at IS NULL GROUP BY v.state"
            ).fetchall()
        return counted_states(rows)


def reopen_model_decisions(
    conn: sqlite3.Connection, table: str, key: str, labels: Sequence[str]
) -> list[int]:
    """Open again, inside the caller's transaction, the reviews of ``table`` that a grown model closed
    as one of ``labels``; return their ``key`` values.

    Such a decision rested on the library of its moment: when the references of a label are taken
    back, the reviews it closed are judged again
    (:meth:`~daemon.growth.library.LibraryGrowth.recheck_reviews`).
    """
    if not labels:
        return []
    marks = ", ".join("?" * len(labels))
    where = f"state = 'confirmed' AND substr(decided_by, 1, ?) = ? AND label IN ({marks})"
    params = (len(MODEL_DECIDER), MODEL_DECIDER, *labels)
    keys = [int(row[0]) for row in conn.execute(f"SELECT {key} FROM {table} WHERE {where}", params)]
    conn.execute(
        f"UPDATE {table} SET state = 'open', label = NULL, material = NULL, decided_by = NULL, "
        f"decided_at = NULL, ref_ids = NULL WHERE {where}",
        params,
    )
    return keys


def counted_states(rows: Sequence[sqlite3.Row]) -> dict[ReviewState, int]:
    """``(state, count)`` rows as a count for every review state (0 where no row)."""
    found = {ReviewState(state): int(count) for state, count in rows}
    return {state: found.get(state, 0) for state in ReviewState}
