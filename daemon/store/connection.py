"""The ledger's connection: one SQLite database in WAL mode, its lock, and its transactions.

Durability and concurrency
--------------------------

- WAL journal: readers (``mpwatch results``, the HTTP review endpoints) never block the
  daemon's writer and the writer never blocks them.
- ``synchronous=FULL`` by default: every commit is fsynced before it returns. With WAL,
  ``NORMAL`` is safe against corruption but a power cut may roll back the last commits.
  A rolled-back classification would simply be redone, but a rolled-back analyst
  confirmation is human work that cannot be regenerated, and at the daemon's rate (tens
  of commits per second at most; one commit per file, not per spectrum) the extra fsync
  costs nothing that matters. ``NORMAL`` remains available for slow disks.
- ``busy_timeout`` (5 s by default): another process writing (``mpwatch confirm``) makes
  a writer wait instead of failing with ``database is locked``.
- Every public method is one transaction; writers open it with ``BEGIN IMMEDIATE`` so
  the write lock is taken up front and a read never has to be upgraded mid-transaction.
- One connection per :class:`Ledger`, opened with ``check_same_thread=False`` and guarded
  by a re-entrant lock: a single :class:`Ledger` may be shared by the watcher, worker and
  HTTP threads. Other processes open their own :class:`Ledger` on the same file.
- The database must live on a local disk (WAL needs shared memory; network file systems
  do not provide it). Keep it in the state directory, never in a watched inbox.

Time is always passed in (``now``, epoch seconds); the ledger never reads a clock.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal, Self

from daemon.store.records import (
    RetryPolicy,
    SchemaVersionError,
    path_to_db,
)
from daemon.store.schema import migrate

__all__ = ["LedgerConnection"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


FILE_COLUMNS: Final = (
    "id, path, sha256, size, mtime, state, attempts, next_attempt_at, reason, "
    "first_seen, updated_at, duplicate_of, claimed_at"
)
#: The decision laid over each result: a review that is no longer open.
_DECIDED = "LEFT JOIN review AS d ON d.result_id = r.id AND d.state != 'open'"
#: A result's final status and label: an analyst's decision overrides the classifier's answer.
FINAL_STATUS: Final = (
    "(CASE d.state WHEN 'confirmed' THEN 'known' WHEN 'rejected' THEN 'rejected' ELSE r.status END)"
)
FINAL_LABEL: Final = "(CASE d.state WHEN 'confirmed' THEN d.label WHEN 'rejected' THEN NULL ELSE r.label END)"
_FINAL_MATERIAL = "(CASE WHEN d.state IS NULL THEN r.material ELSE d.material END)"
#: The classifier's confidence holds only for its own label.
_FINAL_CONFIDENCE = (
    "(CASE WHEN d.state IS NULL OR (d.state = 'confirmed' AND r.status = 'known' AND d.label = r.label) "
    "THEN r.confidence END)"
)


def result_columns(*, source: str = "r.source_path", duplicate_of: str = "NULL") -> str:
    """The select list of a :class:`~daemon.store.records.StoredResult` over ``r`` and its decision ``d``.

    ``source`` and ``duplicate_of`` name the file the row is shown for: the result's own
    (by default), or a file with the same content (a duplicate) and the one it duplicates.
    """
    return (
        f"r.id, r.sha256, {source} AS source_path, r.spectrum_index, r.created_at, "
        f"{FINAL_STATUS} AS status, {FINAL_LABEL} AS label, {_FINAL_MATERIAL} AS material, "
        f"{_FINAL_CONFIDENCE} AS confidence, r.payload, r.model_version, r.superseded_at, "
        "d.state AS decision_state, d.label AS decision_label, d.decided_by AS decision_by, "
        "d.decided_at AS decision_at, d.ref_ids AS decision_ref_ids, r.status AS original_status, "
        f"r.label AS original_label, r.confidence AS original_confidence, {duplicate_of} AS duplicate_of"
    )


RESULT_COLUMNS: Final = result_columns()
#: Results with their decisions (select :data:`RESULT_COLUMNS` from it).
RESULTS_DECIDED: Final = f"results AS r {_DECIDED}"
#: Files whose content was classified under another path, with those results and their decisions.
DUPLICATES_DECIDED: Final = f"files AS f JOIN results AS r ON r.sha256 = f.sha256 {_DECIDED}"
WORK_COLUMNS: Final = "id, path, sha256, size, attempts"
REVIEW_SELECT: Final = (
    f"SELECT {RESULT_COLUMNS}, v.state AS review_state, v.label AS review_label, "
    "v.decided_by, v.decided_at, v.opened_at "
    f"FROM review AS v JOIN results AS r ON r.id = v.result_id {_DECIDED}"
)


def path_key(path: str | Path) -> str:
    """The stored form of a file path (:func:`path_to_db`: lossless, whatever its bytes)."""
    key = str(path)
    if not key:
        raise ValueError("a file path must not be empty")
    return path_to_db(key)


def in_sample(stored_path: str | None, sample: str) -> bool:
    """Whether a stored file path lies directly in a folder named ``sample`` (or ending with it).

    >>> in_sample("/data/ftir/2024-05/filter-3/p1.csv", "filter-3")
    True
    >>> in_sample("/data/ftir/2024-05/filter-3/p1.csv", "2024-05/filter-3")
    True
    >>> in_sample("/data/ftir/2024-05/filter-3/p1.csv", "ter-3")
    False
    """
    if stored_path is None or not sample:
        return False
    folder = stored_path.rpartition("/")[0]
    return folder == sample or folder.endswith("/" + sample)


def check_sha256(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
    return sha256


def _json_default(value: object) -> object:
    """Let numpy scalars/arrays and paths into a payload without importing numpy."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def payload_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(dict(payload), sort_keys=True, allow_nan=False, default=_json_default)


class LedgerConnection:
    """One connection to the ledger's database, its lock and its transactions (the rooms' shared base).

    Args:
        path: the SQLite file (``":memory:"`` for a throwaway ledger). Its folder is
            created if missing.
        retry_policy: backoff and the attempt limit for :meth:`fail`.
        busy_timeout: seconds a writer waits for another process's write lock.
        synchronous: ``"FULL"`` (default, every commit fsynced) or ``"NORMAL"``.

    Raises:
        SchemaVersionError: the database is newer than this code, or the file system
            refuses WAL mode.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retry_policy: RetryPolicy | None = None,
        busy_timeout: float = 5.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0, got {busy_timeout}")
        self.path = path if str(path) == ":memory:" else Path(path)
        self.retry_policy = retry_policy if retry_policy is not None else RetryPolicy()
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._batch_open = False
        self._conn = sqlite3.connect(
            str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and self.path != ":memory:":
                raise SchemaVersionError(
                    f"could not put the ledger {self.path} in WAL mode (got {mode!r}); "
                    "keep the state directory on a local disk"
                )
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.create_function("in_sample", 2, in_sample, deterministic=True)
            migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise


    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many operations, one commit: one fsync for a whole batch of files.

        Inside the block every operation still succeeds or fails alone (each is a
        savepoint: one that raises leaves no trace, the others stand), but nothing
        is durable until the block ends. An exception escaping the block, or a crash
        before its end, rolls the whole batch back, and a restart redoes it. Other
        threads wait for the ledger while a batch is open, so keep slow work (hashing,
        reading files) outside it.

        >>> from daemon.store.ledger import Ledger
        >>> with Ledger(":memory:") as ledger:
        ...     with ledger.batch():
        ...         a = ledger.observe("a.csv", size=1, mtime=0.0, now=0.0)
        ...         b = ledger.observe("b.csv", size=1, mtime=0.0, now=0.0)
        ...     len(ledger.files())
        2
        """
        with self._lock:
            if self._batch_open:
                yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._batch_open = True
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                self._batch_open = False

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock (a savepoint inside :meth:`batch`); rolled back on error."""
        with self._lock:
            begin, commit, rollback = (
                ("SAVEPOINT op", "RELEASE op", ("ROLLBACK TO op", "RELEASE op"))
                if self._batch_open
                else ("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",))
            )
            self._conn.execute(begin)
            try:
                yield self._conn
                self._conn.execute(commit)
            except BaseException:
                # Also reached when COMMIT itself fails (disk full, I/O error).
                if self._conn.in_transaction:
                    for statement in rollback:
                        self._conn.execute(statement)
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction (a consistent snapshot) under the lock; inside :meth:`batch`, the batch's."""
        with self._lock:
            if self._batch_open:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def _page(
        self, query: str, params: Sequence[object] = (), *, limit: int, offset: int = 0
    ) -> list[sqlite3.Row]:
        """One page of a read query (``LIMIT ? OFFSET ?`` appended), in one read transaction."""
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be >= 1 and offset >= 0, got {limit} and {offset}")
        with self._read() as conn:
            return list(conn.execute(f"{query} LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall())

    def close(self) -> None:
        """Close the connection; the ledger cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The database's ``PRAGMA user_version``."""
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        """The journal mode in force (``"wal"`` for a file ledger)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

