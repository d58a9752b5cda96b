"""The versioned reference library: imports, provenance, atomic versions, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.core.library import LibraryError, ReferenceLibrary, library_log, rollback
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
        assert lib.import_folder(SHARED_DATA / "flopp_frond2021") == 380
        counts = lib.class_counts()
        assert counts["PP"] == 85 and counts["PE"] == 67
        info = lib.info()
        assert info["organisations"] == {"FLOPP-e": 195, "FLOPP": 185}

    def test_folder_of_labelled_subfolders(self, tmp_path: Path, shared_data: Path) -> None:
        (tmp_path / "PS").mkdir()
        (tmp_path / "PS" / "ftir_ps.0").write_bytes((FORMATS / "opus" / "ftir_ps.0").read_bytes())
        (tmp_path / "PS" / "broken.csv").write_text("not,a\nspectrum,at all\n")
        (tmp_path / "LDPE").mkdir()
        (tmp_path / "LDPE" / "soil.asp").write_bytes(
            (FORMATS / "agilent_asp" / "openspecy_ftir_ldpe_soil.asp").read_bytes()
        )
        lib = ReferenceLibrary.empty()
        assert lib.import_folder(tmp_path) == 2
        assert sorted(lib.labels) == ["PE", "PS"]
        assert {e["material"] for e in lib.entries} == {"PS", "LDPE"}

    def test_neither_kind_of_folder(self, tmp_path: Path) -> None:
        with pytest.raises(LibraryError):
            ReferenceLibrary.empty().import_folder(tmp_path / "missing")


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
