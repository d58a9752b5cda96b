"""The formats table: every vendor sample file under ../shared/data/formats, read or refused as expected.

Rows live in tests/format_cases_binary.py and tests/format_cases_text.py;
this module joins them into one table, checks each row through the public
entry point (:func:`engine.io.read_spectra`) and checks that no sample file
is missing from the table. A second test feeds damaged copies of every
sample file (truncated, bit-flipped, random bytes behind the real magic) to
every reader: nothing but SpectrumError may escape.
"""

from __future__ import annotations

import ast
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.spectrum import SpectrumError
from engine.io import detect, read_spectra, readers, registry
from tests.conftest import FORMATS, REPO_ROOT
from tests.format_cases import FormatCase
from tests.format_cases_binary import BINARY_CASES
from tests.format_cases_text import TEXT_CASES

TABLE: list[FormatCase] = [*BINARY_CASES, *TEXT_CASES]
NOT_SPECTRA = ("LICENSE_", "SOURCE.md")


def sample_files() -> list[Path]:
    """Every vendor sample file (not licences, not the reference text dumps)."""
    return sorted(
        p
        for p in FORMATS.rglob("*")
        if p.is_file()
        and not p.name.startswith(NOT_SPECTRA)
        and not any(part.endswith("txt_reference") for part in p.parts)
    )


class TestFormatsTable:
    def test_every_sample_file_has_a_row(self) -> None:
        covered = {c.path for c in TABLE}
        missing = [
            str(p.relative_to(FORMATS)) for p in sample_files() if str(p.relative_to(FORMATS)) not in covered
        ]
        assert not missing, f"sample files without a row in the formats table: {missing}"
        assert len(covered) == len(TABLE), "a file has two rows"

    @pytest.mark.parametrize("case", TABLE, ids=[c.path for c in TABLE])
    def test_row(self, case: FormatCase) -> None:
        path = FORMATS / case.path
        if case.error:
            with pytest.raises(SpectrumError) as info:
                read_spectra(path)
            assert info.value.reason == case.error, str(info.value)
            return
        spectra = read_spectra(path)
        first = spectra[0]
        if case.format:
            assert first.metadata["format"] == case.format
        if case.n_spectra is not None:
            assert len(spectra) == case.n_spectra
        if case.n_points is not None:
            assert first.n_points == case.n_points
        if case.wavenumber_min is not None:
            assert first.wavenumbers[0] == pytest.approx(case.wavenumber_min, abs=0.5)
        if case.wavenumber_max is not None:
            assert first.wavenumbers[-1] == pytest.approx(case.wavenumber_max, abs=0.5)
        if case.first_values:
            n = len(case.first_values)
            np.testing.assert_allclose(first.values[:n], case.first_values, rtol=1e-4, atol=1e-6)
        if case.y_unit:
            assert first.y_unit == case.y_unit
        assert first.metadata["sha256"] and first.metadata["source"] == str(path)


#: Modules of engine/io that a reader module may import: the registry and shared helpers. The zip
#: reader also takes the ENVI pair parser, since an ENVI map in a zip is two members, and a file's
#: content identity (no reader) takes the data file beside an ENVI header.
READER_HELPERS = {"registry", "_text", "_binary", "_jcamp_data"}
ALLOWED_READER_IMPORTS = {"archive": {"envi"}, "identity": {"envi"}}


class TestRegistry:
    """The registry alone chooses readers, for files and for zip members, by declared rules."""

    def test_no_reader_picks_another_reader(self) -> None:
        package = REPO_ROOT / "engine" / "io"
        for module in sorted(package.glob("*.py")):
            if module.stem in READER_HELPERS or module.stem == "__init__":
                continue
            imported = {
                (node.module or "").removeprefix("engine.io.")
                for node in ast.walk(ast.parse(module.read_text(encoding="utf-8")))
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine.io.")
            }
            others = imported - READER_HELPERS - ALLOWED_READER_IMPORTS.get(module.stem, set())
            assert not others, f"{module.name} imports reader module(s) {sorted(others)}"

    def test_the_generic_reader_is_declared_not_ordered(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert [r.name for r in readers() if r.fallback] == ["delimited"]
        files = sample_files()
        chosen = {p: detect(p).name for p in files}
        generic_first = sorted(registry.readers(), key=lambda r: not r.fallback)
        monkeypatch.setattr(registry, "_READERS", generic_first)
        assert {p: detect(p).name for p in files} == chosen

    def test_members_are_chosen_by_the_rules_for_files(self) -> None:
        for path in sample_files():
            reader = detect(path)
            member = registry.detect_data(f"folder/{path.name}", path.read_bytes())
            # Binary formats, ENVI pairs and nested zips are read from files only: such members are skipped.
            assert member is (reader if reader.parse is not None else None), path

    def test_bytes_nobody_reads_are_not_claimed(self) -> None:
        assert registry.parse_data("readme.md", b"# notes\n") is None
        assert registry.parse_data("scan.spa", b"Spectral Data File" + bytes(600)) is None
        assert registry.detect_data("notes.txt", b"1\t2\n").name == "delimited"


class TestInspectCommand:
    """The acceptance contract of ``mpwatch inspect``."""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", "inspect", *args],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )

    def test_json_summary(self) -> None:
        done = self.run(str(FORMATS / "opus" / "ftir_ps.0"), "--json")
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert set(out) >= {"n_points", "wavenumber_min", "wavenumber_max", "y_unit", "format"}
        assert out["format"] == "opus"

    def test_bad_file_exits_2_with_one_line(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.spa"
        bad.write_bytes(b"\x00" * 100)
        done = self.run(str(bad), "--json")
        assert done.returncode == 2
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1


def _damaged_copies() -> st.SearchStrategy[tuple[Path, bytes]]:
    files = sample_files()
    small = [p for p in files if p.stat().st_size <= 2_000_000]

    @st.composite
    def damaged(draw: st.DrawFn) -> tuple[Path, bytes]:
        path = draw(st.sampled_from(small))
        data = path.read_bytes()
        how = draw(st.sampled_from(["truncate", "flip", "random_tail"]))
        if how == "truncate":
            data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        elif how == "flip":
            buf = bytearray(data)
            for _ in range(draw(st.integers(1, 16))):
                i = draw(st.integers(0, len(buf) - 1))
                buf[i] ^= 1 << draw(st.integers(0, 7))
            data = bytes(buf)
        else:
            keep = draw(st.integers(0, min(len(data), 64)))
            data = data[:keep] + draw(st.binary(min_size=0, max_size=4096))
        return path, data

    return damaged()


class TestDamagedFiles:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(case=_damaged_copies())
    def test_only_spectrum_error_escapes(
        self, case: tuple[Path, bytes], tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        original, data = case
        target = tmp_path_factory.mktemp("fuzz") / original.name
        target.write_bytes(data)
        try:
            spectra = read_spectra(target)
        except SpectrumError:
            return
        for s in spectra:
            assert np.isfinite(s.values).all()
            assert np.all(np.diff(s.wavenumbers) > 0)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(case=_damaged_copies(), reader_index=st.integers(0, 1000))
    def test_own_readers_raise_only_spectrum_error(
        self, case: tuple[Path, bytes], reader_index: int, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """Readers written here, called directly on any damaged file (bypassing detection and the
        registry's wrapping of third-party parser errors), must raise SpectrumError themselves."""
        own = [r for r in readers() if r.name in OWN_READERS]
        reader = own[reader_index % len(own)]
        original, data = case
        target = tmp_path_factory.mktemp("fuzz") / original.name
        target.write_bytes(data)
        with contextlib.suppress(SpectrumError):
            reader.fn(target)


#: Readers written for this project rather than wrapping a third-party parser.
OWN_READERS = {
    "omnic",
    "perkinelmer",
    "jcamp-dx",
    "agilent-asp",
    "delimited",
    "horiba-labspec",
    "openspecy-csv",
    "openspecy-json",
    "openspecy-yaml",
    "envi",
    "zip",
    "spc",
}
