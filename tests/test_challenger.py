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
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from daemon.config import load_config
from daemon.growth.challenger import (
    ChallengerScheduler,
    fusion_weight,
    heldout_split,
    train_challenger,
)
from daemon.service import Daemon
from daemon.web.metrics import Metrics
from engine.analysis.evaluate import library_from_sources, load_source
from engine.core.library import DEFAULT_LIBRARIES, ReferenceLibrary
from engine.core.spectrum import Spectrum
from engine.models.cnn import PolarCNN, ServedCNN, export_onnx
from engine.models.cnn.runtime import BESIDE_LIBRARY
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

    def test_a_disagreeing_cnn_turns_a_candidate_below_disagreement_r_to_unknown(
        self, library: ReferenceLibrary, tiny_cnn: PolarCNN, queries: list[Spectrum]
    ) -> None:
        answers = {}
        for bar in (None, 0.9):
            model = IdentificationModel(library, replace(FAST, disagreement_r=bar))
            model.set_cnn(tiny_cnn)
            answers[bar] = model.classify(queries)
        vetoed = 0
        for free, veto in zip(answers[None], answers[0.9], strict=True):
            assert (veto.candidate, veto.members) == (free.candidate, free.members)
            if free.status == "known" and free.extra.get("disagreement") and free.extra["candidate_r"] < 0.9:
                assert (veto.status, veto.label, veto.extra["reason"]) == (
                    "unknown",
                    None,
                    "members_disagree",
                )
                assert veto.extra["candidate_confidence"] == free.confidence
                vetoed += 1
            else:
                assert veto.as_dict() == free.as_dict()
        assert vetoed > 0  # a 2-epoch CNN disagrees with some accepted candidates below r 0.9

    def test_bad_fusion_settings_are_refused(self, library: ReferenceLibrary) -> None:
        with pytest.raises(ValueError, match="fusion"):
            IdentificationModel(library, replace(FAST, fusion="vote"))
        with pytest.raises(ValueError, match="cnn_weight"):
            IdentificationModel(library, replace(FAST, fusion="weighted", cnn_weight=1.5))


def test_train_challenger_writes_an_onnx_member_with_its_weight(library_dir: Path, tmp_path: Path) -> None:
    report = train_challenger(
        library_dir, tmp_path / "c.onnx", config=FAST, report_path=tmp_path / "c.json", **TINY
    )
    assert json.loads((tmp_path / "c.json").read_text()) == report
    served = ServedCNN.load(tmp_path / "c.onnx")
    library = ReferenceLibrary.load(library_dir)
    _, heldout = heldout_split(library.labels, seed=0)
    counts = library.class_counts()
    assert report["n_heldout"] == heldout.size == sum(round(0.2 * n) for n in counts.values() if n >= 5)
    assert report["n_references_train"] == len(library.labels) - heldout.size
    assert report["n_train"] > report["n_references_train"]  # synthetic spectra were added
    assert set(served.classes_) == set(counts)
    for key in ("accuracy", "macro_f1", "subknn_accuracy", "subknn_macro_f1", "fused_accuracy", "seconds"):
        assert report[key] >= 0.0 and (key == "seconds" or report[key] <= 1.0)
    # The weight is the smallest of the most accurate on the held-out references, and w = 0 is the kNN.
    weights = report["weights"]
    assert list(weights) == [f"{i / 10:.1f}" for i in range(11)]
    assert weights["0.0"] == report["subknn_accuracy"]
    best = max(weights.values())
    assert report["fused_accuracy"] == best == weights[f"{report['weight']:.1f}"]
    assert all(weights[w] < best for w in weights if float(w) < report["weight"])
    assert served.weight == report["weight"] and served.metadata["report"] == report
    assert report["library_hash"] == library.content_hash and "champion_fused_accuracy" not in report

    # With a champion, the challenger scores it on the same held-out references.
    again = train_challenger(
        library_dir, tmp_path / "d.onnx", config=FAST, champion=tmp_path / "c.onnx", **TINY
    )
    assert again["champion_fused_accuracy"] == report["fused_accuracy"]  # the same network, the same split


def test_fusion_weight_is_earned() -> None:
    knn = np.array([[0.6, 0.4], [0.6, 0.4], [0.9, 0.1]])
    right = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # a CNN that gets all three right
    weight, scored = fusion_weight(knn, right, ["PE", "PP"], ["PP", "PE", "PE"])
    assert weight == 0.2 and scored["0.0"] == pytest.approx(2 / 3) and scored["0.2"] == 1.0
    wrong = right[:, ::-1]
    assert fusion_weight(knn, wrong, ["PE", "PP"], ["PE", "PE", "PE"])[0] == 0.0


class _Settings:
    retrain_hours = 1.0
    retrain_after_confirmations = 3

    def estimator_params(self) -> dict[str, int]:
        return dict(TINY)


def _fake_command(checkpoint: Path, report: dict[str, object], *, rc: int = 0):
    """A real subprocess that 'trains' by copying a prepared member and writing a given report."""
    script = (
        "import json, shutil, sys, time; time.sleep(0.3); "
        f"shutil.copy({str(checkpoint)!r}, sys.argv[2]); "
        f"open(sys.argv[3], 'w').write(json.dumps({report!r})); sys.exit({rc})"
    )
    return lambda library, out, rep: [sys.executable, "-c", script, str(library), str(out), str(rep)]


@pytest.fixture(scope="module")
def tiny_onnx(
    tiny_cnn: PolarCNN, library: ReferenceLibrary, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("member") / "tiny.onnx"
    report = {"accuracy": 0.5, "weight": 0.0, "library_hash": library.content_hash}
    export_onnx(tiny_cnn, path, metadata={"weight": 0.0, "report": report})
    return path


def _scheduler(model: IdentificationModel, work_dir: Path, **kwargs: object) -> ChallengerScheduler:
    settings = {
        "settings": _Settings(), "work_dir": work_dir, "library_dir": lambda: work_dir,
        "model_config": FAST, "get_model": lambda: model, "lock": threading.Lock(),
        "metrics": Metrics(CollectorRegistry(), inbox_roots=["lab"], members=["subknn", "cnn"]),
        "confirmations": lambda: 0, **kwargs,
    }  # fmt: skip
    return ChallengerScheduler(**settings)  # type: ignore[arg-type]


def test_scheduler_triggers_and_promotion_rule(
    library: ReferenceLibrary, library_dir: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    model = IdentificationModel(library, FAST)
    registry = CollectorRegistry()
    metrics = Metrics(registry, inbox_roots=["lab"], members=["subknn", "cnn"])
    clock = [1000.0]
    confirmed = [0]
    drift = threading.Event()
    lock = threading.Lock()
    first = {"accuracy": 0.7, "weight": 0.0, "fused_accuracy": 0.8, "subknn_accuracy": 0.8, "n_heldout": 10}
    scheduler = ChallengerScheduler(
        settings=_Settings(), work_dir=tmp_path / "cnn", library_dir=lambda: library_dir,
        model_config=FAST, get_model=lambda: model, lock=lock, metrics=metrics,
        confirmations=lambda: confirmed[0], retrain_requested=drift, clock=lambda: clock[0],
        command=_fake_command(tiny_onnx, first),
    )  # fmt: skip

    def finish() -> str:
        outcome: list[str | None] = [None]
        wait_until(lambda: (outcome.__setitem__(0, scheduler.poll()) or outcome[0]) is not None, timeout=20)
        assert not scheduler.running
        return str(outcome[0])

    # No CNN served: the first one is trained at once, and a weight of 0 reaches the kNN's bar.
    assert scheduler.due() == "no_champion"
    scheduler.poll()
    assert scheduler.running
    scheduler.poll()  # one at a time: polling while it runs starts nothing else
    assert finish() == "promoted"
    assert isinstance(model.cnn_, ServedCNN) and set(model.cnn_.classes_) == set(library.class_counts())
    assert (tmp_path / "cnn" / "champion.onnx").exists() and not (
        tmp_path / "cnn" / "challenger.onnx"
    ).exists()
    assert retrains(registry, "promoted") == 1
    assert registry.get_sample_value("mpwatch_member_accuracy_ratio", {"member": "cnn"}) == 0.7
    # The next challenger is told of the champion, to score it on its own held-out references.
    assert "--champion" in scheduler._default_command(library_dir, tmp_path / "o", tmp_path / "r")

    # Not due: too few confirmations, too little time, no drift.
    confirmed[0] = 2
    assert scheduler.poll() is None and not scheduler.running
    confirmed[0] = 3  # the third confirmed spectrum
    worse = {**first, "fused_accuracy": 0.85, "champion_fused_accuracy": 0.9}
    scheduler.command = _fake_command(tiny_onnx, worse)
    scheduler.poll()
    assert scheduler.running
    champion = model.cnn_
    assert finish() == "kept_champion"  # 0.85 fused against the champion's 0.9 on the same references
    assert model.cnn_ is champion and (tmp_path / "cnn" / "challenger.onnx").exists()
    assert retrains(registry, "kept_champion") == 1

    # The schedule: retrain_hours after the last start.
    scheduler.command = _fake_command(tiny_onnx, {**worse, "fused_accuracy": 0.9})
    clock[0] += 3599.0
    assert scheduler.poll() is None and not scheduler.running
    clock[0] += 1.0
    scheduler.poll()
    assert scheduler.running
    assert finish() == "promoted"  # as good as the champion
    assert model.cnn_ is not champion and retrains(registry, "promoted") == 2

    # Drift asks for one; a crashing challenger is counted and changes nothing.
    champion = model.cnn_
    scheduler.command = _fake_command(tiny_onnx, {"accuracy": 1.0}, rc=3)
    drift.set()
    scheduler.poll()
    assert scheduler.running and not drift.is_set()
    assert finish() == "failed"
    assert model.cnn_ is champion and retrains(registry, "failed") == 1

    # A new scheduler (a restart) serves the kept champion again, and trains nothing at start.
    fresh = IdentificationModel(library, FAST)
    restarted = _scheduler(fresh, tmp_path / "cnn")
    assert isinstance(fresh.cnn_, ServedCNN) and restarted.due() is None


def test_the_shipped_member_is_served_only_on_the_library_it_was_trained_on(
    library: ReferenceLibrary, tiny_cnn: PolarCNN, tiny_onnx: Path, tmp_path: Path
) -> None:
    model = IdentificationModel(library, FAST)
    seeded = _scheduler(model, tmp_path / "a", shipped=[tmp_path / "absent.onnx", tiny_onnx])
    assert isinstance(model.cnn_, ServedCNN) and seeded.due() is None
    assert (tmp_path / "a" / "champion.onnx").read_bytes() == tiny_onnx.read_bytes()

    other = tmp_path / "other.onnx"
    export_onnx(tiny_cnn, other, metadata={"report": {"library_hash": "another library"}})
    plain = IdentificationModel(library, FAST)
    unseeded = _scheduler(plain, tmp_path / "b", shipped=[other])
    assert plain.cnn_ is None and unseeded.due() == "no_champion"
    assert not (tmp_path / "b" / "champion.onnx").exists()


def test_a_member_of_another_width_is_refused(library: ReferenceLibrary, tiny_onnx: Path) -> None:
    model = IdentificationModel(library.restricted(975.0, 1800.0), FAST)
    with pytest.raises(ValueError, match="points"):
        model.set_cnn(ServedCNN.load(tiny_onnx))
    assert model.cnn_ is None


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
    scheduler = daemon.challenger.of("ir")
    particles = load_source(f"{FLOPP}@library=FLOPP-e")[:12]
    with Running(daemon) as d:
        # No CNN was shipped for this library: the first one is trained at start, and served.
        wait_until(lambda: scheduler.last_outcome is not None, timeout=180)
        assert scheduler.last_outcome == "promoted", (
            tmp_path / "state" / "cnn" / "challenger.log"
        ).read_text()
        assert isinstance(d.models.get().cnn_, ServedCNN)
        label_dir = config.confirmed_dir / "PP"
        label_dir.mkdir(parents=True)
        for i, s in enumerate(particles[:2]):
            (label_dir / f"pp_{i}.csv").write_text(spectrum_csv(s))
        wait_until(lambda: scheduler.running, timeout=20)
        # The main loop is not blocked: files keep being classified while the challenger trains.
        for i, s in enumerate(particles[2:]):
            (tmp_path / "inbox" / f"p{i}.csv").write_text(spectrum_csv(s))
        wait_until(lambda: d.ledger.counts()[next(k for k in d.ledger.counts() if str(k) == "done")] == 10)
        wait_until(
            lambda: retrains(d.registry, "promoted") + retrains(d.registry, "kept_champion") == 2, timeout=180
        )
        report = scheduler.last_report
        assert report is not None, (tmp_path / "state" / "cnn" / "challenger.log").read_text()
        assert report["library_version"] == 2  # it trained on the library with the confirmed spectra
        assert "champion_fused_accuracy" in report  # and scored the served CNN on its held-out references
        promoted = report["fused_accuracy"] >= report["champion_fused_accuracy"]
        assert scheduler.last_outcome == ("promoted" if promoted else "kept_champion")
        results = [
            json.loads(line) for line in next((tmp_path / "state" / "results").rglob("results.jsonl")).open()
        ]
        assert all(
            [m["name"] for m in r["members"]] == ["subknn", "cnn"]
            for r in results
            if r["status"] != "low_quality"
        )


@pytest.mark.parametrize("technique", ["ir", "raman"])
def test_the_shipped_members_belong_to_the_bundled_libraries(technique: str) -> None:
    path = DEFAULT_LIBRARIES[technique] / BESIDE_LIBRARY
    shipped = ServedCNN.load(path)
    library = ReferenceLibrary.load(DEFAULT_LIBRARIES[technique])
    report = shipped.metadata["report"]
    assert report["library_hash"] == library.content_hash, "the bundled library changed: run `make cnn`"
    assert report["technique"] == technique and set(shipped.classes_) == set(library.class_counts())
    assert shipped.n_features_in_ == library.preprocessed.shape[1]
    # Its weight is the one its held-out evaluation gave it (written down in the file).
    weights = report["weights"]
    assert (
        shipped.weight
        == report["weight"]
        == next(float(w) for w in weights if weights[w] == max(weights.values()))
    )
    assert path.stat().st_size < 1_000_000  # small enough to ship beside the library


def test_the_default_daemon_serves_the_shipped_members_in_every_result(tmp_path: Path) -> None:
    """Default configuration: no training at start, the CNN's opinion (or why it abstains) in every result."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(
        json.dumps({"inboxes": [{"path": str(inbox), "name": "lab"}], "state_dir": str(tmp_path / "s")})
    )
    config = load_config(path)
    daemon = Daemon(config)
    assert daemon.challenger is not None
    for scheduler in daemon.challenger.schedulers:
        assert isinstance(scheduler.champion_cnn, ServedCNN) and scheduler.due() is None
    shipped = daemon.challenger.of("ir").champion_cnn.metadata["report"]
    for member in ("cnn", "subknn"):  # the held-out accuracies it shipped with, in the metrics
        value = daemon.registry.get_sample_value("mpwatch_member_accuracy_ratio", {"member": member})
        assert value == pytest.approx(shipped["accuracy" if member == "cnn" else "subknn_accuracy"])
    particle = load_source(f"{FLOPP}@library=FLOPP-e")[0]
    cut = (particle.wavenumbers >= 975.0) & (particle.wavenumbers <= 1800.0)
    with Running(daemon) as d:
        (inbox / "full.csv").write_text(spectrum_csv(particle))
        x, y = particle.wavenumbers[cut], particle.values[cut]
        (inbox / "ldir.csv").write_text(spectrum_csv(SimpleNamespace(wavenumbers=x, values=y)))
        results_file = tmp_path / "s" / "results" / "lab" / "results.jsonl"
        wait_until(
            lambda: results_file.exists() and len(results_file.read_text().splitlines()) == 2, timeout=30
        )
        assert not any(s.running for s in d.challenger.schedulers)
    results = {Path(r["source"]).name: r for r in map(json.loads, results_file.read_text().splitlines())}
    full, ldir = results["full.csv"]["members"], results["ldir.csv"]["members"]
    assert [m["name"] for m in full] == [m["name"] for m in ldir] == ["subknn", "cnn"]
    assert full[1]["label"] is not None and full[1]["weight"] == 0.0
    assert ldir[1]["label"] is None and "range model" in ldir[1]["abstained"]
