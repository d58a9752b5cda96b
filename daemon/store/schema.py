"""The ledger's SQLite schema: the migration steps, the schema version and :func:`migrate`."""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

from daemon.store.records import SchemaVersionError

__all__ = ["SCHEMA_VERSION", "migrate"]

logger = logging.getLogger(__name__)

#: Each entry migrates the schema from version ``i`` to ``i + 1``.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE files (
            id              INTEGER PRIMARY KEY,
            path            TEXT NOT NULL UNIQUE,
            sha256          TEXT,
            size            INTEGER NOT NULL,
            mtime           REAL NOT NULL,
            state           TEXT NOT NULL
                            CHECK (state IN ('seen', 'pending', 'done', 'failed', 'quarantined')),
            attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            next_attempt_at REAL,
            reason          TEXT,
            first_seen      REAL NOT NULL,
            updated_at      REAL NOT NULL,
            duplicate_of    TEXT,
            claimed_at      REAL,
            CHECK (state NOT IN ('pending', 'done') OR sha256 IS NOT NULL),
            CHECK (claimed_at IS NULL OR state = 'pending')
        )
        """,
        "CREATE INDEX files_by_state ON files (state, id)",
        "CREATE INDEX files_by_sha256 ON files (sha256, state)",
        """
        CREATE TABLE results (
            id             INTEGER PRIMARY KEY,
            sha256         TEXT NOT NULL,
            source_path    TEXT NOT NULL,
            spectrum_index INTEGER NOT NULL CHECK (spectrum_index >= 0),
            created_at     REAL NOT NULL,
            status         TEXT NOT NULL CHECK (status IN ('known', 'unknown', 'low_quality')),
            label          TEXT,
            material       TEXT,
            confidence     REAL,
            payload        TEXT NOT NULL DEFAULT '{}',
            model_version  TEXT NOT NULL,
            UNIQUE (sha256, spectrum_index)
        )
        """,
        "CREATE INDEX results_by_created_at ON results (created_at)",
        "CREATE INDEX results_by_status ON results (status, created_at)",
        "CREATE INDEX results_by_label ON results (label, created_at)",
        """
        CREATE TABLE review (
            result_id  INTEGER PRIMARY KEY REFERENCES results (id) ON DELETE CASCADE,
            state      TEXT NOT NULL CHECK (state IN ('open', 'confirmed', 'rejected')),
            label      TEXT,
            decided_by TEXT,
            decided_at REAL,
            opened_at  REAL NOT NULL
        )
        """,
        "CREATE INDEX review_by_state ON review (state, result_id)",
    ),
    (
        # A rewritten file's earlier results: kept as history, out of every current view.
        "ALTER TABLE results ADD COLUMN superseded_at REAL",
        "CREATE INDEX results_by_source ON results (source_path, superseded_at)",
    ),
    (
        # A decision's material (the label as the analyst wrote it) and the library references it added.
        "ALTER TABLE review ADD COLUMN material TEXT",
        "ALTER TABLE review ADD COLUMN ref_ids TEXT",
    ),
    (
        # Files that are plainly not spectra are 'ignored'. SQLite cannot change a CHECK
        # constraint, so the files table is rebuilt with the new state allowed.
        """
        CREATE TABLE files_new (
            id              INTEGER PRIMARY KEY,
            path            TEXT NOT NULL UNIQUE,
            sha256          TEXT,
            size            INTEGER NOT NULL,
            mtime           REAL NOT NULL,
            state           TEXT NOT NULL CHECK (
                                state IN ('seen', 'pending', 'done', 'failed', 'quarantined', 'ignored')
                            ),
            attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            next_attempt_at REAL,
            reason          TEXT,
            first_seen      REAL NOT NULL,
            updated_at      REAL NOT NULL,
            duplicate_of    TEXT,
            claimed_at      REAL,
            CHECK (state NOT IN ('pending', 'done') OR sha256 IS NOT NULL),
            CHECK (claimed_at IS NULL OR state = 'pending')
        )
        """,
        "INSERT INTO files_new SELECT id, path, sha256, size, mtime, state, attempts, next_attempt_at, "
        "reason, first_seen, updated_at, duplicate_of, claimed_at FROM files",
        "DROP TABLE files",
        "ALTER TABLE files_new RENAME TO files",
        "CREATE INDEX files_by_state ON files (state, id)",
        "CREATE INDEX files_by_sha256 ON files (sha256, state)",
    ),
    (
        # Imaging maps: one row per map content, one per particle (daemon/store/maps.py), superseded
        # with a rewritten file's results.
        """
        CREATE TABLE maps (
            id                INTEGER PRIMARY KEY,
            sha256            TEXT NOT NULL UNIQUE,
            source_path       TEXT NOT NULL,
            created_at        REAL NOT NULL,
            lines             INTEGER NOT NULL CHECK (lines >= 0),
            samples           INTEGER NOT NULL CHECK (samples >= 0),
            bands             INTEGER NOT NULL CHECK (bands >= 0),
            pixel_size_um     REAL CHECK (pixel_size_um IS NULL OR pixel_size_um > 0),
            pixel_size_source TEXT NOT NULL CHECK (pixel_size_source IN ('header', 'profile', 'none')),
            n_particles       INTEGER NOT NULL CHECK (n_particles >= 0),
            image_path        TEXT,
            payload           TEXT NOT NULL DEFAULT '{}',
            model_version     TEXT NOT NULL,
            superseded_at     REAL
        )
        """,
        "CREATE INDEX maps_by_source ON maps (source_path, superseded_at)",
        """
        CREATE TABLE particles (
            id             INTEGER PRIMARY KEY,
            sha256         TEXT NOT NULL REFERENCES maps (sha256) ON DELETE CASCADE,
            particle_index INTEGER NOT NULL CHECK (particle_index >= 0),
            source_path    TEXT NOT NULL,
            created_at     REAL NOT NULL,
            status         TEXT NOT NULL CHECK (status IN ('known', 'unknown', 'low_quality')),
            label          TEXT,
            material       TEXT,
            family         TEXT,
            confidence     REAL,
            n_pixels       INTEGER NOT NULL CHECK (n_pixels > 0),
            area_um2       REAL,
            feret_max_um   REAL,
            feret_min_um   REAL,
            x_um           REAL,
            y_um           REAL,
            area_px        REAL NOT NULL,
            feret_max_px   REAL NOT NULL,
            feret_min_px   REAL NOT NULL,
            x_px           REAL NOT NULL,
            y_px           REAL NOT NULL,
            payload        TEXT NOT NULL DEFAULT '{}',
            superseded_at  REAL,
            UNIQUE (sha256, particle_index)
        )
        """,
        "CREATE INDEX particles_by_source ON particles (source_path, superseded_at)",
        "CREATE INDEX particles_by_label ON particles (label)",
    ),
    (
        # Each map particle's mean spectrum, and the reviews of particles (daemon/store/particle_reviews.py):
        # float32 bytes of the map's axis and of the mean. An unknown particle's review opens with the map;
        # any other is queued when an analyst decides it.
        """
        CREATE TABLE particle_spectra (
            particle_id INTEGER PRIMARY KEY REFERENCES particles (id) ON DELETE CASCADE,
            wavenumbers BLOB NOT NULL,
            spectrum    BLOB NOT NULL,
            y_unit      TEXT NOT NULL,
            technique   TEXT,
            metadata    TEXT NOT NULL DEFAULT '{}'
        )
        """,
        """
        CREATE TABLE particle_review (
            particle_id INTEGER PRIMARY KEY REFERENCES particles (id) ON DELETE CASCADE,
            state       TEXT NOT NULL CHECK (state IN ('open', 'confirmed', 'rejected')),
            label       TEXT,
            material    TEXT,
            decided_by  TEXT,
            decided_at  REAL,
            opened_at   REAL NOT NULL,
            ref_ids     TEXT
        )
        """,
        "CREATE INDEX particle_review_by_state ON particle_review (state, particle_id)",
    ),
)

#: The schema version this code reads and writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final = len(_MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema of ``conn`` up to :data:`SCHEMA_VERSION`; return the version found.

    Each step runs in its own ``BEGIN IMMEDIATE`` transaction together with the new
    ``user_version``, so a crash mid-migration leaves the previous version intact and two
    processes starting at once cannot both apply a step. ``conn`` must be in autocommit
    mode (``isolation_level=None``).

    Raises:
        SchemaVersionError: the database is newer than this code.
    """
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the ledger has schema version {found} but this mpwatch understands up to "
            f"{SCHEMA_VERSION}; upgrade mpwatch or point it at another state directory"
        )
    for target in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current < target:
                for statement in _MIGRATIONS[target - 1]:
                    conn.execute(statement)
                # PRAGMA takes no parameters; target is an int we computed.
                conn.execute(f"PRAGMA user_version = {int(target)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        logger.info("ledger schema migrated to version %d", target)
    return found
