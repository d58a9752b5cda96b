"""Honest evaluation: cross-source scoring, leave-one-class-out rejection and the KWR study protocol.

Sources are named as ``DIR`` or ``DIR@key=value``; the selector keeps the
rows of a labelled set whose meta.csv ``key`` equals ``value``, so one folder
can give a library (``flopp_frond2021@library=FLOPP``) and a test set
(``flopp_frond2021@library=FLOPP-e``). Labels are compared through
:func:`engine.core.labels.scoring_label` (HDPE and LDPE are PE, PES is PET).

- :func:`cross_source`: train on one lab's references, test on another lab's
  particles. Closed-set accuracy and macro scores are over test spectra whose
  class the library holds; the reject option is reported separately. The
  served model is scored with the subspace kNN deciding or with the CNN
  member deciding, trained as the daemon would serve it. Its confidence is
  judged too (:mod:`engine.analysis.reliability`): over the labels given
  (``known`` results; a label of a class the library lacks is wrong), over
  those given to spectra of classes the library holds, and over every
  candidate judged (``known`` or ``unknown``). The confusion matrix counts
  every test spectrum once: its label, "other" (a label of no test class),
  "unknown" or "low quality".
  ``errors`` counts the test spectra of the library's classes that did not come
  out ``known`` under their own label: a wrong label and a rejected known
  spectrum are both errors. ``family_accuracy`` scores the best class one
  level up: right when it is of the true class's polymer family, so a PE
  particle that matches EVA counts (a family-level answer is scored so).
- :func:`recipe_cross_source`: the same scores for Open Specy's recipe
  (:mod:`engine.analysis.recipe`) on the same library and test set. It labels
  every spectrum, so its errors are its wrong labels.
- :func:`leave_one_out`: each class (or each polymer family,
  :mod:`engine.core.families`) in turn removed from the library; how many of
  its test spectra come out not ``known``, and how many spectra of the classes
  still known are wrongly rejected.
- :func:`study`: train on N synthetic spectra per class, test on the originals,
  for the subspace kNN and the CNN member side by side.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from engine.analysis.recipe import RECIPE_NAME, OpenSpecyRecipe
from engine.analysis.reliability import Reliability, ece_interval, reliability
from engine.core.audit import Contradiction, contradicted_labels, tally
from engine.core.augment import synthesize
from engine.core.conventions import resolve_all
from engine.core.families import family_of
from engine.core.labels import scoring_label
from engine.core.library import ReferenceLibrary
from engine.core.preprocess import transform
from engine.core.spectrum import Spectrum
from engine.io import read_spectra
from engine.models.served import MEMBERS_DISAGREE, IdentificationModel, ModelConfig, Result, subspace_knn

if TYPE_CHECKING:
    from engine.models.cnn import PolarCNN

__all__ = [
    "OUTCOME_COLUMNS",
    "OUT_OF_LIBRARY",
    "RECIPE",
    "CrossSourceReport",
    "LeaveOneOut",
    "Study",
    "StudyPoint",
    "check_members",
    "cross_source",
    "leave_one_out",
    "library_from_sources",
    "load_source",
    "recipe_cross_source",
    "score",
    "source_name",
    "study",
    "study_plan",
]

logger = logging.getLogger(__name__)

STUDY_NS = (10, 20, 30, 40, 50, 75, 100)
#: Fewer Ns for the CNN: on FLOPP each of its trainings takes 7 to 40 s on a CPU thread, the kNN's < 0.1 s.
CNN_STUDY_NS = (10, 20, 40, 100)
STUDY_NS_BY_MEMBER: dict[str, tuple[int, ...]] = {"subknn": STUDY_NS, "cnn": CNN_STUDY_NS}
#: The models evaluated: the subspace kNN and the CNN member.
MEMBERS = ("subknn", "cnn")
#: What the cross-source evaluation scores: each member deciding alone, or ``served``: the model as
#: the daemon serves it, the kNN deciding with the CNN beside it (fused at the CNN's weight, which
#: is 0 for a CNN trained here, and its disagreement turning a candidate below
#: ``disagreement_r`` to unknown).
CROSS_SOURCE_MEMBERS = (*MEMBERS, "served")
#: The member name of Open Specy's recipe in reports and tables.
RECIPE = "openspecy"
#: The CNN as the daemon's challenger trains it: on the CPU, on one torch thread, PolarCNN's
#: defaults otherwise (the defaults of the configuration's ``cnn`` section).
SERVED_CNN: dict[str, Any] = {"device": "cpu", "n_threads": 1}

Progress = Callable[[int], None] | None

#: Confusion-matrix columns past the test classes: a label of no test class, and the two other outcomes.
OTHER, UNKNOWN, LOW_QUALITY = "other", "unknown", "low quality"
OUTCOME_COLUMNS = (OTHER, UNKNOWN, LOW_QUALITY)
#: The confusion-matrix row of the test spectra whose class the library lacks.
OUT_OF_LIBRARY = "not in library"


def load_source(source: str | Path) -> list[Spectrum]:
    """Every spectrum of ``DIR``, ``DIR@key=value`` (rows whose meta ``key`` equals ``value``) or
    ``DIR@key!=value`` (the other rows)."""
    text = str(source)
    path, _, selector = text.partition("@")
    spectra = read_spectra(path)
    if not selector:
        return spectra
    negate = "!=" in selector
    key, sep, value = selector.partition("!=" if negate else "=")
    if not sep:
        raise ValueError(f"selector {selector!r} must be key=value or key!=value")
    chosen = [s for s in spectra if (str(s.metadata.get(key, "")) == value) != negate]
    if not chosen:
        raise ValueError(f"{text}: no spectrum has {key}{sep}{value}")
    return chosen


def source_name(source: str | Path) -> str:
    """A source as a title names it: the selected value, else the folder.

    >>> source_name("../data/flopp_frond2021@library=FLOPP-e"), source_name("/data/openspecy_ftir_2023")
    ('FLOPP-e', 'openspecy_ftir_2023')
    >>> source_name("raman@organization!=Cabernard et al. 2018")
    'not Cabernard et al. 2018'
    """
    path, _, selector = str(source).partition("@")
    if not selector:
        return Path(path).name
    negate = "!=" in selector
    value = selector.partition("!=" if negate else "=")[2]
    return f"not {value}" if negate else value


def _truth(s: Spectrum) -> str:
    return scoring_label(str(s.metadata["label"]))


def library_from_sources(sources: Sequence[str | Path], *, pipeline: str | None = None) -> ReferenceLibrary:
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
    #: Test spectra of the library's classes not ``known`` under their own label (wrong or rejected).
    errors: int
    #: Closed-set accuracy one level up: the best class's family is the true class's family, over the
    #: test spectra of the library's classes that have a family (:func:`~engine.core.families.family_of`).
    family_accuracy: float
    accepted_accuracy: float
    out_of_library: int
    out_of_library_unknown_rate: float
    low_quality: int
    classes: list[str]
    #: Rows: ``classes``, then :data:`OUT_OF_LIBRARY` when some test spectra are of a class the library
    #: lacks; columns: ``classes``, then :data:`OUTCOME_COLUMNS`. Each row sums to its spectra.
    confusion: list[list[int]]
    confusion_rows: list[str]
    confusion_columns: list[str]
    #: The expected calibration error of ``confidence`` over the labels given (``known`` results).
    ece: float
    #: The 95 % bootstrap interval of ``ece`` (:func:`~engine.analysis.reliability.ece_interval`): how
    #: much of it the few labels of a small test set leave to chance.
    ece_interval: list[float]
    #: The same over the labels given to spectra of classes the library holds (what the confidence is
    #: calibrated for: the reject option, not the confidence, answers whether the class is there).
    ece_in_library: float
    #: The same over every candidate judged: ``known`` and ``unknown`` results.
    ece_candidates: float
    #: The ECE of the labels given had their vote share been the confidence (as it was before calibration).
    ece_vote_share: float
    reliability: Reliability
    reliability_in_library: Reliability
    reliability_candidates: Reliability
    #: Test spectra whose label their own set contradicts (:mod:`engine.core.audit`), by label and
    #: look-alike (``{"PS as PP": 150}``): no identification can call them right.
    contradicted: dict[str, int]
    #: ``accuracy``, ``errors`` and ``ece`` over the test spectra whose labels their set does not contradict.
    accuracy_consistent: float
    errors_consistent: int
    ece_consistent: float
    seconds_build: float
    seconds_classify: float
    results: list[Result] = field(default_factory=list, repr=False)
    #: The member that decided (see :func:`cross_source`) and, for the CNN, its parameters.
    member: str = "subknn"
    cnn_params: dict[str, Any] = field(default_factory=dict)
    #: Where a CNN gave its opinion: of the candidates that passed their r threshold (known, or vetoed
    #: by the CNN), [how many the CNN disagreed with, how many], by ``right``, ``wrong`` (another
    #: class the library holds) and ``not_in_library`` (the test spectrum's class is not in it).
    disagreement: dict[str, list[int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "results"}
        for name in ("reliability", "reliability_in_library", "reliability_candidates"):
            out[name] = getattr(self, name).as_dict()
        return out


def check_members(members: Sequence[str], allowed: Sequence[str] = MEMBERS) -> tuple[str, ...]:
    """``members`` without repeats, in order; ValueError unless they are among ``allowed``."""
    unknown = [m for m in members if m not in allowed]
    if unknown or not members:
        raise ValueError(f"members must be among {', '.join(allowed)}, got {list(members)}")
    return tuple(dict.fromkeys(members))


def cross_source(
    library: ReferenceLibrary,
    test: Sequence[Spectrum],
    *,
    config: ModelConfig | None = None,
    member: str = "subknn",
    cnn_params: Mapping[str, Any] | None = None,
    audit: Sequence[Contradiction] | None = None,
) -> CrossSourceReport:
    """Build the served model on ``library`` with ``member`` deciding, classify ``test`` and score it.

    ``"subknn"`` is the model ``config`` describes. ``"cnn"`` is that model
    serving a CNN member with ``fusion="cnn"``: a
    :class:`~engine.models.cnn.PolarCNN` trained on the kNN's own rows (the
    references and ``config.n_synthetic`` synthetic spectra per class, see
    :meth:`IdentificationModel.training_set`), configured as the daemon's
    challenger (:data:`SERVED_CNN`, ``cnn_params`` overriding). Unlike the
    challenger, which holds a fifth of the references out to judge itself,
    it trains on all of them, as the kNN does. Its closed-set prediction is
    the CNN's best class; its reject option is the served one (the kNN's
    calibrated r thresholds, the CNN's probability as the vote).
    ``"served"`` is the same CNN beside the kNN as the daemon serves it
    (:data:`CROSS_SOURCE_MEMBERS`). ``seconds_build`` includes the CNN's training.
    ``audit`` is :func:`audit_test` of ``library`` and ``test``, when it is already at hand.
    """
    cfg = config or ModelConfig()
    check_members([member], CROSS_SOURCE_MEMBERS)
    started = time.perf_counter()
    model, cnn = _served_model(library, cfg, member, cnn_params)
    built = time.perf_counter()
    results = model.classify(test)
    classified = time.perf_counter()
    timing = {"seconds_build": built - started, "seconds_classify": classified - built}
    report = score(library, test, results, audit=audit, **timing)
    report.member = member
    report.cnn_params = cnn.get_params() if cnn is not None else {}
    return report


def _served_model(
    library: ReferenceLibrary, cfg: ModelConfig, member: str, cnn_params: Mapping[str, Any] | None
) -> tuple[IdentificationModel, PolarCNN | None]:
    """The model on ``library`` with ``member`` deciding, and its CNN (see :func:`cross_source`)."""
    if member == "subknn":
        return IdentificationModel(library, cfg), None
    model = IdentificationModel(library, dataclasses.replace(cfg, fusion="cnn") if member == "cnn" else cfg)
    X, y = model.training_set()
    cnn = _member_factory(member, cfg, cnn_params)().fit(X, y)
    model.set_cnn(cnn)
    return model, cnn


def recipe_cross_source(
    library: ReferenceLibrary, test: Sequence[Spectrum], *, audit: Sequence[Contradiction] | None = None
) -> CrossSourceReport:
    """Open Specy's recipe on ``library``, scored on ``test`` as :func:`cross_source` scores the model.

    Each match becomes a ``known`` result whose confidence and vote share are its r
    (the recipe has no other score; its ECE is that of r read as a probability).
    """
    started = time.perf_counter()
    recipe = OpenSpecyRecipe(library)
    built = time.perf_counter()
    results = [
        Result(
            status="known",
            label=match.label,
            material=match.label,
            confidence=max(match.r, 0.0),
            hits=[],
            members=[],
            quality={},
            threshold=None,
            model_version=RECIPE_NAME,
            candidate=match.label,
            extra={"vote_share": max(match.r, 0.0)},
        )
        for match in recipe.identify(test)
    ]
    classified = time.perf_counter()
    timing = {"seconds_build": built - started, "seconds_classify": classified - built}
    report = score(library, test, results, audit=audit, **timing)
    report.member = RECIPE
    return report


def score(
    library: ReferenceLibrary,
    test: Sequence[Spectrum],
    results: Sequence[Result],
    *,
    seconds_build: float = 0.0,
    seconds_classify: float = 0.0,
    audit: Sequence[Contradiction] | None = None,
) -> CrossSourceReport:
    """Score results against the test labels (see the module docstring for the definitions); ``audit``:
    :func:`audit_test` of ``library`` and ``test`` (found here when not given)."""
    known = {scoring_label(label) for label in library.labels}
    truth = [_truth(s) for s in test]
    audit = audit_test(library, test) if audit is None else audit
    flagged = {c.index for c in audit}
    inside = [i for i, t in enumerate(truth) if t in known]
    consistent = [i for i in inside if i not in flagged]
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
        errors=_errors(inside, truth, results),
        family_accuracy=_family_accuracy(y_true, y_pred),
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
        **_outcomes(truth, results, classes),
        **_calibration(truth, results, known),
        contradicted=tally(audit),
        accuracy_consistent=float(
            np.mean([scoring_label(results[i].candidate or "none") == truth[i] for i in consistent])
        )
        if consistent
        else float("nan"),
        errors_consistent=_errors(consistent, truth, results),
        ece_consistent=_labels_given(truth, results, [i for i in range(len(test)) if i not in flagged]).ece,
        seconds_build=seconds_build,
        seconds_classify=seconds_classify,
        results=list(results),
        disagreement=_disagreement(truth, results, known),
    )


def audit_test(library: ReferenceLibrary, test: Sequence[Spectrum]) -> list[Contradiction]:
    """The test spectra whose labels their own set contradicts, preprocessed as ``library`` preprocesses
    (:func:`engine.core.audit.contradicted_labels`)."""
    if not test:
        return []
    return contradicted_labels(transform(library.pipeline, resolve_all(test)), [_truth(s) for s in test])


def _given(
    truth: Sequence[str], results: Sequence[Result], rows: Sequence[int]
) -> tuple[list[float], list[bool]]:
    """The confidence of each label given (``known`` result) among ``rows``, and whether it was right."""
    given = [i for i in rows if results[i].status == "known"]
    return (
        [results[i].confidence for i in given],
        [scoring_label(results[i].candidate or "") == truth[i] for i in given],
    )


def _labels_given(truth: Sequence[str], results: Sequence[Result], rows: Sequence[int]) -> Reliability:
    """The reliability of the labels given (``known`` results) among ``rows``."""
    return reliability(*_given(truth, results, rows))


def _errors(rows: Sequence[int], truth: Sequence[str], results: Sequence[Result]) -> int:
    """How many of ``rows`` did not come out ``known`` under their own label (wrong or rejected)."""
    return sum(
        results[i].status != "known" or scoring_label(results[i].label or "?") != truth[i] for i in rows
    )


def _disagreement(truth: Sequence[str], results: Sequence[Result], known: set[str]) -> dict[str, list[int]]:
    """How often the CNN disagreed with a candidate that passed its threshold (see ``CrossSourceReport``)."""
    counts: dict[str, list[int]] = {}
    for t, r in zip(truth, results, strict=True):
        opinions = [m for m in r.members if m.get("name") == "cnn" and m.get("label") is not None]
        if not opinions or not (r.status == "known" or r.extra.get("reason") == MEMBERS_DISAGREE):
            continue
        right = scoring_label(r.candidate or "") == t
        kind = "not_in_library" if t not in known else "right" if right else "wrong"
        tally = counts.setdefault(kind, [0, 0])
        tally[0] += int(bool(r.extra.get("disagreement")))
        tally[1] += 1
    return counts


def _family_accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """The share of ``y_pred`` in the family of ``y_true``, over the true labels that have a family."""
    pairs = [(family_of(t), family_of(p)) for t, p in zip(y_true, y_pred, strict=True)]
    placed = [true == predicted for true, predicted in pairs if true is not None]
    return float(np.mean(placed)) if placed else float("nan")


def _outcome(result: Result, classes: Sequence[str]) -> str:
    """A result's column: its label, ``other`` (a label of no test class), ``unknown`` or ``low quality``."""
    if result.status == "known":
        label = scoring_label(result.label or "")
        return label if label in classes else OTHER
    return UNKNOWN if result.status == "unknown" else LOW_QUALITY


def _outcomes(truth: Sequence[str], results: Sequence[Result], classes: list[str]) -> dict[str, Any]:
    """The confusion matrix of the served outcomes: every test spectrum counted once (see ``confusion``)."""
    rows = list(classes) + ([OUT_OF_LIBRARY] if any(t not in classes for t in truth) else [])
    columns = [*classes, *OUTCOME_COLUMNS]
    matrix = np.zeros((len(rows), len(columns)), dtype=int)
    for t, result in zip(truth, results, strict=True):
        row = rows.index(t) if t in classes else len(classes)
        matrix[row, columns.index(_outcome(result, classes))] += 1
    return {"confusion": matrix.tolist(), "confusion_rows": rows, "confusion_columns": columns}


def _calibration(truth: Sequence[str], results: Sequence[Result], known: set[str]) -> dict[str, Any]:
    """Reliability and ECE of the labels given, of those given to classes in ``known``, and of every
    candidate judged; and the ECE the vote share would have had (see ``ece``)."""
    every = range(len(results))
    labels = _labels_given(truth, results, every)
    low, high = ece_interval(*_given(truth, results, every))
    inside = _labels_given(truth, results, [i for i in every if truth[i] in known])
    given = {i for i in every if results[i].status == "known"}
    votes = [float(results[i].extra["vote_share"]) for i in sorted(given)]
    judged = [
        i
        for i in every
        if i in given or (results[i].status == "unknown" and results[i].candidate is not None)
    ]
    candidates = reliability(
        [
            results[i].confidence if i in given else float(results[i].extra["candidate_confidence"])
            for i in judged
        ],
        [scoring_label(results[i].candidate or "") == truth[i] for i in judged],
    )
    return {
        "ece": labels.ece,
        "ece_interval": [round(low, 4), round(high, 4)],
        "ece_in_library": inside.ece,
        "ece_candidates": candidates.ece,
        "ece_vote_share": reliability(
            votes, [scoring_label(results[i].candidate or "") == truth[i] for i in sorted(given)]
        ).ece,
        "reliability": labels,
        "reliability_in_library": inside,
        "reliability_candidates": candidates,
    }


#: How :func:`leave_one_out` groups the library: by class, or by polymer family.
GROUPINGS: dict[str, Callable[[str], str | None]] = {"class": scoring_label, "family": family_of}


@dataclass
class LeaveOneOut:
    """Per held-out class or family: how often its spectra were not called known; the known reject rate."""

    #: ``class`` or ``family``: what was held out.
    grouping: str
    unknown_rate: dict[str, float]
    n_held_out: dict[str, int]
    known_reject_rate: dict[str, float]
    #: The classes of the library each held-out group removed.
    removed_classes: dict[str, list[str]] = field(default_factory=dict)
    #: The model built on each reduced library (:data:`CROSS_SOURCE_MEMBERS`).
    member: str = "subknn"

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


def leave_one_out(
    library: ReferenceLibrary,
    test: Sequence[Spectrum],
    *,
    grouping: str = "class",
    config: ModelConfig | None = None,
    min_test: int = 5,
    progress: Progress = None,
    member: str = "subknn",
    cnn_params: Mapping[str, Any] | None = None,
) -> LeaveOneOut:
    """Remove each group (class or family) with ``min_test`` or more test spectra from the library in
    turn; score how its spectra are rejected and how the spectra of the classes left fare.

    ``member`` is the model built on each reduced library, as :func:`cross_source` builds it
    (``"served"`` trains a CNN on each, ``cnn_params`` overriding its defaults).

    A test spectrum is held out when its own label falls in the group; the library loses
    every reference whose class falls in it. A spectrum whose family no rule places
    (:func:`~engine.core.families.family_of` is None) is never held out by family.
    """
    group_of = GROUPINGS[grouping]
    truth = [_truth(s) for s in test]
    known = {scoring_label(label) for label in library.labels}
    groups = [group_of(t) if t in known else None for t in truth]
    counts = {g: groups.count(g) for g in sorted({g for g in groups if g is not None})}
    held = [g for g, n in counts.items() if n >= min_test]
    out = LeaveOneOut(grouping=grouping, unknown_rate={}, n_held_out={}, known_reject_rate={}, member=member)
    for g in held:
        reduced = library.subset(partial(_outside_group, group_of=group_of, held_out=g))
        out.removed_classes[g] = sorted(known - {scoring_label(label) for label in reduced.labels})
        remaining = {scoring_label(label) for label in reduced.labels}
        results = _served_model(reduced, config or ModelConfig(), member, cnn_params)[0].classify(test)
        mine = [r for r, h in zip(results, groups, strict=True) if h == g]
        others = [r for r, t in zip(results, truth, strict=True) if t in remaining]
        out.unknown_rate[g] = float(np.mean([r.status != "known" for r in mine]))
        out.known_reject_rate[g] = float(np.mean([r.status != "known" for r in others])) if others else 0.0
        out.n_held_out[g] = len(mine)
        if progress:
            progress(1)
    return out


def _outside_group(entry: dict[str, Any], *, group_of: Callable[[str], str | None], held_out: str) -> bool:
    return group_of(scoring_label(entry["label"])) != held_out


@dataclass(frozen=True)
class StudyPoint:
    """One point of the study's curves: one member trained once (or, ``n`` = 0, cross-validated)."""

    member: str
    n: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    seconds_train: float
    n_train: int


@dataclass
class Study:
    """The study's curves and reference points, per member (see :func:`study`)."""

    points: list[StudyPoint]
    references: list[StudyPoint]
    cv_folds: int
    n_originals: int
    n_classes: int
    cnn_params: dict[str, Any] = field(default_factory=dict)

    def curve(self, member: str) -> list[StudyPoint]:
        """The points of ``member``, in order of N."""
        return sorted((p for p in self.points if p.member == member), key=lambda p: p.n)

    def reference(self, member: str) -> StudyPoint:
        """The cross-validated reference of ``member``."""
        return next(p for p in self.references if p.member == member)

    @property
    def members(self) -> list[str]:
        """The members studied, in the order they were trained."""
        return list(dict.fromkeys(p.member for p in self.references))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def study_plan(
    members: Sequence[str] = MEMBERS, ns: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """The Ns each member is trained at; :func:`study` reports one step per N plus one per reference."""
    chosen = {**STUDY_NS_BY_MEMBER, **(ns or {})}
    return {m: tuple(int(n) for n in chosen[m]) for m in check_members(members)}


def _member_factory(member: str, cfg: ModelConfig, cnn_params: Mapping[str, Any] | None) -> Callable[[], Any]:
    """A factory of unfitted classifiers of ``member``: the subspace kNN as ``cfg`` says, or a PolarCNN."""
    if member == "subknn":
        return partial(subspace_knn, cfg)
    from engine.models.cnn import PolarCNN  # torch is imported only when the CNN is trained

    return partial(PolarCNN, **{"seed": cfg.seed, **SERVED_CNN, **(cnn_params or {})})


def _fit_predict(
    make: Callable[[], Any], X: npt.ArrayLike, y: list[str], test: npt.ArrayLike
) -> tuple[npt.NDArray[Any], float]:
    """Predictions of a fresh model trained on (X, y), and the seconds its fit took."""
    model = make()
    started = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - started
    return np.asarray(model.predict(test)).astype(str), seconds


def _study_point(
    member: str, n: int, truth: npt.NDArray[Any], pred: npt.NDArray[Any], seconds: float, n_train: int
) -> StudyPoint:
    p, r, _, _ = precision_recall_fscore_support(truth, pred, average="macro", zero_division=0)
    return StudyPoint(member, n, float(np.mean(pred == truth)), float(p), float(r), seconds, n_train)


def study(
    source: str | Path,
    *,
    members: Sequence[str] = MEMBERS,
    ns: Mapping[str, Sequence[int]] | None = None,
    config: ModelConfig | None = None,
    cnn_params: Mapping[str, Any] | None = None,
    min_class_size: int = 2,
    progress: Progress = None,
) -> Study:
    """The KWR protocol for each member: N synthetic spectra per class for training, the originals as test.

    ``members`` are ``"subknn"`` (the ensemble ``config`` describes) and
    ``"cnn"`` (:class:`engine.models.cnn.PolarCNN` on the CPU, one torch thread,
    ``cnn_params`` overriding its defaults). Each is trained at the Ns of
    :func:`study_plan` (``ns`` maps a member to its own list) on the same
    synthetic spectra. Each member's reference (``n`` = 0) is the same model
    k-fold cross-validated on the originals alone, k = min(5, smallest
    class). Classes with fewer than ``min_class_size`` originals are left
    out, as a pair is needed to mix. ``progress(1)`` follows each N and each
    reference.
    """
    cfg = config or ModelConfig()
    plan = study_plan(members, ns)
    lib = library_from_sources([source])
    counts = lib.class_counts()
    keep = [i for i, label in enumerate(lib.labels) if counts[label] >= min_class_size]
    X = lib.preprocessed[keep]
    y = [lib.labels[i] for i in keep]
    truth = np.asarray(y)
    folds = StratifiedKFold(
        n_splits=min(5, min(counts[label] for label in y)), shuffle=True, random_state=cfg.seed
    )
    result = Study([], [], folds.get_n_splits(), len(y), len(set(y)))
    for member, member_ns in plan.items():
        make = _member_factory(member, cfg, cnn_params)
        if member == "cnn":
            result.cnn_params = make().get_params()
        for n in member_ns:
            Xs, ys = synthesize(X, y, n_per_class=n, seed=cfg.seed)
            pred, seconds = _fit_predict(make, Xs, ys, X)
            result.points.append(_study_point(member, n, truth, pred, seconds, len(ys)))
            if progress:
                progress(1)
        pred_cv = np.empty(len(y), dtype=object)
        seconds = 0.0
        for train, held in folds.split(X, truth):
            pred_cv[held], fold_seconds = _fit_predict(make, X[train], truth[train].tolist(), X[held])
            seconds += fold_seconds
        result.references.append(_study_point(member, 0, truth, pred_cv.astype(str), seconds, len(y)))
        if progress:
            progress(1)
    return result
