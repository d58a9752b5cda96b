"""IdentificationModel: the evidence a result carries, on real spectra and the bundled library."""

from __future__ import annotations

import dataclasses

import pytest

from engine.analysis.evaluate import load_source
from engine.core.library import DEFAULT_LIBRARY, ReferenceLibrary
from engine.core.spectrum import Spectrum
from engine.models.served import HIT_SEARCH_K, IdentificationModel, ModelConfig
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def library() -> ReferenceLibrary:
    return ReferenceLibrary.load(DEFAULT_LIBRARY)


@pytest.fixture(scope="module")
def particles() -> list[Spectrum]:
    """Real environmental particles (FLOPP-e), a mix of identified and unknown ones."""
    return load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")[:120]


class TestEvidence:
    def test_fewer_hits_shown_change_neither_the_decision_nor_the_class_evidence(
        self, library: ReferenceLibrary, particles: list[Spectrum]
    ) -> None:
        """With one hit shown, the candidate's best r is still found further down the ranking."""
        full = IdentificationModel(library, ModelConfig(n_hits=HIT_SEARCH_K)).classify(particles, aging=False)
        one = IdentificationModel(library, ModelConfig(n_hits=1)).classify(particles, aging=False)
        found_lower = 0
        for a, b in zip(full, one, strict=True):
            assert len(b.hits) == 1 and b.hits[0] == a.hits[0]
            assert dataclasses.replace(b, hits=a.hits) == a
            class_hits = [h for h in a.hits if h.label == a.candidate]
            assert a.extra["candidate_r"] == (class_hits[0].r if class_hits else -1.0)
            found_lower += bool(class_hits) and class_hits[0] != a.hits[0]
        assert found_lower, "the test needs a particle whose class is not the top hit"

    def test_hits_are_ranked_by_r(self, library: ReferenceLibrary, particles: list[Spectrum]) -> None:
        for result in IdentificationModel(library).classify(particles, aging=False):
            assert len(result.hits) == ModelConfig().n_hits
            rs = [h.r for h in result.hits]
            assert rs == sorted(rs, reverse=True)
