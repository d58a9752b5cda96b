"""Stored results: the classified spectra, filtered for ``mpwatch results``, the API and the console.

Each content (sha256) has at most one row per spectrum index. The results of an
older content at a rewritten path are *superseded*: kept as history, left out of
every view unless asked for.
"""

from __future__ import annotations

from pathlib import Path

from daemon.store.connection import (
    DUPLICATES_DECIDED,
    FINAL_LABEL,
    FINAL_STATUS,
    RESULT_COLUMNS,
    RESULTS_DECIDED,
    LedgerConnection,
    check_sha256,
    path_key,
    result_columns,
)
from daemon.store.records import (
    ResultStatus,
    StoredResult,
    _stored_result,
)

__all__ = ["ResultQueries"]


class ResultQueries(LedgerConnection):
    """Reading the ``results`` table, each result with its decision laid over it."""

    def results(
        self,
        *,
        since: float | None = None,
        status: ResultStatus | None = None,
        label: str | None = None,
        sha256: str | None = None,
        folder: str | Path | None = None,
        sample: str | None = None,
        limit: int = 100,
        offset: int = 0,
        superseded: bool = False,
        duplicates: bool = False,
    ) -> list[StoredResult]:
        """Stored results in the order they were written, filtered (``mpwatch results``).

        Status and label are final (an analyst's decision overrides the classifier's).

        Args:
            since: only results created at or after this epoch time.
            status: only this outcome.
            label: only this label (exact match).
            sha256: only the spectra of this content.
            folder: only files directly inside this folder (a sample folder).
            sample: only files directly inside a folder of this name, or whose path ends
                with it (``filter-3``, ``2024-05/filter-3``).
            limit: page size.
            offset: rows to skip.
            superseded: also the results a rewritten file's newer content replaced (history).
            duplicates: also a row for every file whose content was classified under
                another path, right after that path's row, with ``duplicate_of`` set.
        """
        shared: list[str] = [] if superseded else ["r.superseded_at IS NULL"]
        params: list[object] = []
        if since is not None:
            shared.append("r.created_at >= ?")
            params.append(since)
        if status is not None:
            shared.append(f"{FINAL_STATUS} = ?")
            params.append(str(ResultStatus(status)))
        if label is not None:
            shared.append(f"{FINAL_LABEL} = ?")
            params.append(label)
        if sha256 is not None:
            shared.append("r.sha256 = ?")
            params.append(check_sha256(sha256))
        own, own_params = _where_file("r.source_path", shared, params, folder=folder, sample=sample)
        query = f"SELECT {RESULT_COLUMNS}, 0 AS copy FROM {RESULTS_DECIDED} {own}"
        if duplicates:
            theirs, their_params = _where_file(
                "f.path",
                [*shared, "f.duplicate_of = r.source_path", "f.state = 'done'"],
                params,
                folder=folder,
                sample=sample,
            )
            columns = result_columns(source="f.path", duplicate_of="f.duplicate_of")
            query += f" UNION ALL SELECT {columns}, f.id AS copy FROM {DUPLICATES_DECIDED} {theirs}"
            own_params = [*own_params, *their_params]
        rows = self._page(f"{query} ORDER BY id, copy", own_params, limit=limit, offset=offset)
        return [_stored_result(row) for row in rows]

    def result(self, result_id: int) -> StoredResult | None:
        """One stored result by its id."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {RESULT_COLUMNS} FROM {RESULTS_DECIDED} WHERE r.id = ?", (result_id,)
            ).fetchone()
        return _stored_result(row) if row is not None else None


def _where_file(
    column: str,
    clauses: list[str],
    params: list[object],
    *,
    folder: str | Path | None,
    sample: str | None,
) -> tuple[str, list[object]]:
    """A WHERE clause: ``clauses`` and the folder or sample filters on the file path ``column``."""
    clauses, params = list(clauses), list(params)
    if folder is not None:
        prefix = path_key(folder).rstrip("/") + "/"
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(f"{column} LIKE ? ESCAPE '\\' AND instr(substr({column}, ?), '/') = 0")
        params.extend([escaped + "%", len(prefix) + 1])
    if sample is not None:
        clauses.append(f"in_sample({column}, ?)")
        params.append(path_key(sample.strip("/")))
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
