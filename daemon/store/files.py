"""The file state machine: every inbox file from ``seen`` to done, quarantined or ignored (failed: retried).

File states
-----------

Transitions (anything not listed raises :class:`InvalidTransitionError`)::

    from                  call                                      to
    (unknown path)        observe                                   seen
    seen, failed          mark_pending, new content                 pending
    seen, failed          mark_pending, content already done        done, duplicate_of set
    seen, failed          mark_pending, content quarantined         quarantined
    pending               claim / release                           pending, claimed_at set / cleared
    pending               complete                                  done
    seen, pending, failed fail, attempts < max_attempts             failed, next_attempt_at set
    seen, pending, failed fail, attempts == max_attempts            quarantined
    seen, pending, failed quarantine                                quarantined
    seen, pending, failed ignore                                    ignored
    pending, claimed      recover_interrupted (after a crash)       pending, unclaimed (attempts + 1)
    done, failed,         observe, size or mtime changed            seen, sha256/attempts cleared
      quarantined, pending, ignored

- ``seen``: the watcher found a stable file; it still has to be hashed.
- ``pending``: hashed and queued. A worker *claims* one (``claimed_at`` is set) while it
  classifies it; :meth:`Ledger.recover_interrupted` releases claims a crash left behind.
- ``done``: terminal. Either its content was classified here (``duplicate_of`` is NULL),
  or it is a **duplicate**: a second path whose bytes are identical to content that is
  already done (or finished in the same transaction). A duplicate is ``done`` with
  ``duplicate_of`` set to the path whose classification it shares, and it adds **no**
  results; its results are those of its sha256.
- ``failed``: a retryable error (the file was locked, vanished, a reader raised). It
  carries ``attempts`` and ``next_attempt_at`` from exponential backoff
  (:class:`RetryPolicy`); :meth:`Ledger.due_retries` lists those whose time has come.
- ``quarantined``: terminal poison with a ``reason``: a failure reached
  ``max_attempts``, or :meth:`Ledger.quarantine` was called. New paths carrying the
  bytes of quarantined content are quarantined at :meth:`Ledger.mark_pending` without
  being classified again.

- ``ignored``: terminal, with a ``reason``: the file is plainly not a spectrum (a photo,
  a spreadsheet, a note), told by its name before it is hashed or by its content when
  read. It stays where it is and is not read again; it is neither a result nor poison.

A ``done``, ``failed``, ``quarantined`` or ``ignored`` file whose size or mtime changes on
disk is new content at an old path: :meth:`Ledger.observe` puts it back to ``seen`` with
its attempts cleared.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from daemon.store.connection import (
    FILE_COLUMNS,
    WORK_COLUMNS,
    LedgerConnection,
    check_sha256,
    path_key,
    payload_json,
)
from daemon.store.maps import MapRecord, insert_map
from daemon.store.particle_reviews import open_particle_reviews
from daemon.store.records import (
    Admission,
    Completion,
    FileRecord,
    FileState,
    InvalidTransitionError,
    ResultRecord,
    UnknownPathError,
    WorkItem,
    _file_record,
    _work_item,
    path_from_db,
    text_to_db,
)

__all__ = ["FileStates"]

logger = logging.getLogger(__name__)

#: The tables of a content's results, superseded together when its file is rewritten.
_RESULT_TABLES = ("results", "maps", "particles")


class FileStates(LedgerConnection):
    """The ``files`` table's transitions, and completing a file with its results."""

    @staticmethod
    def _file_row(conn: sqlite3.Connection, key: str) -> sqlite3.Row:
        row: sqlite3.Row | None = conn.execute(
            f"SELECT {FILE_COLUMNS} FROM files WHERE path = ?", (key,)
        ).fetchone()
        if row is None:
            raise UnknownPathError(f"the ledger has no file {key!r}")
        return row

    @classmethod
    def _set_quarantined(
        cls, conn: sqlite3.Connection, file_id: int, path: str, reason: str, *, now: float, **columns: object
    ) -> None:
        """Set one file aside as poison with its reason (and the other ``columns`` given), and say so.

        Its results of earlier content are no longer current (:meth:`_supersede`).
        """
        sets = "".join(f"{name} = ?, " for name in columns)
        conn.execute(
            f"UPDATE files SET state = 'quarantined', {sets}reason = ?, next_attempt_at = NULL, "
            "claimed_at = NULL, updated_at = ? WHERE id = ?",
            (*columns.values(), text_to_db(reason), now, file_id),
        )
        sha = conn.execute("SELECT sha256 FROM files WHERE id = ?", (file_id,)).fetchone()[0]
        cls._supersede(conn, path, keep=sha or "", now=now)
        logger.warning("%s quarantined: %s", path, reason)

    @staticmethod
    def _reload(conn: sqlite3.Connection, file_id: int) -> FileRecord:
        row = conn.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
        return _file_record(row)

    @staticmethod
    def _done_source(conn: sqlite3.Connection, sha256: str, *, excluding: int) -> str | None:
        """The path whose classification content ``sha256`` shares, if it is done."""
        row = conn.execute(
            "SELECT COALESCE(duplicate_of, path) FROM files "
            "WHERE sha256 = ? AND state = 'done' AND id <> ? "
            "ORDER BY duplicate_of IS NOT NULL, id LIMIT 1",
            (sha256, excluding),
        ).fetchone()
        return None if row is None else str(row[0])

    def observe(self, path: str | Path, *, size: int, mtime: float, now: float) -> FileRecord:
        """Register a stable file the watcher handed over, or refresh a known one.

        A new path is inserted as ``seen``. A known path with the same size and mtime is
        left alone (re-scans are cheap no-ops). A known path whose size or mtime changed
        holds new content: a ``seen`` row just takes the new stat; any other row goes
        back to ``seen`` with its sha256, attempts, reason, claim and ``duplicate_of``
        cleared. A worker that still holds the old claim will find, at
        :meth:`complete`, that its content is no longer pending there.
        """
        key = path_key(path)
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        with self._write() as conn:
            row = conn.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE path = ?", (key,)).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO files (path, size, mtime, state, attempts, first_seen, updated_at) "
                    "VALUES (?, ?, ?, 'seen', 0, ?, ?)",
                    (key, size, mtime, now, now),
                )
                assert cursor.lastrowid is not None
                return self._reload(conn, cursor.lastrowid)
            if row["size"] == size and row["mtime"] == mtime:
                return _file_record(row)
            if row["state"] == FileState.SEEN:
                conn.execute(
                    "UPDATE files SET size = ?, mtime = ?, updated_at = ? WHERE id = ?",
                    (size, mtime, now, row["id"]),
                )
            else:
                logger.info("%s changed on disk while %s; it will be processed again", key, row["state"])
                conn.execute(
                    "UPDATE files SET size = ?, mtime = ?, state = 'seen', sha256 = NULL, attempts = 0, "
                    "next_attempt_at = NULL, reason = NULL, duplicate_of = NULL, claimed_at = NULL, "
                    "updated_at = ? WHERE id = ?",
                    (size, mtime, now, row["id"]),
                )
            return self._reload(conn, row["id"])

    def mark_pending(self, path: str | Path, sha256: str, *, now: float) -> Admission:
        """Record the file's content hash and queue it, unless that content is settled.

        Allowed from ``seen``, ``failed`` (a due retry, attempts kept) and ``pending``
        (a re-hash; the same sha256 is a no-op that keeps any claim).

        Returns:
            :attr:`Admission.NEW` when the file is now pending,
            :attr:`Admission.DUPLICATE` when identical content is already done (the file
            is now ``done`` with ``duplicate_of`` set and no results of its own),
            :attr:`Admission.QUARANTINED` when identical content is quarantined.

        Raises:
            UnknownPathError: the path was never observed.
            InvalidTransitionError: the file is ``done`` or ``quarantined``.
        """
        key = path_key(path)
        check_sha256(sha256)
        with self._write() as conn:
            row = self._file_row(conn, key)
            state = FileState(row["state"])
            if state in (FileState.DONE, FileState.QUARANTINED, FileState.IGNORED):
                raise InvalidTransitionError(f"{key} is {state}; only observe() can reopen it")
            if state is FileState.PENDING and row["sha256"] == sha256:
                return Admission.NEW
            source = self._done_source(conn, sha256, excluding=row["id"])
            if source is not None:
                conn.execute(
                    "UPDATE files SET state = 'done', sha256 = ?, duplicate_of = ?, reason = NULL, "
                    "next_attempt_at = NULL, claimed_at = NULL, updated_at = ? WHERE id = ?",
                    (sha256, source, now, row["id"]),
                )
                self._supersede(conn, key, keep=sha256, now=now)  # one path, one current result
                logger.info("%s duplicates the content of %s; not classified again", key, source)
                return Admission.DUPLICATE
            poisoned = conn.execute(
                "SELECT path, reason FROM files WHERE sha256 = ? AND state = 'quarantined' AND id <> ? "
                "ORDER BY id LIMIT 1",
                (sha256, row["id"]),
            ).fetchone()
            if poisoned is not None:
                reason = f"same content as quarantined {path_from_db(poisoned['path'])}: {poisoned['reason']}"
                self._set_quarantined(conn, row["id"], key, reason, now=now, sha256=sha256)
                return Admission.QUARANTINED
            conn.execute(
                "UPDATE files SET state = 'pending', sha256 = ?, reason = NULL, next_attempt_at = NULL, "
                "claimed_at = NULL, duplicate_of = NULL, updated_at = ? WHERE id = ?",
                (sha256, now, row["id"]),
            )
            return Admission.NEW

    def claim_next(self, *, now: float) -> WorkItem | None:
        """Claim the oldest unclaimed pending file for a worker, or return None."""
        items = self.claim(1, now=now)
        return items[0] if items else None

    def claim(self, limit: int, *, now: float) -> list[WorkItem]:
        """Claim up to ``limit`` of the oldest unclaimed pending files, oldest first.

        A file whose content is already claimed (by an earlier call or earlier in
        this one) is skipped: identical content is classified once and its other
        paths finish as duplicates. One scan and one update, however many are claimed.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {WORK_COLUMNS} FROM files AS f "
                "WHERE f.state = 'pending' AND f.claimed_at IS NULL AND NOT EXISTS ("
                "  SELECT 1 FROM files AS g WHERE g.sha256 = f.sha256 AND g.state = 'pending' "
                "  AND g.claimed_at IS NOT NULL) "
                "ORDER BY f.id"
            )
            items: dict[str, WorkItem] = {}
            for row in rows:
                items.setdefault(row["sha256"], _work_item(row))
                if len(items) == limit:
                    break
            rows.close()
            conn.executemany(
                "UPDATE files SET claimed_at = ?, updated_at = ? WHERE id = ?",
                [(now, now, item.file_id) for item in items.values()],
            )
        return list(items.values())

    def pending_items(self, *, limit: int = 100) -> list[WorkItem]:
        """Unclaimed pending files, oldest first, without claiming them."""
        rows = self._page(
            f"SELECT {WORK_COLUMNS} FROM files WHERE state = 'pending' AND claimed_at IS NULL ORDER BY id",
            limit=limit,
        )
        return [_work_item(row) for row in rows]

    def release(self, path: str | Path, *, now: float) -> bool:
        """Give back a claim without counting an attempt (a graceful stop mid-file).

        Returns whether a claim was released.
        """
        key = path_key(path)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE files SET claimed_at = NULL, updated_at = ? "
                "WHERE path = ? AND state = 'pending' AND claimed_at IS NOT NULL",
                (now, key),
            )
            return cursor.rowcount > 0

    def complete(
        self,
        sha256: str,
        results: Iterable[ResultRecord],
        *,
        now: float,
        map_record: MapRecord | None = None,
    ) -> Completion:
        """Store the results of one content and finish its pending files, atomically.

        In one transaction: every result is inserted (``UNIQUE (sha256, spectrum_index)``
        makes a repeat a no-op), every ``unknown`` result gets an open review, the claimed
        (or oldest) pending file with this sha256 becomes ``done`` and every other pending
        file with the same bytes becomes ``done`` as its duplicate. If anything raises,
        including the ``results`` iterable itself, nothing is written. ``results`` is
        consumed inside the transaction, so a generator over a large map streams.

        Calling it again for content already done writes nothing and returns zero counts.
        A map (``map_record``) is stored with its particles in the same transaction, keyed by
        ``(sha256, particle_index)`` (:mod:`daemon.store.maps`).

        Raises:
            InvalidTransitionError: no file holds this content in ``pending`` and the
                content is not done (for example the file changed on disk meanwhile).
        """
        check_sha256(sha256)
        with self._write() as conn:
            pending = conn.execute(
                "SELECT id, path FROM files WHERE sha256 = ? AND state = 'pending' "
                "ORDER BY claimed_at IS NULL, id",
                (sha256,),
            ).fetchall()
            earlier = self._done_source(conn, sha256, excluding=-1)
            if not pending:
                if earlier is None:
                    raise InvalidTransitionError(f"no pending file holds content {sha256}")
                return Completion(sha256, path_from_db(earlier), 0, 0, ())
            source_path = earlier if earlier is not None else str(pending[0]["path"])
            written = conn.executemany(
                "INSERT INTO results (sha256, source_path, spectrum_index, created_at, status, label, "
                "material, confidence, payload, model_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (sha256, spectrum_index) DO NOTHING",
                (
                    (
                        sha256,
                        source_path,
                        record.spectrum_index,
                        now,
                        str(record.status),
                        record.label,
                        record.material,
                        record.confidence,
                        payload_json(record.payload),
                        record.model_version,
                    )
                    for record in results
                ),
            ).rowcount
            particles = insert_map(conn, sha256, source_path, map_record, now=now) if map_record else 0
            reviews = conn.execute(
                "INSERT INTO review (result_id, state, opened_at) "
                "SELECT id, 'open', ? FROM results WHERE sha256 = ? AND status = 'unknown' "
                "ON CONFLICT (result_id) DO NOTHING",
                (now, sha256),
            ).rowcount
            if map_record:
                reviews += open_particle_reviews(conn, sha256, map_record.spectra, now=now)
            for row in pending:
                self._supersede(conn, str(row["path"]), keep=sha256, now=now)
            duplicates: list[str] = []
            for row in pending:
                if row["path"] == source_path:
                    conn.execute(
                        "UPDATE files SET state = 'done', duplicate_of = NULL, reason = NULL, "
                        "next_attempt_at = NULL, claimed_at = NULL, updated_at = ? WHERE id = ?",
                        (now, row["id"]),
                    )
                else:
                    duplicates.append(str(row["path"]))
                    conn.execute(
                        "UPDATE files SET state = 'done', duplicate_of = ?, reason = NULL, "
                        "next_attempt_at = NULL, claimed_at = NULL, updated_at = ? WHERE id = ?",
                        (source_path, now, row["id"]),
                    )
            return Completion(
                sha256,
                path_from_db(source_path),
                max(written, 0),
                max(reviews, 0),
                tuple(path_from_db(d) for d in duplicates),
                particles,
            )

    @staticmethod
    def _supersede(conn: sqlite3.Connection, path: str, *, keep: str, now: float) -> None:
        """``path`` now holds content ``keep``: its results of other content are no longer current.

        Such a result moves to another done file with the same bytes when there is one (a
        duplicate of ``path``), so it still counts once; otherwise it is superseded: kept
        as history, out of results, counts, result files and the review queue.
        """
        old = conn.execute(
            " UNION ".join(
                f"SELECT sha256 FROM {table} WHERE source_path = ? AND sha256 <> ? AND superseded_at IS NULL"
                for table in _RESULT_TABLES
            ),
            (path, keep) * len(_RESULT_TABLES),
        ).fetchall()
        for (sha,) in old:
            holder = conn.execute(
                "SELECT path FROM files WHERE sha256 = ? AND state = 'done' AND path <> ? "
                "ORDER BY id LIMIT 1",
                (sha, path),
            ).fetchone()
            for table in _RESULT_TABLES:
                if holder is None:
                    conn.execute(
                        f"UPDATE {table} SET superseded_at = ? WHERE sha256 = ? AND source_path = ?",
                        (now, sha, path),
                    )
                else:
                    conn.execute(
                        f"UPDATE {table} SET source_path = ? WHERE sha256 = ? AND source_path = ?",
                        (holder[0], sha, path),
                    )
            if holder is None:
                continue
            conn.execute("UPDATE files SET duplicate_of = NULL WHERE path = ?", (holder[0],))
            conn.execute(
                "UPDATE files SET duplicate_of = ? WHERE sha256 = ? AND duplicate_of = ? AND path <> ?",
                (holder[0], sha, path, holder[0]),
            )

    def fail(
        self,
        path: str | Path,
        reason: str,
        *,
        now: float,
        retry_after: float | None = None,
    ) -> FileRecord:
        """Record a retryable failure; the ``max_attempts``-th one quarantines the file.

        Args:
            path: the file (``seen``, ``pending`` or ``failed``).
            reason: one readable sentence, kept on the row.
            now: epoch seconds.
            retry_after: seconds to wait before the next attempt, overriding the
                backoff (for example a short wait when the instrument still holds a lock).

        Returns:
            The updated row: ``failed`` with ``next_attempt_at``, or ``quarantined``.
        """
        key = path_key(path)
        if retry_after is not None and retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {retry_after}")
        with self._write() as conn:
            row = self._file_row(conn, key)
            state = FileState(row["state"])
            if state not in (FileState.SEEN, FileState.PENDING, FileState.FAILED):
                raise InvalidTransitionError(f"{key} is {state} and cannot fail")
            attempts = int(row["attempts"]) + 1
            if attempts >= self.retry_policy.max_attempts:
                final_reason = f"{reason} (gave up after {attempts} attempts)"
                self._set_quarantined(conn, row["id"], key, final_reason, now=now, attempts=attempts)
            else:
                delay = retry_after if retry_after is not None else self.retry_policy.delay(attempts)
                conn.execute(
                    "UPDATE files SET state = 'failed', attempts = ?, reason = ?, next_attempt_at = ?, "
                    "claimed_at = NULL, updated_at = ? WHERE id = ?",
                    (attempts, text_to_db(reason), now + delay, now, row["id"]),
                )
                logger.info("%s failed (attempt %d), retry in %.0f s: %s", key, attempts, delay, reason)
            return self._reload(conn, row["id"])

    def quarantine(self, path: str | Path, reason: str, *, now: float) -> FileRecord:
        """Set a file aside as poison now (from ``seen``, ``pending``, ``failed``)."""
        key = path_key(path)
        with self._write() as conn:
            row = self._file_row(conn, key)
            if row["state"] == FileState.DONE:
                raise InvalidTransitionError(f"{key} is done and cannot be quarantined")
            self._set_quarantined(conn, row["id"], key, reason, now=now)
            return self._reload(conn, row["id"])

    def ignore(self, path: str | Path, reason: str, *, now: float) -> FileRecord:
        """Set a file aside as plainly not a spectrum (from ``seen``, ``pending``, ``failed``); say so once.

        It is not retried, not quarantined and not counted as either; a change on disk
        (:meth:`observe`) brings it back.
        """
        key = path_key(path)
        with self._write() as conn:
            row = self._file_row(conn, key)
            state = FileState(row["state"])
            if state not in (FileState.SEEN, FileState.PENDING, FileState.FAILED):
                raise InvalidTransitionError(f"{key} is {state} and cannot be ignored")
            conn.execute(
                "UPDATE files SET state = 'ignored', reason = ?, next_attempt_at = NULL, claimed_at = NULL, "
                "updated_at = ? WHERE id = ?",
                (text_to_db(reason), now, row["id"]),
            )
            self._supersede(conn, key, keep=row["sha256"] or "", now=now)
            logger.info("%s ignored: %s", key, reason)
            return self._reload(conn, row["id"])

    def due_retries(self, *, now: float, limit: int = 100) -> list[FileRecord]:
        """Failed files whose backoff has elapsed, the longest-waiting first.

        The daemon re-hashes each (the file may have changed) and calls
        :meth:`mark_pending` again, or :meth:`fail` if it still cannot read it.
        """
        rows = self._page(
            f"SELECT {FILE_COLUMNS} FROM files WHERE state = 'failed' AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id",
            (now,),
            limit=limit,
        )
        return [_file_record(row) for row in rows]

    def recover_interrupted(self, *, now: float) -> int:
        """Repair what a crash (kill -9, power cut) left behind; call once at start.

        - A pending file still claimed was being classified when the process died. Its
          results were never committed (``complete`` is atomic), so it goes back to the
          queue to be classified exactly once more. The interruption counts as an
          attempt, so a file that kills the process every time (a reader exhausting
          memory) is quarantined after ``max_attempts`` instead of crash-looping.
        - A pending file whose content is already done becomes its duplicate.

        Returns:
            The number of files changed.
        """
        changed = 0
        with self._write() as conn:
            claimed = conn.execute(
                "SELECT id, path, attempts FROM files WHERE state = 'pending' AND claimed_at IS NOT NULL"
            ).fetchall()
            for row in claimed:
                attempts = int(row["attempts"]) + 1
                if attempts >= self.retry_policy.max_attempts:
                    reason = f"interrupted while being classified {attempts} times"
                    self._set_quarantined(conn, row["id"], row["path"], reason, now=now, attempts=attempts)
                else:
                    conn.execute(
                        "UPDATE files SET attempts = ?, reason = 'interrupted while being classified', "
                        "claimed_at = NULL, updated_at = ? WHERE id = ?",
                        (attempts, now, row["id"]),
                    )
                changed += 1
            orphans = conn.execute(
                "SELECT f.id, f.sha256 FROM files AS f WHERE f.state = 'pending' AND EXISTS ("
                "  SELECT 1 FROM files AS g WHERE g.sha256 = f.sha256 AND g.state = 'done')"
            ).fetchall()
            for row in orphans:
                source = self._done_source(conn, row["sha256"], excluding=row["id"])
                conn.execute(
                    "UPDATE files SET state = 'done', duplicate_of = ?, claimed_at = NULL, updated_at = ? "
                    "WHERE id = ?",
                    (source, now, row["id"]),
                )
                changed += 1
        if changed:
            logger.info("recovered %d files interrupted by the previous run", changed)
        return changed

    def is_done(self, sha256: str) -> bool:
        """Whether this content has been classified (under any path)."""
        check_sha256(sha256)
        with self._read() as conn:
            row = conn.execute(
                "SELECT 1 FROM files WHERE sha256 = ? AND state = 'done' LIMIT 1", (sha256,)
            ).fetchone()
        return row is not None

    def file(self, path: str | Path) -> FileRecord | None:
        """The row for one path, or None."""
        key = path_key(path)
        with self._read() as conn:
            row = conn.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE path = ?", (key,)).fetchone()
        return None if row is None else _file_record(row)

    def files(self, *, state: FileState | None = None, limit: int = 100, offset: int = 0) -> list[FileRecord]:
        """File rows in arrival order, optionally in one state."""
        where, params = ("", ()) if state is None else ("WHERE state = ?", (str(FileState(state)),))
        query = f"SELECT {FILE_COLUMNS} FROM files {where} ORDER BY id"
        rows = self._page(query, params, limit=limit, offset=offset)
        return [_file_record(row) for row in rows]

    def counts(self) -> dict[FileState, int]:
        """Number of files in each state, every state present (for metrics and /healthz)."""
        with self._read() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall()
        found = {FileState(state): int(count) for state, count in rows}
        return {state: found.get(state, 0) for state in FileState}
