"""Tests for :mod:`daemon.store.ledger`: one class per concern, time always injected."""

from __future__ import annotations

import hashlib
import logging
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.store.ledger import (
    LEDGER_FILENAME,
    SCHEMA_VERSION,
    Admission,
    FileState,
    InvalidTransitionError,
    Ledger,
    ResultRecord,
    ResultStatus,
    RetryPolicy,
    ReviewState,
    SchemaVersionError,
    UnknownPathError,
    UnknownReviewError,
    migrate,
)
from daemon.store.schema import _MIGRATIONS

REPO_ROOT = Path(__file__).resolve().parents[1]


def sha(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def record(
    index: int,
    status: str = "known",
    *,
    label: str = "PE",
    confidence: float | None = None,
    payload: Mapping[str, Any] | None = None,
) -> ResultRecord:
    """A result as the worker would hand it over; only known results carry a label."""
    return ResultRecord(
        spectrum_index=index,
        status=ResultStatus(status),
        label=label if status == "known" else None,
        model_version="m1",
        confidence=confidence,
        payload=payload or {},
    )


def arrive(ledger: Ledger, path: str, content: str, *, now: float = 10.0, size: int = 100) -> Admission:
    """A file is observed stable, then hashed: what the daemon does for each handoff."""
    ledger.observe(path, size=size, mtime=now - 1.0, now=now)
    return ledger.mark_pending(path, sha(content), now=now + 1.0)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    policy = RetryPolicy(base_seconds=10.0, cap_seconds=60.0, max_attempts=4)
    with Ledger(tmp_path / "state" / LEDGER_FILENAME, retry_policy=policy) as opened:
        yield opened


class TestSchema:
    def test_wal_mode_and_pragmas(self, ledger: Ledger) -> None:
        assert ledger.journal_mode == "wal"
        assert ledger.schema_version == SCHEMA_VERSION
        conn = sqlite3.connect(ledger.path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()

    def test_in_state_dir_creates_the_folder(self, tmp_path: Path) -> None:
        with Ledger.in_state_dir(tmp_path / "a" / "b") as opened:
            assert opened.path == tmp_path / "a" / "b" / LEDGER_FILENAME
        assert (tmp_path / "a" / "b" / LEDGER_FILENAME).is_file()

    def test_reopen_keeps_data_and_version(self, tmp_path: Path) -> None:
        with Ledger(tmp_path / "l.sqlite3") as first:
            first.observe("/in/a.spa", size=1, mtime=1.0, now=1.0)
        with Ledger(tmp_path / "l.sqlite3") as second:
            assert second.schema_version == SCHEMA_VERSION
            assert second.file("/in/a.spa") is not None

    def test_migrate_from_empty_database(self, tmp_path: Path) -> None:
        conn = sqlite3.connect(tmp_path / "raw.sqlite3", isolation_level=None)
        try:
            assert migrate(conn) == 0
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert migrate(conn) == SCHEMA_VERSION  # idempotent
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert {"files", "results", "review"} <= tables
        finally:
            conn.close()

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        conn = sqlite3.connect(tmp_path / "future.sqlite3")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
        with pytest.raises(SchemaVersionError, match="upgrade mpwatch"):
            Ledger(tmp_path / "future.sqlite3")

    def test_bad_options_fail_fast(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="synchronous"):
            Ledger(tmp_path / "x.sqlite3", synchronous="OFF")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            RetryPolicy(base_seconds=0.0)


class TestStatesAndTransitions:
    def test_happy_path(self, ledger: Ledger) -> None:
        seen = ledger.observe("/in/a.spa", size=10, mtime=5.0, now=10.0)
        assert (seen.state, seen.first_seen, seen.sha256) == (FileState.SEEN, 10.0, None)
        assert ledger.mark_pending("/in/a.spa", sha("a"), now=11.0) is Admission.NEW
        assert ledger.file("/in/a.spa").state is FileState.PENDING  # type: ignore[union-attr]
        item = ledger.claim_next(now=12.0)
        assert item is not None
        assert (item.path, item.sha256, item.size) == ("/in/a.spa", sha("a"), 10)
        assert ledger.file("/in/a.spa").claimed_at == 12.0  # type: ignore[union-attr]
        assert ledger.claim_next(now=12.5) is None
        outcome = ledger.complete(item.sha256, [record(0), record(1)], now=13.0)
        assert (outcome.results_written, outcome.source_path, outcome.duplicates) == (2, "/in/a.spa", ())
        done = ledger.file("/in/a.spa")
        assert done is not None
        assert (done.state, done.claimed_at, done.duplicate_of, done.updated_at) == (
            FileState.DONE,
            None,
            None,
            13.0,
        )
        assert ledger.is_done(sha("a"))

    def test_observe_same_stat_is_a_noop(self, ledger: Ledger) -> None:
        ledger.observe("/in/a.spa", size=10, mtime=5.0, now=10.0)
        again = ledger.observe("/in/a.spa", size=10, mtime=5.0, now=99.0)
        assert again.updated_at == 10.0

    def test_observe_growing_seen_file_updates_stat(self, ledger: Ledger) -> None:
        ledger.observe("/in/a.spa", size=10, mtime=5.0, now=10.0)
        grown = ledger.observe("/in/a.spa", size=20, mtime=6.0, now=11.0)
        assert (grown.state, grown.size, grown.first_seen) == (FileState.SEEN, 20, 10.0)

    def test_changed_done_file_is_reopened(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "v1")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.complete(item.sha256, [record(0)], now=13.0)
        reopened = ledger.observe("/in/a.spa", size=200, mtime=50.0, now=60.0)
        assert (reopened.state, reopened.sha256, reopened.attempts) == (FileState.SEEN, None, 0)
        assert ledger.mark_pending("/in/a.spa", sha("v2"), now=61.0) is Admission.NEW
        # The old content keeps its results.
        assert len(ledger.results(sha256=sha("v1"))) == 1

    def test_counts_every_state(self, ledger: Ledger) -> None:
        assert ledger.counts() == dict.fromkeys(FileState, 0)
        ledger.observe("/in/seen.spa", size=1, mtime=1.0, now=1.0)
        arrive(ledger, "/in/pending.spa", "p")
        arrive(ledger, "/in/q.spa", "q")
        ledger.quarantine("/in/q.spa", "unreadable", now=20.0)
        counts = ledger.counts()
        assert counts[FileState.SEEN] == 1
        assert counts[FileState.PENDING] == 1
        assert counts[FileState.QUARANTINED] == 1
        assert counts[FileState.DONE] == 0

    def test_files_listing(self, ledger: Ledger) -> None:
        for name in "abc":
            ledger.observe(f"/in/{name}.spa", size=1, mtime=1.0, now=1.0)
        arrive(ledger, "/in/b.spa", "b")
        assert [f.path for f in ledger.files(state=FileState.SEEN)] == ["/in/a.spa", "/in/c.spa"]
        assert [f.path for f in ledger.files(limit=1, offset=1)] == ["/in/b.spa"]

    def test_invalid_transitions(self, ledger: Ledger) -> None:
        with pytest.raises(UnknownPathError):
            ledger.mark_pending("/in/never.spa", sha("x"), now=1.0)
        with pytest.raises(LookupError):
            ledger.fail("/in/never.spa", "boom", now=1.0)
        arrive(ledger, "/in/a.spa", "a")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.complete(item.sha256, [], now=13.0)
        with pytest.raises(InvalidTransitionError):
            ledger.mark_pending("/in/a.spa", sha("a"), now=14.0)
        with pytest.raises(InvalidTransitionError):
            ledger.fail("/in/a.spa", "late", now=14.0)
        with pytest.raises(InvalidTransitionError):
            ledger.quarantine("/in/a.spa", "late", now=14.0)
        with pytest.raises(ValueError, match="sha256"):
            ledger.mark_pending("/in/a.spa", "not-a-hash", now=14.0)

    def test_release_returns_a_claim_without_an_attempt(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        assert ledger.claim_next(now=12.0) is not None
        assert ledger.release("/in/a.spa", now=13.0)
        assert not ledger.release("/in/a.spa", now=13.0)
        item = ledger.claim_next(now=14.0)
        assert item is not None
        assert item.attempts == 0

    def test_pending_items_peeks_without_claiming(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        arrive(ledger, "/in/b.spa", "b")
        assert [i.path for i in ledger.pending_items(limit=10)] == ["/in/a.spa", "/in/b.spa"]
        ledger.claim_next(now=20.0)
        assert [i.path for i in ledger.pending_items(limit=10)] == ["/in/b.spa"]


class TestIgnored:
    def test_a_file_plainly_not_a_spectrum_is_set_aside_and_said_once(
        self, ledger: Ledger, caplog: pytest.LogCaptureFixture
    ) -> None:
        ledger.observe("/in/s1/photo.png", size=10, mtime=1.0, now=2.0)
        with caplog.at_level(logging.INFO, logger="daemon.store.files"):
            ignored = ledger.ignore("/in/s1/photo.png", "not a spectrum: an image (*.png)", now=3.0)
        assert (ignored.state, ignored.reason, ignored.sha256) == (
            FileState.IGNORED,
            "not a spectrum: an image (*.png)",
            None,
        )
        assert [r.getMessage() for r in caplog.records] == [
            "/in/s1/photo.png ignored: not a spectrum: an image (*.png)"
        ]
        again = ledger.observe("/in/s1/photo.png", size=10, mtime=1.0, now=4.0)  # a rescan: nothing new
        assert again.state is FileState.IGNORED
        assert ledger.due_retries(now=1e9) == []
        counts = ledger.counts()
        assert (counts[FileState.IGNORED], counts[FileState.QUARANTINED]) == (1, 0)
        assert [f.path for f in ledger.files(state=FileState.IGNORED)] == ["/in/s1/photo.png"]

    def test_a_claimed_file_read_as_a_note_is_ignored_with_its_content_known(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/s1/notes.txt", "prose")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ignored = ledger.ignore(item.path, "not_a_spectrum: notes.txt is text", now=13.0)
        assert (ignored.state, ignored.sha256, ignored.claimed_at) == (FileState.IGNORED, sha("prose"), None)
        assert ledger.claim_next(now=14.0) is None

    def test_only_a_change_on_disk_brings_it_back(self, ledger: Ledger) -> None:
        ledger.observe("/in/notes.txt", size=10, mtime=1.0, now=2.0)
        ledger.ignore("/in/notes.txt", "a note", now=3.0)
        with pytest.raises(InvalidTransitionError):
            ledger.mark_pending("/in/notes.txt", sha("note"), now=4.0)
        with pytest.raises(InvalidTransitionError):
            ledger.fail("/in/notes.txt", "late", now=4.0)
        with pytest.raises(InvalidTransitionError):
            ledger.ignore("/in/notes.txt", "twice", now=4.0)
        # a spectrum written over it
        reopened = ledger.observe("/in/notes.txt", size=5000, mtime=9.0, now=10.0)
        assert (reopened.state, reopened.reason) == (FileState.SEEN, None)
        assert ledger.mark_pending("/in/notes.txt", sha("spectrum"), now=11.0) is Admission.NEW

    def test_a_done_file_cannot_be_ignored(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.complete(item.sha256, [record(0)], now=13.0)
        with pytest.raises(InvalidTransitionError):
            ledger.ignore("/in/a.spa", "late", now=14.0)

    def test_a_ledger_from_before_the_ignored_state_is_migrated_with_its_files(self, tmp_path: Path) -> None:
        db = tmp_path / "old.sqlite3"
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            for step in _MIGRATIONS[:3]:  # version 4 brought the ignored state
                for statement in step:
                    conn.execute(statement)
            conn.execute("PRAGMA user_version = 3")
            conn.execute(
                "INSERT INTO files (path, sha256, size, mtime, state, attempts, first_seen, updated_at, "
                "reason) VALUES ('/in/q.spa', ?, 5, 1.0, 'quarantined', 1, 1.0, 2.0, 'truncated: cut')",
                (sha("q"),),
            )
            with pytest.raises(sqlite3.IntegrityError):  # the old table refuses the new state
                conn.execute(
                    "INSERT INTO files (path, size, mtime, state, first_seen, updated_at) "
                    "VALUES ('/in/x.png', 1, 1.0, 'ignored', 1.0, 1.0)"
                )
        finally:
            conn.close()
        with Ledger(db) as migrated:
            assert migrated.schema_version == SCHEMA_VERSION
            kept = migrated.file("/in/q.spa")
            assert kept is not None and (kept.state, kept.reason) == (FileState.QUARANTINED, "truncated: cut")
            migrated.observe("/in/x.png", size=1, mtime=1.0, now=3.0)
            assert migrated.ignore("/in/x.png", "an image", now=4.0).state is FileState.IGNORED


class TestDuplicateContent:
    def test_second_path_after_done_is_a_duplicate_without_results(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "same bytes")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.complete(item.sha256, [record(0), record(1)], now=13.0)
        assert arrive(ledger, "/in/copy/a.spa", "same bytes", now=20.0) is Admission.DUPLICATE
        copy = ledger.file("/in/copy/a.spa")
        assert copy is not None
        assert (copy.state, copy.duplicate_of, copy.sha256) == (
            FileState.DONE,
            "/in/a.spa",
            sha("same bytes"),
        )
        assert len(ledger.results()) == 2
        assert ledger.claim_next(now=21.0) is None

    def test_duplicate_of_a_duplicate_points_at_the_classified_path(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "x")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.complete(item.sha256, [record(0)], now=13.0)
        arrive(ledger, "/in/b.spa", "x", now=20.0)
        arrive(ledger, "/in/c.spa", "x", now=30.0)
        assert ledger.file("/in/c.spa").duplicate_of == "/in/a.spa"  # type: ignore[union-attr]

    def test_a_batch_claim_is_oldest_first_skips_twins_and_stops_at_the_limit(self, ledger: Ledger) -> None:
        for name, content in [("a", "twin"), ("b", "twin"), ("c", "other"), ("d", "third")]:
            arrive(ledger, f"/in/{name}.spa", content)
        assert [i.path for i in ledger.claim(2, now=20.0)] == ["/in/a.spa", "/in/c.spa"]
        assert [i.path for i in ledger.claim(5, now=20.0)] == ["/in/d.spa"]  # b waits for its twin
        assert ledger.claim(5, now=20.0) == []
        claimed = ledger.file("/in/c.spa")
        assert claimed is not None and claimed.claimed_at == 20.0
        with pytest.raises(ValueError, match="limit"):
            ledger.claim(0, now=20.0)

    def test_identical_content_in_flight_is_classified_once(self, ledger: Ledger) -> None:
        assert arrive(ledger, "/in/a.spa", "twin") is Admission.NEW
        assert arrive(ledger, "/in/b.spa", "twin") is Admission.NEW
        arrive(ledger, "/in/other.spa", "other")
        first = ledger.claim_next(now=20.0)
        second = ledger.claim_next(now=20.0)
        assert first is not None
        assert second is not None
        # The twin is held back while its content is being classified.
        assert (first.path, second.path) == ("/in/a.spa", "/in/other.spa")
        assert ledger.claim_next(now=20.0) is None
        outcome = ledger.complete(first.sha256, [record(0)], now=21.0)
        assert outcome.duplicates == ("/in/b.spa",)
        twin = ledger.file("/in/b.spa")
        assert twin is not None
        assert (twin.state, twin.duplicate_of) == (FileState.DONE, "/in/a.spa")
        assert len(ledger.results(sha256=sha("twin"))) == 1

    def test_is_done_is_about_content(self, ledger: Ledger) -> None:
        assert not ledger.is_done(sha("a"))
        arrive(ledger, "/in/a.spa", "a")
        assert not ledger.is_done(sha("a"))
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.complete(item.sha256, [], now=13.0)
        assert ledger.is_done(sha("a"))


class TestAtomicComplete:
    def test_results_and_state_commit_together(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        item = ledger.claim_next(now=12.0)
        assert item is not None

        def results_then_crash() -> Iterator[ResultRecord]:
            yield record(0)
            yield record(1)
            raise RuntimeError("reader died on spectrum 2")

        with pytest.raises(RuntimeError):
            ledger.complete(item.sha256, results_then_crash(), now=13.0)
        assert ledger.results() == []
        assert ledger.file("/in/a.spa").state is FileState.PENDING  # type: ignore[union-attr]
        assert ledger.review_counts()[ReviewState.OPEN] == 0

    def test_non_finite_payload_rolls_back(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        bad = ResultRecord(
            spectrum_index=1, status=ResultStatus.UNKNOWN, model_version="m1", payload={"score": float("nan")}
        )
        with pytest.raises(ValueError):
            ledger.complete(item.sha256, [record(0), bad], now=13.0)
        assert ledger.results() == []
        assert not ledger.is_done(sha("a"))

    def test_complete_twice_writes_results_once(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.complete(item.sha256, [record(0), record(1)], now=13.0)
        again = ledger.complete(item.sha256, [record(0), record(1)], now=14.0)
        assert (again.results_written, again.source_path) == (0, "/in/a.spa")
        assert len(ledger.results()) == 2

    def test_unique_per_spectrum_index(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        outcome = ledger.complete(item.sha256, [record(0), record(0)], now=13.0)
        assert outcome.results_written == 1

    def test_complete_without_pending_file_is_refused(self, ledger: Ledger) -> None:
        with pytest.raises(InvalidTransitionError):
            ledger.complete(sha("nothing"), [record(0)], now=1.0)
        assert ledger.results() == []

    def test_file_changed_under_a_worker(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "v1")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.observe("/in/a.spa", size=999, mtime=77.0, now=13.0)
        with pytest.raises(InvalidTransitionError):
            ledger.complete(item.sha256, [record(0)], now=14.0)
        assert ledger.results() == []
        assert ledger.file("/in/a.spa").state is FileState.SEEN  # type: ignore[union-attr]

    def test_payload_round_trip_with_numpy(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        hits = {"labels": ["PE", "PP"], "pearson_r": np.array([0.98, 0.71]), "k": np.int64(2)}
        ledger.complete(item.sha256, [record(0, confidence=float(np.float32(0.5)), payload=hits)], now=13.0)
        stored = ledger.results()[0]
        assert stored.payload == {"k": 2, "labels": ["PE", "PP"], "pearson_r": [0.98, 0.71]}
        assert stored.confidence == 0.5
        assert (stored.label, stored.status, stored.model_version) == ("PE", ResultStatus.KNOWN, "m1")


_CRASHING_WORKER = textwrap.dedent(
    """
    import sys, time
    from daemon.store.ledger import Ledger, ResultRecord

    ledger = Ledger(sys.argv[1])
    path, sha256 = sys.argv[2], sys.argv[3]
    ledger.observe(path, size=10, mtime=1.0, now=1.0)
    ledger.mark_pending(path, sha256, now=2.0)
    item = ledger.claim_next(now=3.0)

    def results():
        for index in range(3):
            yield ResultRecord(spectrum_index=index, status="unknown", model_version="m1")
        print("inside the transaction", flush=True)
        time.sleep(120)

    ledger.complete(item.sha256, results(), now=4.0)
    """
)


class TestCrashRecovery:
    def test_kill_9_inside_complete_leaves_no_results(self, tmp_path: Path) -> None:
        db = tmp_path / LEDGER_FILENAME
        content = sha("map")
        worker = subprocess.Popen(
            [sys.executable, "-c", _CRASHING_WORKER, str(db), "/in/map.spa", content],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "inside the transaction"
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            if worker.stdout is not None:
                worker.stdout.close()
        assert worker.returncode == -signal.SIGKILL

        with Ledger(db) as ledger:
            assert ledger.results() == []
            left = ledger.file("/in/map.spa")
            assert left is not None
            assert (left.state, left.claimed_at) == (FileState.PENDING, 3.0)
            assert ledger.claim_next(now=5.0) is None  # still held by the dead worker
            assert ledger.recover_interrupted(now=6.0) == 1
            item = ledger.claim_next(now=7.0)
            assert item is not None
            assert item.attempts == 1
            results = [
                ResultRecord(spectrum_index=i, status=ResultStatus.UNKNOWN, model_version="m1")
                for i in range(3)
            ]
            assert ledger.complete(item.sha256, results, now=8.0).results_written == 3
            assert ledger.recover_interrupted(now=9.0) == 0
            assert len(ledger.results()) == 3
            assert ledger.review_counts()[ReviewState.OPEN] == 3

    def test_closed_without_complete_is_redone_once(self, tmp_path: Path) -> None:
        db = tmp_path / LEDGER_FILENAME
        with Ledger(db) as first:
            arrive(first, "/in/a.spa", "a")
            arrive(first, "/in/b.spa", "b")
            assert first.claim_next(now=20.0) is not None
        with Ledger(db) as second:
            assert second.recover_interrupted(now=30.0) == 1
            assert second.recover_interrupted(now=31.0) == 0
            claimed = [second.claim_next(now=32.0), second.claim_next(now=32.0)]
            assert sorted(c.path for c in claimed if c is not None) == ["/in/a.spa", "/in/b.spa"]
            assert second.claim_next(now=33.0) is None
            for item in claimed:
                assert item is not None
                second.complete(item.sha256, [record(0)], now=34.0)
            assert len(second.results()) == 2

    def test_file_that_keeps_killing_the_process_is_quarantined(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/oom.spa", "huge")
        for restart in range(4):
            assert ledger.claim_next(now=100.0 + restart) is not None
            ledger.recover_interrupted(now=100.5 + restart)
        row = ledger.file("/in/oom.spa")
        assert row is not None
        assert row.state is FileState.QUARANTINED
        assert "interrupted" in (row.reason or "")

    def test_pending_file_whose_content_is_done_becomes_a_duplicate(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "x")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        ledger.complete(item.sha256, [record(0)], now=13.0)
        ledger.observe("/in/b.spa", size=1, mtime=1.0, now=14.0)
        # Simulate a state only an outside edit could produce (for example a restored backup).
        conn = sqlite3.connect(ledger.path)
        with conn:
            conn.execute(
                "UPDATE files SET state = 'pending', sha256 = ? WHERE path = '/in/b.spa'", (sha("x"),)
            )
        conn.close()
        assert ledger.recover_interrupted(now=15.0) == 1
        assert ledger.file("/in/b.spa").duplicate_of == "/in/a.spa"  # type: ignore[union-attr]


class TestBackoffAndQuarantine:
    def test_backoff_schedule_then_quarantine(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        now = 100.0
        expected_delays = [10.0, 20.0, 40.0]
        for attempt, delay in enumerate(expected_delays, start=1):
            failed = ledger.fail("/in/a.spa", "reader raised", now=now)
            assert (failed.state, failed.attempts, failed.next_attempt_at) == (
                FileState.FAILED,
                attempt,
                now + delay,
            )
            assert ledger.due_retries(now=now + delay - 0.1) == []
            assert [f.path for f in ledger.due_retries(now=now + delay)] == ["/in/a.spa"]
            assert ledger.mark_pending("/in/a.spa", sha("a"), now=now + delay) is Admission.NEW
            now += delay + 1.0
        last = ledger.fail("/in/a.spa", "reader raised", now=now)
        assert (last.state, last.attempts, last.next_attempt_at) == (FileState.QUARANTINED, 4, None)
        assert "gave up after 4 attempts" in (last.reason or "")
        assert ledger.due_retries(now=1e12) == []

    def test_retry_after_overrides_backoff(self, ledger: Ledger) -> None:
        ledger.observe("/in/locked.spa", size=1, mtime=1.0, now=1.0)
        failed = ledger.fail("/in/locked.spa", "locked by the instrument", now=50.0, retry_after=2.0)
        assert failed.next_attempt_at == 52.0

    def test_retry_keeps_attempts(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "a")
        ledger.fail("/in/a.spa", "boom", now=20.0)
        ledger.mark_pending("/in/a.spa", sha("a"), now=40.0)
        item = ledger.claim_next(now=41.0)
        assert item is not None
        assert item.attempts == 1

    def test_quarantined_content_poisons_new_paths(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "poison")
        ledger.quarantine("/in/a.spa", "not a spectrum", now=20.0)
        assert arrive(ledger, "/in/again.spa", "poison", now=30.0) is Admission.QUARANTINED
        again = ledger.file("/in/again.spa")
        assert again is not None
        assert again.state is FileState.QUARANTINED
        assert "/in/a.spa" in (again.reason or "")
        with pytest.raises(InvalidTransitionError):
            ledger.mark_pending("/in/again.spa", sha("poison"), now=31.0)

    def test_changed_quarantined_file_gets_a_fresh_start(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.spa", "bad")
        ledger.quarantine("/in/a.spa", "truncated", now=20.0)
        fresh = ledger.observe("/in/a.spa", size=5000, mtime=30.0, now=31.0)
        assert (fresh.state, fresh.reason, fresh.attempts) == (FileState.SEEN, None, 0)

    @given(
        base=st.floats(min_value=0.01, max_value=1e3),
        spread=st.floats(min_value=1.0, max_value=1e4),
        factor=st.floats(min_value=1.0, max_value=10.0),
        attempts=st.integers(min_value=1, max_value=5000),
    )
    def test_delay_is_monotone_and_capped(
        self, base: float, spread: float, factor: float, attempts: int
    ) -> None:
        policy = RetryPolicy(base_seconds=base, cap_seconds=base * spread, factor=factor)
        delay = policy.delay(attempts)
        assert base <= delay <= policy.cap_seconds
        assert policy.delay(attempts + 1) >= delay


class TestResultsQuery:
    @pytest.fixture
    def filled(self, ledger: Ledger) -> Ledger:
        batches = [
            ("/in/a.spa", "a", 100.0, [record(0, label="PE"), record(1, "unknown")]),
            ("/in/b.spa", "b", 200.0, [record(0, label="PP"), record(1, "low_quality")]),
            ("/in/c.spa", "c", 300.0, [record(0, label="PE")]),
        ]
        for path, content, now, results in batches:
            arrive(ledger, path, content, now=now)
            item = ledger.claim_next(now=now + 2)
            assert item is not None
            ledger.complete(item.sha256, results, now=now + 3)
        return ledger

    def test_all_in_order(self, filled: Ledger) -> None:
        rows = filled.results()
        assert [(r.source_path, r.spectrum_index) for r in rows] == [
            ("/in/a.spa", 0),
            ("/in/a.spa", 1),
            ("/in/b.spa", 0),
            ("/in/b.spa", 1),
            ("/in/c.spa", 0),
        ]
        assert rows[0].created_at == 103.0

    def test_filters(self, filled: Ledger) -> None:
        assert [r.source_path for r in filled.results(since=200.0)] == ["/in/b.spa", "/in/b.spa", "/in/c.spa"]
        assert [r.source_path for r in filled.results(status=ResultStatus.UNKNOWN)] == ["/in/a.spa"]
        assert [r.source_path for r in filled.results(label="PE")] == ["/in/a.spa", "/in/c.spa"]
        assert len(filled.results(label="PE", since=250.0)) == 1
        assert [r.spectrum_index for r in filled.results(sha256=sha("b"))] == [0, 1]
        assert filled.results(label="PS") == []

    def test_paging(self, filled: Ledger) -> None:
        pages = [filled.results(limit=2, offset=offset) for offset in (0, 2, 4)]
        assert [len(page) for page in pages] == [2, 2, 1]
        assert len({r.id for page in pages for r in page}) == 5
        with pytest.raises(ValueError):
            filled.results(limit=0)


class TestReviewQueue:
    @pytest.fixture
    def queued(self, ledger: Ledger) -> Ledger:
        arrive(ledger, "/in/a.spa", "a")
        item = ledger.claim_next(now=12.0)
        assert item is not None
        outcome = ledger.complete(
            item.sha256,
            [record(0), record(1, "unknown"), record(2, "unknown"), record(3, "low_quality")],
            now=13.0,
        )
        assert outcome.reviews_opened == 2
        return ledger

    def test_unknowns_are_queued_automatically(self, queued: Ledger) -> None:
        reviews = queued.open_reviews()
        assert [r.result.spectrum_index for r in reviews] == [1, 2]
        assert all(r.state is ReviewState.OPEN and r.opened_at == 13.0 for r in reviews)
        assert queued.review_counts() == {
            ReviewState.OPEN: 2,
            ReviewState.CONFIRMED: 0,
            ReviewState.REJECTED: 0,
        }

    def test_confirm_and_reject(self, queued: Ledger) -> None:
        first, second = queued.open_reviews()
        confirmed = queued.decide_review(
            first.result.id, state=ReviewState.CONFIRMED, label="PVC", decided_by="analyst", now=50.0
        )
        assert (confirmed.state, confirmed.label, confirmed.decided_by, confirmed.decided_at) == (
            ReviewState.CONFIRMED,
            "PVC",
            "analyst",
            50.0,
        )
        queued.decide_review(
            second.result.id, state=ReviewState.REJECTED, label=None, decided_by="a2", now=51.0
        )
        assert queued.open_reviews() == []
        assert queued.review_counts()[ReviewState.CONFIRMED] == 1
        # A later decision replaces an earlier one (undoing a bad confirmation).
        undone = queued.decide_review(
            first.result.id, state=ReviewState.REJECTED, label=None, decided_by="lead", now=60.0
        )
        assert undone.state is ReviewState.REJECTED
        review = queued.review(first.result.id)
        assert review is not None
        assert review.decided_by == "lead"

    def test_bad_decisions(self, queued: Ledger) -> None:
        result_id = queued.open_reviews()[0].result.id
        with pytest.raises(ValueError, match="label"):
            queued.decide_review(result_id, state=ReviewState.CONFIRMED, label=None, decided_by="a", now=1.0)
        with pytest.raises(ValueError, match="open"):
            queued.decide_review(result_id, state=ReviewState.OPEN, label="PE", decided_by="a", now=1.0)
        known_id = queued.results(status=ResultStatus.KNOWN)[0].id
        with pytest.raises(UnknownReviewError):
            queued.decide_review(known_id, state=ReviewState.CONFIRMED, label="PE", decided_by="a", now=1.0)

    def test_enqueue_any_result(self, queued: Ledger) -> None:
        known_id = queued.results(status=ResultStatus.KNOWN)[0].id
        assert queued.enqueue_review(known_id, now=70.0)
        assert not queued.enqueue_review(known_id, now=71.0)
        assert len(queued.open_reviews()) == 3
        with pytest.raises(UnknownReviewError):
            queued.enqueue_review(10_000, now=72.0)

    def test_duplicates_open_no_new_reviews(self, queued: Ledger) -> None:
        assert arrive(queued, "/in/copy.spa", "a", now=80.0) is Admission.DUPLICATE
        assert len(queued.open_reviews()) == 2


class TestConcurrentAccess:
    def test_one_ledger_shared_by_threads(self, ledger: Ledger) -> None:
        claimed: list[int] = []
        errors: list[BaseException] = []
        claimed_lock = threading.Lock()

        def worker(name: str) -> None:
            try:
                for index in range(20):
                    arrive(ledger, f"/in/{name}/{index}.spa", f"{name}-{index}", now=100.0 + index)
                while (item := ledger.claim_next(now=500.0)) is not None:
                    with claimed_lock:
                        claimed.append(item.file_id)
                    ledger.complete(item.sha256, [record(0), record(1, "unknown")], now=501.0)
            except BaseException as error:  # collected and re-raised by the test
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        # Workers may finish the loop before the last arrivals are queued: drain.
        while (item := ledger.claim_next(now=600.0)) is not None:
            claimed.append(item.file_id)
            ledger.complete(item.sha256, [record(0), record(1, "unknown")], now=601.0)
        assert len(claimed) == len(set(claimed)) == 80
        assert ledger.counts()[FileState.DONE] == 80
        assert len(ledger.results(limit=1000)) == 160
        assert ledger.review_counts()[ReviewState.OPEN] == 80

    def test_two_connections_from_two_threads(self, tmp_path: Path) -> None:
        db = tmp_path / LEDGER_FILENAME
        errors: list[BaseException] = []
        with Ledger(db) as first, Ledger(db) as second:

            def writer(ledger: Ledger, name: str) -> None:
                try:
                    for index in range(25):
                        arrive(ledger, f"/in/{name}/{index}.spa", f"{name}-{index}")
                        item = ledger.claim_next(now=50.0)
                        if item is not None:
                            ledger.complete(item.sha256, [record(0)], now=51.0)
                except BaseException as error:  # collected and re-raised by the test
                    errors.append(error)

            threads = [
                threading.Thread(target=writer, args=(first, "one")),
                threading.Thread(target=writer, args=(second, "two")),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert errors == []
            while (item := first.claim_next(now=60.0)) is not None:
                first.complete(item.sha256, [record(0)], now=61.0)
            assert second.counts()[FileState.DONE] == 50
            assert len(second.results(limit=100)) == 50


class TestRewrittenFiles:
    """One path has one current result: a rewritten file's earlier results are history."""

    def test_new_content_supersedes_the_old_results(self, ledger: Ledger) -> None:
        assert arrive(ledger, "/in/p.csv", "first") is Admission.NEW
        ledger.complete(sha("first"), [record(0, "unknown")], now=20.0)
        assert len(ledger.open_reviews()) == 1
        ledger.observe("/in/p.csv", size=120, mtime=30.0, now=31.0)  # rewritten
        assert ledger.mark_pending("/in/p.csv", sha("second"), now=32.0) is Admission.NEW
        ledger.complete(sha("second"), [record(0, "known")], now=40.0)
        (current,) = ledger.results()
        assert (current.sha256, current.status, current.superseded_at) == (sha("second"), "known", None)
        history = ledger.results(superseded=True)
        assert [r.sha256 for r in history] == [sha("first"), sha("second")]
        assert history[0].superseded_at == 40.0
        assert ledger.open_reviews() == [] and ledger.review_counts()[ReviewState.OPEN] == 0
        assert ledger.result(history[0].id) is not None  # still there to look up

    def test_a_duplicate_keeps_the_old_content_counted_once(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/a.csv", "shared")
        ledger.complete(sha("shared"), [record(0)], now=20.0)
        assert arrive(ledger, "/in/copy.csv", "shared", now=21.0) is Admission.DUPLICATE
        ledger.observe("/in/a.csv", size=130, mtime=30.0, now=31.0)
        ledger.mark_pending("/in/a.csv", sha("new"), now=32.0)
        ledger.complete(sha("new"), [record(0, label="PP")], now=40.0)
        sources = {r.sha256: r.source_path for r in ledger.results()}
        assert sources == {sha("shared"): "/in/copy.csv", sha("new"): "/in/a.csv"}
        copy = ledger.file("/in/copy.csv")
        assert copy is not None and copy.duplicate_of is None

    def test_rewritten_as_a_copy_of_another_file(self, ledger: Ledger) -> None:
        """b.csv was PP, then overwritten with a.csv's bytes: its PP result is history, not counted."""
        arrive(ledger, "/in/a.csv", "PE bytes")
        ledger.complete(sha("PE bytes"), [record(0, label="PE")], now=20.0)
        arrive(ledger, "/in/b.csv", "PP bytes", now=21.0)
        ledger.complete(sha("PP bytes"), [record(0, "unknown", label="PP")], now=22.0)
        ledger.observe("/in/b.csv", size=130, mtime=30.0, now=31.0)
        assert ledger.mark_pending("/in/b.csv", sha("PE bytes"), now=32.0) is Admission.DUPLICATE
        assert [(r.source_path, r.label) for r in ledger.results()] == [("/in/a.csv", "PE")]
        old = [r for r in ledger.results(superseded=True) if r.sha256 == sha("PP bytes")]
        assert [r.superseded_at for r in old] == [32.0]
        assert ledger.open_reviews() == []

    def test_rewritten_with_content_that_is_quarantined(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/p.csv", "good")
        ledger.complete(sha("good"), [record(0)], now=20.0)
        ledger.observe("/in/p.csv", size=7, mtime=30.0, now=31.0)
        ledger.mark_pending("/in/p.csv", sha("junk"), now=32.0)
        ledger.quarantine("/in/p.csv", "unreadable: not a spectrum", now=33.0)
        assert ledger.results() == []
        assert [r.superseded_at for r in ledger.results(superseded=True)] == [33.0]

    def test_the_same_content_again_changes_nothing(self, ledger: Ledger) -> None:
        arrive(ledger, "/in/p.csv", "same")
        ledger.complete(sha("same"), [record(0)], now=20.0)
        ledger.observe("/in/p.csv", size=100, mtime=50.0, now=51.0)  # touched, same bytes
        ledger.mark_pending("/in/p.csv", sha("same"), now=52.0)
        assert [r.superseded_at for r in ledger.results(superseded=True)] == [None]
