"""The versioned reference library: imports, provenance, atomic versions, rollback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from engine.core.library import Imported, LibraryError, ReferenceLibrary, library_log, rollback
from engine.core.preprocess import transform
from engine.core.spectrum import Spectrum
from tests.conftest import FORMATS, SHARED_DATA

X = np.linspace(600.0, 4000.0, 851)


def peak(centre: float) -> Spectrum:
    return Spectrum.create(
        X,
        np.exp(-(((X - centre) / 20.0) ** 2)) + 0.01,
        y_unit="absorbance",
        metadata={"source": f"peak{centre}.csv"},
    )


class TestReferenceLibrary:
    def test_add_canonicalises_and_keeps_material(self) -> None:
        lib = ReferenceLibrary.empty()
        ids = lib.add([peak(2915), peak(1720)], ["LDPE", "Polyester"], confirmed_by="ana")
        assert ids.tolist() == [1, 2]
        assert lib.labels == ["PE", "PET"]
        e = lib.entry(1)
        assert e["material"] == "LDPE"
        assert e["confirmed_by"] == "ana"
        assert e["source"] == "peak2915.csv"
        assert len(e["sha256"]) == 64
        assert lib.preprocessed.shape == (2, lib.grid.wavenumbers.size)

    def test_ids_are_never_reused(self) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(1000), peak(1100)], ["PE", "PP"])
        lib.remove([2])
        assert lib.add([peak(1200)], ["PS"]).tolist() == [3]

    def test_remove(self) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(1000), peak(1100), peak(1200)], ["PE", "PP", "PS"])
        assert lib.remove([2, 99]) == 1
        assert lib.labels == ["PE", "PS"]
        assert lib.preprocessed.shape[0] == 2 and len(lib.measured) == 2

    def test_label_count_mismatch(self) -> None:
        with pytest.raises(ValueError, match="labels"):
            ReferenceLibrary.empty().add([peak(1000)], ["PE", "PP"])


class TestImport:
    def test_labelled_set(self, shared_data: Path) -> None:
        lib = ReferenceLibrary.empty()
        imported = lib.import_folder(SHARED_DATA / "flopp_frond2021")
        assert imported.added == 380
        assert {"acrylic", "R", "PE"} <= set(imported.raw_labels)
        assert len(set(imported.raw_labels)) == len(imported.raw_labels)
        counts = lib.class_counts()
        assert counts["PP"] == 85 and counts["PE"] == 67
        info = lib.info()
        assert info["organisations"] == {"FLOPP-e": 195, "FLOPP": 185}

    def test_folder_of_labelled_subfolders(
        self, tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (tmp_path / "PS").mkdir()
        (tmp_path / "PS" / "ftir_ps.0").write_bytes((FORMATS / "opus" / "ftir_ps.0").read_bytes())
        (tmp_path / "PS" / "broken.csv").write_text("not,a\nspectrum,at all\n")
        (tmp_path / "LDPE").mkdir()
        (tmp_path / "LDPE" / "soil.asp").write_bytes(
            (FORMATS / "agilent_asp" / "openspecy_ftir_ldpe_soil.asp").read_bytes()
        )
        (tmp_path / "PVC").mkdir()  # nothing readable in it: no label imported
        (tmp_path / "PVC" / "notes.txt").write_text("Bought from the supplier in May.\n")
        (tmp_path / "PS" / "supplier.docx").write_bytes(b"PK\x03\x04 a document")  # left out, no warning
        lib = ReferenceLibrary.empty()
        with caplog.at_level(logging.WARNING, logger="engine.core.library"):
            assert lib.import_folder(tmp_path) == Imported(added=2, raw_labels=("LDPE", "PS"))
        warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
        assert "broken.csv" in warned and "supplier.docx" not in warned
        assert sorted(lib.labels) == ["PE", "PS"]
        assert {e["material"] for e in lib.entries} == {"PS", "LDPE"}

    def test_neither_kind_of_folder(self, tmp_path: Path) -> None:
        with pytest.raises(LibraryError):
            ReferenceLibrary.empty().import_folder(tmp_path / "missing")


class TestKeepLabels:
    def test_references_keep_their_labels_as_given_for_good(self, tmp_path: Path) -> None:
        lib = ReferenceLibrary.empty(keep_labels=True)
        lib.add([peak(2915), peak(2916), peak(1720)], ["HDPE", " LDPE ", "acrylic"])
        assert lib.labels == ["HDPE", "LDPE", "acrylic"]
        lib.save(tmp_path, message="as given")
        back = ReferenceLibrary.load(tmp_path)
        assert back.keeps_labels and back.info()["labels"] == "as given"
        back.add([peak(1000)], ["polypropylene"])  # a confirmation, long after the build
        assert back.labels[-1] == "polypropylene"
        assert back.restricted(900.0, 3000.0).keeps_labels  # range models file them the same way
        with pytest.raises(ValueError, match="empty label"):
            back.add([peak(1100), peak(1200)], ["PS", "  "])
        assert (len(back), back.next_ref_id, back.preprocessed.shape[0]) == (4, 5, 4)  # nothing half-added

    def test_a_library_normalises_its_labels_by_default(self) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915)], ["HDPE"])
        assert lib.labels == ["PE"] and not lib.keeps_labels
        assert lib.info()["labels"] == "canonical"

    def test_the_served_model_answers_in_the_labels_as_given(self, shared_data: Path) -> None:
        from engine.analysis.evaluate import load_source
        from engine.models.served import IdentificationModel, ModelConfig

        pristine = load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP")
        labels = [str(s.metadata["label"]) for s in pristine]
        held = [labels.index("PE"), labels.index("acrylic")]
        references = [i for i in range(len(pristine)) if i not in held]
        lib = ReferenceLibrary.empty(keep_labels=True)
        lib.add(
            [pristine[i] for i in references], [{"PE": "HDPE"}.get(labels[i], labels[i]) for i in references]
        )
        model = IdentificationModel(lib, ModelConfig(n_synthetic=10, n_learners=10))
        pe, acrylic = model.classify([pristine[i] for i in held], aging=True)
        assert (pe.status, pe.label, acrylic.status, acrylic.label) == ("known", "HDPE", "known", "acrylic")
        assert {hit.label for hit in pe.hits} <= set(lib.class_counts())
        aging = pe.extra["aging"]  # the aging bands still know an HDPE particle as PE
        assert aging["polymer"] == "PE" and aging["carbonyl"] is not None


class TestVersions:
    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915), peak(1720)], ["HDPE", "PET"])
        assert lib.save(tmp_path, message="first") == 1
        back = ReferenceLibrary.load(tmp_path)
        assert back.version == 1
        assert back.entries == lib.entries
        np.testing.assert_array_equal(back.preprocessed, lib.preprocessed)
        np.testing.assert_allclose(back.measured[0].values, lib.measured[0].values, rtol=1e-6)

    def test_a_version_saved_by_an_earlier_preprocessing_is_preprocessed_again(self, tmp_path: Path) -> None:
        """The bundled libraries' stored rows differed from what the current code makes of their spectra
        by 0.02 (median over rows, L2-normalised) after preprocessing changed; the full model compared
        queries preprocessed one way with references preprocessed another."""
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915), peak(1720), peak(1450)], ["HDPE", "PET", "PP"])
        lib.preprocessed = lib.preprocessed + 0.05  # as an older preprocessing left them on disk
        lib.save(tmp_path, message="saved by an earlier mpwatch")
        back = ReferenceLibrary.load(tmp_path)
        np.testing.assert_allclose(back.preprocessed, transform(back.pipeline, back.measured))
        assert np.abs(back.preprocessed - lib.preprocessed).max() > 0.04

    def test_every_change_is_a_version_and_rollback_adds_one(self, tmp_path: Path) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915)], ["PE"])
        lib.save(tmp_path, message="one")
        lib.add([peak(1720)], ["PET"])
        lib.save(tmp_path, message="two")
        assert rollback(tmp_path, 1) == 3
        log = library_log(tmp_path)
        assert [(v.version, v.parent, v.n_spectra) for v in log] == [(1, None, 1), (2, 1, 2), (3, 2, 1)]
        assert log[2].message == "rollback to version 1"
        assert ReferenceLibrary.load(tmp_path).labels == ["PE"]
        assert ReferenceLibrary.load(tmp_path, version=2).labels == ["PE", "PET"]

    def test_crash_before_head_update_leaves_old_version(self, tmp_path: Path) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915)], ["PE"])
        lib.save(tmp_path, message="one")
        # a crash after the version file but before HEAD moved: HEAD still names version 1
        (tmp_path / "versions" / "000002.npz").write_bytes(b"torn")
        assert ReferenceLibrary.load(tmp_path).version == 1
        assert not list(tmp_path.rglob("*.tmp"))

    def test_no_temporary_files_left(self, tmp_path: Path) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915)], ["PE"])
        lib.save(tmp_path, message="one")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["HEAD.json", "versions"]
        assert json.loads((tmp_path / "HEAD.json").read_text()) == {"version": 1}

    def test_missing_library_and_version(self, tmp_path: Path) -> None:
        with pytest.raises(LibraryError, match="not a library"):
            ReferenceLibrary.load(tmp_path)
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915)], ["PE"])
        lib.save(tmp_path, message="one")
        with pytest.raises(LibraryError, match="no version 7"):
            ReferenceLibrary.load(tmp_path, version=7)

    def test_damaged_version_file(self, tmp_path: Path) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915)], ["PE"])
        lib.save(tmp_path, message="one")
        (tmp_path / "versions" / "000001.npz").write_bytes(b"garbage")
        with pytest.raises(LibraryError, match="damaged"):
            ReferenceLibrary.load(tmp_path)

    def test_rollback_never_reuses_ids(self, tmp_path: Path) -> None:
        lib = ReferenceLibrary.empty()
        lib.add([peak(2915)], ["PE"])
        lib.save(tmp_path, message="one")
        lib.add([peak(1720)], ["PET"])
        lib.save(tmp_path, message="two")
        rollback(tmp_path, 1)
        back = ReferenceLibrary.load(tmp_path)
        assert back.add([peak(1500)], ["PS"]).tolist() == [3]
