"""Online library growth with the daemon running: confirm, serve, roll back; river drift watch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config
from daemon.growth.drift import DriftWatch
from daemon.service import Daemon
from engine.analysis.evaluate import library_from_sources, load_source
from engine.core.labels import scoring_label
from engine.core.library import ReferenceLibrary, library_log
from engine.core.spectrum import Spectrum
from tests.conftest import REPO_ROOT, SHARED_DATA, spectrum_csv, wait_until
from tests.test_daemon import Running, write_config

FLOPP = SHARED_DATA / "flopp_frond2021"
HELD_OUT = "PET"


@pytest.fixture(scope="module")
def pet_particles() -> list[Spectrum]:
    """Environmental PET particles (FLOPP-e): the class the library will not know at first."""
    return [
        s for s in load_source(f"{FLOPP}@library=FLOPP-e") if scoring_label(s.metadata["label"]) == HELD_OUT
    ]


@pytest.fixture(scope="module")
def pet_references() -> list[Spectrum]:
    return [
        s for s in load_source(f"{FLOPP}@library=FLOPP") if scoring_label(s.metadata["label"]) == HELD_OUT
    ]


@pytest.fixture
def library_without_pet(tmp_path: Path) -> Path:
    lib = library_from_sources([f"{FLOPP}@library=FLOPP"])
    lib = lib.subset(lambda e: scoring_label(e["label"]) != HELD_OUT)
    folder = tmp_path / "library"
    lib.save(folder, message="FLOPP pristine without PET")
    return folder


def statuses(daemon: Daemon, names: list[str]) -> list[tuple[str, str | None]]:
    out = []
    for name in names:
        rec = daemon.ledger.file(daemon.config.inboxes[0].path / name)
        assert rec is not None and str(rec.state) == "done", name
        (result,) = daemon.ledger.results(sha256=rec.sha256)
        out.append((str(result.status), result.label))
    return out


def drop(inbox: Path, spectra: list[Spectrum], prefix: str) -> list[str]:
    names = []
    for i, s in enumerate(spectra):
        name = f"{prefix}_{i}.csv"
        (inbox / name).write_text(spectrum_csv(s))
        names.append(name)
    return names


def post(
    url: str, body: dict[str, Any], *, token: str | None = None, content_type: str = "application/json"
) -> Any:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_confirmation_whose_spectrum_looks_like_another_class_says_so(
    tmp_path: Path, library_without_pet: Path, pet_references: list[Spectrum]
) -> None:
    """A PET spectrum confirmed as PP joins PP (the analyst decides), and the answer says that it
    looks like PET's median spectrum, not PP's; a right confirmation says nothing of the kind."""
    config = load_config(write_config(tmp_path, library_without_pet))
    daemon = Daemon(config)
    try:
        right = daemon.growth.add_spectra(pet_references[:3], "PET", confirmed_by="analyst")
        assert right.kind == "new_class" and right.note == ""
        wrong = daemon.growth.add_spectra(pet_references[3:4], "PP", confirmed_by="analyst")
        assert wrong.kind == "added" and wrong.label == "PP"
        (ref_id,) = wrong.ref_ids
        assert wrong.note.startswith(f"reference {ref_id} looks like PET, not PP (r 0.")
        assert wrong.note.endswith("check the label")
        assert (
            daemon.models.get().library.class_counts()["PP"]
            == ReferenceLibrary.load(library_without_pet, version=1).class_counts()["PP"] + 1
        )
    finally:
        daemon.shutdown()


class TestLeaveOneClassOutGrowth:
    def test_unknown_then_confirmed_then_known_then_rolled_back(
        self,
        tmp_path: Path,
        library_without_pet: Path,
        pet_particles: list[Spectrum],
        pet_references: list[Spectrum],
    ) -> None:
        config = load_config(write_config(tmp_path, library_without_pet))
        inbox = tmp_path / "inbox"
        first, later, after_rollback = pet_particles[:6], pet_particles[6:12], pet_particles[12:18]
        with Running(Daemon(config)) as d:
            # 1. a class the library lacks comes out unknown
            names = drop(inbox, first, "before")
            wait_until(lambda: d.ledger.counts()["done"] == len(names), timeout=60)
            before = statuses(d, names)
            assert sum(s == "unknown" for s, _ in before) >= 5, before
            assert len(d.ledger.open_reviews()) >= 5
            version_before = d.models.get().library.version

            # 2. an analyst drops 10 confirmed PET spectra into confirmed/PET/
            label_dir = config.confirmed_dir / HELD_OUT
            label_dir.mkdir(parents=True)
            for i, s in enumerate(pet_references[:10]):
                (label_dir / f"ref_{i}.csv").write_text(spectrum_csv(s))
            wait_until(lambda: d.models.get().library.version == version_before + 1, timeout=30)
            assert d.models.get().library.class_counts()[HELD_OUT] == 10
            wait_until(
                lambda: len(list(config.confirmed_dir.glob(f".added/{HELD_OUT}/*.csv"))) == 10, timeout=10
            )
            assert not list(label_dir.iterdir())
            # the review queue was re-checked against the new version
            wait_until(lambda: len(d.ledger.open_reviews()) <= 1, timeout=10)

            # 3. later particles of that class are known
            names = drop(inbox, later, "after")
            wait_until(lambda: d.ledger.counts()["done"] == 12, timeout=60)
            after = statuses(d, names)
            assert sum(s == "known" and label == HELD_OUT for s, label in after) >= 5, after

            # 4. a rollback from the command line restores the earlier behaviour
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "daemon.cli",
                    "library",
                    "rollback",
                    str(library_without_pet),
                    str(version_before),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO_ROOT,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            wait_until(lambda: HELD_OUT not in d.models.get().library.class_counts(), timeout=30)
            names = drop(inbox, after_rollback, "rolledback")
            wait_until(lambda: d.ledger.counts()["done"] == 18, timeout=60)
            rolled = statuses(d, names)
            assert sum(s == "unknown" for s, _ in rolled) >= 5, rolled
            log = library_log(library_without_pet)
            assert [v.version for v in log] == [1, 2, 3]
            assert log[-1].message == f"rollback to version {version_before}"
            metrics = (
                urllib.request.urlopen(f"http://127.0.0.1:{d.http.port}/metrics", timeout=5).read().decode()
            )
            assert 'mpwatch_confirmations_total{kind="new_class"} 1.0' in metrics
            assert "mpwatch_time_to_serve_seconds_count 1.0" in metrics


class TestConfirmApi:
    def test_confirm_while_files_are_classified(
        self,
        tmp_path: Path,
        library_without_pet: Path,
        pet_particles: list[Spectrum],
    ) -> None:
        others = load_source(f"{FLOPP}@library=FLOPP-e")[:60]
        config = load_config(write_config(tmp_path, library_without_pet))
        inbox = tmp_path / "inbox"
        with Running(Daemon(config)) as d:
            base = f"http://127.0.0.1:{d.http.port}"
            drop(inbox, pet_particles[:4], "pet")
            wait_until(lambda: d.ledger.counts()["done"] == 4, timeout=60)
            to_confirm = [r.id for r in d.ledger.results()]
            outcomes: list[Any] = []

            def confirm_all() -> None:
                for result_id in to_confirm:
                    outcomes.append(
                        post(
                            base + "/api/confirm",
                            {"result_id": result_id, "label": "PET", "decided_by": "test"},
                        )
                    )

            names = drop(inbox, others, "stream")  # classification runs while we confirm
            confirmer = threading.Thread(target=confirm_all)
            confirmer.start()
            confirmer.join(timeout=120)
            wait_until(lambda: d.ledger.counts()["done"] == 4 + len(names), timeout=120)
            results = d.ledger.results(limit=1000)
            assert len(results) == 4 + len(names)
            assert len({(r.sha256, r.spectrum_index) for r in results}) == len(results)
            assert outcomes[0]["kind"] == "new_class"
            assert {o["kind"] for o in outcomes[1:]} <= {"added", "positive"}
            assert all(o["seconds_to_serve"] is None or o["seconds_to_serve"] >= 0 for o in outcomes)
            assert ReferenceLibrary.load(library_without_pet).class_counts()[HELD_OUT] >= 1

    def test_write_routes_need_json_and_token(self, tmp_path: Path, library_without_pet: Path) -> None:
        config = load_config(write_config(tmp_path, library_without_pet, http={"port": 0, "token": "s3cret"}))
        with Running(Daemon(config)) as d:
            url = f"http://127.0.0.1:{d.http.port}/api/confirm"

            def status(call: Callable[[], Any]) -> int:
                try:
                    call()
                except urllib.error.HTTPError as exc:
                    return exc.code
                return 200

            assert status(lambda: post(url, {"result_id": 1, "label": "PE"})) == 401
            assert status(lambda: post(url, {"result_id": 1, "label": "PE"}, token="wrong")) == 401
            assert (
                status(
                    lambda: post(
                        url, {"result_id": 1, "label": "PE"}, token="s3cret", content_type="text/plain"
                    )
                )
                == 415
            )
            assert status(lambda: post(url, {"result_id": 999, "label": "PE"}, token="s3cret")) == 422
            reviews = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{d.http.port}/api/reviews").read())
            assert reviews == []


class TestDriftWatch:
    def test_progressive_validation_scores_before_learning(self) -> None:
        seen: dict[str, float] = {}
        watch = DriftWatch(window=4, on_accuracy=lambda scope, acc: seen.__setitem__(scope, acc))
        for label, predicted in [("PE", "PE"), ("PE", "PP"), ("PP", "PP"), ("PP", "PP")]:
            watch.learn(label, predicted=predicted)
        assert watch.accuracy() == pytest.approx(0.75)
        assert watch.accuracy("PE") == pytest.approx(0.5)
        assert seen == {"overall": 0.75, "PE": 0.5, "PP": 1.0}

    def test_adwin_flags_a_jump_in_the_unknown_rate(self) -> None:
        drifted: list[str] = []
        watch = DriftWatch(on_drift=drifted.append)
        for i in range(600):
            watch.observe(status="unknown" if i % 20 == 0 else "known", top1_r=0.95)
        assert not drifted
        for i in range(300):
            watch.observe(status="unknown" if i % 2 == 0 else "known", top1_r=0.95)
        assert "unknown_rate" in drifted
        assert watch.retrain_requested.is_set()

    def test_low_quality_does_not_feed_the_r_stream(self) -> None:
        watch = DriftWatch()
        watch.observe(status="low_quality", top1_r=0.1)
        assert watch.detectors_["top1_r"].width == 0


def test_confirm_command_talks_to_the_daemon(
    tmp_path: Path, library_without_pet: Path, pet_particles: list[Spectrum]
) -> None:
    config = load_config(write_config(tmp_path, library_without_pet))
    with Running(Daemon(config)) as d:
        drop(tmp_path / "inbox", pet_particles[:1], "one")
        wait_until(lambda: d.ledger.counts()["done"] == 1, timeout=60)
        (result,) = d.ledger.results()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "confirm",
                str(result.id),
                "--label",
                "PET",
                "--by",
                "ana",
                "--url",
                f"http://127.0.0.1:{d.http.port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["kind"] == "new_class"
        review = d.ledger.review(result.id)
        assert review is not None and str(review.state) == "confirmed" and review.decided_by == "ana"
        entry = d.models.get().library.entries[-1]
        assert entry["confirmed_by"] == "ana" and entry["label"] == "PET"
    refused = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "confirm", "1", "--label", "PE", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert refused.returncode == 2 and "cannot reach the daemon" in refused.stderr


def test_writes_refuse_other_hosts_and_origins(tmp_path: Path, library_without_pet: Path) -> None:
    """DNS rebinding and cross-origin pages cannot write to a loopback daemon."""
    config = load_config(write_config(tmp_path, library_without_pet))
    with Running(Daemon(config)) as d:
        url = f"http://127.0.0.1:{d.http.port}/api/confirm"

        def status(headers: dict[str, str]) -> int:
            request = urllib.request.Request(
                url,
                data=b'{"result_id": 1, "label": "PE"}',
                method="POST",
                headers={"Content-Type": "application/json", **headers},
            )
            try:
                urllib.request.urlopen(request, timeout=10)
            except urllib.error.HTTPError as exc:
                return exc.code
            return 200

        assert status({"Host": "evil.example:8000"}) == 403
        assert status({"Origin": "http://evil.example"}) == 403
        assert (
            status({"Origin": f"http://127.0.0.1:{d.http.port}"}) == 422
        )  # same origin: reaches the handler
