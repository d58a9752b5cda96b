"""Open Specy's recipe beside the model, and whole families held out, on real spectra from two labs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.analysis import evaluate as ev
from engine.analysis.recipe import OpenSpecyRecipe
from engine.core.families import family_of
from engine.core.labels import scoring_label
from engine.core.library import ReferenceLibrary
from engine.core.spectrum import Spectrum
from tests.conftest import SHARED_DATA

FLOPP = f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP"
FLOPP_E = f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e"


@pytest.fixture(scope="module")
def flopp() -> ReferenceLibrary:
    return ev.library_from_sources([FLOPP])


@pytest.fixture(scope="module")
def flopp_e() -> list[Spectrum]:
    return ev.load_source(FLOPP_E)


class TestTheRecipe:
    def test_it_scores_what_the_readme_quotes_on_flopp_e(
        self, flopp: ReferenceLibrary, flopp_e: list[Spectrum]
    ) -> None:
        report = ev.recipe_cross_source(flopp, flopp_e)
        assert report.n_in_library == 189
        assert report.errors == 4  # it labels every spectrum: its errors are its wrong labels
        assert report.false_reject_rate == 0.0
        assert report.accuracy == pytest.approx(185 / 189)

    def test_r_is_pearsons_r_on_the_recipes_features(self, flopp: ReferenceLibrary) -> None:
        recipe = OpenSpecyRecipe(flopp)
        query = flopp.measured[3]
        match = recipe.identify([query])[0]
        assert match.r == pytest.approx(1.0)  # a reference matches itself
        assert match.label == flopp.labels[3]
        features = recipe.pipeline.transform([query, flopp.measured[10]])
        assert recipe.identify([flopp.measured[10]])[0].r <= 1.0 + 1e-9
        expected = np.corrcoef(np.nan_to_num(np.asarray(features, dtype=float)))[0, 1]
        assert recipe.references_[3] @ recipe.references_[10] == pytest.approx(expected, abs=1e-6)

    def test_a_raman_library_keeps_its_span(self) -> None:
        raman = ev.library_from_sources([SHARED_DATA / "openspecy_raman_polymers_2023"])
        grid = OpenSpecyRecipe(raman).pipeline.named_steps["resample"].grid.wavenumbers
        assert grid[0] == pytest.approx(100.0) and grid[1] - grid[0] == pytest.approx(5.0)


class TestErrors:
    def test_a_rejected_known_spectrum_is_an_error(
        self, flopp: ReferenceLibrary, flopp_e: list[Spectrum]
    ) -> None:
        report = ev.cross_source(flopp, flopp_e)
        truth = [scoring_label(str(s.metadata["label"])) for s in flopp_e]
        known = {scoring_label(label) for label in flopp.labels}
        rejected = sum(r.status != "known" for r, t in zip(report.results, truth, strict=True) if t in known)
        wrong = sum(
            r.status == "known" and scoring_label(r.label or "?") != t
            for r, t in zip(report.results, truth, strict=True)
            if t in known
        )
        assert rejected > 0
        assert report.errors == rejected + wrong


class TestLeaveOneFamilyOut:
    def test_a_family_goes_whole(self, flopp: ReferenceLibrary, flopp_e: list[Spectrum]) -> None:
        held = ev.leave_one_out(flopp, flopp_e, grouping="family", min_test=10)
        assert set(held.n_held_out) == {"cellulosic", "polyester", "polyolefin", "styrenic"}
        assert held.removed_classes["polyolefin"] == ["EVA", "PE", "PP"]
        known = {scoring_label(label) for label in flopp.labels}
        truth = [scoring_label(str(s.metadata["label"])) for s in flopp_e]
        # held out: the test spectra of the family's classes the library holds (not FLOPP-e's one EAA)
        polyolefin = [t for t in truth if family_of(t) == "polyolefin"]
        assert held.n_held_out["polyolefin"] == sum(t in known for t in polyolefin)
        assert len(polyolefin) == held.n_held_out["polyolefin"] + 1
        assert all(0.0 <= rate <= 1.0 for rate in held.unknown_rate.values())

    def test_the_command_prints_the_family_table_and_the_recipe_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from daemon.cli import main

        code = main(["evaluate", "--library", FLOPP, "--test", FLOPP_E, "--lofo", "--out", str(tmp_path)])
        assert code == 0
        shown = capsys.readouterr().out
        assert "leave one family out" in shown
        assert "against Open Specy's recipe" in shown
        summary = json.loads((tmp_path / "cross_source.json").read_text())
        versus = summary["against_recipe"]["subknn"]
        assert versus["recipe_errors"] == summary["members"]["openspecy"]["errors"] == 4
        assert versus["errors_ratio"] == pytest.approx(versus["errors"] / 4)
        assert (tmp_path / "confusion_openspecy.png").stat().st_size > 0
