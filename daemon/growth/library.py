"""Online library growth: a confirmation becomes a new library version, served within a second.

:class:`LibraryGrowth` is the one place the served library changes:

- :meth:`~LibraryGrowth.confirm` and :meth:`~LibraryGrowth.reject` act on a result
  (from ``mpwatch confirm``, ``POST /api/confirm`` or the review console);
  :meth:`~LibraryGrowth.confirm_results` and :meth:`~LibraryGrowth.reject_results` on
  several at once (a cluster of the review queue, :mod:`daemon.growth.clusters`), all
  confirmed spectra added as one library version;
- :meth:`~LibraryGrowth.add_spectra` takes spectra dropped into ``confirmed/<LABEL>/``;
- :meth:`~LibraryGrowth.remove` undoes a wrong confirmation by reference id;
- :meth:`~LibraryGrowth.sync_with_disk` notices a version made elsewhere (a
  rollback from the command line) and rebuilds the model from it.

A library change is applied to the served model *in place*, under the model
lock the worker holds while it classifies a batch. The library is extended,
that class's synthetic spectra are regenerated, the FAISS indexes get an
incremental add, and that class's reject threshold is recalibrated. No queued
file is lost or classified twice, and no batch sees half an update. Then the
new library version is written atomically, and the open review queue is
re-checked against the new model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daemon.growth.drift import DriftWatch
from daemon.pipeline.serving import ModelHolder
from daemon.store.ledger import (
    MODEL_DECIDER,
    Decision,
    Ledger,
    ParticleReview,
    ResultStatus,
    ReviewItem,
    ReviewState,
    StoredResult,
    iso_time,
)
from daemon.web.metrics import Metrics
from engine.core.audit import contradicted_labels
from engine.core.conventions import AcquisitionProfile, resolve, resolve_all
from engine.core.library import HEAD, ReferenceLibrary, read_head
from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import read_spectra
from engine.models.served import IdentificationModel, ModelConfig

__all__ = ["ConfirmError", "GrowthOutcome", "LibraryGrowth"]

logger = logging.getLogger(__name__)


class ConfirmError(ValueError):
    """A confirmation that cannot be applied (unknown result, unreadable source, bad label)."""


@dataclass(frozen=True)
class GrowthOutcome:
    """What a confirmation did."""

    kind: str  # new_class | added | positive | rejected | removed | unchanged
    label: str | None
    library_version: int | None
    model_version: str
    ref_ids: tuple[int, ...] = ()
    seconds_to_serve: float | None = None
    reviews_resolved: int = 0
    #: What else happened, in words (an unchanged decision, references taken back).
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "library_version": self.library_version,
            "model_version": self.model_version,
            "ref_ids": list(self.ref_ids),
            "seconds_to_serve": self.seconds_to_serve,
            "reviews_resolved": self.reviews_resolved,
            "note": self.note,
        }


@dataclass(frozen=True)
class _Confirmation:
    """What confirming one result will do, worked out (its spectrum read) before anything changes."""

    stored: StoredResult
    #: The class the analyst's label names in the library of the result's technique.
    canonical: str
    #: The classifier's label when it said known: what drift scores the decision against.
    predicted: str | None
    #: The spectrum to add to the library; None: positive feedback, the library stays as it is.
    spectrum: Spectrum | None


def _distinct(result_ids: Sequence[int], what: str) -> list[int]:
    """``result_ids`` once each, in their order; a decision on none is refused."""
    ids = list(dict.fromkeys(int(i) for i in result_ids))
    if not ids:
        raise ConfirmError(f"{what} needs at least one result")
    return ids


def _decided(stored: StoredResult, state: ReviewState) -> bool:
    """Whether a person (not a grown model) has already decided ``stored`` as ``state``."""
    decision = stored.decision
    return decision is not None and not decision.by_model and decision.state is state


def _ids(stored: Sequence[StoredResult]) -> str:
    return ", ".join(str(s.id) for s in stored)


def _also(stored: Sequence[StoredResult], what: str) -> str:
    """What a decision left alone because it was so already, in words ("" for none)."""
    if not stored:
        return ""
    if len(stored) == 1:
        return f"result {_ids(stored)} was already {what}"
    return f"results {_ids(stored)} were already {what}"


def _overrides(plans: Sequence[_Confirmation]) -> str:
    """Known results a decision relabels, in words, so that a slip of the label shows at once."""
    said = []
    for p in plans:
        if p.predicted is not None and p.predicted != p.canonical:
            sure = p.stored.confidence if p.stored.decision is None else None  # the model's own word
            how = f" ({sure:.2f})" if sure else ""
            said.append(f"result {p.stored.id} was known as {p.predicted}{how}")
    if not said:
        return ""
    more = f" and {len(said) - 3} more" if len(said) > 3 else ""
    return f"{'; '.join(said[:3])}{more}: check the label, {plans[0].canonical} overrides the model"


def _joined(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def _doubts(library: ReferenceLibrary, ref_ids: Sequence[int]) -> str:
    """Words for the references just added that look like another class of the library, not the one they
    were confirmed as (:func:`engine.core.audit.contradicted_labels`); empty when none does. They stay in:
    the analyst decides, and ``POST /api/library/remove`` takes one back."""
    added = {int(i) for i in ref_ids}
    found = [
        c
        for c in contradicted_labels(library.preprocessed, library.labels)
        if int(library.ref_ids[c.index]) in added
    ]
    return "; ".join(
        f"reference {int(library.ref_ids[c.index])} looks like {c.looks_like}, not {c.label}"
        f" (r {c.r_other:.2f} with the {c.looks_like} median spectrum, {c.r_own:.2f} with the {c.label} one):"
        " check the label"
        for c in found
    )


class LibraryGrowth:
    """Confirmations, removals and rollbacks applied to the served model and library."""

    def __init__(
        self,
        *,
        models: ModelHolder,
        ledger: Ledger,
        library_dirs: Mapping[str, Path],
        metrics: Metrics,
        drift: DriftWatch,
        model_config: ModelConfig,
        clock: Callable[[], float] = time.time,
        on_model_change: Callable[[], None] | None = None,
        on_decision: Callable[[str], None] | None = None,
        profile_for: Callable[[str], AcquisitionProfile | None] | None = None,
    ) -> None:
        self.models = models
        self.ledger = ledger
        served = models.get().technique
        #: The served model's own library (IR in the daemon), which rollbacks and removals change.
        self.library_dir = library_dirs[served]
        #: The libraries of the companion models (other techniques), which confirmations also grow.
        self.companion_dirs = {t: path for t, path in library_dirs.items() if t != served}
        self.profile_for = profile_for or (lambda path: None)
        self.metrics = metrics
        self.drift = drift
        self.model_config = model_config
        self.clock = clock
        self.on_model_change = on_model_change
        #: Told the source file of every decided result (its sample's result files are rewritten).
        self.on_decision = on_decision
        self._changes = threading.Lock()  # one library change at a time
        self._deciding = threading.Lock()  # one decision at a time: the same one twice is seen as such
        #: Confirmed spectra added to the library since start (the CNN challenger's trigger).
        self.confirmations = 0

    # -- confirmations of results -------------------------------------------------------------

    def _stored(self, result_id: int) -> StoredResult:
        stored = self.ledger.result(result_id)
        if stored is None:
            raise ConfirmError(f"no result with id {result_id}")
        return stored

    def spectrum_of(self, stored: StoredResult) -> Spectrum:
        """The spectrum ``stored`` was made from, read again from its file and settled as its inbox says.

        Raises:
            ConfirmError: the file cannot be read any more, no longer holds the spectrum, or
                changed since the result was made (naming the result).
        """
        try:
            spectra = read_spectra(stored.source_path)
        except (SpectrumError, OSError) as exc:
            raise ConfirmError(f"cannot re-read {stored.source_path} for result {stored.id}: {exc}") from exc
        if stored.spectrum_index >= len(spectra):
            raise ConfirmError(
                f"{stored.source_path} no longer holds spectrum {stored.spectrum_index} of result {stored.id}"
            )
        spectrum = spectra[stored.spectrum_index]
        if spectrum.metadata.get("sha256") != stored.sha256:
            raise ConfirmError(f"{stored.source_path} changed since result {stored.id} was made")
        return resolve(spectrum, profile=self.profile_for(str(stored.source_path)))

    def confirm(
        self, result_id: int, *, label: str, decided_by: str, add: bool | None = None
    ) -> GrowthOutcome:
        """An analyst says result ``result_id`` is ``label``.

        A known result confirmed with its own label is positive feedback: it is
        scored and closes its review, but changes the library only with ``add=True``.
        Anything else adds the spectrum to the library under ``label``. Confirming a
        result again with the label it already has changes nothing (``kind``
        ``unchanged``); confirming it with another label first takes back the
        references the earlier decision added.
        """
        return self.confirm_results([result_id], label, decided_by=decided_by, add=add)

    def confirm_results(
        self, result_ids: Sequence[int], label: str, *, decided_by: str, add: bool | None = None
    ) -> GrowthOutcome:
        """An analyst says every result of ``result_ids`` is ``label`` (a review cluster): one version.

        Each result is decided as :meth:`confirm` decides one, but the spectra to add go
        into the library together: one in-place update of the served model, one saved
        version, one re-check of the review queue, and each result's decision records the
        reference its spectrum became. Every result is looked up and its spectrum read
        again before anything changes, so one that is missing or unreadable refuses the
        whole confirmation and leaves the library, the model and the ledger as they were.

        Raises:
            ConfirmError: no label or no result; a result that does not exist or whose file
                cannot be read as it was; spectra of more than one technique to add.
        """
        if not label.strip():
            raise ConfirmError("a confirmation needs a label")
        ids = _distinct(result_ids, "a confirmation")
        with self._deciding:
            stored = [self._stored(i) for i in ids]
            try:
                plans = [(s, self._plan(s, label, add=add)) for s in stored]
                techniques = {
                    str(p.spectrum.technique) for _, p in plans if p is not None and p.spectrum is not None
                }
                if len(techniques) > 1:
                    raise ConfirmError(
                        f"spectra of one technique only can be added at once, not {sorted(techniques)}"
                    )
            except ConfirmError as exc:
                if len(ids) == 1:
                    raise
                raise ConfirmError(f"{exc}; none of the {len(ids)} results was confirmed") from exc
            already = [s for s, plan in plans if plan is None]
            changing = [plan for _, plan in plans if plan is not None]
            if not changing:
                return self._unchanged(already, f"already confirmed as {already[0].label}")
            outcome = self._confirm(changing, label, decided_by=decided_by)
            also = _also(already, f"confirmed as {outcome.label}")
            return replace(outcome, note=_joined(_overrides(changing), outcome.note, also))

    def _plan(self, stored: StoredResult, label: str, *, add: bool | None) -> _Confirmation | None:
        """What confirming ``stored`` as ``label`` will do (None: it is so already).

        The spectrum of a result to be added is read here, before anything changes.

        Raises:
            ConfirmError: ``label`` is no class of the result's library, or the spectrum cannot be
                read as it was.
        """
        canonical = self._class_label(stored, label)
        prior = stored.decision
        if (
            prior is not None
            and not prior.by_model
            and prior.state is ReviewState.CONFIRMED
            and prior.label == canonical
            and (prior.ref_ids or not add)
        ):
            return None
        predicted = stored.classified_label if stored.classified_status is ResultStatus.KNOWN else None
        spectrum = None if predicted == canonical and not add else self.spectrum_of(stored)
        return _Confirmation(stored, canonical, predicted, spectrum)

    def _confirm(self, plans: Sequence[_Confirmation], label: str, *, decided_by: str) -> GrowthOutcome:
        """Apply checked confirmations: drift, references taken back, one library change, decisions."""
        for plan in plans:
            prior = plan.stored.decision
            if prior is None or prior.by_model:  # a person's first word on it is what drift scores
                self.drift.learn(plan.canonical, predicted=plan.predicted)
        adding = [(plan.stored.id, plan.spectrum) for plan in plans if plan.spectrum is not None]
        priors = [plan.stored.decision for plan in plans]
        withdrawn = self._withdraw(priors, decided_by=decided_by, recheck=not adding)  # else checked below
        now = self.clock()
        for _ in range(len(plans) - len(adding)):
            self.metrics.confirmation("positive")
        if adding:
            outcome = self._add([spectrum for _, spectrum in adding], label, confirmed_by=decided_by)
            reference = dict(zip((result_id for result_id, _ in adding), outcome.ref_ids, strict=True))
        else:
            model = self.models.get()
            outcome = GrowthOutcome("positive", plans[0].canonical, model.library.version, model.version)
            reference = {}
        for plan in plans:
            added = reference.get(plan.stored.id)
            self._decide(
                plan.stored,
                state=ReviewState.CONFIRMED,
                label=plan.canonical,
                material=label,
                decided_by=decided_by,
                now=now,
                ref_ids=() if added is None else (added,),
            )
        resolved = self.recheck_reviews() if adding else 0  # after the decisions: they are not open now
        return replace(outcome, reviews_resolved=resolved, note=_joined(withdrawn, outcome.note))

    def reject(self, result_id: int, *, decided_by: str) -> GrowthOutcome:
        """An analyst says result ``result_id`` is wrong (and not a polymer to add).

        Rejecting an already rejected result changes nothing; rejecting a confirmed one
        takes back the references its confirmation added.
        """
        return self.reject_results([result_id], decided_by=decided_by)

    def reject_results(self, result_ids: Sequence[int], *, decided_by: str) -> GrowthOutcome:
        """An analyst says none of ``result_ids`` is a polymer to add (a cluster of junk spectra).

        Each result is rejected as :meth:`reject` rejects one; every one is looked up first,
        so an unknown id refuses them all.
        """
        ids = _distinct(result_ids, "a rejection")
        with self._deciding:
            stored = [self._stored(i) for i in ids]
            already = [s for s in stored if _decided(s, ReviewState.REJECTED)]
            rejecting = [s for s in stored if not _decided(s, ReviewState.REJECTED)]
            if not rejecting:
                return self._unchanged(already, "already rejected")
            withdrawn = self._withdraw([s.decision for s in rejecting], decided_by=decided_by)
            now = self.clock()
            for s in rejecting:
                prior = s.decision
                self._decide(s, state=ReviewState.REJECTED, label=None, decided_by=decided_by, now=now)
                if (prior is None or prior.by_model) and s.classified_status is ResultStatus.KNOWN:
                    self.drift.learn("rejected", predicted=s.classified_label)
                self.metrics.confirmation("rejected")
        model = self.models.get()
        note = _joined(withdrawn, _also(already, "rejected"))
        return GrowthOutcome("rejected", None, model.library.version, model.version, note=note)

    def _class_label(self, stored: StoredResult, label: str) -> str:
        """The class ``label`` names in the library that would take this result's spectrum."""
        served = self.models.get()
        model = served.model_for(stored.payload.get("technique")) or served
        try:
            return model.library.class_label(label)
        except ValueError as exc:
            raise ConfirmError(str(exc)) from exc

    def _unchanged(self, stored: Sequence[StoredResult], what: str) -> GrowthOutcome:
        """The outcome of a decision every result of ``stored`` had already: nothing changed."""
        decisions = [s.decision for s in stored if s.decision is not None]
        model = self.models.get()
        if len(stored) == 1:
            (decision,) = decisions
            note = (
                f"result {stored[0].id} is {what} (by {decision.decided_by} at "
                f"{iso_time(decision.decided_at)}); nothing changed"
            )
        else:
            note = f"results {_ids(stored)} are {what}; nothing changed"
        ref_ids = tuple(i for decision in decisions for i in decision.ref_ids)
        label = decisions[0].label if decisions else None
        return GrowthOutcome("unchanged", label, model.library.version, model.version, ref_ids, note=note)

    def _withdraw(self, priors: Sequence[Decision | None], *, decided_by: str, recheck: bool = True) -> str:
        """Take back the references earlier decisions added, as one version; say so ("": there were none).

        The reviews a grown model had closed on them are opened again and, with ``recheck``, checked
        against the library without them (a caller that grows the library next re-checks after it).
        """
        taken = [prior for prior in priors if prior is not None and prior.ref_ids]
        if not taken:
            return ""
        ref_ids = [i for prior in taken for i in prior.ref_ids]
        outcome = self.remove(ref_ids, decided_by=decided_by)
        names = list(dict.fromkeys(str(prior.label) for prior in taken))
        # what a grown model closed as those labels rested on these references: judged again
        reopened = self.ledger.reopen_reviews_decided_by_model(names)
        for source in reopened:
            if self.on_decision is not None:
                self.on_decision(source)
        if reopened and recheck:
            self.recheck_reviews()
        again = "; the reviews a model had closed on them were opened and checked again" if reopened else ""
        what = "confirmation as {} was" if len(taken) == 1 else "confirmations as {} were"
        return (
            f"the earlier {what.format(', '.join(names))} taken back: references "
            f"{', '.join(map(str, ref_ids))} removed in library version {outcome.library_version}{again}"
        )

    def _decide(
        self,
        stored: StoredResult,
        *,
        state: ReviewState,
        label: str | None,
        decided_by: str,
        now: float,
        material: str | None = None,
        ref_ids: Sequence[int] = (),
    ) -> None:
        """Record a decision on a result (queueing it first if it was never queued), then re-export it.

        ``label`` is the class label; ``material`` (default: ``label``) the name as the analyst gave it.
        """
        if self.ledger.review(stored.id) is None:
            self.ledger.enqueue_review(stored.id, now=now)
        self.ledger.decide_review(
            stored.id,
            state=state,
            label=label,
            material=material or label,
            decided_by=decided_by,
            now=now,
            ref_ids=ref_ids,
        )
        if self.on_decision is not None:
            self.on_decision(stored.source_path)

    # -- library changes ----------------------------------------------------------------------

    def add_spectra(self, spectra: Sequence[Spectrum], label: str, *, confirmed_by: str) -> GrowthOutcome:
        """Add confirmed spectra of one class, serve them at once, write the new version, then
        re-check the open reviews against it.

        Spectra go to the library of their technique: a Raman spectrum grows the Raman library.
        """
        outcome = self._add(spectra, label, confirmed_by=confirmed_by)
        return replace(outcome, reviews_resolved=self.recheck_reviews())

    def _add(self, spectra: Sequence[Spectrum], label: str, *, confirmed_by: str) -> GrowthOutcome:
        """:meth:`add_spectra` without the re-check, which a confirmation runs after its decisions."""
        if not spectra:
            raise ConfirmError("no spectra to add")
        settled = resolve_all(spectra)
        techniques = {str(s.technique) for s in settled}
        if len(techniques) > 1:
            raise ConfirmError(f"a confirmation's spectra must be of one technique, not {sorted(techniques)}")
        technique = techniques.pop()
        with self._changes:
            started = time.perf_counter()
            with self.models.lock:
                model = self.models.get().model_for(technique)
                if model is None:
                    raise ConfirmError(f"no {technique} library is served; the spectra cannot be added")
                class_label = model.library.class_label(label)
                new_class = class_label not in model.library.class_counts()
                ids = model.add_references(settled, label, confirmed_by=confirmed_by)
            served = time.perf_counter() - started
            self.confirmations += len(ids)
            kind = "new_class" if new_class else "added"
            version = self._save(model, f"{kind}: {len(ids)} {class_label} by {confirmed_by}")
            self.metrics.observe_time_to_serve(served)
            self.metrics.confirmation(kind)
            self._published()
            logger.info(
                "library version %d: %s %s (%d %s by %s), serving after %.0f ms",
                version,
                kind,
                class_label,
                len(ids),
                "spectrum" if len(ids) == 1 else "spectra",
                confirmed_by,
                served * 1000,
            )
            added = tuple(int(i) for i in ids)
            doubts = _doubts(model.library, added)  # under the change lock: this change's library
            if doubts:
                logger.warning("library version %d: %s", version, doubts)
        return GrowthOutcome(kind, class_label, version, model.version, added, served, note=doubts)

    def remove(self, ref_ids: Sequence[int], *, decided_by: str) -> GrowthOutcome:
        """Remove references (a wrong confirmation) by id, as a new version."""
        with self._changes, self.models.lock:
            model = self.models.get()
            try:
                removed = model.remove_references([int(i) for i in ref_ids])
            except KeyError as exc:
                raise ConfirmError(str(exc)) from exc
            version = self._save(model, f"removed {removed} references by {decided_by}")
        self._published()
        return GrowthOutcome("removed", None, version, model.version, tuple(int(i) for i in ref_ids))

    def _save(self, model: IdentificationModel, message: str) -> int:
        served = model is self.models.get()
        folder = self.library_dir if served else self.companion_dirs[model.technique]
        version = model.library.save(folder, message=message)
        return version

    def _published(self) -> None:
        if self.on_model_change:
            self.on_model_change()

    def sync_with_disk(self) -> bool:
        """Rebuild the model if the library's current version on disk is not the one served."""
        try:
            on_disk = read_head(self.library_dir)
        except Exception:
            logger.exception("cannot read %s/%s", self.library_dir, HEAD)
            return False
        if on_disk == self.models.get().library.version:
            return False
        with self._changes:
            library = ReferenceLibrary.load(self.library_dir)
            model = IdentificationModel(library, self.model_config)
            for companion in self.models.get().companions.values():
                model.attach(companion)
            self.models.swap(model)
        logger.info(
            "library %s is at version %d now (changed outside the daemon); model rebuilt",
            self.library_dir,
            on_disk,
        )
        self._published()
        self.recheck_reviews()
        return True

    def recheck_reviews(self, *, limit: int = 1000) -> int:
        """Re-classify open reviews (results' and maps' particles') with the current model; close those
        it now knows."""
        pairs: list[tuple[ReviewItem | ParticleReview, Spectrum]] = []
        for review in self.ledger.open_reviews(limit=limit):
            try:
                pairs.append((review, self.spectrum_of(review.result)))
            except ConfirmError as exc:
                logger.debug("review %d not re-checked: %s", review.result.id, exc)
        for waiting in self.ledger.open_particle_reviews(limit=limit):
            try:
                pairs.append((waiting, self.ledger.particle_spectrum(waiting.particle.id)))
            except (LookupError, SpectrumError) as exc:  # gone meanwhile, or no usable spectrum
                logger.debug("particle %d not re-checked: %s", waiting.particle.id, exc)
        if not pairs:
            return 0
        with self.models.lock:  # no aging indices: only the status matters here, and the worker waits
            model = self.models.get()
            results = model.classify([s for _, s in pairs], aging=False)
        resolved = 0
        now = self.clock()
        by = f"{MODEL_DECIDER}{model.version}"
        known = ReviewState.CONFIRMED
        for (item, _), result in zip(pairs, results, strict=True):
            if result.status != "known":
                continue
            label, material = result.label, result.material
            if isinstance(item, ReviewItem):
                self._decide(item.result, state=known, label=label, material=material, decided_by=by, now=now)
            else:
                self.ledger.decide_particle_review(
                    item.particle.id, state=known, label=label, material=material, decided_by=by, now=now
                )
                if self.on_decision is not None:
                    self.on_decision(item.particle.source_path)
            resolved += 1
        if resolved:
            logger.info("%d open reviews are now known to model %s", resolved, model.version)
        return resolved
