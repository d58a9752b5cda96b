"""Confidence as a calibrated probability: the map, the held-out pass, served results, and the evaluation."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.cli import main as mpwatch
from engine.analysis import plots
from engine.analysis.evaluate import OUT_OF_LIBRARY, library_from_sources, load_source, score
from engine.analysis.reliability import ece_interval, reliability
from engine.core.labels import scoring_label
from engine.core.library import ReferenceLibrary
from engine.core.spectrum import Spectrum
from engine.models.calibration import FEATURES, ConfidenceCalibrator, evidence_features, held_out_folds
from engine.models.served import LOW_CONFIDENCE, IdentificationModel, ModelConfig, Result
from tests.conftest import SHARED_DATA

FLOPP = SHARED_DATA / "flopp_frond2021"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _evidence(r: np.ndarray, vote: np.ndarray | None = None) -> np.ndarray:
    """Evidence of the kind the served model gives: the vote near r, margins growing with both."""
    vote = r if vote is None else vote
    return evidence_features(r, vote, vote / 3, r - 0.1, np.full(r.size, 0.6))


def _examples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evidence whose candidate is right with a known probability, rising with r: (features, right, truth)."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.4, 1.0, n)
    vote = np.clip(r + rng.normal(0, 0.05, n), 0, 1)
    truth = 1.0 / (1.0 + np.exp(-12.0 * (r - 0.7)))
    right = rng.uniform(size=n) < truth
    return _evidence(r, vote), right, truth


@pytest.fixture(scope="module")
def flopp_library() -> ReferenceLibrary:
    return library_from_sources([f"{FLOPP}@library=FLOPP"])


@pytest.fixture(scope="module")
def flopp_model(flopp_library: ReferenceLibrary) -> IdentificationModel:
    return IdentificationModel(flopp_library)


@pytest.fixture(scope="module")
def particles() -> list[Spectrum]:
    """FLOPP-e: 195 environmental particles, 6 of classes FLOPP lacks."""
    return load_source(f"{FLOPP}@library=FLOPP-e")


@pytest.fixture(scope="module")
def flopp_results(flopp_model: IdentificationModel, particles: list[Spectrum]) -> list[Result]:
    return flopp_model.classify(particles, aging=False)


class TestConfidenceCalibrator:
    def test_it_recovers_the_probability_it_was_fitted_on(self) -> None:
        features, right, _ = _examples(3000)
        cal = ConfidenceCalibrator().fit(features, right)
        test, _, truth = _examples(2000, seed=1)
        assert np.mean(np.abs(cal.predict(test) - truth)) < 0.05

    def test_stronger_evidence_is_never_less_confident(self) -> None:
        features, right, _ = _examples(1000)
        cal = ConfidenceCalibrator().fit(features, right)
        p = cal.predict(_evidence(np.linspace(0.3, 1.0, 50)))
        assert np.all(np.diff(p) >= 0)
        assert p[0] < 0.2 and p[-1] > 0.9

    def test_no_certainty_from_finitely_many_examples(self) -> None:
        features, right, _ = _examples(500)
        cal = ConfidenceCalibrator().fit(features, right)
        low, high = cal.predict(_evidence(np.array([-1.0, 2.0])))
        assert low == pytest.approx(1 / 502) and high == pytest.approx(501 / 502)

    def test_too_few_or_one_sided_examples_give_the_rule_of_succession(self) -> None:
        features, right, _ = _examples(300)
        anything = features[:7]
        assert np.allclose(
            ConfidenceCalibrator().fit(features, np.ones(300, bool)).predict(anything), 301 / 302
        )
        few = ConfidenceCalibrator(min_examples=20).fit(features[:10], right[:10])
        assert np.allclose(few.predict(anything), (right[:10].sum() + 1) / 12)
        assert np.allclose(
            ConfidenceCalibrator().fit(np.zeros((0, len(FEATURES))), []).predict(anything), 0.5
        )

    def test_nan_is_refused(self) -> None:
        features, right, _ = _examples(100)
        features[3, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            ConfidenceCalibrator().fit(features, right)
        with pytest.raises(ValueError, match="NaN"):
            ConfidenceCalibrator().fit(*_examples(100)[:2]).predict(features)
        with pytest.raises(ValueError, match="outcomes"):
            ConfidenceCalibrator().fit(features[:5], right[:4])

    def test_refitting_and_pickling_change_nothing(self) -> None:
        features, right, _ = _examples(400)
        once = ConfidenceCalibrator().fit(features, right)
        twice = ConfidenceCalibrator().fit(features, right).fit(features, right)
        again = pickle.loads(pickle.dumps(once))
        np.testing.assert_array_equal(once.predict(features), twice.predict(features))
        np.testing.assert_array_equal(once.predict(features), again.predict(features))


class TestHeldOutFolds:
    def test_every_class_is_spread_and_the_folds_balanced(self) -> None:
        labels = ["PE"] * 23 + ["PP"] * 7 + [f"single{i}" for i in range(11)]
        folds = held_out_folds(labels, n_folds=5, seed=3)
        sizes = np.bincount(folds, minlength=5)
        assert sizes.sum() == len(labels) and sizes.max() - sizes.min() <= 1
        names = np.asarray(labels)
        for label, n in (("PE", 23), ("PP", 7)):
            per_fold = np.bincount(folds[names == label], minlength=5)
            assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n
        np.testing.assert_array_equal(folds, held_out_folds(labels, n_folds=5, seed=3))
        assert not np.array_equal(folds, held_out_folds(labels, n_folds=5, seed=4))

    def test_one_fold_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least 2"):
            held_out_folds(["a", "b"], n_folds=1, seed=0)
        with pytest.raises(ValueError, match="calibration_folds"):
            IdentificationModel(ReferenceLibrary.empty(), ModelConfig(calibration_folds=1))


class TestHeldOutPass:
    def test_each_fold_is_built_from_the_other_folds_alone(
        self, flopp_model: IdentificationModel, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The rows each fold's kNN (and its synthetic spectra) is made from are exactly the other folds'."""
        seen: list[set[bytes]] = []
        members = IdentificationModel._members

        def spy(self: IdentificationModel, X: np.ndarray, labels: list[str], ids: np.ndarray) -> Any:
            seen.append({row.tobytes() for row in X})
            return members(self, X, labels, ids)

        monkeypatch.setattr(IdentificationModel, "_members", spy)
        held = flopp_model.held_out_evidence()
        X = flopp_model.library.preprocessed
        assert len(seen) == flopp_model.config.calibration_folds
        for fold, rows in enumerate(seen):
            assert rows == {row.tobytes() for row in X[held.folds != fold]}

    def test_a_class_of_unrelated_spectra_is_not_recognised_from_itself(
        self, flopp_library: ReferenceLibrary, particles: list[Spectrum]
    ) -> None:
        """One particle of each polymer, all labelled ``decoy``: nothing but a leak names them right.

        The served model knows each decoy (r = 1 to itself); held out, a decoy's
        nearest references are those of its real polymer. Had a decoy, or a mixture
        made from it, stayed in its own fold's training rows, it would be named right.
        """
        firsts = {}
        for s in particles:
            firsts.setdefault(scoring_label(str(s.metadata["label"])), s)
        decoys = list(firsts.values())
        library = library_from_sources([f"{FLOPP}@library=FLOPP"])
        library.add(decoys, ["decoy"] * len(decoys))
        model = IdentificationModel(library)
        served = model.classify(decoys, aging=False)
        assert all(r.candidate == "decoy" and r.extra["candidate_r"] > 0.999 for r in served)
        held = model.held_out_evidence()
        is_decoy = np.asarray(library.labels) == "decoy"
        assert len(decoys) >= 10 and held.in_library[is_decoy].all()
        assert held.right[is_decoy].mean() <= 0.2
        assert np.all(held.features[is_decoy, 0] < 0.9995)  # no decoy's best r is to itself

    def test_outcomes_on_real_references(self, flopp_model: IdentificationModel) -> None:
        held = flopp_model.held_out_evidence()
        counts = flopp_model.library.class_counts()
        lonely = np.asarray([counts[label] == 1 for label in flopp_model.library.labels])
        np.testing.assert_array_equal(held.in_library, ~lonely)
        assert not held.right[lonely].any()  # a class's only reference cannot be named right held out
        assert held.right[held.in_library].mean() > 0.9


class TestServedConfidence:
    def test_each_outcome_states_its_confidence(self, flopp_results: list[Result]) -> None:
        statuses = {r.status for r in flopp_results}
        assert {"known", "unknown"} <= statuses
        for r in flopp_results:
            if r.status == "known":
                assert 0.0 < r.confidence < 1.0
                assert "candidate_confidence" not in r.extra
            elif r.status == "unknown":
                assert r.confidence == 0.0 and 0.0 < r.extra["candidate_confidence"] < 1.0
            else:
                assert r.confidence == 0.0 and "candidate_confidence" not in r.extra
            assert "vote_share" in r.extra

    def test_weak_evidence_is_no_longer_certain(self, flopp_results: list[Result]) -> None:
        """A unanimous vote on a poor match (the r 0.67 particles) no longer reads as 1.00."""
        known = [r for r in flopp_results if r.status == "known"]
        weak = [r.confidence for r in known if r.extra["candidate_r"] < 0.8]
        strong = [r.confidence for r in known if r.extra["candidate_r"] >= 0.95]
        assert weak and strong and max(weak) < 0.9 and np.mean(weak) < np.mean(strong) - 0.1
        unanimous_but_weak = [
            r for r in known if r.extra["vote_share"] == 1.0 and r.extra["candidate_r"] < 0.8
        ]
        assert unanimous_but_weak and all(r.confidence < 0.9 for r in unanimous_but_weak)

    def test_a_label_below_min_confidence_comes_out_unknown(
        self, flopp_library: ReferenceLibrary, particles: list[Spectrum], flopp_results: list[Result]
    ) -> None:
        floored = IdentificationModel(flopp_library, ModelConfig(min_confidence=0.5)).classify(
            particles, aging=False
        )
        doubtful = [i for i, r in enumerate(flopp_results) if r.status == "known" and r.confidence < 0.5]
        assert doubtful, "FLOPP-e holds a label given at a confidence below 0.5"
        for i, (plain, floor) in enumerate(zip(flopp_results, floored, strict=True)):
            if i in doubtful:
                assert floor.status == "unknown" and floor.label is None and floor.candidate == plain.label
                assert floor.extra["reason"] == LOW_CONFIDENCE
                assert floor.extra["candidate_confidence"] == plain.confidence
            else:
                assert (floor.status, floor.label) == (plain.status, plain.label)
                assert floor.confidence == plain.confidence

    def test_calibrated_on_another_labs_particles(
        self, flopp_library: ReferenceLibrary, particles: list[Spectrum], flopp_results: list[Result]
    ) -> None:
        report = score(flopp_library, particles, flopp_results)
        truth = [scoring_label(str(s.metadata["label"])) for s in particles]
        given = [(r, t) for r, t in zip(flopp_results, truth, strict=True) if r.status == "known"]
        votes = reliability([r.extra["vote_share"] for r, _ in given], [r.label == t for r, t in given])
        # Measured: ECE 0.007 (the vote share as confidence: 0.042).
        assert report.ece <= 0.05 and report.ece < votes.ece
        assert report.ece_vote_share == pytest.approx(votes.ece)
        assert report.reliability.n == len(given)

    def test_a_confirmed_class_is_served_with_the_map_unchanged(
        self, flopp_library: ReferenceLibrary, particles: list[Spectrum], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The growth path keeps its cost: no held-out pass, the same map, the new class judged by it."""
        model = IdentificationModel(flopp_library.subset(lambda e: e["label"] != "PVC"))
        before = model.confidence_
        pvc = [
            s
            for s in load_source(f"{FLOPP}@library=FLOPP")
            if scoring_label(str(s.metadata["label"])) == "PVC"
        ]

        def refit(self: IdentificationModel) -> None:
            raise AssertionError("an incremental update ran the held-out pass")

        monkeypatch.setattr(IdentificationModel, "held_out_evidence", refit)
        model.add_references(pvc, "PVC", confirmed_by="test")
        assert model.confidence_ is before
        results = model.classify([s for s in particles if s.metadata["label"] == "PVC"], aging=False)
        known = [r for r in results if r.status == "known" and r.label == "PVC"]
        assert known and all(0.0 < r.confidence < 1.0 for r in known)

    def test_a_range_model_serves_its_parents_map(
        self, flopp_library: ReferenceLibrary, particles: list[Spectrum], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """LDIR-like cuts are judged by a model of that window, with no held-out pass of its own,
        and the parent's map stays calibrated there."""
        model = IdentificationModel(flopp_library)

        def refit(self: IdentificationModel) -> None:
            raise AssertionError("a range model ran the held-out pass")

        monkeypatch.setattr(IdentificationModel, "held_out_evidence", refit)
        cut = []
        for s in particles:
            keep = (s.wavenumbers >= 975.0) & (s.wavenumbers <= 1800.0)
            cut.append(
                Spectrum.create(s.wavenumbers[keep], s.values[keep], y_unit=s.y_unit, metadata=s.metadata)
            )
        results = model.classify(cut, aging=False)
        assert all("range" in r.extra for r in results)
        [window] = model.ranges_.windows()
        assert model.ranges_.get(window).confidence_ is model.confidence_
        report = score(flopp_library, cut, results)
        assert report.reliability.n > 150 and report.ece <= 0.05  # measured 0.020

    def test_a_model_pickled_without_a_map_gets_one(self, flopp_model: IdentificationModel) -> None:
        state = flopp_model.__getstate__()
        del state["confidence_"]
        older = IdentificationModel.__new__(IdentificationModel)
        older.__setstate__(pickle.loads(pickle.dumps(state)))
        features, _, _ = _examples(50)
        np.testing.assert_array_equal(
            older.confidence_.predict(features), flopp_model.confidence_.predict(features)
        )


def _spectrum(label: str) -> Spectrum:
    x = np.linspace(600.0, 4000.0, 851)
    centre = {"PE": 2915.0, "PP": 1375.0, "PS": 700.0, "XX": 1720.0}[label]
    values = np.exp(-(((x - centre) / 20.0) ** 2)) + 0.01
    return Spectrum.create(x, values, y_unit="absorbance", metadata={"label": label})


def _result(status: str, candidate: str | None, p: float) -> Result:
    known = status == "known"
    extra: dict[str, Any] = {"vote_share": 1.0}
    if status == "unknown":
        extra["candidate_confidence"] = p
    label = candidate if known else None
    return Result(status, label, label, p if known else 0.0, [], [], {}, 0.7, "v", candidate, extra)


class TestScore:
    def test_every_spectrum_is_counted_once(self) -> None:
        library = ReferenceLibrary.empty()
        library.add([_spectrum(c) for c in ("PE", "PE", "PP", "PS")], ["PE", "PE", "PP", "PS"])
        truths = ["PE", "PE", "PE", "PE", "PP", "PP", "XX"]
        results = [
            _result("known", "PE", 0.92),
            _result("known", "PS", 0.85),  # a class of the library, not of the test set: other
            _result("unknown", "PE", 0.3),
            _result("low_quality", "PE", 0.0),
            _result("known", "PP", 0.96),
            _result("known", "PE", 0.65),
            _result("known", "PE", 0.97),  # a class the library lacks, named: wrong
        ]
        report = score(library, [_spectrum(t) for t in truths], results)
        assert report.confusion_rows == ["PE", "PP", OUT_OF_LIBRARY]
        assert report.confusion_columns == ["PE", "PP", "other", "unknown", "low quality"]
        assert report.confusion == [[1, 0, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]
        # Labels given: 0.92, 0.96 right and 0.97 wrong (bin 0.9: mean 0.95, 2 of 3 right); 0.85, 0.65 wrong.
        assert report.ece == pytest.approx((3 * (0.95 - 2 / 3) + 0.85 + 0.65) / 5)
        assert report.ece_in_library == pytest.approx((2 * 0.06 + 0.85 + 0.65) / 4)
        assert report.reliability_candidates.n == 6  # the low-quality spectrum is not judged
        assert report.ece_vote_share == pytest.approx(3 / 5)  # a vote of 1.0 for 2 right labels of 5
        data = json.loads(json.dumps(report.as_dict()))
        assert data["reliability"]["ece"] == pytest.approx(report.ece)
        assert sum(b["n"] for b in data["reliability"]["bins"]) == 5

    def test_rows_add_up_on_real_particles(
        self, flopp_library: ReferenceLibrary, particles: list[Spectrum], flopp_results: list[Result]
    ) -> None:
        report = score(flopp_library, particles, flopp_results)
        truth = [scoring_label(str(s.metadata["label"])) for s in particles]
        confusion = np.asarray(report.confusion)
        for row, name in enumerate(report.confusion_rows):
            expected = (
                sum(t not in report.classes for t in truth) if name == OUT_OF_LIBRARY else truth.count(name)
            )
            assert confusion[row].sum() == expected
        assert confusion.sum() == len(particles) and report.out_of_library == 6

    def test_the_ece_interval_narrows_with_more_answers(self) -> None:
        # Confidences that are calibrated by construction: the ECE of any sample is chance alone.
        rng = np.random.default_rng(3)
        widths = []
        for n in (57, 3000):
            p = rng.uniform(0.5, 1.0, n)
            low, high = ece_interval(p, rng.uniform(size=n) < p)
            assert 0.0 <= low < high
            widths.append(high - low)
        assert widths[0] > 0.08 and widths[1] < 0.03  # 57 labels cannot tell 0.05 from 0.15
        assert ece_interval([0.7, 0.9], [True, True]) == ece_interval([0.7, 0.9], [True, True])  # seeded
        assert all(np.isnan(ece_interval([], [])))

    def test_reliability_is_checked(self) -> None:
        assert reliability([1.0, 1.0], [True, False]).ece == pytest.approx(0.5)
        assert np.isnan(reliability([], []).ece)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            reliability([1.2], [True])
        with pytest.raises(ValueError, match="outcomes"):
            reliability([0.5, 0.5], [True])


class TestEvaluateCommand:
    def test_report_figures_and_short_titles(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        titles: dict[str, str] = {}
        for name in ("plot_confusion", "plot_reliability"):
            original = getattr(plots, name)

            def capture(
                report: Any, path: Path, *, title: str, _name: str = name, _original: Any = original
            ) -> Path:
                titles[f"{_name}: {path.name}"] = title
                return Path(_original(report, path, title=title))

            monkeypatch.setattr(plots, name, capture)
        argv = ["evaluate", "--library", f"{FLOPP}@library=FLOPP", "--test", f"{FLOPP}@library=FLOPP-e"]
        assert mpwatch([*argv, "--out", str(tmp_path)]) == 0
        assert titles == {
            "plot_confusion: confusion.png": "subknn: FLOPP -> FLOPP-e",
            "plot_reliability: reliability.png": "subknn: FLOPP -> FLOPP-e",
            "plot_confusion: confusion_openspecy.png": "Open Specy's recipe: FLOPP -> FLOPP-e",
        }
        data = json.loads((tmp_path / "cross_source.json").read_text())
        assert 0.0 <= data["ece"] <= 0.1 and data["reliability"]["ece"] == data["ece"]
        low, high = data["ece_interval"]
        assert 0.0 <= low <= high and low < 0.1
        assert data["reliability"]["n"] == sum(b["n"] for b in data["reliability"]["bins"])
        assert np.asarray(data["confusion"]).sum() == data["n_test"]
        for png in ("confusion.png", "reliability.png"):
            assert (tmp_path / png).read_bytes().startswith(PNG_SIGNATURE)
