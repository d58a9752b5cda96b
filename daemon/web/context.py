"""What the console's pages read: the daemon behind them, and the evidence behind one review.

:class:`ConsoleSource` is what the console needs of the daemon; :class:`Context` is
what every page is rendered from, taken from it once when the console is installed
(the callables in it are asked again at each page). The context also holds the
review queue's clusters (:class:`~daemon.growth.clusters.ReviewClusters`), made once
here for the console and the API's cluster routes, so both list the same clusters
from one cache of features. For the review queue, a result's stored hits are parsed
back from its payload (:func:`stored_hits`), the spectrum it was made from is read
again from its file (:class:`SpectrumFiles`, :func:`query_spectrum`) and its hits'
reference spectra are taken from the served library (:func:`library_references`).
The pages themselves are in :mod:`daemon.web.console`.

>>> stored_hits({"hits": [{"label": "PE", "r": 0.97, "ref_id": 4}, "not a hit"]})
[HitRef(label='PE', material='', r=0.97, ref_id=4, source='')]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from daemon.config import Config
from daemon.growth.clusters import ReviewClusters
from daemon.growth.library import LibraryGrowth
from daemon.pipeline.serving import ModelHolder
from daemon.store.ledger import Ledger, StoredResult
from engine.core.conventions import AcquisitionProfile
from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import read_spectra
from engine.models.served import IdentificationModel

__all__ = [
    "PLOTTED_HITS",
    "ConsoleSource",
    "Context",
    "HitRef",
    "References",
    "SpectrumFiles",
    "hit_references",
    "library_references",
    "query_spectrum",
    "stored_hits",
]


class ConsoleSource(Protocol):
    """What the console reads from the daemon (:class:`daemon.service.Daemon` is one)."""

    @property
    def ledger(self) -> Ledger:
        """Results, file states and the review queue."""
        ...

    @property
    def models(self) -> ModelHolder:
        """The served model, its library, and the lock a confirmation holds while it changes them."""
        ...

    @property
    def growth(self) -> LibraryGrowth:
        """Online library growth, which knows the library folder (for its version history)."""
        ...

    @property
    def config(self) -> Config:
        """The configuration: the inboxes (to name sample folders), whether writes need a token, and how
        the review queue is clustered."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """Epoch seconds now (the overview's last 24 hours)."""
        ...

    def readiness(self) -> Mapping[str, Any]:
        """The readiness checks, as ``/readyz`` reports them."""
        ...

    def profile_for(self, path: str | Path) -> AcquisitionProfile | None:
        """The acquisition profile of the inbox a file came from, if its inbox declares one."""
        ...


@dataclass(frozen=True)
class Context:
    """What the console's pages are rendered from."""

    ledger: Ledger
    models: ModelHolder
    library_dir: Callable[[], Path]
    readiness: Callable[[], Mapping[str, object]]
    inboxes: Callable[[], Sequence[tuple[str, Path]]]
    token_required: bool
    clock: Callable[[], float]
    profile_for: Callable[[str], AcquisitionProfile | None]
    clusters: ReviewClusters

    @classmethod
    def of(cls, daemon: ConsoleSource) -> Context:
        """The context read from ``daemon``; whether writes need a token is fixed here."""
        return cls(
            ledger=daemon.ledger,
            models=daemon.models,
            library_dir=lambda: daemon.growth.library_dir,
            readiness=daemon.readiness,
            inboxes=lambda: [(inbox.name, inbox.path) for inbox in daemon.config.inboxes],
            token_required=bool(daemon.config.http.token),
            clock=daemon.clock,
            profile_for=daemon.profile_for,
            clusters=ReviewClusters.for_daemon(daemon),
        )


#: Best hits drawn under a spectrum awaiting review (result or map particle), and listed beside it.
PLOTTED_HITS: Final = 3


@dataclass(frozen=True)
class HitRef:
    """One library hit of a result, as stored in its payload."""

    label: str
    material: str
    r: float | None
    ref_id: int | None
    source: str


def stored_hits(payload: Mapping[str, Any]) -> list[HitRef]:
    """A result's hits, best first; entries that are not mappings are skipped."""
    out = []
    for hit in payload.get("hits") or []:
        if not isinstance(hit, Mapping):
            continue
        r = hit.get("r")
        ref_id = hit.get("ref_id")
        out.append(
            HitRef(
                label=str(hit.get("label") or "?"),
                material=str(hit.get("material") or ""),
                r=float(r) if isinstance(r, int | float) else None,
                ref_id=int(ref_id) if isinstance(ref_id, int) else None,
                source=str(hit.get("source") or ""),
            )
        )
    return out


class SpectrumFiles:
    """The spectrum files one page needs, each read once (a map's spectra share one file)."""

    def __init__(self) -> None:
        self._read: dict[str, list[Spectrum] | LookupError] = {}

    def spectra(self, path: str) -> list[Spectrum]:
        """Every spectrum in the file at ``path``.

        Raises:
            LookupError: the file cannot be read (any more).
        """
        if path not in self._read:
            try:
                self._read[path] = read_spectra(path)
            except (SpectrumError, OSError) as exc:
                self._read[path] = LookupError(f"cannot re-read the file: {exc}")
        found = self._read[path]
        if isinstance(found, LookupError):
            raise found
        return found


def query_spectrum(result: StoredResult, files: SpectrumFiles) -> Spectrum:
    """Re-read the spectrum a result was made from; refuse it if the file changed since.

    Raises:
        LookupError: the file cannot be read, no longer holds the spectrum, or changed.
    """
    spectra = files.spectra(result.source_path)
    if result.spectrum_index >= len(spectra):
        raise LookupError(f"the file no longer holds spectrum {result.spectrum_index}")
    spectrum = spectra[result.spectrum_index]
    if spectrum.metadata.get("sha256") not in (None, result.sha256):
        raise LookupError("the file changed since it was classified")
    return spectrum


def library_references(
    model: IdentificationModel, wanted: set[int]
) -> dict[int, tuple[dict[str, Any], Spectrum]]:
    """The entries and measured spectra of ``model``'s references whose ids are ``wanted``."""
    library = model.library
    return {
        int(entry["ref_id"]): (dict(entry), spectrum)
        for entry, spectrum in zip(library.entries, library.measured, strict=True)
        if entry["ref_id"] in wanted
    }


#: A library's references by ref id: each one's entry and measured spectrum.
References = Mapping[int, tuple[dict[str, Any], Spectrum]]


def hit_references(
    holder: ModelHolder, results: Sequence[StoredResult], *, hits: int
) -> dict[int, tuple[IdentificationModel, References]]:
    """Each result's model (its technique's) and that library's references among the best ``hits``
    hits of ``results``, by result id.

    A result's hits are references of its technique's library (reference ids are per library).
    They are read under the model lock: a confirmation changes the library in place, and a page
    shows one consistent state.
    """
    wanted = {
        hit.ref_id
        for result in results
        for hit in stored_hits(result.payload)[:hits]
        if hit.ref_id is not None
    }
    with holder.lock:
        served = holder.get()
        models = {
            result.id: served.model_for(result.payload.get("technique")) or served for result in results
        }
        found = {id(model): library_references(model, wanted) for model in models.values()}
    return {result_id: (model, found[id(model)]) for result_id, model in models.items()}
