"""The results exporter: atomic views of the ledger, paced so that big samples cannot slow the daemon."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import daemon.store.export as results_module
from daemon.store.export import COST_FACTOR, ResultsExporter
from daemon.store.ledger import Ledger, ResultRecord, ResultStatus


def classified(ledger: Ledger, path: Path, *, label: str, now: float) -> None:
    sha = f"{abs(hash(path)):064x}"[-64:]
    ledger.observe(path, size=1, mtime=now, now=now)
    ledger.mark_pending(path, sha, now=now)
    record = ResultRecord(0, ResultStatus.KNOWN, "lib1.r0", label, label, 0.9, {"aging": {"carbonyl": 0.2}})
    ledger.complete(sha, [record], now=now)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Ledger, ResultsExporter, Path]:
    inbox = tmp_path / "inbox"
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    exporter = ResultsExporter(ledger, tmp_path / "results", [("lab", inbox)], min_interval=2.0)
    return ledger, exporter, inbox


def test_a_folder_is_written_as_jsonl_and_summary(setup: tuple[Ledger, ResultsExporter, Path]) -> None:
    ledger, exporter, inbox = setup
    for i, label in enumerate(["PE", "PE", "PP"]):
        path = inbox / "sample-1" / f"p{i}.csv"
        classified(ledger, path, label=label, now=10.0 + i)
        exporter.mark(path)
    assert exporter.flush(now=20.0) == 1
    target = exporter.results_dir / "lab" / "sample-1"
    lines = [json.loads(line) for line in (target / "results.jsonl").read_text().splitlines()]
    assert sorted(r["label"] for r in lines) == ["PE", "PE", "PP"]
    rows = list(csv.DictReader((target / "summary.csv").open()))
    assert [(r["label"], r["particles"], r["carbonyl_median"]) for r in rows] == [
        ("PE", "2", "0.2"),
        ("PP", "1", "0.2"),
    ]


def test_the_pause_grows_with_the_cost_of_a_rewrite(
    setup: tuple[Ledger, ResultsExporter, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, exporter, inbox = setup
    path = inbox / "big" / "p.csv"
    classified(ledger, path, label="PE", now=1.0)
    ticks = [0.0, 0.5]  # the first rewrite "takes" 0.5 s, later ones no time
    monkeypatch.setattr(results_module.time, "perf_counter", lambda: ticks.pop(0) if ticks else 0.0)
    exporter.mark(path)
    assert exporter.flush(now=100.0) == 1
    exporter.mark(path)
    pause = COST_FACTOR * 0.5
    assert pause > exporter.min_interval
    assert exporter.flush(now=100.0 + exporter.min_interval) == 0  # the plain interval is not enough
    assert exporter.flush(now=100.0 + pause - 0.01) == 0
    assert exporter.flush(now=100.0 + pause) == 1
    exporter.mark(path)
    assert exporter.flush(now=100.0 + pause + 0.01, force=True) == 1  # shutdown never waits


class TestWrittenBehind:
    """The daemon's exporter writes in a thread of its own: a slow sample report holds up no file."""

    @pytest.fixture
    def behind(self, tmp_path: Path) -> tuple[ResultsExporter, Path]:
        """An exporter that writes behind, and a classified particle whose folder is to write."""
        inbox = tmp_path / "inbox"
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        exporter = ResultsExporter(ledger, tmp_path / "results", [("lab", inbox)], background=True)
        path = inbox / "sample-1" / "p.csv"
        classified(ledger, path, label="PE", now=1.0)
        exporter.mark(path)
        return exporter, path

    def test_flush_hands_the_folders_over_and_returns_while_they_are_written(
        self, behind: tuple[ResultsExporter, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        exporter, path = behind
        release, started = threading.Event(), threading.Event()
        write_folder = exporter.write_folder

        def slow(folder: Path, *, report: bool = True) -> Path:
            started.set()
            assert release.wait(timeout=30)  # a flush that waited for this would never return
            return write_folder(folder, report=report)

        monkeypatch.setattr(exporter, "write_folder", slow)
        assert exporter.flush(now=10.0) == 1  # returned while the writer is held
        assert started.wait(timeout=30)
        target = exporter.results_dir / "lab" / "sample-1" / "results.jsonl"
        assert not target.exists()
        exporter.mark(path)
        assert exporter.flush(now=20.0) == 0  # one writer at a time: this one waits for the next turn
        release.set()
        assert exporter.flush(now=30.0, force=True) == 1  # shutdown: waits for the writer, writes the rest
        assert json.loads(target.read_text())["label"] == "PE"

    def test_a_writer_failure_reaches_the_next_flush_and_loses_no_folder(
        self, behind: tuple[ResultsExporter, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        exporter, _ = behind
        write_folder = exporter.write_folder

        def broken(folder: Path, *, report: bool = True) -> Path:
            raise RuntimeError("a bug in the report")

        monkeypatch.setattr(exporter, "write_folder", broken)
        assert exporter.flush(now=10.0) == 1
        assert exporter._writer is not None
        exporter._writer.join(timeout=30)
        with pytest.raises(RuntimeError, match="a bug in the report"):
            exporter.flush(now=20.0)  # the main loop's guard counts it and backs off
        monkeypatch.setattr(exporter, "write_folder", write_folder)
        assert exporter.flush(now=30.0, force=True) == 1  # the folder is still dirty, and now written
        assert (exporter.results_dir / "lab" / "sample-1" / "results.jsonl").exists()


def test_reports_are_redrawn_less_often_than_the_result_files(
    setup: tuple[Ledger, ResultsExporter, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, exporter, inbox = setup
    drawn: list[str] = []
    monkeypatch.setattr(
        results_module, "write_sample_report", lambda _, folder, *rest, **kw: drawn.append(folder)
    )
    monkeypatch.setattr(exporter, "report", SimpleNamespace(is_blank=lambda folder: False))
    exporter.report_interval = 30.0
    path = inbox / "sample-1" / "p0.csv"
    target = exporter.results_dir / "lab" / "sample-1" / "results.jsonl"
    classified(ledger, path, label="PE", now=1.0)
    exporter.mark(path)
    assert exporter.flush(now=10.0) == 1 and not drawn  # result files at once, the report an interval on
    classified(ledger, inbox / "sample-1" / "p1.csv", label="PP", now=11.0)
    exporter.mark(path)
    assert exporter.flush(now=13.0) == 1 and not drawn
    assert len(target.read_text().splitlines()) == 2
    assert exporter.flush(now=39.0) == 0 and not drawn
    assert exporter.flush(now=40.0) == 0 and len(drawn) == 1  # the stale report, with no new results
    assert exporter.flush(now=45.0) == 0 and len(drawn) == 1  # nothing left to redraw
    exporter.mark(path)
    assert exporter.flush(now=50.0) == 1 and len(drawn) == 1
    assert exporter.flush(now=70.0) == 0 and len(drawn) == 2
    exporter.mark(path)
    assert exporter.flush(now=71.0, force=True) == 1 and len(drawn) == 3  # at shutdown, always


def test_a_map_samples_summary_counts_its_particles(setup: tuple[Ledger, ResultsExporter, Path]) -> None:
    """A map gives no result per spectrum but particles; summary.csv was empty for a map sample."""
    from tests.test_report import deliver, map_particle, map_record

    ledger, exporter, inbox = setup
    particles = [map_particle(i, "PE", feret) for i, feret in enumerate((120.0, 40.0))]
    particles.append(map_particle(2, "", 30.0, status="unknown"))
    particles[0]["aging"] = {"carbonyl": 0.3}
    path = inbox / "filter-2" / "map.hdr"
    deliver(ledger, str(path), "map", now=1.0, map_record=map_record(particles))
    classified(ledger, inbox / "filter-2" / "extra.csv", label="PP", now=2.0)  # a file beside the map
    exporter.mark(path)
    assert exporter.flush(now=10.0) == 1
    rows = list(csv.DictReader((exporter.results_dir / "lab" / "filter-2" / "summary.csv").open()))
    assert [(r["status"], r["label"], r["particles"], r["carbonyl_n"]) for r in rows] == [
        ("known", "PE", "2", "1"),
        ("known", "PP", "1", "1"),
        ("unknown", "", "1", "0"),
    ]
