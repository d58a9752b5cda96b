"""An analyst's decisions are part of the record: every view counts final labels.

The classifier's answer stays in the ledger unchanged; a confirmation or a rejection
is laid over it, so ``mpwatch results``, results.jsonl, summary.csv and the console
show the final label together with who decided, when, and what the classifier said.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.cli.results import results_table
from daemon.store.export import ResultsExporter, result_row
from daemon.store.ledger import Ledger, ResultRecord, ResultStatus, ReviewState
from daemon.store.schema import _MIGRATIONS
from daemon.web.address import ADDRESS_FILE
from engine.cli.common import stdout_console
from engine.core.spectrum import Spectrum
from tests.conftest import MPWATCH, REPO_ROOT, daemon_process, ledger_count, wait_until
from tests.test_console import (
    HELD_OUT,
    drop,
    other_particles,
    particles,
    pet_particles,
    save_library_without_pet,
)
from tests.test_daemon import write_config

__all__ = ["other_particles", "particles", "pet_particles"]  # fixtures this module uses

INBOX = Path("/inbox")
HITS = [{"label": "PE", "material": "polyethylene", "r": 0.812, "ref_id": 4, "source": "lib"}]


def classify(
    ledger: Ledger,
    path: Path,
    status: ResultStatus,
    *,
    label: str | None = None,
    confidence: float | None = None,
    now: float = 100.0,
    content: str | None = None,
) -> int:
    """Admit, claim and complete one file with one result; return the result's id."""
    sha = f"{abs(hash(content or str(path))):064x}"[-64:]
    ledger.observe(path, size=1, mtime=now, now=now)
    ledger.mark_pending(path, sha, now=now)
    item = ledger.claim_next(now=now)
    assert item is not None and item.sha256 == sha
    record = ResultRecord(0, status, "lib1.r0", label, label, confidence, {"hits": HITS, "vote_share": 0.6})
    ledger.complete(sha, [record], now=now)
    (result,) = ledger.results(sha256=sha)
    return result.id


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite3") as opened:
        yield opened


def decide(ledger: Ledger, result_id: int, state: ReviewState, label: str | None, *, now: float) -> None:
    if ledger.review(result_id) is None:
        ledger.enqueue_review(result_id, now=now)
    ledger.decide_review(result_id, state=state, label=label, decided_by="ana", now=now, ref_ids=[7])


class TestTheLedgerLaysDecisionsOverResults:
    def test_a_confirmed_unknown_is_known_under_the_final_label_everywhere(self, ledger: Ledger) -> None:
        rid = classify(ledger, INBOX / "s1" / "p1.csv", ResultStatus.UNKNOWN)
        classify(ledger, INBOX / "s1" / "p2.csv", ResultStatus.UNKNOWN)
        decide(ledger, rid, ReviewState.CONFIRMED, "PVC", now=200.0)

        assert [r.id for r in ledger.results(status=ResultStatus.UNKNOWN)] == [rid + 1]
        (confirmed,) = ledger.results(status=ResultStatus.KNOWN, label="PVC")
        assert (confirmed.id, confirmed.status, confirmed.label) == (rid, ResultStatus.KNOWN, "PVC")
        assert confirmed.confidence is None  # no model gave PVC to this spectrum
        decision = confirmed.decision
        assert decision is not None
        assert (decision.decided_by, decision.decided_at, decision.ref_ids) == ("ana", 200.0, (7,))
        assert (decision.original_status, decision.original_label) == (ResultStatus.UNKNOWN, None)
        assert (confirmed.classified_status, confirmed.classified_label) == (ResultStatus.UNKNOWN, None)
        assert ledger.result(rid) == confirmed

    def test_a_rejected_result_has_its_own_status_and_no_label(self, ledger: Ledger) -> None:
        rid = classify(ledger, INBOX / "s1" / "p1.csv", ResultStatus.KNOWN, label="PE", confidence=0.93)
        decide(ledger, rid, ReviewState.REJECTED, None, now=200.0)
        (rejected,) = ledger.results(status=ResultStatus.REJECTED)
        assert (rejected.label, rejected.material, rejected.confidence) == (None, None, None)
        assert rejected.decision is not None and rejected.decision.original_label == "PE"
        assert rejected.decision.original_confidence == pytest.approx(0.93)
        assert ledger.results(label="PE") == []

    def test_confirming_the_classifiers_own_label_keeps_its_confidence(self, ledger: Ledger) -> None:
        rid = classify(ledger, INBOX / "s1" / "p1.csv", ResultStatus.KNOWN, label="PE", confidence=0.93)
        decide(ledger, rid, ReviewState.CONFIRMED, "PE", now=200.0)
        result = ledger.result(rid)
        assert result is not None and result.confidence == pytest.approx(0.93)
        decide(ledger, rid, ReviewState.CONFIRMED, "PP", now=300.0)  # a later decision replaces it
        result = ledger.result(rid)
        assert result is not None and (result.label, result.confidence) == ("PP", None)

    def test_the_classifier_never_writes_a_rejection(self) -> None:
        with pytest.raises(ValueError, match="only an analyst rejects"):
            ResultRecord(0, ResultStatus.REJECTED, "lib1.r0")

    def test_recent_decisions_come_latest_first(self, ledger: Ledger) -> None:
        first = classify(ledger, INBOX / "s1" / "p1.csv", ResultStatus.UNKNOWN)
        second = classify(ledger, INBOX / "s1" / "p2.csv", ResultStatus.UNKNOWN)
        classify(ledger, INBOX / "s1" / "p3.csv", ResultStatus.UNKNOWN)  # still open
        decide(ledger, first, ReviewState.CONFIRMED, "PVC", now=200.0)
        decide(ledger, second, ReviewState.REJECTED, None, now=300.0)
        assert [item.result.id for item in ledger.decisions()] == [second, first]

    def test_duplicates_and_samples_are_listed_when_asked(self, ledger: Ledger) -> None:
        rid = classify(ledger, INBOX / "s1" / "p1.csv", ResultStatus.KNOWN, label="PE", content="x")
        ledger.observe(INBOX / "s2" / "copy.csv", size=1, mtime=1.0, now=101.0)
        ledger.mark_pending(INBOX / "s2" / "copy.csv", f"{abs(hash('x')):064x}"[-64:], now=101.0)
        classify(ledger, INBOX / "2024" / "s2" / "p9.csv", ResultStatus.UNKNOWN)

        assert len(ledger.results()) == 2  # views that count particles see each content once
        rows = ledger.results(duplicates=True)
        assert [(r.id, Path(r.source_path).name, r.duplicate_of) for r in rows] == [
            (rid, "p1.csv", None),
            (rid, "copy.csv", str(INBOX / "s1" / "p1.csv")),
            (rid + 1, "p9.csv", None),
        ]
        assert [Path(r.source_path).name for r in ledger.results(sample="s2", duplicates=True)] == [
            "copy.csv",
            "p9.csv",
        ]
        assert [Path(r.source_path).name for r in ledger.results(sample="2024/s2")] == ["p9.csv"]
        assert ledger.results(sample="2") == []  # a whole folder name, not a part of one

    def test_a_version_2_ledger_is_migrated_and_keeps_its_decisions(self, tmp_path: Path) -> None:
        path = tmp_path / "old.sqlite3"
        conn = sqlite3.connect(path, isolation_level=None)
        for step in _MIGRATIONS[:2]:
            for statement in step:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO results (id, sha256, source_path, spectrum_index, created_at, status, label, "
            "material, confidence, payload, model_version) "
            "VALUES (1, ?, '/inbox/s/p.csv', 0, 1.0, 'unknown', NULL, NULL, NULL, '{}', 'm')",
            ("a" * 64,),
        )
        conn.execute("INSERT INTO review VALUES (1, 'confirmed', 'PVC', 'ana', 2.0, 1.5)")
        conn.close()
        with Ledger(path) as ledger:
            (result,) = ledger.results()
        assert (result.status, result.label, result.material) == (ResultStatus.KNOWN, "PVC", None)
        assert result.decision is not None and result.decision.ref_ids == ()


class TestViews:
    def test_result_files_count_final_labels_and_carry_the_decision(self, tmp_path: Path) -> None:
        inbox = tmp_path / "inbox"
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            exporter = ResultsExporter(ledger, tmp_path / "results", [("lab", inbox)])
            ids = [classify(ledger, inbox / "s1" / f"p{i}.csv", ResultStatus.UNKNOWN) for i in range(3)]
            decide(ledger, ids[0], ReviewState.CONFIRMED, "PVC", now=200.0)
            decide(ledger, ids[1], ReviewState.REJECTED, None, now=201.0)
            target = exporter.write_folder(inbox / "s1")
        lines = [json.loads(line) for line in (target / "results.jsonl").read_text().splitlines()]
        first = lines[0]
        assert (first["status"], first["label"], first["sample"]) == ("known", "PVC", "s1")
        assert first["decision"] == {
            "state": "confirmed",
            "label": "PVC",
            "by": "ana",
            "at": "1970-01-01T00:03:20+00:00",
            "original_status": "unknown",
            "original_label": None,
            "original_confidence": None,
            "ref_ids": [7],
        }
        assert first["created_at"] == "1970-01-01T00:01:40+00:00"
        assert (first["best_hit"], first["best_r"]) == ("PE", 0.812)
        assert lines[2]["decision"] is None
        summary = {
            (r["status"], r["label"]): r["particles"] for r in csv.DictReader((target / "summary.csv").open())
        }
        assert summary == {("known", "PVC"): "1", ("rejected", ""): "1", ("unknown", ""): "1"}

    def test_the_table_fits_80_columns_one_line_per_result(self, ledger: Ledger) -> None:
        long_sample = INBOX / "2026-12-07_river-Rhine_site-Lobith_filter-0042"
        for i in range(3):
            classify(
                ledger, long_sample / f"particle_{i:05d}_exported-by-instrument.csv", ResultStatus.UNKNOWN
            )
        rid = classify(ledger, INBOX / "s1" / "p.csv", ResultStatus.KNOWN, label="PE", confidence=0.871)
        decide(ledger, rid, ReviewState.CONFIRMED, "polyvinyl chloride", now=200.0)
        rows = [result_row(r) for r in ledger.results()]
        console = stdout_console()
        console.width = 80
        with console.capture() as captured:
            console.print(results_table(rows, width=80))
        lines = captured.get().rstrip("\n").splitlines()
        assert max(len(line) for line in lines) <= 80
        body = [line for line in lines if line.strip() and not set(line.strip()) <= set("─━ ")]
        assert len(body) == 1 + len(rows), lines  # the header and one line per result
        assert "#" not in body[0].split()  # every file holds one spectrum: no index column
        assert any("confirmed" in line and "polyvin" in line for line in body)
        assert any("PE (0.812)" in line for line in body)  # three decimals: r 0.997 is not 1.00


class TestResultsCommand:
    @pytest.fixture
    def state(self, tmp_path: Path) -> Path:
        with Ledger.in_state_dir(tmp_path) as ledger:
            rid = classify(ledger, INBOX / "s1" / "p1.csv", ResultStatus.UNKNOWN, content="x")
            ledger.observe(INBOX / "s2" / "copy.csv", size=1, mtime=1.0, now=101.0)
            ledger.mark_pending(INBOX / "s2" / "copy.csv", f"{abs(hash('x')):064x}"[-64:], now=101.0)
            classify(ledger, INBOX / "s2" / "p2.csv", ResultStatus.UNKNOWN)
            decide(ledger, rid, ReviewState.CONFIRMED, "PVC", now=200.0)
        return tmp_path

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> str:
        assert main(["results", *args]) == 0
        return capsys.readouterr().out

    def test_csv_has_iso_times_samples_decisions_and_duplicates(
        self, state: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        rows = list(csv.DictReader(io.StringIO(self.run(capsys, "--state", str(state), "--format", "csv"))))
        assert [(r["sample"], Path(r["source"]).name, r["status"], r["label"]) for r in rows] == [
            ("s1", "p1.csv", "known", "PVC"),
            ("s2", "copy.csv", "known", "PVC"),
            ("s2", "p2.csv", "unknown", ""),
        ]
        assert rows[0]["created_at"] == "1970-01-01T00:01:40+00:00"
        assert (rows[0]["decision"], rows[0]["decided_by"], rows[0]["original_status"]) == (
            "confirmed",
            "ana",
            "unknown",
        )
        assert rows[1]["duplicate_of"] == str(INBOX / "s1" / "p1.csv") and rows[0]["duplicate_of"] == ""
        assert (rows[0]["best_hit"], rows[0]["best_r"]) == ("PE", "0.812")

    def test_the_table_marks_duplicates_and_analyst_decisions(
        self, state: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        table = self.run(capsys, "--state", str(state)).splitlines()
        assert any("copy.csv (dup)" in line and "confirmed" in line for line in table), table
        assert any("p1.csv" in line and "(dup)" not in line and "confirmed" in line for line in table)

    def test_status_and_sample_filters_use_the_final_label(
        self, state: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        unknown = self.run(capsys, "--state", str(state), "--status", "unknown", "--format", "jsonl")
        assert [json.loads(line)["source"] for line in unknown.splitlines()] == [str(INBOX / "s2" / "p2.csv")]
        s2 = self.run(capsys, "--state", str(state), "--sample", "s2", "--format", "jsonl")
        assert [Path(json.loads(line)["source"]).name for line in s2.splitlines()] == ["copy.csv", "p2.csv"]


def mpwatch(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MPWATCH, *args], capture_output=True, text=True, timeout=120, check=check, cwd=REPO_ROOT
    )


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


class TestTheReviewLoop:
    """A daemon on a port nobody configured; an unknown particle; ``mpwatch confirm --state``."""

    def test_a_decision_reaches_results_summary_and_console(
        self, tmp_path: Path, pet_particles: list[Spectrum], other_particles: list[Spectrum]
    ) -> None:
        library_dir = save_library_without_pet(tmp_path / "library")
        config = write_config(tmp_path, library_dir)  # http.port 0: the kernel picks a free one
        state = tmp_path / "state"
        log = tmp_path / "daemon.log"
        with daemon_process(config, state, log) as url:
            assert url != "http://127.0.0.1:9108"
            drop(tmp_path / "inbox" / "filter-1", pet_particles[:1], "pet")
            particles = drop(tmp_path / "inbox" / "filter-1", other_particles[:2], "particle")
            sample = tmp_path / "inbox" / "filter-1"
            (sample / "copy.csv").write_bytes(particles[0].read_bytes())  # a duplicate
            (sample / "notes.txt").write_text("Filtered 3 May at the river bank.\n")  # not a spectrum
            (sample / "cut.csv").write_text("wavenumber,absorbance\n1000,0.1\n")  # a damaged one
            db = state / "ledger.sqlite3"
            wait_until(lambda: ledger_count(db, "SELECT count(*) FROM results") == 3)
            wait_until(lambda: ledger_count(db, "SELECT count(*) FROM files WHERE state != 'seen'") == 6)

            # 1. the analyst finds the unknown and confirms it, knowing only the state folder
            (unknown,) = jsonl(
                mpwatch(
                    "results", "--state", str(state), "--status", "unknown", "--format", "jsonl"
                ).stdout
            )
            rid = str(unknown["result_id"])
            first = mpwatch("confirm", "--state", str(state), rid, "--label", HELD_OUT, "--by", "ana")
            outcome = json.loads(first.stdout)
            assert outcome["kind"] == "new_class" and outcome["label"] == HELD_OUT
            assert f"result {rid}: {HELD_OUT}, a new class in the library" in first.stderr

            # 2. the same decision again changes nothing, and says so
            again = mpwatch("confirm", "--state", str(state), rid, "--label", HELD_OUT, "--by", "ana")
            repeated = json.loads(again.stdout)
            assert repeated["kind"] == "unchanged"
            assert repeated["library_version"] == outcome["library_version"]
            assert repeated["ref_ids"] == outcome["ref_ids"]
            assert "nothing changed" in again.stderr

            # 3. results: the final label, the decision, and no unknown left
            rows = {
                str(r["result_id"]): r
                for r in jsonl(mpwatch("results", "--state", str(state), "--format", "jsonl").stdout)
            }
            final = rows[rid]
            assert (final["status"], final["label"]) == ("known", HELD_OUT)
            assert final["decision"]["by"] == "ana" and final["decision"]["original_status"] == "unknown"
            assert (
                mpwatch(
                    "results", "--state", str(state), "--status", "unknown", "--format", "jsonl"
                ).stdout
                == ""
            )

            # 4. the sample's summary.csv counts it under its final label
            summary = state / "results" / "lab" / "filter-1" / "summary.csv"

            def pet_in_summary() -> bool:
                if not summary.exists():
                    return False
                counted = {
                    (r["status"], r["label"]): r["particles"] for r in csv.DictReader(summary.open())
                }
                return counted.get(("known", HELD_OUT)) == "1" and ("unknown", "") not in counted

            wait_until(pet_in_summary, timeout=30)
            lines = jsonl((summary.parent / "results.jsonl").read_text())
            assert [r["decision"]["label"] for r in lines if r["decision"]] == [HELD_OUT]

            # 5. the console: the overview counts it, the review page lists the decision
            with urllib.request.urlopen(url + "/", timeout=30) as response:
                overview = response.read().decode()
            assert f'<tr><td>{HELD_OUT}</td><td class="n">1</td>' in overview
            with urllib.request.urlopen(url + "/review", timeout=30) as response:
                review = response.read().decode()
            assert f'id="decision-{rid}"' in review and f"<strong>{HELD_OUT}</strong>" in review
        said = log.read_text(encoding="utf-8")
        assert not (state / ADDRESS_FILE).exists()
        # each event is logged once: the quarantine, the ignored note, the new class, the address
        events = [line.split(" ", 2)[-1] for line in said.splitlines() if line.strip()]
        assert len(events) == len(set(events)), said
        assert sum("cut.csv quarantined" in e for e in events) == 1
        assert sum("notes.txt ignored" in e for e in events) == 1
        assert sum("listening on http" in e for e in events) == 1
        stopped = mpwatch("confirm", "--state", str(state), rid, "--label", HELD_OUT, check=False)
        assert stopped.returncode == 2 and "no daemon is running" in stopped.stderr
