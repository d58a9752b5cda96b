"""An analyst's decisions on maps' unknown particles: each confirmed mean spectrum grows the library.

A map's unknown particle waits with its mean spectrum (:mod:`daemon.store.particle_reviews`).
Confirmed as a label, the spectrum joins the library of its technique as a confirmed result's
does (:meth:`~daemon.growth.library.LibraryGrowth.add_spectra`: served at once, one saved
version for all the particles confirmed together), and the decision records the reference it
became; rejected, it is only recorded. Either way the particles views count the final label and
the sample's result files are rewritten. The same decision twice changes nothing; a new label
first takes back the references the earlier confirmation added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from daemon.growth.library import ConfirmError, GrowthOutcome, LibraryGrowth, _joined
from daemon.store.ledger import Ledger, ParticleReview, ReviewState
from daemon.store.records import decided_by_model
from engine.core.spectrum import Spectrum

__all__ = ["ParticleDecisions"]


def _ids(reviews: Sequence[ParticleReview]) -> str:
    return ", ".join(str(r.particle.id) for r in reviews)


class ParticleDecisions:
    """Confirmations and rejections of maps' particles, applied through ``growth``."""

    def __init__(self, growth: LibraryGrowth) -> None:
        self.growth = growth
        self.ledger = growth.ledger

    def _reviews(self, particle_ids: Sequence[int], what: str) -> list[ParticleReview]:
        ids = list(dict.fromkeys(int(i) for i in particle_ids))
        if not ids:
            raise ConfirmError(f"{what} needs at least one particle")
        reviews = []
        for particle_id in ids:
            review = self.ledger.particle_review(particle_id)
            if review is None:
                raise ConfirmError(_not_reviewed(self.ledger, particle_id))
            if review.superseded:
                raise ConfirmError(
                    f"particle {particle_id} is of an earlier content of {review.particle.source_path}: "
                    "the map was rewritten and identified again ('mpwatch results --particles' lists its "
                    "particles now)"
                )
            reviews.append(review)
        return reviews

    def _class_label(self, spectrum: Spectrum, label: str) -> str:
        """The class ``label`` names in the library that would take ``spectrum``."""
        served = self.growth.models.get()
        model = served.model_for(spectrum.technique) or served
        try:
            return model.library.class_label(label)
        except ValueError as exc:
            raise ConfirmError(str(exc)) from exc

    def confirm(self, particle_ids: Sequence[int], label: str, *, decided_by: str) -> GrowthOutcome:
        """An analyst says every particle of ``particle_ids`` is ``label``: their mean spectra join the
        library as one version.

        Every particle is looked up and checked before anything changes.

        Raises:
            ConfirmError: no label or no particle; a particle without a review; a label that no
                class of the library can take; particles of more than one technique to add.
        """
        if not label.strip():
            raise ConfirmError("a confirmation needs a label")
        growth = self.growth
        with growth._deciding:
            reviews = self._reviews(particle_ids, "a confirmation")
            kept = {r.particle.id: self.ledger.particle_spectrum(r.particle.id) for r in reviews}
            canonical = {pid: self._class_label(spectrum, label) for pid, spectrum in kept.items()}
            already = [r for r in reviews if _decided(r, ReviewState.CONFIRMED, canonical[r.particle.id])]
            changing = [r for r in reviews if r not in already]
            if not changing:
                return self._unchanged(already, f"confirmed as {already[0].label}", already[0].label)
            spectra = [kept[r.particle.id] for r in changing]
            techniques = sorted({str(s.technique) for s in spectra})
            if len(techniques) > 1:
                raise ConfirmError(f"particles of one technique only can be added at once, not {techniques}")
            for r in changing:
                if r.particle.decision is None:  # a person's first word on it is what drift scores
                    growth.drift.learn(canonical[r.particle.id], predicted=None)
            withdrawn = growth._withdraw([r.particle.decision for r in changing], decided_by=decided_by)
            outcome = growth._add(spectra, label, confirmed_by=decided_by)
            now = growth.clock()
            for review, ref_id in zip(changing, outcome.ref_ids, strict=True):
                self._decide(
                    review,
                    state=ReviewState.CONFIRMED,
                    label=canonical[review.particle.id],
                    material=label,
                    decided_by=decided_by,
                    now=now,
                    ref_ids=(ref_id,),
                )
            resolved = growth.recheck_reviews()
            also = f"particles {_ids(already)} were already confirmed as {outcome.label}" if already else ""
            return replace(outcome, reviews_resolved=resolved, note=_joined(withdrawn, outcome.note, also))

    def reject(self, particle_ids: Sequence[int], *, decided_by: str) -> GrowthOutcome:
        """An analyst says none of ``particle_ids`` is a polymer to add; a confirmed one's references
        are taken back."""
        growth = self.growth
        with growth._deciding:
            reviews = self._reviews(particle_ids, "a rejection")
            rejecting = [r for r in reviews if not _decided(r, ReviewState.REJECTED, None)]
            if not rejecting:
                return self._unchanged(reviews, "rejected", None)
            withdrawn = growth._withdraw([r.particle.decision for r in rejecting], decided_by=decided_by)
            now = growth.clock()
            for review in rejecting:
                self._decide(review, state=ReviewState.REJECTED, label=None, decided_by=decided_by, now=now)
                growth.metrics.confirmation("rejected")
            model = growth.models.get()
            return GrowthOutcome("rejected", None, model.library.version, model.version, note=withdrawn)

    def _unchanged(self, reviews: Sequence[ParticleReview], what: str, label: str | None) -> GrowthOutcome:
        """The outcome of a decision every particle of ``reviews`` had already: nothing changed."""
        model = self.growth.models.get()
        which = f"particle {_ids(reviews)} is" if len(reviews) == 1 else f"particles {_ids(reviews)} are"
        note = f"{which} already {what}; nothing changed"
        return GrowthOutcome("unchanged", label, model.library.version, model.version, note=note)

    def _decide(
        self,
        review: ParticleReview,
        *,
        state: ReviewState,
        label: str | None,
        decided_by: str,
        now: float,
        material: str | None = None,
        ref_ids: Sequence[int] = (),
    ) -> None:
        """Record a decision on a particle, then have its sample's result files rewritten."""
        self.ledger.decide_particle_review(
            review.particle.id,
            state=state,
            label=label,
            material=material or label,
            decided_by=decided_by,
            now=now,
            ref_ids=ref_ids,
        )
        if self.growth.on_decision is not None:
            self.growth.on_decision(review.particle.source_path)


def _not_reviewed(ledger: Ledger, particle_id: int) -> str:
    """Why particle ``particle_id`` cannot be decided: it does not exist, or it was not unknown."""
    particle = ledger.particle(particle_id)
    if particle is None:
        return f"no particle with id {particle_id} ('mpwatch results --particles' lists them)"
    said = f"known as {particle.label}" if particle.status == "known" else particle.status
    return (
        f"particle {particle_id} is {said} and has no review: only a map's unknown particles keep "
        "their spectrum for a decision"
    )


def _decided(review: ParticleReview, state: ReviewState, label: str | None) -> bool:
    """Whether a person has already decided ``review`` as ``state`` (with ``label``)."""
    decision = review.particle.decision
    return (
        decision is not None
        and not decided_by_model(decision.decided_by)
        and decision.state is state
        and decision.label == label
    )
