"""Honest evaluation: cross-source scoring, leave-one-class-out rejection and the KWR study protocol.

Sources are named as ``DIR`` or ``DIR@key=value``; the selector keeps the
rows of a labelled set whose meta.csv ``key`` equals ``value``, so one folder
can give a library (``flopp_frond2021@library=FLOPP``) and a test set
(``flopp_frond2021@library=FLOPP-e``). Labels are compared through
:func:`engine.labels.scoring_label` (HDPE and LDPE are PE, PES is PET).

- :func:`cross_source`: train on one lab's references, test on another lab's
  particles. Closed-set accuracy and macro scores are over test spectra whose
  class the library holds; the reject option is reported separately.
- :func:`leave_one_class_out`: each class in turn removed from the library;
  how many of its test spectra come out ``unknown``, and how many spectra of
  the classes still known are wrongly rejected.
- :func:`study`: train on N synthetic spectra per class, test on the originals.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from engine.augment import synthesize
from engine.io import read_spectra
from engine.labels import scoring_label
from engine.library import ReferenceLibrary
from engine.model import IdentificationModel, ModelConfig, Result, subspace_knn
from engine.spectrum import Spectrum

__all__ = [
    "CrossSourceReport",
    "StudyPoint",
    "cross_source",
    "leave_one_class_out",
    "library_from_sources",
    "load_source",
    "plot_confusion",
    "plot_study",
    "study",
]

logger = logging.getLogger(__name__)

STUDY_NS = (10, 20, 30, 40, 50, 75, 100)

Progress = Callable[[int], None] | None


def load_source(source: str | Path) -> list[Spectrum]:
    """Every spectrum of ``DIR`` or ``DIR@key=value`` (rows whose meta ``key`` equals ``value``)."""
    text = str(source)
    path, _, selector = text.partition("@")
    spectra = read_spectra(path)
    if not selector:
        return spectra
    key, sep, value = selector.partition("=")
    if not sep:
        raise ValueError(f"selector {selector!r} must be key=value")
    chosen = [s for s in spectra if str(s.metadata.get(key, "")) == value]
    if not chosen:
        raise ValueError(f"{text}: no spectrum has {key}={value}")
    return chosen


def _truth(s: Spectrum) -> str:
    return scoring_label(str(s.metadata["label"]))


def library_from_sources(sources: Sequence[str | Path], *, pipeline: str = "default") -> ReferenceLibrary:
    """An in-memory library from labelled sources."""
    lib = ReferenceLibrary.empty(pipeline)
    for source in sources:
        spectra = load_source(source)
        lib.add(
            spectra,
            [str(s.metadata["label"]) for s in spectra],
            organisations=[
                str(s.metadata.get("organization") or s.metadata.get("library") or "") for s in spectra
            ],
        )
    return lib


@dataclass
class CrossSourceReport:
    """Scores of one library on one test set."""

    n_test: int
    n_in_library: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class_recall: dict[str, float]
    false_reject_rate: float
    accepted_accuracy: float
    out_of_library: int
    out_of_library_unknown_rate: float
    low_quality: int
    classes: list[str]
    confusion: list[list[int]]
    seconds_build: float
    seconds_classify: float
    results: list[Result] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("results")
        return out


def cross_source(
    library: ReferenceLibrary, test: Sequence[Spectrum], *, config: ModelConfig | None = None
) -> CrossSourceReport:
    """Build a model on ``library``, classify ``test`` and score it."""
    started = time.perf_counter()
    model = IdentificationModel(library, config)
    built = time.perf_counter()
    results = model.classify(test)
    classified = time.perf_counter()
    return score(library, test, results, seconds_build=built - started, seconds_classify=classified - built)


def score(
    library: ReferenceLibrary,
    test: Sequence[Spectrum],
    results: Sequence[Result],
    *,
    seconds_build: float = 0.0,
    seconds_classify: float = 0.0,
) -> CrossSourceReport:
    """Score results against the test labels (see the module docstring for the definitions)."""
    known = {scoring_label(label) for label in library.labels}
    truth = [_truth(s) for s in test]
    inside = [i for i, t in enumerate(truth) if t in known]
    outside = [i for i, t in enumerate(truth) if t not in known]
    y_true = [truth[i] for i in inside]
    y_pred = [scoring_label(results[i].candidate or "none") for i in inside]
    classes = sorted(set(y_true))
    p, r, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="macro", zero_division=0
    )
    per_class = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average=None, zero_division=0
    )[1]
    accepted = [i for i in inside if results[i].status == "known"]
    return CrossSourceReport(
        n_test=len(test),
        n_in_library=len(inside),
        accuracy=float(np.mean([a == b for a, b in zip(y_true, y_pred, strict=True)]))
        if inside
        else float("nan"),
        macro_precision=float(p),
        macro_recall=float(r),
        macro_f1=float(f1),
        per_class_recall={c: round(float(v), 4) for c, v in zip(classes, per_class, strict=True)},
        false_reject_rate=1.0 - len(accepted) / len(inside) if inside else float("nan"),
        accepted_accuracy=float(
            np.mean([scoring_label(results[i].label or "") == truth[i] for i in accepted])
        )
        if accepted
        else float("nan"),
        out_of_library=len(outside),
        out_of_library_unknown_rate=float(np.mean([results[i].status != "known" for i in outside]))
        if outside
        else float("nan"),
        low_quality=sum(r.status == "low_quality" for r in results),
        classes=classes,
        confusion=confusion_matrix(y_true, y_pred, labels=classes).tolist() if inside else [],
        seconds_build=seconds_build,
        seconds_classify=seconds_classify,
        results=list(results),
    )


@dataclass
class LeaveOneClassOut:
    """Per held-out class: how often its spectra were called unknown; and the known-class reject rate."""

    unknown_rate: dict[str, float]
    n_held_out: dict[str, int]
    known_reject_rate: dict[str, float]

    @property
    def mean_unknown_rate(self) -> float:
        """Pooled over all held-out spectra."""
        total = sum(self.n_held_out.values())
        return (
            sum(self.unknown_rate[c] * self.n_held_out[c] for c in self.unknown_rate) / total
            if total
            else 0.0
        )

    @property
    def mean_known_reject_rate(self) -> float:
        return float(np.mean(list(self.known_reject_rate.values()))) if self.known_reject_rate else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "mean_unknown_rate": self.mean_unknown_rate,
            "mean_known_reject_rate": self.mean_known_reject_rate,
        }


def leave_one_class_out(
    library: ReferenceLibrary,
    test: Sequence[Spectrum],
    *,
    config: ModelConfig | None = None,
    min_test: int = 5,
    progress: Progress = None,
) -> LeaveOneClassOut:
    """Remove each class with ``min_test`` or more test spectra from the library in turn; score the reject."""
    truth = [_truth(s) for s in test]
    known = {scoring_label(label) for label in library.labels}
    counts = {c: truth.count(c) for c in sorted(set(truth) & known)}
    held = [c for c, n in counts.items() if n >= min_test]
    unknown_rate, known_reject, n_held = {}, {}, {}
    for c in held:
        reduced = library.subset(partial(_not_of_class, held_out=c))
        model = IdentificationModel(reduced, config)
        remaining = {scoring_label(label) for label in reduced.labels}
        results = model.classify(test)
        mine = [r for r, t in zip(results, truth, strict=True) if t == c]
        others = [r for r, t in zip(results, truth, strict=True) if t != c and t in remaining]
        unknown_rate[c] = float(np.mean([r.status != "known" for r in mine]))
        known_reject[c] = float(np.mean([r.status != "known" for r in others])) if others else 0.0
        n_held[c] = len(mine)
        if progress:
            progress(1)
    return LeaveOneClassOut(unknown_rate=unknown_rate, n_held_out=n_held, known_reject_rate=known_reject)


def _not_of_class(entry: dict[str, Any], *, held_out: str) -> bool:
    return scoring_label(entry["label"]) != held_out


@dataclass(frozen=True)
class StudyPoint:
    """One point of the study's curves."""

    n: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    seconds_train: float
    n_train: int


def study(
    source: str | Path,
    *,
    ns: Sequence[int] = STUDY_NS,
    config: ModelConfig | None = None,
    min_class_size: int = 2,
    progress: Progress = None,
) -> tuple[list[StudyPoint], StudyPoint]:
    """The KWR protocol: N synthetic spectra per class for training, the originals as test.

    Returns the curve and the reference line: the same ensemble trained and
    5-fold cross-validated on the originals alone (``n`` = 0 marks it).
    Classes with fewer than ``min_class_size`` originals are left out, as a
    pair is needed to mix.
    """
    cfg = config or ModelConfig()
    lib = library_from_sources([source])
    counts = lib.class_counts()
    keep = [i for i, label in enumerate(lib.labels) if counts[label] >= min_class_size]
    X = lib.preprocessed[keep]
    y = [lib.labels[i] for i in keep]
    points = []
    for n in ns:
        Xs, ys = synthesize(X, y, n_per_class=n, seed=cfg.seed)
        knn = subspace_knn(cfg)
        started = time.perf_counter()
        knn.fit(Xs, ys)
        seconds = time.perf_counter() - started
        pred = knn.predict(X)
        p, r, _, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        points.append(
            StudyPoint(
                n, float(np.mean(np.asarray(pred) == np.asarray(y))), float(p), float(r), seconds, len(ys)
            )
        )
        if progress:
            progress(1)
    folds = StratifiedKFold(
        n_splits=min(5, min(counts[label] for label in y)), shuffle=True, random_state=cfg.seed
    )
    pred_cv = np.empty(len(y), dtype=object)
    seconds = 0.0
    y_arr = np.asarray(y)
    for train, held in folds.split(X, y_arr):
        knn = subspace_knn(cfg)
        started = time.perf_counter()
        knn.fit(X[train], y_arr[train].tolist())
        seconds += time.perf_counter() - started
        pred_cv[held] = knn.predict(X[held])
    p, r, _, _ = precision_recall_fscore_support(y_arr, pred_cv.astype(str), average="macro", zero_division=0)
    reference = StudyPoint(0, float(np.mean(pred_cv == y_arr)), float(p), float(r), seconds, len(y))
    return points, reference


# -- plots ----------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: CrossSourceReport, path: str | Path, *, title: str) -> Path:
    """A confusion matrix of the closed-set predictions, rows normalised, counts annotated."""
    plt = _pyplot()
    cm = np.asarray(report.confusion, dtype=float)
    n = len(report.classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n), dpi=120)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(n), report.classes, rotation=90, fontsize=8)
    ax.set_yticks(range(n), report.classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_study(points: Sequence[StudyPoint], reference: StudyPoint, path: str | Path, *, title: str) -> Path:
    """Accuracy, macro precision and recall against N, and training time, as in the study's figures."""
    plt = _pyplot()
    ns = [p.n for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for attr, colour in (("accuracy", "C0"), ("macro_precision", "C1"), ("macro_recall", "C2")):
        left.plot(ns, [getattr(p, attr) for p in points], "o-", color=colour, label=attr.replace("_", " "))
        left.axhline(getattr(reference, attr), color=colour, ls="--", lw=0.8)
    left.set_xlabel("synthetic spectra per class (N)")
    left.set_ylabel("score on the original spectra")
    left.set_title("scores (dashed: 5-fold CV on originals)")
    left.legend(loc="lower right", fontsize=8)
    right.plot([p.n_train for p in points], [p.seconds_train for p in points], "o-", color="C3")
    right.set_xlabel("training spectra")
    right.set_ylabel("training time (s)")
    right.set_title("training time")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
