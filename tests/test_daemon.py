"""The daemon end to end: real files, a real watcher, a real ledger; waits poll with a timeout.

A small library (FLOPP pristine) keeps model building fast; test spectra are
real FLOPP-e particles written as instrument-like CSV files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from daemon.config import ConfigError, load_config
from daemon.intake.stability import FileStat
from daemon.service import MIN_PAUSE_SECONDS, TICK_SECONDS, Daemon
from daemon.store.ledger import Admission, InvalidTransitionError, WorkItem
from engine.models.served import IdentificationModel, ModelConfig
from tests.conftest import REPO_ROOT, ledger_count, wait_until
from tests.prometheus import require_tool, running_prometheus

FAST = ModelConfig(n_synthetic=10, n_learners=10)


def variant(text: str, i: int) -> str:
    """The same particle with its last value nudged: new content, same spectrum for the model."""
    head, last = text.rstrip("\n").rsplit("\n", 1)
    x, y = last.split(",")
    return f"{head}\n{x},{float(y) + 1e-4 * (i + 1):.5f}\n"


def write_config(tmp_path: Path, library_dir: Path, **extra: object) -> Path:
    """A daemon configuration on ``library_dir``, with ``extra`` sections over it.

    The CNN member is off unless ``cnn`` is given: on a library without a shipped CNN the
    daemon would train one at start, a minute of CPU in every test (tests/test_challenger.py
    and the default-configuration tests serve it).
    """
    config = {
        "inboxes": [{"path": str(tmp_path / "inbox"), "name": "lab"}],
        "state_dir": str(tmp_path / "state"),
        "library": str(library_dir),
        "watch": {"quiet_seconds": 0.2, "rescan_interval_seconds": 3600},
        "http": {"port": 0},
        "model": {"n_synthetic": 10, "n_learners": 10},
        "worker": {"retry_base_seconds": 0.2, "retry_cap_seconds": 1.0, "max_attempts": 3},
        "cnn": {"enabled": False},
        **extra,
    }
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Running:
    """A daemon in a thread, stopped by its stop flag."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.thread = threading.Thread(target=daemon.run, daemon=True)

    def __enter__(self) -> Daemon:
        self.thread.start()
        wait_until(
            lambda: self.daemon.http.running and all(self.daemon.intake.watchers_up().values()),
            timeout=20,
        )
        return self.daemon

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


@pytest.fixture
def make_daemon(
    tmp_path: Path, library_dir: Path, model: IdentificationModel
) -> Iterator[Callable[..., Running]]:
    def make(**extra: object) -> Running:
        config = load_config(write_config(tmp_path, library_dir, **extra))
        return Running(Daemon(config, model=model))

    yield make


def state_counts(daemon: Daemon) -> dict[str, int]:
    return {str(k): v for k, v in daemon.ledger.counts().items()}


def done_count(daemon: Daemon) -> int:
    return state_counts(daemon)["done"]


@contextlib.contextmanager
def unstarted(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, **extra: object
) -> Iterator[Daemon]:
    """A daemon whose steps a test drives by hand (admit, claim, process); closed after."""
    daemon = Daemon(load_config(write_config(tmp_path, library_dir, **extra)), model=model)
    try:
        yield daemon
    finally:
        daemon.helpers.close()
        daemon.ledger.close()


def placed(inbox: Path, texts: list[str]) -> list[FileStat]:
    """``texts`` written as p0.csv, p1.csv ... in ``inbox``, each as the watcher would hand it over."""
    paths = [inbox / f"p{i}.csv" for i in range(len(texts))]
    for path, text in zip(paths, texts, strict=True):
        path.write_text(text)
    return [FileStat(p, p.stat().st_size, p.stat().st_mtime) for p in paths]


class TestWatching:
    def test_new_file_is_classified_with_evidence(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        with make_daemon() as d:
            (tmp_path / "inbox" / "p1.csv").write_text(particles[0])
            wait_until(lambda: done_count(d) == 1)
            (result,) = d.ledger.results()
            assert result.status in ("known", "unknown", "low_quality")
            assert result.payload["hits"] and "r" in result.payload["hits"][0]
            assert result.payload["members"][0]["name"] == "subknn"

    def test_slow_partial_write_is_read_once_complete(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        with make_daemon() as d:
            target = tmp_path / "inbox" / "slow.csv"
            text = particles[1]
            with target.open("w") as handle:
                for i in range(0, len(text), len(text) // 5):
                    handle.write(text[i : i + len(text) // 5])
                    handle.flush()
                    time.sleep(0.1)  # the instrument writing: shorter than the quiet period
            wait_until(lambda: done_count(d) == 1)
            assert state_counts(d)["quarantined"] == 0

    def test_zero_byte_placeholder_filled_later(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        with make_daemon() as d:
            target = tmp_path / "inbox" / "placeholder.csv"
            target.touch()
            time.sleep(0.6)  # longer than the quiet period: an empty file must not be taken
            assert done_count(d) == 0 and state_counts(d)["quarantined"] == 0
            target.write_text(particles[2])
            wait_until(lambda: done_count(d) == 1)

    def test_write_then_rename(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        with make_daemon() as d:
            tmp = tmp_path / "inbox" / "p.csv.tmp"
            tmp.write_text(particles[3])
            tmp.rename(tmp_path / "inbox" / "p.csv")
            wait_until(lambda: done_count(d) == 1)
            (rec,) = d.ledger.files()
            assert rec.path.endswith("p.csv")

    def test_folder_moved_into_inbox(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        outside = tmp_path / "sample-7"
        outside.mkdir()
        for i in range(5):
            (outside / f"particle_{i}.csv").write_text(particles[10 + i])
        with make_daemon() as d:
            outside.rename(tmp_path / "inbox" / "sample-7")
            wait_until(lambda: done_count(d) == 5)
            d.exporter.flush(now=time.time(), force=True)
            summary = tmp_path / "state" / "results" / "lab" / "sample-7" / "summary.csv"
            wait_until(summary.exists)
            lines = (
                (tmp_path / "state" / "results" / "lab" / "sample-7" / "results.jsonl")
                .read_text()
                .splitlines()
            )
            assert len(lines) == 5
            header = summary.read_text().splitlines()[0].split(",")
            assert header[:4] == ["status", "label", "particles", "share"] and "carbonyl_median" in header
            known = [json.loads(line) for line in lines if json.loads(line)["status"] == "known"]
            assert known and all("aging" in row for row in known)

    def test_duplicate_content_is_not_classified_again(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        with make_daemon() as d:
            (tmp_path / "inbox" / "a.csv").write_text(particles[4])
            wait_until(lambda: done_count(d) == 1)
            (tmp_path / "inbox" / "copy-of-a.csv").write_text(particles[4])
            os.utime(tmp_path / "inbox" / "a.csv")  # a duplicate event for the first file
            wait_until(lambda: done_count(d) == 2)
            assert len(d.ledger.results()) == 1
            dup = d.ledger.file(tmp_path / "inbox" / "copy-of-a.csv")
            assert dup is not None and dup.duplicate_of

    def test_silent_watcher_rescan_finds_the_file(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        # a polling watcher that looks once an hour: as silent as a flaky network share
        silent = [
            {"path": str(tmp_path / "inbox"), "name": "lab", "polling": True, "poll_interval_seconds": 3600}
        ]
        with make_daemon(inboxes=silent) as d:
            (tmp_path / "inbox" / "unseen.csv").write_text(particles[5])
            time.sleep(0.5)
            assert done_count(d) == 0
            assert d.intake.rescan() == 1
            wait_until(lambda: done_count(d) == 1)


class TestBadInput:
    def test_malformed_files_are_quarantined_and_the_daemon_goes_on(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        with make_daemon() as d:
            (tmp_path / "inbox" / "garbage.spa").write_bytes(os.urandom(3000))
            (tmp_path / "inbox" / "short.csv").write_text("wavenumber,absorbance\n1000,0.1\n")
            (tmp_path / "inbox" / "good.csv").write_text(particles[6])
            wait_until(lambda: state_counts(d)["quarantined"] == 2 and done_count(d) == 1)
            reasons = {Path(r.path).name: r.reason for r in d.ledger.files(state="quarantined")}
            assert "too_few_points" in reasons["short.csv"]
            notes = list((tmp_path / "state" / "quarantine").glob("*.reason.json"))
            assert len(notes) == 2
            assert all(json.loads(n.read_text())["reason"] for n in notes)
            assert (tmp_path / "inbox" / "garbage.spa").exists()  # never moved unless configured

    def test_a_file_that_stays_empty_is_quarantined_and_comes_back_with_its_bytes(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        """A 0-byte file was in no list, and every rescan logged it again."""
        watch = {"quiet_seconds": 0.2, "empty_file_seconds": 1.0, "rescan_interval_seconds": 3600}
        empty = tmp_path / "inbox" / "empty.csv"
        with make_daemon(watch=watch) as d:
            empty.touch()
            wait_until(lambda: state_counts(d)["quarantined"] == 1)
            record = d.ledger.file(empty)
            assert record is not None and "empty_file" in (record.reason or "")
            empty.write_text(particles[6])  # the instrument wrote it after all
            wait_until(lambda: done_count(d) == 1 and state_counts(d)["quarantined"] == 0)

    def test_a_file_gone_before_it_is_read_is_retried_not_quarantined(
        self, tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
    ) -> None:
        with unstarted(tmp_path, library_dir, model) as daemon:
            (stat,) = placed(tmp_path / "inbox", particles[:1])
            daemon.intake.admit([stat], now=time.time())
            item = daemon.ledger.claim_next(now=time.time())
            assert item is not None
            stat.path.unlink()  # an instrument or a user took it back
            daemon.worker.process([item])
            record = daemon.ledger.file(stat.path)
            assert record is not None and str(record.state) == "failed"
            assert record.reason is not None and record.reason.startswith("not ready")

    def test_a_failed_aging_index_is_recorded_and_the_file_still_done(
        self,
        tmp_path: Path,
        library_dir: Path,
        model: IdentificationModel,
        particles: list[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("arPLS exploded")

        monkeypatch.setattr("daemon.pipeline.helpers.aging_indices", broken)
        with unstarted(tmp_path, library_dir, model, worker={"helper_processes": 0}) as daemon:
            stats = placed(tmp_path / "inbox", particles[:3])
            daemon.intake.admit(stats, now=time.time())
            daemon.worker.process(daemon.ledger.claim(len(stats), now=time.time()))
            assert done_count(daemon) == 3
            known = [r for r in daemon.ledger.results() if str(r.status) == "known"]
            assert known, "the test needs an identified particle"
            assert all("arPLS exploded" in r.payload["aging"]["error"] for r in known)

    def test_a_file_the_ledger_refuses_does_not_hold_up_the_others(
        self,
        tmp_path: Path,
        library_dir: Path,
        model: IdentificationModel,
        particles: list[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        with unstarted(tmp_path, library_dir, model) as daemon:
            real = daemon.ledger.mark_pending

            def refusing(path: Path, sha256: str, *, now: float) -> Admission:
                if Path(path).name == "p1.csv":
                    raise InvalidTransitionError("refused for the test")
                return real(path, sha256, now=now)

            monkeypatch.setattr(daemon.ledger, "mark_pending", refusing)
            stats = placed(tmp_path / "inbox", particles[:3])
            admitted = daemon.intake.admit(stats, now=time.time())
            assert [admitted[stat.path] for stat in stats] == [Admission.NEW, None, Admission.NEW]
            assert sorted(Path(i.path).name for i in daemon.ledger.pending_items()) == ["p0.csv", "p2.csv"]

    @pytest.mark.parametrize("stage", ["classify", "finish"])
    def test_a_stage_failing_for_a_whole_batch_fails_its_files_for_a_retry(
        self,
        stage: str,
        tmp_path: Path,
        library_dir: Path,
        model: IdentificationModel,
        particles: list[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def broken(*args: object) -> None:
            raise RuntimeError(f"{stage} exploded")

        with unstarted(tmp_path, library_dir, model, worker={"helper_processes": 0}) as daemon:
            monkeypatch.setattr(daemon.worker, stage, broken)
            daemon.intake.admit(placed(tmp_path / "inbox", particles[:3]), now=time.time())
            daemon.stages.fill(time.time())
            daemon.stages.start()
            try:
                wait_until(lambda: len(daemon.ledger.files(state="failed")) == 3)
            finally:
                daemon.stages.stop(now=time.time(), timeout=30)
            for record in daemon.ledger.files(state="failed"):
                assert record.claimed_at is None and record.next_attempt_at is not None
                assert record.reason == f"internal error: RuntimeError: {stage} exploded"

    def test_a_listener_failing_for_one_file_does_not_silence_the_others(
        self, tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
    ) -> None:
        heard: list[str] = []

        def listener(item: WorkItem, results: object) -> None:
            heard.append(Path(item.path).name)
            if Path(item.path).name == "p0.csv":
                raise RuntimeError("listener exploded")

        with unstarted(tmp_path, library_dir, model, worker={"helper_processes": 0}) as daemon:
            daemon.worker.on_result = listener
            daemon.intake.admit(placed(tmp_path / "inbox", particles[:3]), now=time.time())
            daemon.worker.process(daemon.ledger.claim(10, now=time.time()))
            assert sorted(heard) == ["p0.csv", "p1.csv", "p2.csv"]
            assert done_count(daemon) == 3

    def test_the_main_loop_wakes_when_the_next_file_becomes_ready(
        self,
        tmp_path: Path,
        library_dir: Path,
        model: IdentificationModel,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        with unstarted(tmp_path, library_dir, model) as daemon:
            (watcher,) = daemon.intake.watchers.values()
            cases = [(None, TICK_SECONDS), (1.0, TICK_SECONDS), (0.02, 0.02), (0.0, MIN_PAUSE_SECONDS)]
            for due, pause in cases:
                monkeypatch.setattr(watcher, "seconds_to_next_ready", lambda due=due: due)
                assert daemon._pause() == pytest.approx(pause)

    def test_bad_config_is_one_clear_message(self, tmp_path: Path, library_dir: Path) -> None:
        path = write_config(tmp_path, library_dir, http={"port": 99999})
        with pytest.raises(ConfigError, match=r"http\.port"):
            load_config(path)
        done = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO_ROOT,
            check=False,
        )
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1
        assert "http.port" in done.stderr


#: An analyst's note beside the spectra of a sample: prose, no table of numbers.
NOTES = (
    "Sample 07, river Rhine at Lobith, taken 3 May.\n"
    "Filtered 250 L through a 20 um mesh, dried overnight at 40 C.\n"
    "Particle 1 looked like a blue fibre; see photo.png.\n"
)
#: The first bytes of a PNG image and of an xlsx workbook (a zip), with data after them.
PHOTO = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
WORKBOOK = b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 8


def ignored_lines(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    """How many times the ledger said each file was ignored, by file name."""
    said: dict[str, int] = {}
    for r in caplog.records:
        if r.name == "daemon.store.files" and " ignored: " in r.getMessage():
            name = Path(r.getMessage().split(" ignored: ")[0]).name
            said[name] = said.get(name, 0) + 1
    return said


class TestNonSpectra:
    def test_notes_photos_and_spreadsheets_are_ignored_once_and_the_spectrum_classified(
        self,
        tmp_path: Path,
        library_dir: Path,
        model: IdentificationModel,
        particles: list[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        config = load_config(write_config(tmp_path, library_dir))
        sample = tmp_path / "inbox" / "sample-07"
        with caplog.at_level(logging.INFO, logger="daemon.store.files"):
            with Running(Daemon(config, model=model)) as d:
                sample.mkdir()
                (sample / "notes.txt").write_text(NOTES)
                (sample / "photo.png").write_bytes(PHOTO)
                (sample / "results.xlsx").write_bytes(WORKBOOK)
                (sample / "particle.csv").write_text(particles[0])
                wait_until(lambda: state_counts(d)["ignored"] == 3 and done_count(d) == 1)
                reasons = {Path(r.path).name: r.reason or "" for r in d.ledger.files(state="ignored")}
                (result,) = d.ledger.results()
            with Running(Daemon(config, model=model)) as d:  # a restart scans them all again
                (sample / "particle-2.csv").write_text(particles[1])  # ready after the others
                wait_until(lambda: done_count(d) == 2)
                counts = state_counts(d)
        assert Path(result.source_path).name == "particle.csv"
        assert reasons["photo.png"] == "not a spectrum: an image (*.png)"
        assert reasons["results.xlsx"] == "not a spectrum: a spreadsheet (*.xlsx)"
        assert (
            reasons["notes.txt"] == "not a spectrum: notes.txt is text without a table of numbers (a note?)"
        )
        assert ignored_lines(caplog) == {"notes.txt": 1, "photo.png": 1, "results.xlsx": 1}
        assert (counts["ignored"], counts["quarantined"], counts["failed"]) == (3, 0, 0)
        assert list((tmp_path / "state" / "quarantine").iterdir()) == []
        assert all((sample / name).is_file() for name in ("notes.txt", "photo.png", "results.xlsx"))

    def test_by_name_it_is_ignored_at_admission_never_hashed_nor_read(
        self,
        tmp_path: Path,
        library_dir: Path,
        model: IdentificationModel,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        inbox = {"path": str(tmp_path / "inbox"), "name": "lab", "non_spectra": ["*.log"]}
        with unstarted(tmp_path, library_dir, model, inboxes=[inbox]) as daemon:
            (tmp_path / "inbox" / "run.log").write_text("1000,0.1\n" * 40)  # a table: only the name tells
            (tmp_path / "inbox" / "photo.png").write_bytes(PHOTO)
            stats = [
                FileStat(p, p.stat().st_size, p.stat().st_mtime)
                for p in sorted((tmp_path / "inbox").iterdir())
            ]
            hashed: list[Path] = []
            monkeypatch.setattr(
                "daemon.intake.admission.content_sha256", lambda path: hashed.append(path) or "0" * 64
            )
            assert daemon.intake.admit(stats, now=time.time()) == {stat.path: None for stat in stats}
            assert hashed == [] and daemon.ledger.claim_next(now=time.time()) is None
            records = {Path(r.path).name: r for r in daemon.ledger.files(state="ignored")}
            assert records["run.log"].reason == "not a spectrum: a configured non-spectrum pattern (*.log)"
            assert records["photo.png"].sha256 is None

    def test_the_setting_is_per_inbox_on_by_default_and_a_bad_pattern_stops_the_start(
        self, tmp_path: Path, library_dir: Path
    ) -> None:
        inboxes = [
            {"path": str(tmp_path / "a"), "name": "a"},
            {"path": str(tmp_path / "b"), "name": "b", "ignore_non_spectra": False},
        ]
        config = load_config(write_config(tmp_path, library_dir, inboxes=inboxes))
        assert [inbox.ignore_non_spectra for inbox in config.inboxes] == [True, False]
        assert config.inboxes[1].non_spectrum_filter() is None
        bad = [{"path": str(tmp_path / "a"), "name": "a", "non_spectra": ["*.log", " "]}]
        with pytest.raises(ConfigError, match=r"inboxes\.0\.non_spectra"):
            load_config(write_config(tmp_path, library_dir, inboxes=bad))

    @pytest.mark.parametrize("ignore", [True, False])
    def test_a_note_is_ignored_or_quarantined_as_configured_a_broken_spectrum_always_quarantined(
        self, tmp_path: Path, library_dir: Path, model: IdentificationModel, ignore: bool
    ) -> None:
        inbox = {"path": str(tmp_path / "inbox"), "name": "lab", "ignore_non_spectra": ignore}
        with unstarted(tmp_path, library_dir, model, inboxes=[inbox]) as daemon:
            notes, broken = tmp_path / "inbox" / "notes.txt", tmp_path / "inbox" / "broken.csv"
            notes.write_text(NOTES)
            broken.write_text("wavenumber,absorbance\n1000,0.1\n1002,0.")  # a spectrum cut short
            stats = [FileStat(p, p.stat().st_size, p.stat().st_mtime) for p in (notes, broken)]
            daemon.intake.admit(stats, now=time.time())
            daemon.worker.process(daemon.ledger.claim(10, now=time.time()))
            notes_row, broken_row = daemon.ledger.file(notes), daemon.ledger.file(broken)
            assert notes_row is not None and broken_row is not None
            if ignore:
                assert (str(notes_row.state), notes_row.reason) == (
                    "ignored",
                    "not a spectrum: notes.txt is text without a table of numbers (a note?)",
                )
            else:
                assert str(notes_row.state) == "quarantined"
                assert (
                    notes_row.reason
                    == "not_a_spectrum: notes.txt is text without a table of numbers (a note?)"
                )
            assert str(broken_row.state) == "quarantined" and "too_few_points" in (broken_row.reason or "")
            notes_written = sorted(p.name for p in (tmp_path / "state" / "quarantine").glob("*.reason.json"))
            assert len(notes_written) == (1 if ignore else 2)
            assert notes.is_file() and broken.is_file()


class TestRestart:
    def test_catch_up_after_a_stop(
        self,
        make_daemon: Callable[..., Running],
        tmp_path: Path,
        particles: list[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # the 100 are admitted over several turns
        monkeypatch.setattr("daemon.intake.admission.ADMIT_PER_TURN", 16)
        inbox = tmp_path / "inbox"
        with make_daemon() as d:
            for i in range(10):
                (inbox / f"early_{i}.csv").write_text(particles[i])
            wait_until(lambda: done_count(d) == 10)
        for i in range(100):
            (inbox / f"late_{i}.csv").write_text(variant(particles[10 + i % 110], i))
        with make_daemon() as d:
            wait_until(lambda: done_count(d) == 110, timeout=60)
            results = d.ledger.results(limit=1000)
            assert len(results) == 110
            assert len({r.sha256 for r in results}) == 110

    def test_sigkill_mid_stream_leaves_every_file_in_one_terminal_state(
        self, tmp_path: Path, library_dir: Path, particles: list[str]
    ) -> None:
        # Small batches, so the kill lands between commits (a batch is committed at once).
        worker = {"batch_size": 2, "retry_base_seconds": 0.2, "retry_cap_seconds": 1.0, "max_attempts": 3}
        config = write_config(tmp_path, library_dir, worker=worker)
        inbox = tmp_path / "inbox"
        for i in range(60):
            (inbox / f"p_{i}.csv").write_text(variant(particles[i % 110], i))

        def start() -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )

        db = tmp_path / "state" / "ledger.sqlite3"

        def done() -> int:
            return ledger_count(db, "SELECT count(*) FROM files WHERE state = 'done'")

        proc = start()
        wait_until(lambda: done() >= 5, timeout=90)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert done() < 60, "the kill must land mid-stream for this test to mean anything"
        proc = start()
        try:
            wait_until(lambda: done() == 60, timeout=120)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        with sqlite3.connect(db) as conn:
            states = conn.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall()
            dupes = conn.execute(
                "SELECT count(*) FROM (SELECT sha256, spectrum_index FROM results "
                "GROUP BY 1, 2 HAVING count(*) > 1)"
            ).fetchone()[0]
            n_results = conn.execute("SELECT count(*) FROM results").fetchone()[0]
        assert dict(states) == {"done": 60}
        assert dupes == 0 and n_results == 60


class TestSignals:
    """SIGTERM stops and SIGHUP reloads the daemon, whenever they arrive."""

    @pytest.fixture
    def handlers(self) -> Iterator[None]:
        saved = {
            signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        yield
        for signum, handler in saved.items():
            signal.signal(signum, handler)

    def test_a_signal_while_the_main_loop_holds_its_wait_lock_cannot_hang_it(
        self, make_daemon: Callable[..., Running], handlers: None
    ) -> None:
        """A handler runs in the main thread, which idles in ``stop.wait()`` and holds that Event's lock
        at the wait's start and end. The handler set ``stop`` itself, waiting for that lock: the daemon
        hung on SIGTERM now and then. Here the lock is held where the handler runs, every time."""
        running = make_daemon()
        daemon = running.daemon
        daemon.install_signal_handlers()
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        returned = threading.Event()

        def signal_while_holding_the_lock() -> None:
            with daemon.stop._cond:  # as the main thread holds it inside stop.wait()
                handler(signal.SIGTERM, None)
            returned.set()

        threading.Thread(target=signal_while_holding_the_lock, daemon=True).start()
        assert returned.wait(10), "the signal handler blocked on the lock its own thread held"
        running.thread.start()  # the noted SIGTERM stops it after its first turn
        running.thread.join(timeout=30)
        assert not running.thread.is_alive()
        assert daemon.stop.is_set() and not daemon.reload.is_set()


class TestHealth:
    def test_endpoints(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        with make_daemon() as d:
            base = f"http://127.0.0.1:{d.http.port}"
            (tmp_path / "inbox" / "p.csv").write_text(particles[7])
            wait_until(lambda: done_count(d) == 1)
            assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200

            def readyz() -> dict[str, Any]:
                try:
                    reply = urllib.request.urlopen(base + "/readyz", timeout=5)
                except urllib.error.HTTPError as error:  # 503 until every check passes
                    reply = error
                return dict(json.loads(reply.read()))

            wait_until(lambda: readyz()["ready"], timeout=60)  # the helper processes take a moment
            checks = readyz()["checks"]
            assert checks["watchers_up"] == {"lab": True} and checks["helpers_up"] is True
            metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            assert 'mpwatch_files_total{outcome="done"} 1.0' in metrics
            assert "mpwatch_processing_seconds_bucket" in metrics


def test_results_command_reads_the_ledger(
    make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
) -> None:
    with make_daemon() as d:
        for i in range(3):
            (tmp_path / "inbox" / f"p{i}.csv").write_text(particles[20 + i])
        wait_until(lambda: done_count(d) == 3)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "results",
            "--state",
            str(tmp_path / "state"),
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=True,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 3
    assert {"source", "status", "label", "hits"} <= set(rows[0])
    assert np.all([r["source"].endswith(".csv") for r in rows])


def test_relabelling_a_known_result_says_what_the_model_had_called_it(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
) -> None:
    """A typo in ``confirm 1 --label PP`` for a PE particle known at r 1.00 went in without a word."""
    own = tmp_path / "library"
    shutil.copytree(library_dir, own)  # the confirmation writes a library version
    with Running(Daemon(load_config(write_config(tmp_path, own)), model=model)) as d:
        (tmp_path / "inbox" / "p.csv").write_text(particles[20])
        wait_until(lambda: done_count(d) == 1)
        (result,) = d.ledger.results()
        assert result.status == "known" and result.label is not None
        other = "PP" if result.label != "PP" else "PE"
        outcome = d.growth.confirm(result.id, label=other, decided_by="ana")
        assert f"result {result.id} was known as {result.label} ({result.confidence:.2f})" in outcome.note
        assert f"check the label, {other} overrides the model" in outcome.note
        again = d.growth.confirm(result.id, label=result.label, decided_by="ana")  # the slip mended
        assert "was known as" not in again.note


class TestPrometheusScrapesTheDaemon:
    def test_counter_read_back_through_prometheus_and_promtool_passes(
        self, make_daemon: Callable[..., Running], tmp_path: Path, particles: list[str]
    ) -> None:
        promtool = require_tool("promtool")
        with make_daemon() as d:
            for i in range(3):
                (tmp_path / "inbox" / f"p{i}.csv").write_text(particles[30 + i])
            wait_until(lambda: done_count(d) == 3)
            exposition = urllib.request.urlopen(f"http://127.0.0.1:{d.http.port}/metrics", timeout=5).read()
            checked = subprocess.run(
                [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            prom_dir = tmp_path / "prom"
            prom_dir.mkdir()
            with running_prometheus(prom_dir, [f"127.0.0.1:{d.http.port}"]) as prometheus:
                prometheus.wait_for_value('mpwatch_files_total{outcome="done"}', expected=3.0)
                prometheus.wait_for_value('mpwatch_watcher_up{root="lab"}', expected=1.0)
