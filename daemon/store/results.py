"""Stored results: the classified spectra, filtered for ``mpwatch results``, the API and the console.

Each content (sha256) has at most one row per spectrum index. The results of an
older content at a rewritten path are *superseded*: kept as history, left out of
every view unless asked for.
"""

from __future__ import annotations

from pathlib import Path

from daemon.store.connection import RESULT_COLUMNS, LedgerConnection, check_sha256, path_key
from daemon.store.records import (
    ResultStatus,
    StoredResult,
    _stored_result,
)

__all__ = ["ResultQueries"]


class ResultQueries(LedgerConnection):
    """Reading the ``results`` table."""


    def results(
        self,
        *,
        since: float | None = None,
        status: ResultStatus | None = None,
        label: str | None = None,
        sha256: str | None = None,
        folder: str | Path | None = None,
        limit: int = 100,
        offset: int = 0,
        superseded: bool = False,
    ) -> list[StoredResult]:
        """Stored results in the order they were written, filtered (``mpwatch results``).

        Args:
            since: only results created at or after this epoch time.
            status: only this outcome.
            label: only this label (exact match).
            sha256: only the spectra of this content.
            folder: only files directly inside this folder (a sample folder).
            limit: page size.
            offset: rows to skip.
            superseded: also the results a rewritten file's newer content replaced (history).
        """
        clauses: list[str] = [] if superseded else ["r.superseded_at IS NULL"]
        params: list[object] = []
        if since is not None:
            clauses.append("r.created_at >= ?")
            params.append(since)
        if status is not None:
            clauses.append("r.status = ?")
            params.append(str(ResultStatus(status)))
        if label is not None:
            clauses.append("r.label = ?")
            params.append(label)
        if sha256 is not None:
            clauses.append("r.sha256 = ?")
            params.append(check_sha256(sha256))
        if folder is not None:
            prefix = path_key(folder).rstrip("/") + "/"
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("r.source_path LIKE ? ESCAPE '\\' AND instr(substr(r.source_path, ?), '/') = 0")
            params.extend([escaped + "%", len(prefix) + 1])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT {RESULT_COLUMNS} FROM results AS r {where} ORDER BY r.id"
        rows = self._page(query, params, limit=limit, offset=offset)
        return [_stored_result(row) for row in rows]

    def result(self, result_id: int) -> StoredResult | None:
        """One stored result by its id."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {RESULT_COLUMNS} FROM results AS r WHERE r.id = ?", (result_id,)
            ).fetchone()
        return _stored_result(row) if row is not None else None

