"""The served classifier: preprocessing, the subspace-kNN member, evidence and the three outcomes.

An :class:`IdentificationModel` is built from a
:class:`~engine.core.library.ReferenceLibrary`: the library's preprocessed
spectra plus ``n_synthetic`` synthetic spectra per class (the study's
generator, :mod:`engine.core.augment`) train a :class:`~engine.models.subknn.SubspaceKNN`.
Evidence for every result comes from an exact search over the *real*
references only, so every hit an analyst sees is a spectrum someone measured.

:meth:`IdentificationModel.add_references` is the incremental path used when
an analyst confirms spectra: the library grows, that class's synthetic
spectra are regenerated, the indexes get an incremental add and that class's
reject threshold is recalibrated; nothing else is rebuilt.

A result's ``confidence`` is the probability that its label is right, from a
:class:`~engine.models.calibration.ConfidenceCalibrator` fitted at build time on
the library's own references, each identified by a model that never saw it
(:meth:`IdentificationModel.held_out_evidence`). Its evidence is class-agnostic,
so an incremental change keeps the map, range models serve it too, and only the
next full build refits it.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import faiss
import numpy as np
import numpy.typing as npt

from engine.core.aging import aging_indices
from engine.core.augment import class_seed, synthesize_class
from engine.core.conventions import AcquisitionProfile, measured_range, resolve_all
from engine.core.labels import scoring_label
from engine.core.library import ReferenceLibrary
from engine.core.spectrum import Spectrum
from engine.core.storage import atomic_write_bytes
from engine.models.calibration import FEATURES, ConfidenceCalibrator, evidence_features, held_out_folds
from engine.models.openset import QualityGate, RejectCalibrator, pearson_rows
from engine.models.ranges import FeatureMass, RangeModelCache, route
from engine.models.result import Hit, Result, conventions_of, wants_aging
from engine.models.subknn import SubspaceKNN

__all__ = [
    "LOW_CONFIDENCE",
    "MEMBERS_DISAGREE",
    "SYNTHETIC_ID_BASE",
    "CNNMember",
    "Evidence",
    "HeldOut",
    "Hit",
    "IdentificationModel",
    "ModelConfig",
    "Result",
    "align_columns",
    "conventions_of",
    "serving",
    "subspace_knn",
    "wants_aging",
]

logger = logging.getLogger(__name__)

#: Synthetic spectra get ids from here up, so they never collide with library ref_ids.
SYNTHETIC_ID_BASE = 1 << 40

#: Hits searched per query; the voted class's best r is looked up among these.
HIT_SEARCH_K = 25


@dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes a model besides its library. Defaults chosen by ``mpwatch evaluate``."""

    n_synthetic: int = 40
    n_learners: int = 30
    subspace_fraction: float = 0.5
    n_neighbors: int = 1
    search: Literal["exact", "shortlist"] = "shortlist"
    seed: int = 0
    n_hits: int = 5
    reject_quantile: float = RejectCalibrator.quantile
    reject_margin: float = RejectCalibrator.margin
    min_vote: float = RejectCalibrator.min_vote
    r_floor: float = RejectCalibrator.r_floor
    #: How the CNN member is combined with the subspace kNN: ``subknn`` (the CNN is reported but
    #: does not vote), ``cnn`` (the CNN alone decides) or ``weighted``
    #: (``(1 - w) * subknn + w * cnn``). Without a CNN only the kNN counts.
    fusion: Literal["subknn", "cnn", "weighted"] = "weighted"
    #: ``w`` of the weighted fusion; ``None``: the weight that held-out evaluation gave the CNN
    #: served (its ``weight``, written when it was trained; 0 for a CNN without one).
    cnn_weight: float | None = None
    #: A candidate the CNN member names another class for is not accepted as known when its best r
    #: is below this: it comes out ``unknown`` with ``reason`` ``members_disagree``. ``None``: never.
    disagreement_r: float | None = 0.8
    #: A candidate that passed its threshold is not accepted as known when its calibrated confidence
    #: (the probability that it is right) is below this: it comes out ``unknown`` with ``reason``
    #: ``low_confidence``. 0.5: no label more likely wrong than right. ``None``: never (the default:
    #: measured in the README, "Confidence", it withdraws wrong labels and right ones alike).
    min_confidence: float | None = None
    #: Range models (the library cut to a partial acquisition range) kept at once.
    range_models: int = 8
    #: Folds of the held-out pass that calibrates ``confidence`` (see ``held_out_evidence``).
    calibration_folds: int = 5


FUSIONS = ("subknn", "cnn", "weighted")

#: The ``reason`` of an unknown result whose candidate passed its threshold but the CNN disagreed.
MEMBERS_DISAGREE = "members_disagree"
#: The ``reason`` of an unknown result whose candidate passed its threshold at a confidence below
#: ``min_confidence``.
LOW_CONFIDENCE = "low_confidence"

#: The CNN's entry in the members of a spectrum identified on a range model.
CNN_ABSTAINS_ON_RANGES = {
    "name": "cnn",
    "label": None,
    "probability": None,
    "weight": 0.0,
    "abstained": "the CNN reads the library's full range; this spectrum was identified on a range model",
}


def align_columns(
    proba: npt.NDArray[np.float64], columns: Sequence[str], classes: Sequence[str]
) -> npt.NDArray[np.float64]:
    """``proba``'s columns (one per label in ``columns``) rearranged as ``classes``; 0 for a class
    ``columns`` lacks, and columns of labels outside ``classes`` dropped.

    >>> align_columns(np.array([[0.7, 0.3]]), ["PE", "PS"], ["PS", "PVC", "PE"]).tolist()
    [[0.3, 0.0, 0.7]]
    """
    position = {c: j for j, c in enumerate(columns)}
    aligned = np.zeros((len(proba), len(classes)), dtype=np.float64)
    for j, label in enumerate(classes):
        if label in position:
            aligned[:, j] = proba[:, position[label]]
    return aligned


class CNNMember(Protocol):
    """What the served model asks of a CNN member (:class:`~engine.models.cnn.ServedCNN`, or the
    torch estimator :class:`~engine.models.cnn.PolarCNN` in evaluation)."""

    @property
    def classes_(self) -> Sequence[Any]: ...

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class Evidence:
    """What one decision rests on: the candidate, the votes, the hits, and the r on either side."""

    candidate: str | None
    vote_share: float
    runner_up_share: float
    hits: list[Hit]
    #: The best hit of the candidate's class (None when none is among the hits searched).
    class_hit: Hit | None
    #: The best r of a reference of another class among the hits searched (-1 if none).
    other_r: float
    threshold: float | None

    @property
    def r(self) -> float:
        """The candidate's best r, -1 when none of its references is among the hits searched."""
        return self.class_hit.r if self.class_hit is not None else -1.0


@dataclass(frozen=True)
class HeldOut:
    """The held-out pass over a library: per reference, its evidence and whether its candidate was right.

    ``in_library`` says whether the reference's class kept a reference in the
    other folds (a class's only reference, held out, cannot be named right).
    """

    features: npt.NDArray[np.float64]
    right: npt.NDArray[np.bool_]
    in_library: npt.NDArray[np.bool_]
    folds: npt.NDArray[np.int64]


def subspace_knn(cfg: ModelConfig) -> SubspaceKNN:
    """An unfitted ensemble as ``cfg`` describes it."""
    return SubspaceKNN(
        n_learners=cfg.n_learners,
        subspace_fraction=cfg.subspace_fraction,
        n_neighbors=cfg.n_neighbors,
        search=cfg.search,
        seed=cfg.seed,
    )


def serving(libraries: Sequence[ReferenceLibrary], config: ModelConfig | None = None) -> IdentificationModel:
    """One model for spectra of every technique: the first library's, the others' models attached.

    A library holds one technique, so ``libraries`` holds at most one per technique.
    """
    if not libraries:
        raise ValueError("no library given")
    models = [IdentificationModel(library, config) for library in libraries]
    techniques = [m.technique for m in models]
    if len(set(techniques)) != len(techniques):
        raise ValueError(f"one library per technique, got the techniques {techniques}")
    for companion in models[1:]:
        models[0].attach(companion)
    return models[0]


class IdentificationModel:
    """Library + subspace-kNN ensemble + quality gate + reject calibration."""

    def __init__(
        self,
        library: ReferenceLibrary,
        config: ModelConfig | None = None,
        *,
        window: tuple[float, float, float] | None = None,
        confidence: ConfidenceCalibrator | None = None,
    ) -> None:
        """``window``: the acquisition range this model was cut to; ``confidence``: a confidence map to
        serve rather than one fitted on this library (a range model serves its parent's)."""
        self.library = library
        self.config = config or ModelConfig()
        self.pipeline = library.pipeline
        self.gate = QualityGate.for_technique(str(library.technique))
        self.revision = 0
        #: The acquisition range (low, high, grid step) this model was cut to (None: the library's own).
        self.window = window
        self.cnn_: CNNMember | None = None
        #: Models of other techniques' libraries, which get the spectra of their technique.
        self.companions: dict[str, IdentificationModel] = {}
        if self.config.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.config.fusion!r}")
        if self.config.cnn_weight is not None and not 0.0 <= self.config.cnn_weight <= 1.0:
            raise ValueError(f"cnn_weight must be in [0, 1], got {self.config.cnn_weight!r}")
        if self.config.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be at least 2, got {self.config.calibration_folds!r}")
        self._build(confidence)

    def set_cnn(self, cnn: CNNMember | None) -> None:
        """Serve ``cnn`` as the second member (``None`` removes it); ``config.fusion`` says how it votes.

        ValueError when ``cnn`` reads spectra of another width than this model's features.
        """
        width = self.library.preprocessed.shape[1]
        reads = getattr(cnn, "n_features_in_", width)
        if cnn is not None and reads != width:
            raise ValueError(f"the CNN reads {reads} points; this library's spectra have {width}")
        self.cnn_ = cnn

    @property
    def cnn_weight(self) -> float:
        """The weight the CNN votes with under ``weighted`` fusion (0 without a CNN)."""
        if self.cnn_ is None:
            return 0.0
        if self.config.cnn_weight is not None:
            return float(self.config.cnn_weight)
        return float(getattr(self.cnn_, "weight", 0.0))

    @property
    def technique(self) -> str:
        """The technique of this model's library: ``ir`` or ``raman``."""
        return self.technique_

    def attach(self, companion: IdentificationModel) -> None:
        """Send spectra of ``companion``'s technique to it (e.g. a Raman model beside an IR one)."""
        if companion.technique == self.technique:
            raise ValueError(f"a companion must be of another technique than {self.technique}")
        self.companions[companion.technique] = companion

    def model_for(self, technique: str | None) -> IdentificationModel | None:
        """The model that identifies spectra of ``technique``: this one or a companion."""
        if technique is None or technique == self.technique:
            return self
        return self.companions.get(technique)

    # -- building -----------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """Library version and model revision, e.g. ``lib3.r2``; a range model adds its window
        (``lib3.r2@975-1800``), one for a coarse instrument the step its references were sampled
        at (``lib3.r2@975-1800/16``) and a Raman model its technique (``raman-lib1.r0``)."""
        version = f"lib{self.library.version or 0}.r{self.revision}"
        if self.technique_ != "ir":  # a Raman model says so: its library's versions are its own
            version = f"{self.technique_}-{version}"
        if self.window is not None:
            low, high, step = self.window
            version += f"@{low:g}-{high:g}"
            if step > self.library.grid.step:
                version += f"/{step:g}"
        return version

    def _range_model(self, window: tuple[float, float, float]) -> IdentificationModel:
        """This model's library cut to ``window`` (low, high, step), with its own synthetic spectra
        and thresholds, and this model's confidence map. A step coarser than the library's grid is
        a coarse instrument's: the references are sampled at it, then meet the grid as its spectra do.

        The map's evidence is relative (margins, r over the class's threshold), and on
        cuts to 975-1800 and 1200-3200 cm-1 and the Raman windows it was as well
        calibrated as a map fitted on the window; fitting one would multiply the cost
        of the first spectrum of a window about sixfold (README "Evaluation").
        """
        config = replace(self.config, fusion="subknn")
        low, high, step = window
        library = self.library.restricted(low, high, sampling=step if step > self.library.grid.step else None)
        model = IdentificationModel(library, config, window=window, confidence=self.confidence_)
        model.revision = self.revision
        return model

    def _build(self, confidence: ConfidenceCalibrator | None) -> None:
        started = time.perf_counter()
        X = self.library.preprocessed
        labels = self.library.labels
        ids = self.library.ref_ids
        self.knn_, _, ys, sids = self._members(X, labels, ids)
        self.synthetic_ids_: dict[str, npt.NDArray[np.int64]] = {}
        for label in dict.fromkeys(ys):
            self.synthetic_ids_[label] = sids[np.asarray(ys) == label]
        self.hits_ = self._evidence_index(X, ids)
        self.calibrator_ = self._reject_calibrator().fit(X, labels)
        self._next_synthetic = SYNTHETIC_ID_BASE + len(sids)
        self._reset_ranges()
        built = time.perf_counter()
        self.confidence_ = confidence if confidence is not None else self._fit_confidence()
        logger.info(
            "model %s built in %.2f s (+ %.2f s to calibrate confidence): %d references, %d synthetic",
            self.version,
            built - started,
            time.perf_counter() - built,
            len(X),
            len(sids),
        )

    def _members(
        self, X: npt.NDArray[np.float32], labels: list[str], ids: npt.NDArray[np.int64]
    ) -> tuple[SubspaceKNN, npt.NDArray[np.float32], list[str], npt.NDArray[np.int64]]:
        """The subspace kNN on references ``X`` and their synthetic spectra; and those spectra."""
        Xs, ys, sids = self._synthetic_all(X, labels)
        knn = subspace_knn(self.config)
        knn.fit(np.vstack([X, Xs]), [*labels, *ys], ids=np.concatenate([ids, sids]))
        return knn, Xs, ys, sids

    @staticmethod
    def _evidence_index(X: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]) -> Any:
        """The exact index of real references whose hits are the evidence (inner product = Pearson r)."""
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(X.shape[1]))
        if len(X):
            index.add_with_ids(pearson_rows(X), ids)
        return index

    def _reject_calibrator(self) -> RejectCalibrator:
        cfg = self.config
        return RejectCalibrator(
            quantile=cfg.reject_quantile, margin=cfg.reject_margin, min_vote=cfg.min_vote, r_floor=cfg.r_floor
        )

    def held_out_evidence(self) -> HeldOut:
        """Every reference identified by a model built without it: the examples ``confidence`` is fitted on.

        The references are dealt into ``config.calibration_folds`` folds
        (:func:`~engine.models.calibration.held_out_folds`). For each fold, a
        subspace kNN, an evidence index and reject thresholds are built from the
        other folds' references alone, synthetic spectra included: they are
        mixed from those references only, so none descends from a held-out one.
        The held-out references are then judged as :meth:`classify` judges a
        spectrum (same hits, same thresholds rule), and a candidate counts as
        right when it scores as the reference's label (PES as PET).
        """
        X = self.library.preprocessed
        labels = self.library.labels
        ids = self.library.ref_ids
        n = len(labels)
        folds = held_out_folds(labels, n_folds=self.config.calibration_folds, seed=self.config.seed)
        features = np.zeros((n, len(FEATURES)))
        right = np.zeros(n, dtype=bool)
        in_library = np.zeros(n, dtype=bool)
        scored = {label: scoring_label(label) for label in set(labels)}
        truth = np.asarray([scored[label] for label in labels])
        for fold in range(self.config.calibration_folds):
            held, kept = folds == fold, folds != fold
            if not held.any() or not kept.any():
                continue
            kept_labels = [labels[i] for i in np.flatnonzero(kept)]
            knn = self._members(X[kept], kept_labels, ids[kept])[0]
            index = self._evidence_index(X[kept], ids[kept])
            thresholds = self._reject_calibrator().fit(X[kept], kept_labels)
            classes = [str(c) for c in knn.classes_]
            found = self._weigh(knn.predict_proba(X[held]), classes, X[held], index, thresholds)
            features[held] = self._features(found)
            candidates = np.asarray([scored.get(e.candidate or "", "") for e in found])
            right[held] = candidates == truth[held]
            in_library[held] = np.isin(truth[held], truth[kept])
        return HeldOut(features, right, in_library, folds)

    def _fit_confidence(self) -> ConfidenceCalibrator:
        """The confidence map, fitted on the held-out references whose class stays in the library."""
        held = self.held_out_evidence()
        return ConfidenceCalibrator().fit(held.features[held.in_library], held.right[held.in_library])

    def _reset_ranges(self) -> None:
        """Forget the range models and measure the library's span again (after any library change)."""
        self.technique_ = str(self.library.technique)
        grid = self.library.grid
        self.grid_ = (float(grid.start), float(grid.stop), float(grid.step))
        self.span_ = self.library.span()
        #: Where the references' features lie, to route partial spectra; a range model routes none.
        self.mass_ = FeatureMass(self.library.preprocessed, grid.wavenumbers) if self.window is None else None
        self.ranges_: RangeModelCache[IdentificationModel] = RangeModelCache(
            self._range_model, capacity=self.config.range_models
        )

    def training_set(self) -> tuple[npt.NDArray[np.float32], list[str]]:
        """The rows the subspace kNN is built on: the library's references, then the synthetic spectra.

        Synthetic spectra are drawn again from the same seeds, so these are
        the kNN's rows; a CNN member trained on them learns from what the kNN
        learns from (see :func:`engine.analysis.evaluate.cross_source`).
        """
        library = self.library
        Xs, ys, _ = self._synthetic_all(library.preprocessed, library.labels)
        return np.vstack([library.preprocessed, Xs]), [*library.labels, *ys]

    def _class_rows(self, label: str) -> npt.NDArray[np.float32]:
        """The library's preprocessed references of ``label``."""
        return self.library.preprocessed[np.asarray(self.library.labels) == label]

    def _synthetic_for(
        self, rows: npt.NDArray[np.float32], label: str, start_id: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Synthetic spectra of ``label`` mixed from its references ``rows``, with ids from ``start_id``."""
        n = self.config.n_synthetic
        if n == 0 or rows.shape[0] < 2:  # mixing needs two different spectra of the class
            return np.zeros((0, rows.shape[1]), np.float32), np.zeros(0, np.int64)
        Xs = synthesize_class(rows, n, seed=class_seed(self.config.seed, label))
        return Xs, np.arange(start_id, start_id + n, dtype=np.int64)

    def _synthetic_all(
        self, X: npt.NDArray[np.float32], labels: list[str]
    ) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.int64]]:
        """Every class's synthetic spectra from references ``X`` of ``labels``, largest class first."""
        blocks, out_labels, ids = [], [], []
        next_id = SYNTHETIC_ID_BASE
        names = np.asarray(labels)
        for label, _ in Counter(labels).most_common():
            Xs, sids = self._synthetic_for(X[names == label], label, next_id)
            next_id += len(sids)
            blocks.append(Xs)
            out_labels.extend([label] * len(sids))
            ids.append(sids)
        if not blocks:
            return np.zeros((0, X.shape[1]), np.float32), [], np.zeros(0, np.int64)
        return np.vstack(blocks), out_labels, np.concatenate(ids)

    # -- incremental growth -------------------------------------------------------------------

    def add_references(
        self, spectra: Sequence[Spectrum], label: str, *, confirmed_by: str, material: str | None = None
    ) -> npt.NDArray[np.int64]:
        """Add confirmed spectra of one class and update everything incrementally; return their ref_ids."""
        ids = self.library.add(
            spectra,
            [label] * len(spectra),
            materials=[material or label] * len(spectra),
            confirmed_by=confirmed_by,
        )
        canonical = self.library.entry(int(ids[0]))["label"]
        X_new = self.library.preprocessed[-len(ids) :]
        old = self.synthetic_ids_.pop(canonical, np.zeros(0, np.int64))
        if old.size:
            self.knn_.remove(old)
        Xs, sids = self._synthetic_for(self._class_rows(canonical), canonical, self._next_synthetic)
        self._next_synthetic += len(sids)
        self.synthetic_ids_[canonical] = sids
        self.knn_.add(
            np.vstack([X_new, Xs]), [canonical] * (len(ids) + len(sids)), ids=np.concatenate([ids, sids])
        )
        self.hits_.add_with_ids(pearson_rows(X_new), ids)
        self.calibrator_.update_class(self._class_rows(canonical), canonical)
        self.revision += 1
        self._reset_ranges()
        return ids

    def remove_references(self, ref_ids: Sequence[int]) -> int:
        """Remove references by id (a wrong confirmation), regenerating the affected classes."""
        affected = {self.library.entry(int(i))["label"] for i in ref_ids}
        removed = self.library.remove(ref_ids)
        selector = faiss.IDSelectorBatch(np.asarray(ref_ids, dtype=np.int64))
        self.hits_.remove_ids(selector)
        self.knn_.remove(np.asarray(ref_ids, dtype=np.int64))
        for label in affected:
            old = self.synthetic_ids_.pop(label, np.zeros(0, np.int64))
            if old.size:
                self.knn_.remove(old)
            if label in self.library.class_counts():
                Xs, sids = self._synthetic_for(self._class_rows(label), label, self._next_synthetic)
                self._next_synthetic += len(sids)
                self.synthetic_ids_[label] = sids
                self.knn_.add(Xs, [label] * len(sids), ids=sids)
                self.calibrator_.update_class(self._class_rows(label), label)
            else:
                self.calibrator_.drop_class(label)
        self.revision += 1
        self._reset_ranges()
        return removed

    # -- classification -----------------------------------------------------------------------

    def features(
        self, spectra: Sequence[Spectrum]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(absorbance on the grid with NaN gaps, model features) for a batch of spectra."""
        steps = self.pipeline.steps
        X: Any = list(spectra)
        for name, step in steps:
            X = step.transform(X)
            if name == "resample":
                grid_rows = np.asarray(X, dtype=np.float32)
        return grid_rows, np.asarray(X, dtype=np.float32)

    def classify(
        self,
        spectra: Sequence[Spectrum],
        *,
        aging: bool = True,
        profile: AcquisitionProfile | None = None,
    ) -> list[Result]:
        """Identify a batch of spectra; one :class:`Result` per spectrum, in order.

        Each spectrum's technique and y unit are settled first (:mod:`engine.core.conventions`;
        ``profile`` states what an inbox knows), then it goes to the model for its
        technique and acquisition range (:mod:`engine.models.ranges`). With ``aging`` (the
        default) every result that :func:`wants_aging` gets ``extra["aging"]``; the
        daemon passes False and computes them in its helpers.
        """
        if not spectra:
            return []
        resolved = resolve_all(spectra, profile=profile)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, s in enumerate(resolved):
            groups.setdefault(self._route(s), []).append(i)
        results: list[Result | None] = [None] * len(resolved)
        for key, rows in groups.items():
            batch = [resolved[i] for i in rows]
            for i, routed in zip(rows, self._classify_routed(key, batch, aging=aging), strict=True):
                routed.extra.update(conventions_of(resolved[i]))
                results[i] = routed
        return [r for r in results if r is not None]

    def _route(self, s: Spectrum) -> tuple[Any, ...]:
        if s.technique != self.technique:
            return ("technique", s.technique)
        start, stop, step = self.grid_
        measured = measured_range(s)
        lost = self.mass_.lost_share(measured) if self.mass_ is not None else 0.0
        to = route(
            measured, span=self.span_, step=step, grid=(start, stop), spacing=s.spacing, lost_share=lost
        )
        if to.kind == "range" and self.window is None and to.window is not None:
            return ("range", (*to.window, to.step))
        if to.kind == "narrow":
            return ("narrow", to.overlap)
        return ("full",)

    def _classify_routed(self, key: tuple[Any, ...], batch: list[Spectrum], *, aging: bool) -> list[Result]:
        kind = key[0]
        if kind == "full":
            return self._classify_here(batch, aging=aging)
        if kind == "range":
            results = self.ranges_.get(key[1])._classify_here(batch, aging=aging)
            for result in results:
                result.extra["range"] = list(key[1][:2])
                result.extra["sampling_step"] = key[1][2]
                if self.cnn_ is not None:
                    result.members.append(dict(CNN_ABSTAINS_ON_RANGES))
            return results
        if kind == "narrow":
            return [self._narrow(key[1]) for _ in batch]
        companion = self.model_for(key[1])
        if companion is None:
            return [self._no_library(str(key[1])) for _ in batch]
        return companion.classify(batch, aging=aging)

    def _narrow(self, overlap: tuple[float, float]) -> Result:
        quality = {"flags": ["narrow_range"], "snr": 0.0, "coverage": 0.0, "n_spikes": 0}
        quality["overlap"] = list(overlap)
        return Result("low_quality", None, None, 0.0, [], [], quality, None, self.version)

    def _no_library(self, technique: str) -> Result:
        quality = {"flags": [], "snr": 0.0, "coverage": 0.0, "n_spikes": 0}
        result = Result("unknown", None, None, 0.0, [], [], quality, None, self.version)
        result.extra["reason"] = (
            f"no {technique} library is loaded; the {self.technique} library cannot judge it"
        )
        return result

    def _classify_here(self, spectra: Sequence[Spectrum], *, aging: bool) -> list[Result]:
        """Identify spectra with this model alone (technique, unit and range already settled)."""
        grid_rows, X = self.features(spectra)
        proba = self.knn_.predict_proba(X)
        classes = [str(c) for c in self.knn_.classes_]
        cnn = self.cnn_
        fused: tuple[npt.NDArray[np.float64], list[list[dict[str, Any]]]] | None = None
        if cnn is not None and classes:
            fused = self._fuse(proba, classes, cnn, X)
        found = self._weigh(proba if fused is None else fused[0], classes, X, self.hits_, self.calibrator_)
        confidence = self._confidence(found)
        qualities = self.gate.assess_many(
            grid_rows, natives=[s.values for s in spectra], spacings=[s.spacing for s in spectra]
        )
        results = []
        for i, (spectrum, quality) in enumerate(zip(spectra, qualities, strict=True)):
            members = None if fused is None else fused[1][i]
            result = self._decide(
                found[i], float(confidence[i]), quality.as_dict(), ok=quality.ok, members=members
            )
            if members is not None and len({m["label"] for m in members}) > 1:
                result.extra["disagreement"] = True
            if aging and wants_aging(result):
                result.extra["aging"] = aging_indices(spectrum, str(result.label)).as_dict()
            results.append(result)
        return results

    def _fuse(
        self,
        proba: npt.NDArray[np.float64],
        classes: list[str],
        cnn: CNNMember,
        X: npt.NDArray[np.float32],
    ) -> tuple[npt.NDArray[np.float64], list[list[dict[str, Any]]]]:
        """The fused distribution over the kNN's classes, and each row's members (label, probability;
        for the CNN its weight in the fusion).

        The CNN's columns are aligned to the kNN's classes; a class the CNN does not know gets 0,
        a class only the CNN knows is dropped from the fused distribution (but still reported as
        the CNN's own top label).
        """
        cnn_raw = np.asarray(cnn.predict_proba(X), dtype=np.float64)
        cnn_classes = [str(c) for c in cnn.classes_]
        aligned = align_columns(cnn_raw, cnn_classes, classes)
        fusion = self.config.fusion
        w = {"cnn": 1.0, "weighted": self.cnn_weight}.get(fusion, 0.0)
        fused = (1.0 - w) * np.asarray(proba, dtype=np.float64) + w * aligned
        members = []
        for i in range(len(proba)):
            k = int(np.argmax(proba[i]))
            c = int(np.argmax(cnn_raw[i]))
            members.append(
                [
                    {"name": "subknn", "label": classes[k], "probability": round(float(proba[i][k]), 4)},
                    {
                        "name": "cnn",
                        "label": cnn_classes[c],
                        "probability": round(float(cnn_raw[i][c]), 4),
                        "weight": w,
                    },
                ]
            )
        return fused, members

    def _weigh(
        self,
        proba: npt.NDArray[np.float64],
        classes: list[str],
        X: npt.NDArray[np.float32],
        index: Any,
        thresholds: RejectCalibrator,
    ) -> list[Evidence]:
        """The evidence for feature rows ``X``: their class votes ``proba``, their hits in ``index``."""
        k = min(max(HIT_SEARCH_K, self.config.n_hits), index.ntotal)
        none = (np.zeros((len(X), 0)), np.zeros((len(X), 0), np.int64))
        r_all, id_all = index.search(pearson_rows(X), k) if k else none
        found = []
        for row, r, ids in zip(proba, r_all, id_all, strict=True):
            best = int(np.argmax(row)) if len(row) else -1
            candidate = classes[best] if best >= 0 else None
            hits, class_hit, other_r = self._hits(r, ids, candidate)
            found.append(
                Evidence(
                    candidate=candidate,
                    vote_share=float(row[best]) if best >= 0 else 0.0,
                    runner_up_share=float(np.sort(row)[-2]) if len(row) > 1 else 0.0,
                    hits=hits,
                    class_hit=class_hit,
                    other_r=other_r,
                    threshold=thresholds.threshold(candidate) if candidate is not None else None,
                )
            )
        return found

    @staticmethod
    def _features(found: Sequence[Evidence]) -> npt.NDArray[np.float64]:
        """The confidence map's inputs (:data:`~engine.models.calibration.FEATURES`); each has a candidate."""
        return evidence_features(
            [e.r for e in found],
            [e.vote_share for e in found],
            [e.runner_up_share for e in found],
            [e.other_r for e in found],
            [np.nan if e.threshold is None else e.threshold for e in found],  # NaN: refused by the map
        )

    def _confidence(self, found: Sequence[Evidence]) -> npt.NDArray[np.float64]:
        """The probability that each candidate is right (0 where there is no candidate)."""
        out = np.zeros(len(found))
        rows = [i for i, e in enumerate(found) if e.candidate is not None]
        if rows:
            out[rows] = self.confidence_.predict(self._features([found[i] for i in rows]))
        return out

    def _decide(
        self,
        found: Evidence,
        confidence: float,
        quality: dict[str, Any],
        *,
        ok: bool,
        members: list[dict[str, Any]] | None = None,
    ) -> Result:
        """One result from its evidence: ``confidence`` is given to a known label only.

        An unknown result has no label, so its confidence is 0; what its candidate
        would have scored is ``extra["candidate_confidence"]`` (a reviewer's hint, not
        a label). A low-quality spectrum gets neither: the map was fitted on
        spectra that pass the quality gate.
        """
        candidate = found.candidate
        vote_share = found.vote_share
        if members is None:
            members = [{"name": "subknn", "label": candidate, "probability": round(vote_share, 4)}]
        accept = self.calibrator_.accept
        accepted = candidate is not None and accept(candidate, r=found.r, vote_share=vote_share)
        vetoed = accepted and self._members_disagree(candidate, found.r, members)
        floor = self.config.min_confidence
        doubtful = accepted and not vetoed and floor is not None and confidence < floor
        status = "low_quality" if not ok else "known" if accepted and not (vetoed or doubtful) else "unknown"
        known = status == "known"
        class_hit = found.class_hit
        extra: dict[str, Any] = {"candidate_r": round(found.r, 4), "vote_share": round(vote_share, 4)}
        if (vetoed or doubtful) and ok:
            extra["reason"] = MEMBERS_DISAGREE if vetoed else LOW_CONFIDENCE
        if status == "unknown" and candidate is not None:
            extra["candidate_confidence"] = round(confidence, 4)
        return Result(
            status=status,
            label=candidate if known else None,
            material=class_hit.material if known and class_hit is not None else None,
            confidence=round(confidence, 4) if known else 0.0,
            hits=found.hits,
            members=members,
            quality=quality,
            threshold=round(found.threshold, 4) if found.threshold is not None else None,
            model_version=self.version,
            candidate=candidate,
            extra=extra,
        )

    def _members_disagree(self, candidate: str | None, r: float, members: list[dict[str, Any]]) -> bool:
        """Whether the CNN names another class than ``candidate`` while its best r is below
        ``config.disagreement_r`` (README "The CNN member": measured open-set evidence)."""
        bar = self.config.disagreement_r
        cnn = next((m for m in members if m["name"] == "cnn" and m["label"] is not None), None)
        return bar is not None and cnn is not None and cnn["label"] != candidate and r < bar

    def _hits(
        self, r: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], candidate: str | None
    ) -> tuple[list[Hit], Hit | None, float]:
        """The best ``n_hits`` hits, the best hit of ``candidate``'s class (None if not among them)
        and the best r of another class (-1 if none is among them).

        Hits are made only as far down the ranking as these three need.
        """
        n_hits = self.config.n_hits
        hits: list[Hit] = []
        class_hit = None
        other_r: float | None = None
        for score, ref_id in zip(r, ids, strict=True):
            if len(hits) == n_hits and class_hit is not None and other_r is not None:
                break
            if ref_id < 0:
                continue
            entry = self.library.entry(int(ref_id))
            if entry["label"] != candidate and other_r is None:
                other_r = round(float(score), 4)
            if len(hits) == n_hits and (entry["label"] != candidate or class_hit is not None):
                continue
            hit = Hit(entry["label"], entry["material"], round(float(score), 4), int(ref_id), entry["source"])
            if len(hits) < n_hits:
                hits.append(hit)
            if class_hit is None and hit.label == candidate:
                class_hit = hit
        return hits, class_hit, -1.0 if other_r is None else other_r

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the whole model to ``path`` atomically."""
        buffer = io.BytesIO()
        pickle.dump(self, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        atomic_write_bytes(path, buffer.getvalue())

    @staticmethod
    def load(path: str | Path) -> IdentificationModel:
        with Path(path).open("rb") as handle:
            model = pickle.load(handle)
        if not isinstance(model, IdentificationModel):
            raise TypeError(f"{path} does not hold an IdentificationModel")
        return model

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["hits_"] = faiss.serialize_index(self.hits_)
        state.pop("pipeline", None)
        state.pop("ranges_", None)  # rebuilt on first sight after loading
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["hits_"] = faiss.deserialize_index(state["hits_"])
        state.setdefault("cnn_", None)  # models pickled before the CNN member existed
        state.setdefault("companions", {})
        state.setdefault("window", None)
        self.__dict__.update(state)
        self.pipeline = self.library.pipeline
        self._reset_ranges()
        if "confidence_" not in state:  # pickled before confidence was calibrated
            self.confidence_ = self._fit_confidence()
