"""Online library growth: a confirmation becomes a new library version, served within a second.

:class:`LibraryGrowth` is the one place the served library changes:

- :meth:`~LibraryGrowth.confirm` and :meth:`~LibraryGrowth.reject` act on a result
  (from ``mpwatch confirm``, ``POST /api/confirm`` or the review console);
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
    ResultStatus,
    ReviewItem,
    ReviewState,
    StoredResult,
    iso_time,
)
from daemon.web.metrics import Metrics
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

    def _spectrum_of(self, stored: StoredResult) -> Spectrum:
        try:
            spectra = read_spectra(stored.source_path)
        except (SpectrumError, OSError) as exc:
            raise ConfirmError(f"cannot re-read {stored.source_path} for result {stored.id}: {exc}") from exc
        if stored.spectrum_index >= len(spectra):
            raise ConfirmError(f"{stored.source_path} no longer holds spectrum {stored.spectrum_index}")
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
        if not label.strip():
            raise ConfirmError("a confirmation needs a label")
        with self._deciding:
            return self._confirm(self._stored(result_id), label, decided_by=decided_by, add=add)

    def _confirm(
        self, stored: StoredResult, label: str, *, decided_by: str, add: bool | None
    ) -> GrowthOutcome:
        canonical = self._class_label(stored, label)
        prior = stored.decision
        if (
            prior is not None
            and not prior.by_model
            and prior.state is ReviewState.CONFIRMED
            and prior.label == canonical
            and (prior.ref_ids or not add)
        ):
            return self._unchanged(stored, f"already confirmed as {canonical}")
        predicted = stored.classified_label if stored.classified_status is ResultStatus.KNOWN else None
        if prior is None or prior.by_model:  # a person's first word on it is what drift scores
            self.drift.learn(canonical, predicted=predicted)
        withdrawn = self._withdraw(prior, decided_by=decided_by)
        now = self.clock()
        if predicted == canonical and not add:
            self.metrics.confirmation("positive")
            model = self.models.get()
            outcome = GrowthOutcome("positive", canonical, model.library.version, model.version)
        else:
            outcome = self.add_spectra([self._spectrum_of(stored)], label, confirmed_by=decided_by)
        self._decide(
            stored,
            state=ReviewState.CONFIRMED,
            label=canonical,
            material=label,
            decided_by=decided_by,
            now=now,
            ref_ids=outcome.ref_ids,
        )
        return replace(outcome, note=withdrawn)

    def reject(self, result_id: int, *, decided_by: str) -> GrowthOutcome:
        """An analyst says result ``result_id`` is wrong (and not a polymer to add).

        Rejecting an already rejected result changes nothing; rejecting a confirmed one
        takes back the references its confirmation added.
        """
        with self._deciding:
            return self._reject(self._stored(result_id), decided_by=decided_by)

    def _reject(self, stored: StoredResult, *, decided_by: str) -> GrowthOutcome:
        prior = stored.decision
        if prior is not None and not prior.by_model and prior.state is ReviewState.REJECTED:
            return self._unchanged(stored, "already rejected")
        withdrawn = self._withdraw(prior, decided_by=decided_by)
        self._decide(stored, state=ReviewState.REJECTED, label=None, decided_by=decided_by, now=self.clock())
        if (prior is None or prior.by_model) and stored.classified_status is ResultStatus.KNOWN:
            self.drift.learn("rejected", predicted=stored.classified_label)
        self.metrics.confirmation("rejected")
        model = self.models.get()
        return GrowthOutcome("rejected", None, model.library.version, model.version, note=withdrawn)

    def _class_label(self, stored: StoredResult, label: str) -> str:
        """The class ``label`` names in the library that would take this result's spectrum."""
        served = self.models.get()
        model = served.model_for(stored.payload.get("technique")) or served
        try:
            return model.library.class_label(label)
        except ValueError as exc:
            raise ConfirmError(str(exc)) from exc

    def _unchanged(self, stored: StoredResult, what: str) -> GrowthOutcome:
        decision = stored.decision
        assert decision is not None
        model = self.models.get()
        note = (
            f"result {stored.id} is {what} (by {decision.decided_by} at {iso_time(decision.decided_at)}); "
            "nothing changed"
        )
        return GrowthOutcome(
            "unchanged", decision.label, model.library.version, model.version, decision.ref_ids, note=note
        )

    def _withdraw(self, prior: Decision | None, *, decided_by: str) -> str:
        """Take back the references an earlier decision added; say so ("" when there were none)."""
        if prior is None or not prior.ref_ids:
            return ""
        outcome = self.remove(prior.ref_ids, decided_by=decided_by)
        return (
            f"the earlier confirmation as {prior.label} was taken back: references "
            f"{', '.join(map(str, prior.ref_ids))} removed in library version {outcome.library_version}"
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
        """Add confirmed spectra of one class, serve them at once, then write the new version.

        Spectra go to the library of their technique: a Raman spectrum grows the Raman library.
        """
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
                "library version %d: %s %s (%d spectra), serving after %.0f ms",
                version,
                kind,
                class_label,
                len(ids),
                served * 1000,
            )
        resolved = self.recheck_reviews()
        return GrowthOutcome(
            kind, class_label, version, model.version, tuple(int(i) for i in ids), served, resolved
        )

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
        """Re-classify open reviews with the current model; close those it now knows."""
        reviews = self.ledger.open_reviews(limit=limit)
        if not reviews:
            return 0
        pairs: list[tuple[ReviewItem, Spectrum]] = []
        for review in reviews:
            try:
                pairs.append((review, self._spectrum_of(review.result)))
            except ConfirmError as exc:
                logger.debug("review %d not re-checked: %s", review.result.id, exc)
        if not pairs:
            return 0
        with self.models.lock:  # no aging indices: only the status matters here, and the worker waits
            model = self.models.get()
            results = model.classify([s for _, s in pairs], aging=False)
        resolved = 0
        now = self.clock()
        for (review, _), result in zip(pairs, results, strict=True):
            if result.status == "known":
                self._decide(
                    review.result,
                    state=ReviewState.CONFIRMED,
                    label=result.label,
                    material=result.material,
                    decided_by=f"{MODEL_DECIDER}{model.version}",
                    now=now,
                )
                resolved += 1
        if resolved:
            logger.info("%d open reviews are now known to model %s", resolved, model.version)
        return resolved
