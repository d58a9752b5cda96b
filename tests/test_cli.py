"""The command line without a configuration file: ``mpwatch run`` falls back to the packaged defaults.

With no ``--config``, no ./config.yaml and no /etc/mpwatch/config.yaml, the daemon
runs on daemon/cli/default_config.yaml (package data): an inbox ./inbox and a state
folder ./mpwatch-state, both relative to the working directory. The environment and
the command line's flags still override it, and ``mpwatch confirm`` finds the daemon
at the default address the same way.

The engine's commands on real spectra: ``mpwatch classify`` walks folders with the
daemon's file filters and keeps standard output clean under its progress bar;
``mpwatch library build`` says which labels it normalises, or keeps them as given.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.cli import build_parser, main
from daemon.cli.locate import CONFIG_SEARCH, PACKAGED_CONFIG, daemon_address, load_configuration
from engine.analysis.evaluate import load_source
from engine.cli import classify as classify_command
from engine.core.library import ReferenceLibrary, library_log
from engine.io.labelled_set import load_labelled_set
from tests.conftest import MPWATCH, REPO_ROOT, SHARED_DATA, ledger_count, spectrum_csv, wait_until

no_system_config = pytest.mark.skipif(
    any(p.is_absolute() and p.is_file() for p in CONFIG_SEARCH),
    reason="this machine has a system-wide mpwatch configuration",
)


@pytest.fixture
def bare_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, and no MPWATCH__ settings in the environment."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key in list(os.environ):
        if key.startswith("MPWATCH__"):
            monkeypatch.delenv(key)
    return work


def test_the_packaged_defaults_ship_with_the_package() -> None:
    packaged = resources.files("daemon.cli") / PACKAGED_CONFIG
    assert packaged.is_file()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert PACKAGED_CONFIG in pyproject["tool"]["setuptools"]["package-data"]["daemon.cli"]


@no_system_config
def test_the_packaged_defaults_resolve_against_the_working_directory(
    bare_cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, path = load_configuration(None)
    assert path is None
    assert [(i.name, i.path) for i in config.inboxes] == [("inbox", bare_cwd / "inbox")]
    assert config.state_dir == bare_cwd / "mpwatch-state"
    assert config.http.port == 9108 and config.library is None  # the schema's defaults
    monkeypatch.setenv("MPWATCH__STATE_DIR", "elsewhere")  # the environment wins over the defaults
    config, _ = load_configuration(None, {"http": {"port": 0}})  # and the command line over both
    assert config.state_dir == bare_cwd / "elsewhere" and config.http.port == 0


@no_system_config
def test_a_config_yaml_in_the_working_directory_wins(bare_cwd: Path) -> None:
    (bare_cwd / "config.yaml").write_text(
        "inboxes: [{path: mine, name: mine}]\nstate_dir: state\n", encoding="utf-8"
    )
    config, path = load_configuration(None)
    assert path == Path("config.yaml")
    assert [i.name for i in config.inboxes] == ["mine"] and config.state_dir == bare_cwd / "state"


@no_system_config
def test_confirm_without_a_configuration_finds_the_daemon_at_the_default_address(bare_cwd: Path) -> None:
    args = build_parser().parse_args(["confirm", "1", "--label", "PE"])
    assert daemon_address(args) == "http://127.0.0.1:9108"


@no_system_config
def test_run_without_a_configuration_classifies_into_the_packaged_defaults(
    tmp_path: Path, particles: list[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPWATCH__")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    log = tmp_path / "daemon.log"
    db = work / "mpwatch-state" / "ledger.sqlite3"

    def n_results() -> int:
        return ledger_count(db, "SELECT count(*) FROM results")

    with log.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            [*MPWATCH, "run", "--metrics-port", "0"],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_until(lambda: (work / "inbox").is_dir() or proc.poll() is not None, timeout=30)
            assert proc.poll() is None, log.read_text(encoding="utf-8")
            staged = work / "p.csv.part"  # written outside the inbox, then moved in whole
            staged.write_text(particles[0], encoding="utf-8")
            staged.replace(work / "inbox" / "p.csv")
            wait_until(lambda: n_results() == 1 or proc.poll() is not None, timeout=40)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    said = log.read_text(encoding="utf-8")
    assert code == 0, said
    assert "no configuration file found" in said and "packaged defaults" in said and "--config" in said
    done = subprocess.run(
        [*MPWATCH, "results", "--state", "./mpwatch-state", "--format", "jsonl"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert Path(row["source"]).name == "p.csv" and row["status"]


NOTES = "Sample 07, river Rhine at Lobith.\nFiltered 250 L through a 20 um mesh.\nSee photo.png.\n"
PHOTO = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
WORKBOOK = b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 8


class Terminal(io.StringIO):
    """Standard error as a terminal: the progress bar draws itself into it."""

    def isatty(self) -> bool:
        return True


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


class TestClassifyFolders:
    @pytest.fixture
    def served(self, monkeypatch: pytest.MonkeyPatch, model: Any) -> None:
        """``classify`` serves the small FLOPP model (built once per module), not the bundled libraries."""
        monkeypatch.setattr(classify_command, "served_model", lambda folders: model)

    @pytest.fixture
    def samples(self, tmp_path: Path, particles: list[str]) -> Path:
        """Sample folders as an analyst leaves them: spectra, notes, photos, tables and clutter."""
        return write_tree(
            tmp_path / "samples",
            {
                "a.csv": particles[0],
                "sub/b.csv": particles[1],
                "sub/deeper/c.csv": particles[2],
                "notes.txt": NOTES,
                "broken.csv": "wavenumber,absorbance\n1000,0.1\n",
                "results.xlsx": WORKBOOK,
                "sub/photo.png": PHOTO,
                "~$results.xlsx": b"owner",
                "scan.tmp": particles[3],
                ".hidden.csv": particles[4],
                "quarantine/d.csv": particles[5],
            },
        )

    def test_a_folder_is_walked_with_the_daemons_file_filters(
        self, served: None, samples: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["classify", "--format", "jsonl", str(samples)]) == 0
        out, err = capsys.readouterr()
        rows = [json.loads(line) for line in out.splitlines()]
        assert [Path(r["source"]).relative_to(samples).as_posix() for r in rows] == [
            "a.csv",
            "sub/b.csv",
            "sub/deeper/c.csv",
        ]
        assert all(r["status"] in ("known", "unknown", "low_quality") for r in rows)
        skipped, broken, notes = err.splitlines()
        assert skipped == (
            f"mpwatch: {samples}: skipped 2 files that are not spectra by name (results.xlsx, sub/photo.png)"
        )
        assert broken.startswith(f"mpwatch: {samples / 'broken.csv'}: too_few_points: ")
        assert notes == (
            f"mpwatch: {samples / 'notes.txt'}: not_a_spectrum: notes.txt is text without a table of numbers"
            " (a note?)"
        )

    def test_nothing_readable_is_exit_2_with_a_line_each(
        self, served: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        unreadable = write_tree(tmp_path / "s1", {"notes.txt": NOTES, "cut.csv": "wavenumber,absorbance\n"})
        for form in ("jsonl", "table"):  # the table printed an empty frame on standard output
            assert main(["classify", "--format", form, str(unreadable)]) == 2
            out, err = capsys.readouterr()
            assert out == "" and len(err.splitlines()) == 2
        only_photos = write_tree(tmp_path / "s2", {"photo.png": PHOTO, ".DS_Store": b"x"})
        assert main(["classify", str(only_photos)]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"mpwatch: {only_photos}: skipped 1 file that is not a spectrum by name (photo.png)",
            f"mpwatch: {only_photos}: no spectrum files in it",
        ]

    def test_labelled_sets_are_read_whole_given_or_met_on_the_way(
        self, served: None, tmp_path: Path, particles: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        flopp = load_labelled_set(SHARED_DATA / "flopp_frond2021")
        labelled = tmp_path / "samples" / "set"
        labelled.mkdir(parents=True)
        np.save(labelled / "spectra.npy", flopp.spectra[:3])
        np.save(labelled / "wavenumbers.npy", flopp.wavenumbers)
        (labelled / "labels.txt").write_text("\n".join(flopp.labels[:3]) + "\n")
        (tmp_path / "samples" / "p.csv").write_text(particles[0])
        assert main(["classify", str(labelled)]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["source"], r["index"]) for r in rows] == [(str(labelled), i) for i in range(3)]
        assert main(["classify", str(tmp_path / "samples")]) == 0
        out, err = capsys.readouterr()
        sources = [json.loads(line)["source"] for line in out.splitlines()]
        assert sources == [str(tmp_path / "samples" / "p.csv"), *[str(labelled)] * 3] and err == ""

    def test_the_progress_bar_draws_on_standard_error_and_leaves_csv_clean(
        self, served: None, samples: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        terminal = Terminal()
        with monkeypatch.context() as patched:
            patched.setattr(sys, "stderr", terminal)
            assert main(["classify", "--format", "csv", str(samples)]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert [Path(r["source"]).name for r in rows] == ["a.csv", "b.csv", "c.csv"]
        assert all(set(r) == set(classify_command.CSV_FIELDS) for r in rows)
        drawn = terminal.getvalue()
        assert "classifying" in drawn and "5/5" in drawn  # a, broken, notes, b, c
        assert "too_few_points" in drawn and "skipped 2 files" in drawn


def flopp_folders(root: Path, folders: dict[str, tuple[str, int, int]]) -> Path:
    """One subfolder per label, each with FLOPP pristine spectra of a class (``class, first, count``)."""
    pristine = load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP")
    for folder, (label, first, count) in folders.items():
        chosen = [s for s in pristine if s.metadata["label"] == label][first : first + count]
        assert len(chosen) == count, label
        (root / folder).mkdir(parents=True)
        for i, spectrum in enumerate(chosen):
            (root / folder / f"{label}-{first + i}.csv").write_text(spectrum_csv(spectrum))
    return root


FOLDERS = {
    "HDPE": ("PE", 0, 3),
    "LDPE": ("PE", 3, 3),
    "acrylic": ("acrylic", 0, 3),
    "R": ("R", 0, 3),
    "PP": ("PP", 0, 3),
}


class TestLibraryBuildLabels:
    def test_build_prints_every_label_it_normalises(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = flopp_folders(tmp_path / "by-label", FOLDERS)
        out = tmp_path / "lib"
        assert main(["library", "build", "--from", str(source), "--out", str(out)]) == 0
        said = capsys.readouterr().err.splitlines()
        assert said[:4] == [
            "labels normalised (--keep-labels keeps them as given):",
            "  acrylic -> PAN",
            "  HDPE, LDPE -> PE",
            "  R -> r",
        ]
        assert said[4] == f"library {out}: version 1, ir (default pipeline), 15 spectra, 4 classes"
        assert ReferenceLibrary.load(out).class_counts() == {"PE": 6, "PAN": 3, "r": 3, "PP": 3}

    def test_keep_labels_keeps_them_for_classify_too(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = flopp_folders(tmp_path / "by-label", FOLDERS)
        out = tmp_path / "lib"
        assert main(["library", "build", "--from", str(source), "--out", str(out), "--keep-labels"]) == 0
        said = capsys.readouterr().err
        assert "normalised" not in said and "5 classes (labels as given)" in said
        lib = ReferenceLibrary.load(out)
        assert lib.keeps_labels and set(lib.class_counts()) == {"HDPE", "LDPE", "acrylic", "R", "PP"}
        held_out = flopp_folders(tmp_path / "held-out", {"acrylic": ("acrylic", 3, 1)})
        (particle,) = (held_out / "acrylic").iterdir()
        assert main(["classify", "--library", str(out), str(particle)]) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert row["candidate"] == "acrylic"
        assert {hit["label"] for hit in row["hits"]} <= {"HDPE", "LDPE", "acrylic", "R", "PP"}

    def test_keep_labels_on_a_canonical_library_is_refused_and_changes_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        source = flopp_folders(tmp_path / "by-label", {"HDPE": ("PE", 0, 2)})
        out = tmp_path / "lib"
        assert main(["library", "build", "--from", str(source), "--out", str(out)]) == 0
        capsys.readouterr()
        assert main(["library", "build", "--from", str(source), "--out", str(out), "--keep-labels"]) == 2
        assert capsys.readouterr().err == (
            f"mpwatch: {out} files its references under canonical labels; --keep-labels needs a new library\n"
        )
        assert [v.version for v in library_log(out)] == [1]


def test_a_one_shot_command_says_a_skipped_file_in_one_plain_line(tmp_path: Path) -> None:
    """A timestamped log record (``2026-... WARNING engine.core.library: ...``) is the daemon's form."""
    source = flopp_folders(tmp_path / "by-label", {"PP": ("PP", 0, 2)})
    (source / "PP" / "broken.csv").write_text("not,a\nspectrum,at all\n")
    (source / "PP" / "notes.docx").write_bytes(b"PK\x03\x04 a document")
    built = subprocess.run(
        [*MPWATCH, "library", "build", "--from", str(source), "--out", str(tmp_path / "lib")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (skipped,) = [line for line in built.stderr.splitlines() if "broken.csv" in line]
    assert skipped.startswith("mpwatch: skipped ") and "notes.docx" not in built.stderr


def test_the_readmes_worked_library_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """The README's "Your own reference library" block, run as a lab user would."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ mpwatch library build --from docs/examples/reference-spectra --out my-library\n")[
        1
    ]
    shown = block.split("\n$ ")[0].splitlines()
    built = subprocess.run(
        [
            *MPWATCH,
            "library",
            "build",
            "--from",
            "docs/examples/reference-spectra",
            "--out",
            str(tmp_path / "my-library"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    printed = built.stderr.replace(str(tmp_path / "my-library"), "my-library").splitlines()
    assert printed == shown
