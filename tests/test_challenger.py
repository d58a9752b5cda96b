"""The CNN member: fusion in the served model, the challenger training and its scheduling.

Every network here is tiny (16 px images, width 4, depth 2, 2 epochs): these
tests check the plumbing and the promotion rule, not the CNN's accuracy.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from daemon.config import load_config
from daemon.growth.challenger import ChallengerScheduler, heldout_split, train_challenger
from daemon.service import Daemon
from daemon.web.metrics import Metrics
from engine.analysis.evaluate import library_from_sources, load_source
from engine.core.library import ReferenceLibrary
from engine.core.spectrum import Spectrum
from engine.models.cnn import PolarCNN
from engine.models.served import IdentificationModel, ModelConfig
from tests.conftest import SHARED_DATA, spectrum_csv, wait_until
from tests.test_daemon import Running, write_config

FAST = ModelConfig(n_synthetic=10, n_learners=10)
TINY = {"image_size": 16, "width": 4, "depth": 2, "max_epochs": 2}
FLOPP = SHARED_DATA / "flopp_frond2021"


@pytest.fixture(scope="module")
def library() -> ReferenceLibrary:
    return library_from_sources([f"{FLOPP}@library=FLOPP"])


@pytest.fixture(scope="module")
def library_dir(library: ReferenceLibrary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("library")
    library.save(folder, message="FLOPP pristine")
    return folder


@pytest.fixture(scope="module")
def tiny_cnn(library: ReferenceLibrary) -> PolarCNN:
    return PolarCNN(**TINY, seed=0).fit(library.preprocessed, library.labels)


@pytest.fixture(scope="module")
def queries() -> list[Spectrum]:
    return load_source(f"{FLOPP}@library=FLOPP-e")[:40]


def retrains(registry: CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value("mpwatch_retrain_total", {"outcome": outcome}) or 0.0


class TestFusion:
    def test_without_cnn_results_are_unchanged(
        self, library: ReferenceLibrary, tiny_cnn: PolarCNN, queries: list[Spectrum]
    ) -> None:
        model = IdentificationModel(library, FAST)
        before = [r.as_dict() for r in model.classify(queries)]
        model.set_cnn(tiny_cnn)
        model.set_cnn(None)
        after = [r.as_dict() for r in model.classify(queries)]
        assert before == after
        assert all([m["name"] for m in r["members"]] == ["subknn"] for r in after)
        assert not any("disagreement" in r for r in after)

    def test_subknn_fusion_reports_the_cnn_without_letting_it_vote(
        self, library: ReferenceLibrary, tiny_cnn: PolarCNN, queries: list[Spectrum]
    ) -> None:
        model = IdentificationModel(library, FAST)
        plain = model.classify(queries)
        model.set_cnn(tiny_cnn)
        fused = model.classify(queries)
        cnn_labels = tiny_cnn.predict(model.features(queries)[1])
        for a, b, cnn_label in zip(plain, fused, cnn_labels, strict=True):
            assert (a.status, a.label, a.candidate, a.extra["vote_share"]) == (
                b.status, b.label, b.candidate, b.extra["vote_share"]
            )  # fmt: skip
            assert [m["name"] for m in b.members] == ["subknn", "cnn"]
            assert b.members[0] == a.members[0]
            assert b.members[1]["label"] == cnn_label
            assert b.extra.get("disagreement", False) == (b.members[0]["label"] != b.members[1]["label"])
        assert any(r.extra.get("disagreement") for r in fused)  # a 2-epoch CNN disagrees somewhere

    def test_weighted_fusion_averages_the_aligned_distributions(
        self, library: ReferenceLibrary, tiny_cnn: PolarCNN, queries: list[Spectrum]
    ) -> None:
        model = IdentificationModel(library, replace(FAST, fusion="weighted", cnn_weight=0.5))
        plain = model.classify(queries)
        model.set_cnn(tiny_cnn)
        fused = model.classify(queries)
        X = model.features(queries)[1]
        knn = model.knn_.predict_proba(X)
        classes = list(model.knn_.classes_)
        cnn = tiny_cnn.predict_proba(X)[:, [list(tiny_cnn.classes_).index(c) for c in classes]]
        expected = 0.5 * knn + 0.5 * cnn
        for i, r in enumerate(fused):
            best = int(np.argmax(expected[i]))
            assert r.candidate == classes[best]
            assert r.extra["vote_share"] == pytest.approx(expected[i][best], abs=1e-4)
        assert [r.extra["vote_share"] for r in plain] != [r.extra["vote_share"] for r in fused]

    def test_cnn_fusion_follows_the_cnn_and_survives_pickling(
        self, library: ReferenceLibrary, tiny_cnn: PolarCNN, queries: list[Spectrum], tmp_path: Path
    ) -> None:
        model = IdentificationModel(library, replace(FAST, fusion="cnn"))
        model.set_cnn(tiny_cnn)
        results = model.classify(queries)
        assert [r.candidate for r in results] == list(tiny_cnn.predict(model.features(queries)[1]))
        model.save(tmp_path / "model.pkl")
        loaded = IdentificationModel.load(tmp_path / "model.pkl")
        assert isinstance(loaded.cnn_, PolarCNN)
        assert [r.as_dict() for r in loaded.classify(queries)] == [r.as_dict() for r in results]

    def test_bad_fusion_settings_are_refused(self, library: ReferenceLibrary) -> None:
        with pytest.raises(ValueError, match="fusion"):
            IdentificationModel(library, replace(FAST, fusion="vote"))
        with pytest.raises(ValueError, match="cnn_weight"):
            IdentificationModel(library, replace(FAST, fusion="weighted", cnn_weight=1.5))


def test_train_challenger_writes_checkpoint_and_report(library_dir: Path, tmp_path: Path) -> None:
    report = train_challenger(
        library_dir, tmp_path / "c.pt", config=FAST, report_path=tmp_path / "c.json", **TINY
    )
    assert json.loads((tmp_path / "c.json").read_text()) == report
    cnn = PolarCNN.load(tmp_path / "c.pt")
    library = ReferenceLibrary.load(library_dir)
    _, heldout = heldout_split(library.labels, seed=0)
    counts = library.class_counts()
    assert report["n_heldout"] == heldout.size == sum(round(0.2 * n) for n in counts.values() if n >= 5)
    assert report["n_references_train"] == len(library.labels) - heldout.size
    assert report["n_train"] > report["n_references_train"]  # synthetic spectra were added
    assert set(cnn.classes_) == set(counts)
    for key in ("accuracy", "macro_f1", "subknn_accuracy", "subknn_macro_f1", "seconds"):
        assert report[key] >= 0.0 and (key == "seconds" or report[key] <= 1.0)


class _Settings:
    retrain_hours = 1.0
    retrain_after_confirmations = 3

    def estimator_params(self) -> dict[str, int]:
        return dict(TINY)


def _fake_command(checkpoint: Path, report: dict[str, object], *, rc: int = 0):
    """A real subprocess that 'trains' by copying a prepared checkpoint and writing a given report."""
    script = (
        "import json, shutil, sys, time; time.sleep(0.3); "
        f"shutil.copy({str(checkpoint)!r}, sys.argv[2]); "
        f"open(sys.argv[3], 'w').write(json.dumps({report!r})); sys.exit({rc})"
    )
    return lambda library, out, rep: [sys.executable, "-c", script, str(library), str(out), str(rep)]


def test_scheduler_triggers_and_promotion_rule(
    library: ReferenceLibrary, library_dir: Path, tiny_cnn: PolarCNN, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "prepared.pt"
    tiny_cnn.save(checkpoint)
    model = IdentificationModel(library, FAST)
    registry = CollectorRegistry()
    metrics = Metrics(registry, inbox_roots=["lab"], members=["subknn", "cnn"])
    clock = [1000.0]
    confirmed = [0]
    drift = threading.Event()
    lock = threading.Lock()
    scheduler = ChallengerScheduler(
        settings=_Settings(), work_dir=tmp_path / "cnn", library_dir=lambda: library_dir,
        model_config=FAST, get_model=lambda: model, lock=lock, metrics=metrics,
        confirmations=lambda: confirmed[0], retrain_requested=drift, clock=lambda: clock[0],
        command=_fake_command(checkpoint, {"accuracy": 0.9, "subknn_accuracy": 0.8, "n_heldout": 10}),
    )  # fmt: skip

    def finish() -> str:
        outcome: list[str | None] = [None]
        wait_until(lambda: (outcome.__setitem__(0, scheduler.poll()) or outcome[0]) is not None, timeout=20)
        assert not scheduler.running
        return str(outcome[0])

    # Not due: too few confirmations, too little time, no drift.
    confirmed[0] = 2
    assert scheduler.poll() is None and not scheduler.running
    confirmed[0] = 3  # the third confirmed spectrum
    scheduler.poll()
    assert scheduler.running
    scheduler.poll()  # one at a time: polling while it runs starts nothing else
    assert finish() == "promoted"  # first challenger: 0.9 >= the kNN's 0.8 on the same split
    assert model.cnn_ is not None and list(model.cnn_.classes_) == list(tiny_cnn.classes_)
    assert (tmp_path / "cnn" / "champion.pt").exists() and not (tmp_path / "cnn" / "challenger.pt").exists()
    assert retrains(registry, "promoted") == 1
    assert registry.get_sample_value("mpwatch_member_accuracy_ratio", {"member": "cnn"}) == 0.9

    # The schedule: retrain_hours later; the champion's 0.9 is the bar now, 0.85 is worse.
    scheduler.command = _fake_command(checkpoint, {"accuracy": 0.85, "subknn_accuracy": 0.5, "n_heldout": 10})
    champion = model.cnn_
    clock[0] += 3599.0
    assert scheduler.poll() is None and not scheduler.running
    clock[0] += 1.0
    scheduler.poll()
    assert scheduler.running
    assert finish() == "kept_champion"
    assert model.cnn_ is champion and (tmp_path / "cnn" / "challenger.pt").exists()
    assert retrains(registry, "kept_champion") == 1

    # Drift asks for one; a crashing challenger is counted and changes nothing.
    scheduler.command = _fake_command(checkpoint, {"accuracy": 1.0}, rc=3)
    drift.set()
    scheduler.poll()
    assert scheduler.running and not drift.is_set()
    assert finish() == "failed"
    assert model.cnn_ is champion and retrains(registry, "failed") == 1

    # A new scheduler (a restart) serves the kept champion again.
    fresh = IdentificationModel(library, FAST)
    ChallengerScheduler(
        settings=_Settings(), work_dir=tmp_path / "cnn", library_dir=lambda: library_dir,
        model_config=FAST, get_model=lambda: fresh, lock=lock, metrics=metrics, confirmations=lambda: 0,
    )  # fmt: skip
    assert isinstance(fresh.cnn_, PolarCNN)


def test_daemon_trains_a_challenger_after_confirmations_and_keeps_classifying(
    library: ReferenceLibrary, tmp_path: Path
) -> None:
    own_library = tmp_path / "library"
    library.save(own_library, message="FLOPP pristine")
    path = write_config(
        tmp_path,
        own_library,
        cnn={"enabled": True, "retrain_after_confirmations": 2, **TINY},
    )
    config = load_config(path)
    daemon = Daemon(config, model=IdentificationModel(ReferenceLibrary.load(own_library), FAST))
    assert daemon.challenger is not None
    particles = load_source(f"{FLOPP}@library=FLOPP-e")[:12]
    with Running(daemon) as d:
        label_dir = config.confirmed_dir / "PP"
        label_dir.mkdir(parents=True)
        for i, s in enumerate(particles[:2]):
            (label_dir / f"pp_{i}.csv").write_text(spectrum_csv(s))
        wait_until(lambda: d.challenger is not None and d.challenger.running, timeout=20)
        # The main loop is not blocked: files keep being classified while the challenger trains.
        for i, s in enumerate(particles[2:]):
            (tmp_path / "inbox" / f"p{i}.csv").write_text(spectrum_csv(s))
        wait_until(lambda: d.ledger.counts()[next(k for k in d.ledger.counts() if str(k) == "done")] == 10)
        wait_until(lambda: d.challenger is not None and d.challenger.last_outcome is not None, timeout=40)
        report = d.challenger.last_report
        assert report is not None, (tmp_path / "state" / "cnn" / "challenger.log").read_text()
        expected = "promoted" if report["accuracy"] >= report["subknn_accuracy"] else "kept_champion"
        assert d.challenger.last_outcome == expected
        assert retrains(d.registry, expected) == 1
        assert report["library_version"] == 2  # it trained on the library with the confirmed spectra
        if expected == "promoted":
            assert d.models.get().cnn_ is not None
