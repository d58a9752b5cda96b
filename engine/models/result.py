"""What the served model answers for each spectrum: a :class:`Result`, its evidence as :class:`Hit` objects.

:class:`~engine.models.served.IdentificationModel` makes them (and :mod:`engine.models.served`
exports them too); the daemon records them as :meth:`Result.as_dict` gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from engine.core.families import family_of
from engine.core.spectrum import Spectrum

__all__ = ["Hit", "Result", "conventions_of", "wants_aging"]


@dataclass(frozen=True)
class Hit:
    """One library reference matching a query, with its Pearson r."""

    label: str
    material: str
    r: float
    ref_id: int
    source: str


@dataclass
class Result:
    """One spectrum's identification: a status, a label with evidence, and how it was decided."""

    status: str  # known | unknown | low_quality
    label: str | None
    material: str | None
    #: The calibrated probability that ``label`` is right (:mod:`engine.models.calibration`); 0 without a
    #: label (``unknown``: its candidate's is ``extra["candidate_confidence"]``). The vote share is
    #: ``extra["vote_share"]``.
    confidence: float
    hits: list[Hit]
    members: list[dict[str, Any]]
    quality: dict[str, Any]
    threshold: float | None
    model_version: str
    candidate: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str | None:
        """The label's polymer family (:func:`~engine.core.families.family_of`); None without a label
        or a family. A split vote between classes of one family (PE and EVA) still gives a label,
        the class with most votes, so the family of a labelled result is the answer one level up."""
        return family_of(self.label)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict, hits as dicts, ``extra``'s keys at the top level.

        ``family`` is :attr:`family`.

        Nested dicts and lists are shared with the result, not copied (this runs for
        every particle, and a deep copy cost more than the rest of recording it).
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["family"] = self.family
        out["hits"] = [{f.name: getattr(h, f.name) for f in fields(h)} for h in self.hits]
        out.update(out.pop("extra"))
        return out


def conventions_of(s: Spectrum) -> dict[str, Any]:
    """What a result records of its spectrum's conventions: unit, where it came from, technique, flags."""
    meta = s.metadata
    out: dict[str, Any] = {
        "technique": s.technique,
        "y_unit": s.y_unit,
        "y_unit_source": meta.get("y_unit_source"),
        "y_unit_confidence": meta.get("y_unit_confidence"),
    }
    flags = [flag for flag in ("unit_uncertain",) if meta.get(flag)]
    if flags:
        out["flags"] = flags
    if meta.get("warnings"):
        out["warnings"] = [str(w) for w in meta["warnings"]]
    return out


def wants_aging(result: Result) -> bool:
    """Whether a result gets aging indices: an identified particle (which polymer decides the bands)."""
    return result.status == "known" and result.label is not None
