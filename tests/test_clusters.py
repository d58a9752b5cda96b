"""Unknowns clustered for review: alike spectra grouped, each group decided in one action.

The engine part groups rows by Pearson r (DBSCAN). The daemon part runs a daemon in a
thread on FLOPP pristine without PET, as tests/test_console.py does, and drops real
environmental PET particles (FLOPP-e) into its inbox with one particle of another
polymer: the PET spectra come out unknown and alike, the other one unknown and alone.
The tests of the daemon share that one daemon and run in order: the cluster is listed,
drawn, refused when stale or unreadable, rejected, then confirmed. A last test has a
daemon of its own, and an analyst confirms a cluster from the console in headless
Chromium (skipped without it, as in tests/test_console.py).
"""

from __future__ import annotations

import contextlib
import errno
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from daemon.cli import main
from daemon.config import load_config
from daemon.growth import library as growth_library
from daemon.service import Daemon
from daemon.store.ledger import ReviewItem, StoredResult
from engine.core.labels import scoring_label
from engine.core.library import library_log
from engine.core.spectrum import Spectrum
from engine.models.clusters import cluster_rows
from tests.conftest import wait_until
from tests.test_console import (
    HELD_OUT,
    browser,
    csp_violations,
    drop,
    particles,
    pet_particles,
    save_library_without_pet,
    wait,
)
from tests.test_daemon import Running, write_config

with contextlib.suppress(ImportError):  # without the dev extras the browser fixture skips its test
    from selenium.webdriver.common.by import By

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = ["browser", "particles", "pet_particles"]  # fixtures this module uses

#: How many PET particles the queue gets: one cluster of them.
N_PET = 5


# --------------------------------------------------------------------------- the engine


def synthetic(centres: list[float], n: int, rng: np.random.Generator, *, noise: float = 0.02) -> np.ndarray:
    """``n`` noisy spectra of one made-up polymer: Gaussian bands at ``centres`` on 300 points."""
    x = np.arange(300, dtype=np.float64)
    clean = sum(np.exp(-0.5 * ((x - c) / 6.0) ** 2) for c in centres)
    return clean + rng.normal(0.0, noise, size=(n, x.size))


def test_the_clusters_table_never_cuts_the_id_it_is_confirmed_by() -> None:
    """In 80 columns a long closest class squeezed the id to ``c9dd6…``, which confirm refused."""
    from daemon.cli.run import clusters_table
    from engine.cli.common import stdout_console

    cluster = {
        "cluster_id": "c9dd6a1f07b2",
        "size": 6,
        "mean_r": 0.91,
        "lowest_r": 0.85,
        "candidate": "pthalate and propyl alcohol mix",
        "candidate_count": 6,
        "candidate_r": 0.11,
        "technique": "ir",
        "representative": 17,
        "representative_result": {"source": "/in/s1/particle_00017_exported.csv"},
    }
    console = stdout_console()
    console.width = 80
    with console.capture() as captured:
        console.print(clusters_table([cluster]))
    lines = captured.get().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any("c9dd6a1f07b2" in line for line in lines), lines
    assert "closest class" in captured.get()


class TestClusterRows:
    def test_two_polymers_make_two_clusters_and_a_lone_spectrum_stays_out(self) -> None:
        rng = np.random.default_rng(7)
        first = synthetic([60, 140, 220], 6, rng)
        second = synthetic([90, 180, 260], 4, rng)
        lone = synthetic([30], 1, rng)
        rows = np.vstack([first, lone, second])  # the lone one between them
        groups = cluster_rows(rows, min_r=0.9)
        assert [g.rows for g in groups] == [(0, 1, 2, 3, 4, 5), (7, 8, 9, 10)]  # the largest first
        for group in groups:
            assert group.medoid in group.rows
            assert 0.9 <= group.mean_r <= 1.0
            assert group.lowest_r <= group.mean_r
        assert all(6 not in g.rows for g in groups)

    def test_a_group_smaller_than_min_samples_is_no_cluster(self) -> None:
        rng = np.random.default_rng(1)
        rows = np.vstack([synthetic([60, 140], 3, rng), synthetic([200], 6, rng)])
        assert [g.rows for g in cluster_rows(rows, min_r=0.9, min_samples=4)] == [(3, 4, 5, 6, 7, 8)]
        assert cluster_rows(rows[:1], min_r=0.9) == []

    def test_alike_rows_part_when_min_r_is_above_their_r(self) -> None:
        rng = np.random.default_rng(3)
        rows = synthetic([60, 140], 5, rng, noise=0.15)  # r between them 0.72 to 0.76
        assert [g.rows for g in cluster_rows(rows, min_r=0.7)] == [(0, 1, 2, 3, 4)]
        assert cluster_rows(rows, min_r=0.9) == []

    @pytest.mark.parametrize(
        ("features", "options", "message"),
        [
            ([1.0, 2.0, 3.0], {}, "2-D"),
            ([[1.0, np.nan], [1.0, 2.0]], {}, "finite"),
            ([[1.0, 2.0], [2.0, 1.0]], {"min_r": 1.5}, "min_r"),
            ([[1.0, 2.0], [2.0, 1.0]], {"min_r": -1.0}, "min_r"),
            ([[1.0, 2.0], [2.0, 1.0]], {"min_samples": 1}, "min_samples"),
        ],
    )
    def test_bad_input_is_refused_with_the_reason(
        self, features: Any, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            cluster_rows(features, **options)


# --------------------------------------------------------------------------- the daemon


@dataclass
class Queue:
    """The shared daemon, the results of the PET particles and of the lone particle."""

    daemon: Daemon
    pet: list[StoredResult]
    lone: StoredResult

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.daemon.http.port}{path}"

    @property
    def version(self) -> int:
        return int(self.daemon.models.get().library.version or 0)


def result_of(daemon: Daemon, path: Path) -> StoredResult:
    record = daemon.ledger.file(path)
    assert record is not None and record.sha256 is not None, path
    (result,) = daemon.ledger.results(sha256=record.sha256)
    return result


def review_of(daemon: Daemon, result_id: int) -> ReviewItem:
    review = daemon.ledger.review(result_id)
    assert review is not None, result_id
    return review


def request(
    url: str, body: dict[str, Any] | None = None, *, content_type: str = "application/json"
) -> tuple[int, Any]:
    """Status and JSON answer of a GET (or a POST of ``body``); HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    sent = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(sent, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def queue(
    tmp_path_factory: pytest.TempPathFactory, particles: list[Spectrum], pet_particles: list[Spectrum]
) -> Iterator[Queue]:
    tmp = tmp_path_factory.mktemp("clusters")
    library = save_library_without_pet(tmp / "library")
    config = load_config(write_config(tmp, library))
    # the last polyamide particle: its best r to the library's PA (0.82) stays under PA's threshold
    lone = [s for s in particles if scoring_label(s.metadata["label"]) == "PA"][-1]
    with Running(Daemon(config)) as d:
        pet = drop(tmp / "inbox" / "filter-01", pet_particles[:N_PET], "pet")
        alone = drop(tmp / "inbox" / "filter-01", [lone], "pa")
        wait_until(lambda: d.ledger.counts()["done"] == N_PET + 1, timeout=60)
        yield Queue(d, [result_of(d, path) for path in pet], result_of(d, alone[0]))


def listed(queue: Queue) -> list[dict[str, Any]]:
    status, clusters = request(queue.url("/api/clusters"))
    assert status == 200
    return list(clusters)


class TestTheClusteredQueue:
    def test_the_unknowns_of_a_polymer_the_library_lacks_are_one_cluster(self, queue: Queue) -> None:
        assert {str(r.status) for r in queue.pet} == {"unknown"}
        assert str(queue.lone.status) == "unknown"
        (cluster,) = listed(queue)
        assert cluster["result_ids"] == sorted(r.id for r in queue.pet)
        assert cluster["size"] == N_PET and cluster["technique"] == "ir"
        assert cluster["representative"] in cluster["result_ids"]
        assert cluster["representative_result"]["result_id"] == cluster["representative"]
        assert cluster["mean_r"] >= 0.9 and cluster["lowest_r"] <= cluster["mean_r"]
        assert cluster["candidate"] and 1 <= cluster["candidate_count"] <= N_PET
        open_ids = {item.result.id for item in queue.daemon.ledger.open_reviews()}
        assert queue.lone.id in open_ids  # a review of its own, in no cluster

    def test_the_console_draws_the_cluster_and_one_decision_for_all(self, queue: Queue) -> None:
        (cluster,) = listed(queue)
        cid = cluster["cluster_id"]
        with urllib.request.urlopen(queue.url("/review"), timeout=60) as response:
            page = response.read().decode()
        start = page.index(f'<article class="cluster" id="cluster-{cid}"')
        block = page[start : page.index("</article>", start)]
        assert f'data-cluster-id="{cid}"' in block and f"{N_PET} spectra" in block
        assert f"result {cluster['representative']}" in block
        assert block.count("<polyline") >= 2  # the representative over its hits
        assert f'data-label="{cluster["candidate"]}">Confirm all {N_PET} as' in block
        assert f"Confirm all {N_PET} as the new label" in block and 'data-action="reject"' in block
        for result in queue.pet:  # each member's own card points to its cluster
            card = page[page.index(f'id="review-{result.id}"') :]
            assert card[: card.index("</article>")].count(f'href="#cluster-{cid}"') == 1
        lone = page[page.index(f'id="review-{queue.lone.id}"') :]
        assert "#cluster-" not in lone[: lone.index("</article>")]
        with urllib.request.urlopen(queue.url("/console.js"), timeout=60) as response:
            assert "/api/clusters/" in response.read().decode()

    def test_mpwatch_clusters_lists_it_and_a_cluster_never_listed_is_refused(
        self, queue: Queue, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (cluster,) = listed(queue)
        base = queue.url("")
        assert main(["clusters", "--url", base]) == 0
        table = capsys.readouterr().out
        assert cluster["cluster_id"] in table and f" {cluster['representative']} pet_" in table
        assert main(["clusters", "--url", base, "--format", "jsonl"]) == 0
        assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [cluster]

        version = queue.version
        assert main(["confirm", "--cluster", "c00000000", "--label", HELD_OUT, "--url", base]) == 2
        assert "the daemon refused: no cluster c00000000" in capsys.readouterr().err
        status, answer = request(queue.url("/api/clusters/c00000000/confirm"), {"label": HELD_OUT})
        assert status == 409 and "GET /api/clusters" in answer["error"]
        status, _ = request(
            queue.url(f"/api/clusters/{cluster['cluster_id']}/confirm"),
            {"label": HELD_OUT},
            content_type="text/plain",
        )
        assert status == 415  # the write guard of every write route
        assert queue.version == version and listed(queue) == [cluster]

    def test_an_unreadable_member_refuses_the_whole_cluster(
        self, queue: Queue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (cluster,) = listed(queue)
        last = review_of(queue.daemon, cluster["result_ids"][-1]).result
        read = growth_library.read_spectra

        def gone(path: str | Path) -> list[Spectrum]:
            if str(path) == last.source_path:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
            return read(path)

        monkeypatch.setattr(growth_library, "read_spectra", gone)  # the file lost from the share
        version = queue.version
        status, answer = request(
            queue.url(f"/api/clusters/{cluster['cluster_id']}/confirm"), {"label": HELD_OUT}
        )
        assert status == 422
        assert f"cannot re-read {last.source_path} for result {last.id}" in answer["error"]
        assert f"none of the {N_PET} results was confirmed" in answer["error"]
        assert queue.version == version
        assert HELD_OUT not in queue.daemon.models.get().library.class_counts()
        assert {str(review_of(queue.daemon, i).state) for i in cluster["result_ids"]} == {"open"}

    def test_a_cluster_is_rejected_then_confirmed_in_one_library_version(
        self, queue: Queue, capsys: pytest.CaptureFixture[str]
    ) -> None:
        d = queue.daemon
        (cluster,) = listed(queue)
        cid, members = cluster["cluster_id"], cluster["result_ids"]
        confirm = queue.url(f"/api/clusters/{cid}/confirm")
        version = queue.version
        versions_on_disk = len(library_log(d.growth.library_dir))

        # 1. rejected as a whole: every member rejected, the library untouched
        status, rejected = request(confirm, {"reject": True, "decided_by": "ana"})
        assert status == 200 and rejected["kind"] == "rejected" and rejected["result_ids"] == members
        assert {str(review_of(d, i).state) for i in members} == {"rejected"}
        assert queue.version == version and listed(queue) == []

        # 2. the analyst thinks again: the same id still names the spectra seen, now confirmed
        status, outcome = request(confirm, {"label": HELD_OUT, "decided_by": "ana"})
        assert status == 200, outcome
        assert outcome["kind"] == "new_class" and outcome["label"] == HELD_OUT
        assert outcome["library_version"] == version + 1 == queue.version  # one version for all
        assert len(library_log(d.growth.library_dir)) == versions_on_disk + 1
        assert len(set(outcome["ref_ids"])) == N_PET
        assert d.models.get().library.class_counts()[HELD_OUT] == N_PET
        assert outcome["seconds_to_serve"] >= 0  # measured, and timed in benchmarks/bench_growth.py
        refs = []
        for result_id in members:
            review = review_of(d, result_id)
            assert str(review.state) == "confirmed"
            assert review.label == HELD_OUT and review.decided_by == "ana"
            decision = review.result.decision
            assert decision is not None and len(decision.ref_ids) == 1
            refs += decision.ref_ids
        assert sorted(refs) == sorted(outcome["ref_ids"])  # each decision names its own reference
        open_ids = {item.result.id for item in d.ledger.open_reviews()}
        assert open_ids.isdisjoint(members) and queue.lone.id in open_ids

        # 3. the same decision again, from the command line, changes nothing and says so
        assert (
            main(["confirm", "--cluster", cid, "--label", HELD_OUT, "--by", "ana", "--url", queue.url("")])
            == 0
        )
        captured = capsys.readouterr()
        assert json.loads(captured.out)["kind"] == "unchanged" and "nothing changed" in captured.err
        assert queue.version == version + 1


class TestTheConsoleInABrowser:
    def test_an_analyst_confirms_a_whole_cluster_with_one_click(
        self, tmp_path: Path, browser: WebDriver, pet_particles: list[Spectrum]
    ) -> None:
        library = save_library_without_pet(tmp_path / "library")
        config = load_config(write_config(tmp_path, library))
        with Running(Daemon(config)) as d:
            drop(tmp_path / "inbox" / "filter-02", pet_particles[N_PET : N_PET + 3], "pet")
            wait_until(lambda: d.ledger.counts()["done"] == 3, timeout=60)
            version = d.models.get().library.version
            browser.get(f"http://127.0.0.1:{d.http.port}/review")
            card = wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "article.cluster"))
            browser.find_element(By.ID, "analyst").send_keys("ana")
            card.find_element(By.CSS_SELECTOR, "[data-role=new-label]").send_keys(HELD_OUT)
            card.find_element(By.CSS_SELECTOR, "button[data-action=confirm-new]").click()
            status = card.find_element(By.CSS_SELECTOR, "[data-role=status]")
            wait(browser, lambda b: status.text.startswith(f"All 3 spectra confirmed as {HELD_OUT}"))
            assert "new class" in status.text and "decided" in (card.get_attribute("class") or "")
            assert d.models.get().library.version == version + 1  # one version for the three
            for single in browser.find_elements(By.CSS_SELECTOR, "article.review"):
                assert "decided" in (single.get_attribute("class") or "")
                result_id = int(single.get_attribute("data-result-id") or 0)
                review = review_of(d, result_id)
                assert str(review.state) == "confirmed"
                assert review.label == HELD_OUT and review.decided_by == "ana"
            assert csp_violations(browser) == []
