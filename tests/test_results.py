"""The results exporter: atomic views of the ledger, paced so that big samples cannot slow the daemon."""

from __future__ import annotations

import csv
import json
from pathlib import Path

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
