"""Canonical polymer labels across the naming habits of different labs."""

from __future__ import annotations

import pytest

from engine.core.labels import canonical_label, normalisations, same_polymer, scoring_label
from engine.core.library import DEFAULT_LIBRARY, DEFAULT_RAMAN_LIBRARY, ReferenceLibrary
from tests.conftest import SHARED_DATA


class TestCanonicalLabel:
    @pytest.mark.parametrize(
        ("raw", "canonical"),
        [
            ("HDPE", "PE"), ("LDPE", "PE"), ("polyethylene wax oxidized", "PE"), ("PE", "PE"),
            ("PP", "PP"), ("polypropylene", "PP"), ("PS", "PS"), ("polystyrene foam", "PS"),
            ("PET", "PET"), ("Polyester", "PET"), ("poly(ethylene terephthalate)", "PET"),
            ("PVC", "PVC"), ("Nylon 6,6", "PA"), ("polyamide", "PA"), ("PU", "PU"), ("EVA", "EVA"),
            ("ethylene vinyl acetate", "EVA"), ("ABS", "ABS"), ("PC", "PC"), ("PMMA", "PMMA"),
            ("cellulose acetate", "CA"), ("Cellulose triacetate", "CA"), ("fibre acetate", "CA"),
            ("Cotton", "cellulose"), ("C", "cellulose"),
            ("acrylic", "PAN"), ("FLOPP_Nylon_3", "PA"),
        ],
    )
    def test_known_names(self, raw: str, canonical: str) -> None:
        assert canonical_label(raw) == canonical

    def test_unknown_names_are_kept_lower_case(self) -> None:
        assert canonical_label("Fur") == "fur"
        assert canonical_label("R") == "r"

    def test_empty_label_is_an_error(self) -> None:
        with pytest.raises(ValueError):
            canonical_label("  ")

    def test_scoring_equivalence(self) -> None:
        assert scoring_label("PES") == "PET"
        assert same_polymer("HDPE", "LDPE")
        assert not same_polymer("PE", "PP")

    def test_a_chemically_modified_polymer_is_not_its_parent(self) -> None:
        # Both Open Specy sets label chlorinated PE apart from PE (its C-Cl bands); a prefix rule
        # had filed it, and chlorosulfonated PE, under PE in both bundled libraries.
        for raw in ("polyethylene chlorinated", "Polyethylene, 36% chlorinated", "chlorinated polyethylene"):
            assert canonical_label(raw) == "CPE"
        for raw in ("polyethylene chlorosulfonated", "Polyethylene, 43% chlorosulfonated"):
            assert canonical_label(raw) == "CSM"
        assert canonical_label("chlorinated PVC") == "CPVC"
        assert canonical_label("Poly(vinyl chloride), carboxylated") == "PVC"
        assert not same_polymer("polyethylene chlorinated", "PE")

    def test_the_bundled_libraries_keep_chlorinated_polyethylene_apart(self) -> None:
        for path in (DEFAULT_LIBRARY, DEFAULT_RAMAN_LIBRARY):
            library = ReferenceLibrary.load(path)
            for entry in library.entries:
                if "chlor" in str(entry["material"]).lower() and "ethylene" in str(entry["material"]).lower():
                    assert entry["label"] in ("CPE", "CSM"), entry

    def test_every_label_in_the_real_sets_canonicalises(self) -> None:
        for name in ("flopp_frond2021", "villegas_camacho2024_c8", "openspecy_ftir_2023"):
            for label in (SHARED_DATA / name / "labels.txt").read_text().splitlines():
                assert canonical_label(label)


class TestNormalisations:
    def test_each_canonical_label_with_the_raw_labels_that_became_it(self) -> None:
        raw = ["R", "HDPE", "PE", "LDPE", "acrylic", "HDPE", "Polyethylene", " PP ", "fur"]
        assert normalisations(raw) == {"PAN": ["acrylic"], "PE": ["HDPE", "LDPE", "Polyethylene"], "r": ["R"]}

    def test_labels_already_canonical_are_not_listed(self) -> None:
        assert normalisations(["PE", "PP", "cellulose", "fur", "PE "]) == {}

    def test_the_real_flopp_labels(self) -> None:
        labels = (SHARED_DATA / "flopp_frond2021" / "labels.txt").read_text().splitlines()
        assert normalisations(labels) == {"PAN": ["acrylic"], "r": ["R"], "sr": ["SR"]}
