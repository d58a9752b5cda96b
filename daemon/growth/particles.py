"""An analyst's decisions on maps' particles: each confirmed mean spectrum grows the library.

Every particle of a map keeps its mean spectrum (:mod:`daemon.store.particle_reviews`); the
unknown ones wait in the review queue, and any other can be decided as well (a particle the
classifier labelled wrongly). Confirmed as a label the classifier had not given it, the spectrum
joins the library of its technique as a confirmed result's does
(:meth:`~daemon.growth.library.LibraryGrowth.add_spectra`: served at once, one saved version for
all the particles confirmed together), and the decision records the reference it became;
confirmed as the classifier's own label, the decision is recorded and the library stays as it
is; rejected, the decision is recorded. Either way the particles views count the final label and
the sample's result files are rewritten. The same decision twice changes nothing; a new label
first takes back the references the earlier confirmation added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from daemon.growth.library import ConfirmError, GrowthOutcome, LibraryGrowth, _joined
from daemon.store.ledger import ReviewState, StoredParticle
from daemon.store.records import decided_by_model
from engine.core.spectrum import Spectrum

__all__ = ["ParticleDecisions"]


def _ids(particles: Sequence[StoredParticle]) -> str:
    return ", ".join(str(p.id) for p in particles)


class ParticleDecisions:
    """Confirmations and rejections of maps' particles, applied through ``growth``."""

    def __init__(self, growth: LibraryGrowth) -> None:
        self.growth = growth
        self.ledger = growth.ledger

    def _particles(self, particle_ids: Sequence[int], what: str) -> list[tuple[StoredParticle, Spectrum]]:
        """Each particle of ``particle_ids`` (once) with its kept mean spectrum, all checked first."""
        ids = list(dict.fromkeys(int(i) for i in particle_ids))
        if not ids:
            raise ConfirmError(f"{what} needs at least one particle")
        found = []
        for particle_id in ids:
            particle = self.ledger.particle(particle_id)
            if particle is None:
                raise ConfirmError(
                    f"no particle with id {particle_id} ('mpwatch results --particles' lists them)"
                )
            if particle.superseded_at is not None:
                raise ConfirmError(
                    f"particle {particle_id} is of an earlier content of {particle.source_path}: "
                    "the map was rewritten and identified again ('mpwatch results --particles' lists its "
                    "particles now)"
                )
            try:
                spectrum = self.ledger.particle_spectrum(particle_id)
            except LookupError as exc:
                raise ConfirmError(f"{exc} (its map was identified before mean spectra were kept)") from exc
            found.append((particle, spectrum))
        return found

    def _class_label(self, spectrum: Spectrum, label: str) -> str:
        """The class ``label`` names in the library that would take ``spectrum``."""
        served = self.growth.models.get()
        model = served.model_for(spectrum.technique) or served
        try:
            return model.library.class_label(label)
        except ValueError as exc:
            raise ConfirmError(str(exc)) from exc

    def confirm(self, particle_ids: Sequence[int], label: str, *, decided_by: str) -> GrowthOutcome:
        """An analyst says every particle of ``particle_ids`` is ``label``: the mean spectra of those the
        classifier had not given that label join the library as one version.

        Every particle is looked up and checked before anything changes.

        Raises:
            ConfirmError: no label or no particle; a particle that does not exist, of a rewritten map,
                or without a kept spectrum; a label that no class of the library can take;
                particles of more than one technique to add.
        """
        if not label.strip():
            raise ConfirmError("a confirmation needs a label")
        growth = self.growth
        with growth._deciding:
            found = self._particles(particle_ids, "a confirmation")
            canonical = {p.id: self._class_label(spectrum, label) for p, spectrum in found}
            changing = [(p, s) for p, s in found if not _decided(p, ReviewState.CONFIRMED, canonical[p.id])]
            already = [p for p, _ in found if _decided(p, ReviewState.CONFIRMED, canonical[p.id])]
            if not changing:
                return self._unchanged(already, f"confirmed as {already[0].label}", already[0].label)
            adding = [(p, s) for p, s in changing if _classified(p) != canonical[p.id]]
            techniques = sorted({str(s.technique) for _, s in adding})
            if len(techniques) > 1:
                raise ConfirmError(f"particles of one technique only can be added at once, not {techniques}")
            for p, _ in changing:
                if p.decision is None or decided_by_model(p.decision.decided_by):  # a person's first word
                    growth.drift.learn(canonical[p.id], predicted=_classified(p))
            priors = [p.decision for p, _ in changing]
            withdrawn = growth._withdraw(priors, decided_by=decided_by, recheck=not adding)  # else below
            if adding:
                outcome = growth._add([s for _, s in adding], label, confirmed_by=decided_by)
                reference = dict(zip((p.id for p, _ in adding), outcome.ref_ids, strict=True))
            else:
                model = growth.models.get()
                outcome = GrowthOutcome(
                    "positive", canonical[changing[0][0].id], model.library.version, model.version
                )
                reference = {}
            for _ in range(len(changing) - len(adding)):
                growth.metrics.confirmation("positive")
            now = growth.clock()
            for p, _ in changing:
                added = reference.get(p.id)
                self._decide(
                    p,
                    state=ReviewState.CONFIRMED,
                    label=canonical[p.id],
                    material=label,
                    decided_by=decided_by,
                    now=now,
                    ref_ids=() if added is None else (added,),
                )
            resolved = growth.recheck_reviews() if adding else 0
            also = f"particles {_ids(already)} were already confirmed as {outcome.label}" if already else ""
            return replace(outcome, reviews_resolved=resolved, note=_joined(withdrawn, outcome.note, also))

    def reject(self, particle_ids: Sequence[int], *, decided_by: str) -> GrowthOutcome:
        """An analyst says none of ``particle_ids`` is a polymer to add; a confirmed one's references
        are taken back."""
        growth = self.growth
        with growth._deciding:
            found = [p for p, _ in self._particles(particle_ids, "a rejection")]
            rejecting = [p for p in found if not _decided(p, ReviewState.REJECTED, None)]
            if not rejecting:
                return self._unchanged(found, "rejected", None)
            withdrawn = growth._withdraw([p.decision for p in rejecting], decided_by=decided_by)
            now = growth.clock()
            for p in rejecting:
                self._decide(p, state=ReviewState.REJECTED, label=None, decided_by=decided_by, now=now)
                if (p.decision is None or decided_by_model(p.decision.decided_by)) and _classified(p):
                    growth.drift.learn("rejected", predicted=_classified(p))
                growth.metrics.confirmation("rejected")
            model = growth.models.get()
            return GrowthOutcome("rejected", None, model.library.version, model.version, note=withdrawn)

    def _unchanged(self, particles: Sequence[StoredParticle], what: str, label: str | None) -> GrowthOutcome:
        """The outcome of a decision every particle of ``particles`` had already: nothing changed."""
        model = self.growth.models.get()
        which = (
            f"particle {_ids(particles)} is" if len(particles) == 1 else f"particles {_ids(particles)} are"
        )
        note = f"{which} already {what}; nothing changed"
        return GrowthOutcome("unchanged", label, model.library.version, model.version, note=note)

    def _decide(
        self,
        particle: StoredParticle,
        *,
        state: ReviewState,
        label: str | None,
        decided_by: str,
        now: float,
        material: str | None = None,
        ref_ids: Sequence[int] = (),
    ) -> None:
        """Record a decision on a particle (queueing it first if it was never queued), then have its
        sample's result files rewritten."""
        self.ledger.enqueue_particle_review(particle.id, now=now)
        self.ledger.decide_particle_review(
            particle.id,
            state=state,
            label=label,
            material=material or label,
            decided_by=decided_by,
            now=now,
            ref_ids=ref_ids,
        )
        if self.growth.on_decision is not None:
            self.growth.on_decision(particle.source_path)


def _classified(particle: StoredParticle) -> str | None:
    """The label the classifier gave the particle (None: it was not known), whatever was decided since."""
    decision = particle.decision
    status, label = (
        (decision.original_status, decision.original_label) if decision else (particle.status, particle.label)
    )
    return label if str(status) == "known" else None


def _decided(particle: StoredParticle, state: ReviewState, label: str | None) -> bool:
    """Whether a person has already decided ``particle`` as ``state`` (with ``label``)."""
    decision = particle.decision
    return (
        decision is not None
        and not decided_by_model(decision.decided_by)
        and decision.state is state
        and decision.label == label
    )
