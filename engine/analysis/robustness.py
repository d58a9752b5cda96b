"""The robustness matrix: labelled sets rendered in the conventions labs use, identified from files.

Each test set is written in every convention of
:data:`engine.analysis.renderings.CONVENTIONS` (:func:`engine.analysis.renderings.render_set`:
one file per spectrum, as another lab's instrument would deliver it);
:func:`conventions_matrix` identifies every rendering from its files with
:func:`engine.io.read_spectra`, exactly as the daemon would, and scores it
against the set read natively. The labels never change, so every rendering
is honest test data: accuracy in each convention should stay within
:data:`TOLERANCE_POINTS` of the native form; :func:`shortfalls` lists the
renderings that do not.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import binomtest

from engine.analysis.renderings import CONVENTIONS, NATIVE, Convention, render_set
from engine.core.labels import scoring_label
from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import read_spectra
from engine.io.labelled_set import load_labelled_set

if TYPE_CHECKING:
    from engine.models.served import IdentificationModel, Result

__all__ = [
    "TOLERANCE_POINTS",
    "conventions_matrix",
    "shortfalls",
    "stratified_rows",
]

logger = logging.getLogger(__name__)

#: How far (percentage points) a convention's accuracy may fall below the native form's.
TOLERANCE_POINTS = 1.0


def stratified_rows(labels: Sequence[str], *, per_class: int | None, seed: int) -> list[int]:
    """Up to ``per_class`` row indices of each label, drawn with ``seed``, in row order (all when None).

    >>> stratified_rows(["PE", "PE", "PE", "PP"], per_class=2, seed=0)
    [1, 2, 3]
    """
    if per_class is None:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for label in sorted(by_label):
        rows = by_label[label]
        chosen.extend(rows if len(rows) <= per_class else rng.choice(rows, per_class, replace=False).tolist())
    return sorted(chosen)


@dataclass(frozen=True)
class _Subset:
    """One test set of the matrix: its folder, chosen rows and their native spectra."""

    name: str
    folder: Path
    rows: list[int]
    n_selected: int
    native: list[Spectrum]


def _load_test_set(source: str | Path, *, per_class: int | None, seed: int) -> _Subset:
    """``DIR`` or ``DIR@key=value`` read natively, subsampled per label."""
    text = str(source)
    folder, _, selector = text.partition("@")
    native = read_spectra(folder)
    selected = list(range(len(native)))
    if selector:
        key, sep, value = selector.partition("=")
        if not sep:
            raise ValueError(f"selector {selector!r} must be key=value")
        selected = [i for i in selected if str(native[i].metadata.get(key, "")) == value]
        if not selected:
            raise ValueError(f"{text}: no spectrum has {key}={value}")
    labels = [str(native[i].metadata["label"]) for i in selected]
    rows = [selected[j] for j in stratified_rows(labels, per_class=per_class, seed=seed)]
    name = Path(folder).name + (f"@{selector}" if selector else "")
    return _Subset(name, Path(folder), rows, len(selected), [native[i] for i in rows])


def _right(results: Sequence[Result | None], truth: Sequence[str], scored: Sequence[int]) -> list[bool]:
    """Whether each scored spectrum came out known under its own label."""
    return [
        (r := results[i]) is not None and r.status == "known" and scoring_label(r.label or "") == truth[i]
        for i in scored
    ]


def paired_change(native: Sequence[bool], rendered: Sequence[bool]) -> dict[str, Any]:
    """How a rendering changed the same spectra: ``lost`` (right natively, not rendered), ``gained``
    (the other way), and the exact two-sided binomial (McNemar) p that the two are alike.

    A cell of a few hundred spectra moves by a point when two or three spectra change, which
    chance alone does; the p says how surprising a cell's loss is.

    >>> paired_change([True, True, True, False], [False, False, True, False])
    {'lost': 2, 'gained': 0, 'p': 0.5}
    """
    lost = sum(a and not b for a, b in zip(native, rendered, strict=True))
    gained = sum(b and not a for a, b in zip(native, rendered, strict=True))
    p = float(binomtest(lost, lost + gained).pvalue) if lost + gained else 1.0
    return {"lost": lost, "gained": gained, "p": round(p, 4)}


def _score(results: Sequence[Result | None], truth: Sequence[str], scored: Sequence[int]) -> dict[str, Any]:
    """Accuracy (known and right), closed-set accuracy (candidate right) and the outcome shares."""
    n = len(scored)

    def share(hit: Callable[[Result | None, str], bool]) -> float:
        return sum(hit(results[i], truth[i]) for i in scored) / n if n else float("nan")

    return {
        "n": n,
        "accuracy": share(
            lambda r, t: r is not None and r.status == "known" and scoring_label(r.label or "") == t
        ),
        "closed_set_accuracy": share(
            lambda r, t: r is not None and scoring_label(r.candidate or "none") == t
        ),
        "rejected": share(lambda r, _: r is not None and r.status == "unknown"),
        "low_quality": share(lambda r, _: r is not None and r.status == "low_quality"),
        "unreadable": share(lambda r, _: r is None),
    }


def _read_rendering(paths: Sequence[Path]) -> tuple[list[Spectrum | None], Counter[str], Counter[str]]:
    """Each file read as the daemon reads it (its first spectrum), None when it cannot be read."""
    spectra: list[Spectrum | None] = []
    units: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for path in paths:
        try:
            spectrum = read_spectra(path)[0]
        except SpectrumError as exc:
            errors[exc.reason] += 1
            spectra.append(None)
            continue
        units[spectrum.y_unit] += 1
        spectra.append(spectrum)
    return spectra, units, errors


def _classify(
    model: IdentificationModel, spectra: Sequence[Spectrum | None], *, batch_size: int
) -> list[Result | None]:
    """Results in order, None where there is no spectrum; classified in batches."""
    results: list[Result | None] = [None] * len(spectra)
    present = [i for i, s in enumerate(spectra) if s is not None]
    for start in range(0, len(present), batch_size):
        chunk = present[start : start + batch_size]
        batch = [s for s in (spectra[i] for i in chunk) if s is not None]
        for i, result in zip(chunk, model.classify(batch, aging=False), strict=True):
            results[i] = result
    return results


def _units_used(results: Sequence[Result | None]) -> dict[str, int]:
    """How many results were identified under each y unit (and how it was known)."""
    return dict(
        Counter(f"{r.extra.get('y_unit')} ({r.extra.get('y_unit_source')})" for r in results if r is not None)
    )


def conventions_matrix(
    model: IdentificationModel,
    test_sets: Sequence[str | Path],
    conventions: Sequence[Convention] = CONVENTIONS,
    *,
    workdir: str | Path,
    per_class: int | None = 100,
    seed: int = 0,
    batch_size: int = 256,
    keep_files: bool = False,
    tolerance_points: float = TOLERANCE_POINTS,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Identify each test set natively and rendered in each convention; score each against native.

    ``test_sets`` are labelled-set folders as ``DIR`` or ``DIR@key=value``
    (meta.csv rows whose ``key`` is ``value``); each is subsampled to at most
    ``per_class`` spectra per label, drawn with ``seed`` (None keeps all).
    The native form is the folder read with :func:`engine.io.read_spectra`,
    as ``mpwatch classify`` reads it; each rendering is written by
    :func:`render_set` under ``workdir`` (removed once read unless
    ``keep_files``) and each file read back with
    :func:`engine.io.read_spectra`. Only spectra whose true label (through
    :func:`engine.core.labels.scoring_label`) is a class of the model's library
    are scored; the others are counted as skipped.

    Per set and convention: ``accuracy`` (known and the right label),
    ``closed_set_accuracy`` (the right candidate, known or not), the shares
    ``rejected`` (unknown), ``low_quality`` and ``unreadable`` (the file
    was refused), the y units the reader gave (``read_as``) and those the
    model identified under, declared or inferred (``identified_as``), and
    ``delta_points`` / ``closed_set_delta_points``, 100 x the difference to
    native. ``within_tolerance`` says whether accuracy is no more than
    ``tolerance_points`` below native; ``lost``, ``gained`` and ``p`` are
    the spectra it changed (:func:`paired_change`). ``progress(1)`` follows
    the native form and each convention of each set.
    """
    started = time.perf_counter()
    known = {scoring_label(label) for label in model.library.labels}
    work = Path(workdir)
    sets: dict[str, Any] = {}
    for source in test_sets:
        test = _load_test_set(source, per_class=per_class, seed=seed)
        data = load_labelled_set(test.folder)
        truth = [scoring_label(str(s.metadata["label"])) for s in test.native]
        scored = [i for i, t in enumerate(truth) if t in known]
        skipped = Counter(t for t in truth if t not in known)
        units = [data.y_unit(row) for row in test.rows]
        if any(u not in ("transmittance", "absorbance") for u in units):
            raise ValueError(f"{test.name}: only transmittance and absorbance sets can be rendered")
        t0 = time.perf_counter()
        native_results = _classify(model, test.native, batch_size=batch_size)
        native = {
            **_score(native_results, truth, scored),
            "read_as": dict(Counter(s.y_unit for s in test.native)),
            "identified_as": _units_used(native_results),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        native_right = _right(native_results, truth, scored)
        scores: dict[str, Any] = {NATIVE: native}
        if progress:
            progress(1)
        for convention in conventions:
            t0 = time.perf_counter()
            folder = work / test.name.replace("@", "_").replace("=", "_") / convention.name
            paths = render_set(
                data.spectra[test.rows],
                data.wavenumbers,
                convention,
                folder,
                seed=seed,
                y_units=units,
                labels=[data.labels[row] for row in test.rows],
            )
            spectra, read_as, errors = _read_rendering(paths)
            results = _classify(model, spectra, batch_size=batch_size)
            entry = _score(results, truth, scored)
            entry.update(paired_change(native_right, _right(results, truth, scored)))
            entry["read_as"] = dict(read_as)
            entry["identified_as"] = _units_used(results)
            if errors:
                entry["errors"] = dict(errors)
            entry["delta_points"] = round(100.0 * (entry["accuracy"] - native["accuracy"]), 2)
            entry["closed_set_delta_points"] = round(
                100.0 * (entry["closed_set_accuracy"] - native["closed_set_accuracy"]), 2
            )
            entry["within_tolerance"] = bool(entry["delta_points"] >= -tolerance_points)
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            scores[convention.name] = entry
            if not keep_files:
                shutil.rmtree(folder, ignore_errors=True)
            if progress:
                progress(1)
        sets[test.name] = {
            "source": str(source),
            "n_selected": test.n_selected,
            "n_rendered": len(test.rows),
            "n_scored": len(scored),
            "n_skipped": len(truth) - len(scored),
            "skipped_labels": dict(sorted(skipped.items())),
            "subsample": (
                f"at most {per_class} spectra per label, seed {seed}" if per_class is not None else None
            ),
            "scores": scores,
        }
        logger.info("robustness matrix of %s: %d spectra scored", test.name, len(scored))
    return {
        "model": {
            "version": model.version,
            "references": len(model.library),
            "classes": len(model.library.class_counts()),
        },
        "tolerance_points": tolerance_points,
        "conventions": [c.as_dict() for c in conventions],
        "sets": sets,
        "seconds": round(time.perf_counter() - started, 2),
    }


def shortfalls(report: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(set, convention, delta in points) for every rendering that falls out of the report's tolerance."""
    return [
        (name, convention, float(entry["delta_points"]))
        for name, test in report["sets"].items()
        for convention, entry in test["scores"].items()
        if convention != NATIVE and not entry["within_tolerance"]
    ]
