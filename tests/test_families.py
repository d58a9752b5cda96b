"""The family taxonomy: every class has a family, names are placed by their words, and results carry it."""

from __future__ import annotations

import pytest

from engine.core.families import FAMILIES, FAMILY_OF_CLASS, FAMILY_WORDS, family_of
from engine.core.labels import CANONICAL
from engine.models.result import Hit, Result


class TestTheTaxonomy:
    def test_every_canonical_class_has_a_known_family(self) -> None:
        assert set(CANONICAL) <= set(FAMILY_OF_CLASS)
        assert set(FAMILY_OF_CLASS.values()) <= set(FAMILIES)
        assert {family for _, family in FAMILY_WORDS} <= set(FAMILIES)

    @pytest.mark.parametrize(
        ("name", "family"),
        [
            ("LDPE", "polyolefin"),
            ("ethylene vinyl acetat copolymer", "polyolefin"),  # an ethylene copolymer, not a vinyl polymer
            ("styrene acrylonirtile copolymer", "styrenic"),
            ("acrylonitrile butadiene", "rubber"),
            ("poly(p-phenylene ether sulphone)", "polysulfone"),
            ("poly(ethylene oxide)", "polyether"),
            ("n vinylpyrrolidone vinyl acetate", "vinyl"),  # not cellulose acetate
            ("FLOPP_Nylon_3", "polyamide"),
            ("polyester", "polyester"),
            ("cellulose acetate", "cellulosic"),
            ("wool cashmere mongolia", "natural"),
            ("wood glue", "resin"),
            ("quartz sand beach", "mineral"),
        ],
    )
    def test_names_are_placed(self, name: str, family: str) -> None:
        assert family_of(name) == family

    @pytest.mark.parametrize("name", ["R", "coal", "", "   ", None])
    def test_what_no_rule_places_has_no_family(self, name: str | None) -> None:
        assert family_of(name) is None


class TestResultsCarryTheFamily:
    def _result(self, label: str | None, hits: tuple[str, ...] = (), status: str | None = None) -> Result:
        return Result(
            status=status or ("known" if label else "unknown"),
            label=label,
            material=label,
            confidence=0.9 if label else 0.0,
            hits=[Hit(h, h, 0.95 - 0.01 * i, i, "lib") for i, h in enumerate(hits)],
            members=[],
            quality={},
            threshold=0.7,
            model_version="v",
        )

    def test_a_labelled_result_has_its_family(self) -> None:
        assert self._result("PP").as_dict()["family"] == "polyolefin"

    def test_an_unlabelled_result_has_none(self) -> None:
        assert self._result(None).as_dict()["family"] is None

    def test_a_labelled_result_takes_its_labels_family_whatever_its_hits(self) -> None:
        assert self._result("PP", hits=("PS", "ABS", "SAN")).family == "polyolefin"

    def test_an_unknown_names_no_family_even_when_its_hits_agree_on_one(self) -> None:
        # Measured on FLOPP + Open Specy -> FLOPP-e: naming the family the hits of an unknown agree
        # on was right for 0 of 9 held-out particles (held-out polyamides agree on fur).
        assert self._result(None, hits=("EVA", "EAA", "PE")).family is None
