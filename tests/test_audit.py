"""Labels a set's own spectra contradict: found in real sets, listed by ``library build``, set aside.

``engine.core.audit`` compares each spectrum with the consensus (median)
spectrum of every class of its set. These tests hold it to real data: the
Villegas-Camacho set holds PS spectra that are PP by its own PP spectra, and a
curated library (FLOPP pristine) holds one doubtful reference at most.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.cli import main
from engine.analysis import evaluate as ev
from engine.core.audit import contradicted_labels, tally
from engine.core.labels import scoring_label
from engine.core.library import ReferenceLibrary
from tests.conftest import SHARED_DATA
from tests.test_cli import flopp_folders


def test_villegas_ps_and_pvc_spectra_that_match_another_class_of_the_set_are_flagged() -> None:
    lib = ev.library_from_sources([str(SHARED_DATA / "villegas_camacho2024_c8")])
    labels = [scoring_label(label) for label in lib.labels]
    found = contradicted_labels(lib.preprocessed, labels)
    counts = tally(found)
    assert set(counts) == {"PS as PP", "PVC as PS"}
    assert 140 <= counts["PS as PP"] <= 160 and 100 <= counts["PVC as PS"] <= 120
    # The flag is about the set, not the model: the flagged PS rows correlate with the PP rows as
    # measured (before any preprocessing) far better than with the PS rows left unflagged.
    raw = np.stack([s.values for s in lib.measured])
    raw = raw - raw.mean(axis=1, keepdims=True)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    flagged = {c.index for c in found if c.label == "PS"}
    ps_kept = [i for i, label in enumerate(labels) if label == "PS" and i not in flagged]
    pp = [i for i, label in enumerate(labels) if label == "PP"]
    rows = sorted(flagged)
    like_pp = np.median((raw[rows] @ raw[pp].T).max(axis=1))
    like_ps = np.median((raw[rows] @ raw[ps_kept].T).max(axis=1))
    assert like_pp > 0.95 and like_pp - like_ps > 0.15


def test_a_curated_library_is_left_nearly_alone(library_dir: Path) -> None:
    lib = ReferenceLibrary.load(library_dir)
    assert len(contradicted_labels(lib.preprocessed, lib.labels)) <= 1


def test_classes_too_small_for_a_consensus_are_not_judged() -> None:
    rows = np.random.default_rng(0).normal(size=(5, 50))
    assert contradicted_labels(rows, ["a", "a", "b", "b", "c"]) == []
    with pytest.raises(ValueError, match="5 labels"):
        contradicted_labels(rows[:4], ["a"] * 5)


def test_a_score_sets_aside_the_test_spectra_their_set_contradicts(model: Any) -> None:
    particles = ev.load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")
    pe = [s for s in particles if scoring_label(str(s.metadata["label"])) == "PE"][:6]
    pp = [s for s in particles if scoring_label(str(s.metadata["label"])) == "PP"][:6]
    misfiled = dataclasses.replace(
        pe[0], metadata={**pe[0].metadata, "label": "PP"}
    )  # a PE particle filed as PP
    test = [*pe[1:], *pp, misfiled]
    results = model.classify(test)
    report = ev.score(model.library, test, results)
    assert report.contradicted == {"PP as PE": 1}
    assert results[-1].label == "PE"  # the model reads the spectrum, not the label: an "error"
    assert report.errors_consistent == report.errors - 1
    kept = len(test) - 1
    truth = [scoring_label(str(s.metadata["label"])) for s in test[:-1]]
    right = sum(scoring_label(r.candidate or "") == t for t, r in zip(truth, results, strict=False))
    assert report.accuracy_consistent == pytest.approx(right / kept)


def test_library_build_lists_a_misfiled_reference_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = flopp_folders(tmp_path / "by-label", {"PE": ("PE", 0, 5), "PP": ("PP", 0, 5)})
    shutil.copy(source / "PE" / "PE-0.csv", source / "PP" / "really-PE.csv")
    out = tmp_path / "lib"
    assert main(["library", "build", "--from", str(source), "--out", str(out)]) == 0
    said = capsys.readouterr().err.splitlines()
    start = said.index(
        "1 reference looks like another class of this library, not their own (kept; check the labels):"
    )
    flagged = said[start + 1]
    assert "really-PE.csv" in flagged and "filed as PP" in flagged and "the PE consensus" in flagged
    assert ReferenceLibrary.load(out).class_counts() == {"PE": 5, "PP": 6}
