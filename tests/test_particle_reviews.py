"""A map's particles are reviewed: their mean spectra are kept, and a decision counts.

An FPA lab images whole filters: its particles come from maps, not from files of spectra. Every
particle keeps its mean spectrum (``particle_spectra``) and an unknown one waits in
``particle_review``; a confirmation adds that spectrum to the library and every particles view
(``mpwatch results --particles``, the sample's summary.csv and report, the console's Maps page)
counts the final label.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.config import load_config
from daemon.growth.library import ConfirmError
from daemon.growth.particles import ParticleDecisions
from daemon.service import Daemon
from daemon.store.ledger import Ledger, ReviewState
from engine.analysis.evaluate import load_source
from engine.core.spectrum import Spectrum
from tests.conftest import MPWATCH, REPO_ROOT, SHARED_DATA, daemon_process, ledger_count, wait_until
from tests.test_console import HELD_OUT, By, WebDriver, browser, save_library_without_pet, screenshot, wait
from tests.test_daemon import Running, write_config
from tests.test_maps import AXIS, PAIR_LEFT, RECTANGLE, _disc, _filter, _paint, _write
from tests.test_report import deliver, map_particle, map_record, sha

__all__ = ["browser"]  # the fixture the browser test uses

MEAN = Spectrum.create(AXIS, np.exp(-(((AXIS - 1720.0) / 20.0) ** 2)) + 0.01, y_unit="absorbance")


def _unknown_map(ledger: Ledger, path: str, *, now: float, content: str = "map") -> None:
    """A map of one PE particle and one unknown particle (index 1) whose mean spectrum is ``MEAN``."""
    particles = [map_particle(0, "PE", 120.0), map_particle(1, "", 40.0, status="unknown")]
    record = replace(map_record(particles), spectra={1: MEAN})
    deliver(ledger, path, content, now=now, map_record=record)


class TestTheLedger:
    def test_an_unknown_particle_waits_with_its_mean_spectrum(self, tmp_path: Path) -> None:
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            _unknown_map(ledger, "/inbox/filter-1/map.hdr", now=1.0)
            (review,) = ledger.open_particle_reviews()
            assert (review.particle.index, review.particle.status, review.state) == (1, "unknown", "open")
            kept = ledger.particle_spectrum(review.particle.id)
            np.testing.assert_array_equal(kept.wavenumbers, MEAN.wavenumbers.astype(np.float32))
            np.testing.assert_array_equal(kept.values, MEAN.values.astype(np.float32))
            assert kept.y_unit == "absorbance"
            assert ledger.particle_review_counts()[ReviewState.OPEN] == 1
            known = ledger.particles()[0]
            assert ledger.particle_review(known.id) is None  # a known particle is not reviewed

    def test_a_decision_is_laid_over_the_particle_everywhere(self, tmp_path: Path) -> None:
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            _unknown_map(ledger, "/inbox/filter-1/map.hdr", now=1.0)
            (review,) = ledger.open_particle_reviews()
            pid = review.particle.id
            ledger.decide_particle_review(
                pid, state=ReviewState.CONFIRMED, label="PET", decided_by="ana", now=2.0, ref_ids=[7]
            )
            particle = ledger.particles(sample="filter-1")[1]
            assert (particle.status, particle.label, particle.values["family"]) == (
                "known",
                "PET",
                "polyester",
            )
            assert particle.values["confidence"] is None  # no model gave this label
            row = particle.as_row()
            assert row["decision"]["by"] == "ana" and row["decision"]["original_status"] == "unknown"
            assert row["decision"]["ref_ids"] == [7]
            assert ledger.open_particle_reviews() == []
            ledger.decide_particle_review(
                pid, state=ReviewState.REJECTED, label=None, decided_by="ana", now=3.0
            )
            rejected = ledger.particles()[1]
            assert (rejected.status, rejected.label) == ("rejected", None)

    def test_a_rewritten_map_replaces_the_review_of_its_earlier_content(self, tmp_path: Path) -> None:
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            _unknown_map(ledger, "/inbox/filter-1/map.hdr", now=1.0)
            (before,) = ledger.open_particle_reviews()
            _unknown_map(ledger, "/inbox/filter-1/map.hdr", now=3.0, content="map, measured again")
            (after,) = ledger.open_particle_reviews()
            assert after.particle.sha256 != before.particle.sha256
            assert ledger.particle_review_counts()[ReviewState.OPEN] == 1
            earlier = ledger.particle_review(before.particle.id)
            assert earlier is not None and earlier.particle.superseded_at is not None
            assert after.particle.superseded_at is None

    def test_a_known_particle_is_queued_when_decided_if_its_spectrum_is_kept(self, tmp_path: Path) -> None:
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            _unknown_map(ledger, "/inbox/filter-1/map.hdr", now=1.0)  # the PE particle's spectrum not kept
            known = ledger.particles()[0]
            with pytest.raises(LookupError, match="no review"):
                ledger.decide_particle_review(
                    known.id, state=ReviewState.CONFIRMED, label="PP", decided_by="ana", now=2.0
                )
            with pytest.raises(LookupError, match="no spectrum kept"):
                ledger.enqueue_particle_review(known.id, now=2.0)
            particles = [map_particle(0, "PE", 120.0), map_particle(1, "", 40.0, status="unknown")]
            kept = replace(map_record(particles), spectra={0: MEAN, 1: MEAN})  # as the daemon keeps them
            deliver(ledger, "/inbox/filter-2/map.hdr", "another map", now=3.0, map_record=kept)
            pe = ledger.particles(sample="filter-2")[0]
            assert ledger.particle_review(pe.id) is None  # known: not queued with its map
            assert ledger.enqueue_particle_review(pe.id, now=4.0)
            assert not ledger.enqueue_particle_review(pe.id, now=5.0)  # queued once
            ledger.decide_particle_review(
                pe.id, state=ReviewState.REJECTED, label=None, decided_by="ana", now=6.0
            )
            assert ledger.particles(sample="filter-2")[0].status == "rejected"


def _pe_and_pet_map(folder: Path) -> Path:
    """A 64 x 64 map: a PE rectangle, a PET disc and a PET square painted from pristine FLOPP spectra."""
    painted: dict[str, Any] = {}
    for s in load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP"):
        label = s.metadata["label"]
        if label in ("PE", HELD_OUT) and label not in painted:
            transmittance = np.interp(AXIS, s.wavenumbers, s.values)
            absorbance = -np.log10(np.clip(transmittance / 100.0, 1e-4, None))
            absorbance -= absorbance.min()
            painted[label] = (0.5 * absorbance / absorbance.max()).astype(np.float32)
    cube = _filter(0)
    _paint(cube, RECTANGLE, painted["PE"], 1)
    _paint(cube, _disc(), painted[HELD_OUT], 2)
    _paint(cube, PAIR_LEFT, painted[HELD_OUT], 3)
    return _write(folder, cube)


def mpwatch(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MPWATCH, *args], capture_output=True, text=True, timeout=120, check=check, cwd=REPO_ROOT
    )


def _particles(state: Path, *extra: str) -> list[dict[str, Any]]:
    out = mpwatch("results", "--state", str(state), "--particles", "--format", "jsonl", *extra).stdout
    return [json.loads(line) for line in out.splitlines()]


class TestTheReviewLoopOfAMap:
    """A daemon, a map whose PET particles the library lacks, ``mpwatch confirm --particle``."""

    def test_a_particle_decision_reaches_the_particles_the_summary_and_the_console(
        self, tmp_path: Path
    ) -> None:
        config = write_config(tmp_path, save_library_without_pet(tmp_path / "library"))
        state = tmp_path / "state"
        with daemon_process(config, state, tmp_path / "daemon.log") as url:
            _pe_and_pet_map(tmp_path / "inbox" / "filter-1")
            db = state / "ledger.sqlite3"
            wait_until(lambda: ledger_count(db, "SELECT count(*) FROM particles") == 3, timeout=60)

            # 1. the unknown particles are listed with the ids to decide them by, and wait in the API
            unknown = _particles(state, "--status", "unknown")
            ids = [str(p["id"]) for p in unknown]
            assert len(ids) == 2 and all(p["decision"] is None for p in unknown)
            with urllib.request.urlopen(url + "/api/particle-reviews", timeout=30) as response:
                assert [str(r["id"]) for r in json.loads(response.read())] == ids
            with urllib.request.urlopen(url + "/maps", timeout=30) as response:
                listed = response.read().decode()
            assert all(f'data-particle-id="{i}"' in listed for i in ids)

            # 2. both confirmed as PET in one action: a new class, one library version; the same
            #    decision again changes nothing
            first = mpwatch("confirm", "--state", str(state), "--particle", *ids, "--label", HELD_OUT)
            outcome = json.loads(first.stdout)
            assert outcome["kind"] == "new_class" and outcome["label"] == HELD_OUT
            assert len(outcome["ref_ids"]) == 2 and f"particles {', '.join(ids)}" in first.stderr
            again = json.loads(
                mpwatch("confirm", "--state", str(state), "--particle", *ids, "--label", HELD_OUT).stdout
            )
            assert again["kind"] == "unchanged" and again["library_version"] == outcome["library_version"]

            # 3. the particles: the final label with its decision, no unknown left
            final = {str(p["id"]): p for p in _particles(state)}
            for i in ids:
                assert (final[i]["status"], final[i]["label"], final[i]["family"]) == (
                    "known",
                    HELD_OUT,
                    "polyester",
                )
                assert final[i]["decision"]["original_status"] == "unknown"
            assert sorted(r for i in ids for r in final[i]["decision"]["ref_ids"]) == sorted(
                outcome["ref_ids"]
            )
            assert _particles(state, "--status", "unknown") == []

            # 4. the sample's summary.csv counts it under its final label
            summary = state / "results" / "lab" / "filter-1" / "summary.csv"

            def pet_in_summary() -> bool:
                if not summary.exists():
                    return False
                counted = {(r["status"], r["label"]): r["particles"] for r in csv.DictReader(summary.open())}
                return counted.get(("known", HELD_OUT)) == "2" and ("unknown", "") not in counted

            wait_until(pet_in_summary, timeout=30)

            # ... and so do the particles' CSV and the sample's report (particles.csv)
            table = mpwatch("results", "--state", str(state), "--particles", "--format", "csv").stdout
            decided = {r["id"]: r for r in csv.DictReader(io.StringIO(table))}
            assert all(decided[i]["decision"] == "confirmed" and decided[i]["decided_by"] for i in ids)
            assert all(decided[i]["original_status"] == "unknown" for i in ids)
            assert _particles(state, "--since", "2100-01-01") == []
            mpwatch(
                "report", "--state", str(state), "--sample", "filter-1", "--out", str(tmp_path / "reports")
            )
            listed = list(csv.DictReader((tmp_path / "reports" / "filter-1" / "particles.csv").open()))
            assert sorted(r["decision"] for r in listed) == ["", "confirmed", "confirmed"]

            # 5. the console's Maps page counts it and has nothing left to decide
            with urllib.request.urlopen(url + "/maps", timeout=30) as response:
                page = response.read().decode()
            assert f"{HELD_OUT}: 2" in page and "data-particle-id" not in page

            # 6. a particle the classifier labelled can be decided too: its own label is positive
            #    feedback (the library stays as it is); an id of no particle is refused
            (known,) = (i for i, p in final.items() if i not in ids)
            kept = json.loads(
                mpwatch("confirm", "--state", str(state), "--particle", known, "--label", "PE").stdout
            )
            assert kept["kind"] == "positive" and kept["library_version"] == outcome["library_version"]
            (pe,) = (p for p in _particles(state) if str(p["id"]) == known)
            assert (pe["status"], pe["label"], pe["decision"]["state"]) == ("known", "PE", "confirmed")
            refused = mpwatch(
                "confirm", "--state", str(state), "--particle", "99999", "--label", "PP", check=False
            )
            assert refused.returncode != 0 and "no particle with id 99999" in refused.stderr


class TestChangedDecisions:
    def test_a_new_label_takes_back_the_first_and_a_rejection_takes_back_the_last(
        self, tmp_path: Path
    ) -> None:
        config = load_config(write_config(tmp_path, save_library_without_pet(tmp_path / "library")))
        with Running(Daemon(config)) as d:
            _pe_and_pet_map(tmp_path / "inbox" / "filter-1")
            wait_until(lambda: len(d.ledger.open_particle_reviews()) == 2, timeout=60)
            first, second = d.ledger.open_particle_reviews()
            pid = first.particle.id
            decisions = ParticleDecisions(d.growth)
            pp_before = d.models.get().library.class_counts()["PP"]

            def other() -> tuple[str | None, str | None]:
                review = d.ledger.particle_review(second.particle.id)
                assert review is not None
                return review.label, review.decided_by

            slip = decisions.confirm([pid], "PP", decided_by="ana")  # a slip of the label
            assert slip.kind == "added" and d.models.get().library.class_counts()["PP"] == pp_before + 1
            label, by = other()  # the other PET particle now matches the slip's reference
            assert label == "PP" and by is not None and by.startswith("model ")
            mended = decisions.confirm([pid], HELD_OUT, decided_by="ana")
            assert mended.kind == "new_class" and f"references {slip.ref_ids[0]} removed" in mended.note
            assert "opened and checked again" in mended.note
            label, by = other()  # what the model had closed on the slip is judged again
            assert label == HELD_OUT and by is not None and by.startswith("model ")
            library = d.models.get().library
            assert library.class_counts()["PP"] == pp_before and library.class_counts()[HELD_OUT] == 1
            particle = d.ledger.particles(sha256=first.particle.sha256)[first.particle.index]
            assert (particle.status, particle.label) == ("known", HELD_OUT)

            # particles of two techniques are refused together, before anything changes
            shift = np.arange(200.0, 3200.0, 2.0)
            band = Spectrum.create(
                shift, 100.0 + 900.0 * np.exp(-(((shift - 1001.0) / 6.0) ** 2)), technique="raman"
            )
            raman = replace(map_record([map_particle(0, "", 20.0, status="unknown")]), spectra={0: band})
            deliver(
                d.ledger,
                str(tmp_path / "inbox" / "filter-2" / "si.wdf"),
                "raman map",
                now=1e9,
                map_record=raman,
            )
            (raman_review,) = d.ledger.open_particle_reviews(sha256=sha("raman map"))
            version = d.models.get().library.version
            with pytest.raises(ConfirmError, match="one technique"):
                decisions.confirm([pid, raman_review.particle.id], "PS", decided_by="ana")
            assert d.models.get().library.version == version
            assert d.models.get().library.class_counts()[HELD_OUT] == 1  # the confirmation as PET stands
            again = str(tmp_path / "inbox" / "filter-2" / "si.wdf")
            deliver(d.ledger, again, "raman map, measured again", now=2e9, map_record=raman)  # rewritten
            with pytest.raises(ConfirmError, match="earlier content"):
                decisions.confirm([raman_review.particle.id], "PS", decided_by="ana")

            rejected = decisions.reject([pid], decided_by="ana")
            assert rejected.kind == "rejected" and f"references {mended.ref_ids[0]} removed" in rejected.note
            assert HELD_OUT not in d.models.get().library.class_counts()
            reopened = d.ledger.particle_review(second.particle.id)
            assert reopened is not None and str(reopened.state) == "open"  # nothing in the library is PET now
            particle = d.ledger.particles(sha256=first.particle.sha256)[first.particle.index]
            assert (particle.status, particle.label) == ("rejected", None)
            assert decisions.reject([pid], decided_by="ana").kind == "unchanged"
            pe = next(p for p in d.ledger.particles() if p.label == "PE")  # a known particle, relabelled
            relabelled = decisions.confirm([pe.id], "PP", decided_by="ana")
            assert relabelled.kind == "added" and len(relabelled.ref_ids) == 1
            assert d.ledger.particle(pe.id) is not None and d.ledger.particle(pe.id).label == "PP"


class TestMapsOfOneShape:
    def test_two_filters_whose_maps_share_a_header_are_two_maps(self, tmp_path: Path) -> None:
        # An export script writes the same header for maps of one shape; the header alone was the
        # map's identity, and the second filter was skipped as a duplicate of the first.
        config = load_config(write_config(tmp_path, save_library_without_pet(tmp_path / "library")))
        with Running(Daemon(config)) as d:
            first = _pe_and_pet_map(tmp_path / "inbox" / "filter-1")
            wait_until(lambda: len(d.ledger.maps()) == 1, timeout=60)
            second = _write(tmp_path / "inbox" / "filter-2", _filter(5))  # another filter, nothing on it
            assert second.read_bytes() == first.read_bytes()
            wait_until(lambda: len(d.ledger.maps()) == 2, timeout=60)
            assert {p.sample for p in d.ledger.particles()} == {"filter-1"}
            record = d.ledger.file(second)
            assert record is not None and record.duplicate_of is None


class TestTheMapsPage:
    def test_an_analyst_confirms_a_particle_under_its_map(self, tmp_path: Path, browser: WebDriver) -> None:
        config = load_config(write_config(tmp_path, save_library_without_pet(tmp_path / "library")))
        with Running(Daemon(config)) as d:
            _pe_and_pet_map(tmp_path / "inbox" / "filter-1")
            wait_until(lambda: len(d.ledger.open_particle_reviews()) == 2, timeout=60)
            review, waiting = d.ledger.open_particle_reviews()
            version_before = d.models.get().library.version
            browser.get(f"http://127.0.0.1:{d.http.port}/maps")
            card = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "article.particle-review"))
            assert int(card.get_attribute("data-particle-id")) == review.particle.id
            assert "2 to decide" in browser.find_element(By.TAG_NAME, "nav").text
            screenshot(browser, "maps-particle-review")
            browser.find_element(By.ID, "analyst").send_keys("ana")
            card.find_element(By.CSS_SELECTOR, "[data-role=new-label]").send_keys(HELD_OUT)
            card.find_element(By.CSS_SELECTOR, "button[data-action=confirm-new]").click()
            status = card.find_element(By.CSS_SELECTOR, "[data-role=status]")
            wait(browser, lambda b: status.text.startswith(f"Confirmed as {HELD_OUT}"))
            assert d.models.get().library.version == version_before + 1
            decided = d.ledger.particle_review(review.particle.id)
            assert decided is not None and (str(decided.state), decided.decided_by) == ("confirmed", "ana")
            # the other PET particle was re-checked against the grown library, and is known now
            assert "1 other open reviews are now known" in status.text
            known = d.ledger.particle_review(waiting.particle.id)
            assert known is not None and str(known.state) == "confirmed" and known.label == HELD_OUT
            assert known.decided_by.startswith("model ")
            browser.refresh()
            wait(browser, lambda b: f"{HELD_OUT}: 2" in b.page_source)
            assert not browser.find_elements(By.CSS_SELECTOR, "article.particle-review")
