"""One file in, one set of results out; an error stays with its file.

:class:`Worker` takes a batch of claimed files from the ledger, reads them
(in the :class:`~daemon.pipeline.helpers.HelperPool`), classifies every spectrum of
the batch in one model call, has the helpers compute the identified
particles' aging indices, and completes each file in the ledger: results
and terminal state together, the whole batch in one commit. Metrics, the
results files and listeners hear of a file only after that commit.
What goes wrong is sorted per file:

- the file is not ready (locked, permission denied, vanished): ``failed``,
  retried later with backoff, quarantined after too many attempts;
- the file is not a usable spectrum (:class:`~engine.core.spectrum.SpectrumError`):
  ``quarantined`` at once with the reason, since retrying cannot help;
- the file is plainly not a spectrum at all (``not_a_spectrum``: a note no reader
  recognises) and its inbox ignores such files: ``ignored``, left where it is;
- anything unexpected while classifying: ``failed`` with the error, so a bug
  costs one file a retry, never the daemon.

The worker asks the :class:`~daemon.pipeline.serving.ModelHolder` for the
model once per batch, so a swap takes effect between batches and no file is
classified twice or by half a model.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.config import InboxConfig
from daemon.pipeline.helpers import HelperPool
from daemon.pipeline.maps import MapRoute
from daemon.pipeline.serving import ModelHolder
from daemon.store.export import ResultsExporter
from daemon.store.ledger import Ledger, MapRecord, ResultRecord, ResultStatus, WorkItem
from daemon.web.metrics import Metrics
from engine.core.conventions import resolve_all
from engine.core.spectrum import Spectrum, SpectrumError
from engine.core.storage import atomic_write_text
from engine.models.served import IdentificationModel, Result, wants_aging
from engine.report.sizes import sizes_from_metadata

__all__ = ["Classified", "Worker", "internal_error", "move_into", "result_record"]

logger = logging.getLogger(__name__)


def internal_error(error: BaseException) -> str:
    """The recorded reason for an unexpected error: a bug costs its file a retry, not the daemon.

    >>> internal_error(ValueError("bad"))
    'internal error: ValueError: bad'
    """
    return f"internal error: {type(error).__name__}: {error}"


def result_record(index: int, result: Result, spectrum: Spectrum | None = None) -> ResultRecord:
    """A model result as the ledger stores it; the evidence goes into the payload.

    What the spectrum's file says of its particle (a per-particle file's size) and of its
    instrument goes in too, for the sample reports.
    """
    payload = result.as_dict()
    for key in ("status", "label", "material", "confidence", "model_version"):
        payload.pop(key, None)
    if spectrum is not None:
        if sizes := sizes_from_metadata(spectrum.metadata):
            payload["particle_size"] = sizes
        meta = spectrum.metadata
        if facts := {k: str(meta[k])[:200] for k in ("instrument", "date") if meta.get(k)}:
            payload["acquisition"] = facts
    return ResultRecord(
        spectrum_index=index,
        status=ResultStatus(result.status),
        model_version=result.model_version,
        label=result.label,
        material=result.material,
        confidence=result.confidence,
        payload=payload,
    )


@dataclass
class _ReadFile:
    item: WorkItem
    spectra: list[Spectrum]
    started: float
    #: A map's record (its particles): the file's results when it holds a map.
    mapped: MapRecord | None = None


#: A file read and classified: its spectra and one result per spectrum.
Classified = tuple[_ReadFile, list[Result]]


class Worker:
    """Classifies batches of claimed files and records every outcome.

    A batch goes through two stages, :meth:`classify` and :meth:`finish`, which the
    daemon runs in two threads so that consecutive batches overlap.
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        metrics: Metrics,
        exporter: ResultsExporter,
        models: ModelHolder,
        quarantine_dir: Path,
        helpers: HelperPool | None = None,
        processed_dir: Path | None = None,
        move_quarantined: bool = False,
        clock: Callable[[], float] = time.time,
        on_result: Callable[[WorkItem, Sequence[Result]], None] | None = None,
        inbox_for: Callable[[str], InboxConfig | None] | None = None,
        maps: MapRoute | None = None,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.exporter = exporter
        self.models = models
        self.quarantine_dir = quarantine_dir
        self.helpers = helpers if helpers is not None else HelperPool(0)
        self.processed_dir = processed_dir
        self.move_quarantined = move_quarantined
        self.clock = clock
        self.on_result = on_result
        #: The inbox of a file, by path: its profile (what its instrument is known to write) and
        #: whether it ignores files that are plainly not spectra (else they are quarantined).
        self.inbox_for = inbox_for or (lambda path: None)
        #: Where files that hold imaging maps go instead of being classified spectrum by spectrum.
        self.maps = maps

    def give_up(self, items: Sequence[WorkItem], error: BaseException) -> None:
        """A stage failed for a whole batch: each file fails with the error, to be retried with backoff.

        A file the ledger cannot record either (its database failing) stays claimed,
        and the next start recovers it.
        """
        reason = internal_error(error)
        for item in items:
            try:
                record = self.ledger.file(item.path)
                if record is not None and record.claimed_at is not None:  # not settled before the failure
                    self._fail(item, reason)
            except Exception:
                logger.exception("could not record the failure of %s; the next start recovers it", item.path)

    def process(self, items: Sequence[WorkItem]) -> None:
        """Process a batch from start to end; never raises for a problem with one file."""
        self.finish(self.classify(items))

    def classify(self, items: Sequence[WorkItem]) -> list[Classified]:
        """Stage one: read the files (helpers), classify them (here, under the model lock); maps apart."""
        started = time.perf_counter()
        maps = {item.path for item in items if self.maps is not None and self.maps.claims(item.path)}
        readable = self._read([item for item in items if item.path not in maps], started)
        classified = self._classify(readable) if readable else []
        return classified + [one for item in items if item.path in maps and (one := self._map(item, started))]

    def _map(self, item: WorkItem, started: float) -> Classified | None:
        """A map identified as a whole (on a snapshot of the model, so the lock stays free) and drawn;
        a bad cube quarantines its file."""
        if self.maps is None:
            return None
        if header := self.maps.header_of(item.path):
            self._ignore(item, f"the data of the map {header}, identified from its header")
            return None
        try:
            identification = self.maps.identify(self.models.snapshot(), item.path)
            record = self.maps.record(identification, item.sha256)
        except SpectrumError as exc:
            if exc.reason == "not_accessible" or self.maps.arriving(item.path, exc):
                self._fail(item, f"not ready: {exc.message}")
            else:
                self._quarantine(item, str(exc))
            return None
        except OSError as exc:
            self._fail(item, f"not ready: {exc.strerror or exc}")
            return None
        except Exception as exc:
            logger.exception("identifying the map %s failed", item.path)
            self._fail(item, internal_error(exc))
            return None
        return _ReadFile(item, [], started, mapped=record), []

    def finish(self, classified: Sequence[Classified]) -> None:
        """Stage two: aging indices (helpers), the whole batch recorded with one commit, then announced."""
        if not classified:
            return
        self._add_aging(classified)
        with self.ledger.batch():
            recorded = [(one, results) for one, results in classified if self._record(one, results)]
        for one, results in recorded:
            try:
                self._announce(one, results)
            except Exception:  # recorded already: a metric or a listener failing must not stop the others
                logger.exception("announcing the results of %s failed", one.item.path)

    def _read(self, items: Sequence[WorkItem], started: float) -> list[_ReadFile]:
        readable = []
        for item, outcome in zip(items, self.helpers.read([item.path for item in items]), strict=True):
            if isinstance(outcome, SpectrumError) and outcome.reason == "not_accessible":
                self._fail(item, f"not ready: {outcome.message}")
            elif (
                isinstance(outcome, SpectrumError)
                and outcome.reason == "not_a_spectrum"
                and (inbox := self.inbox_for(item.path)) is not None
                and inbox.ignore_non_spectra
            ):
                self._ignore(item, f"not a spectrum: {outcome.message}")
            elif isinstance(outcome, SpectrumError):
                self._quarantine(item, str(outcome))
            elif isinstance(outcome, OSError):
                self._fail(item, f"not ready: {outcome.strerror or outcome}")
            elif isinstance(outcome, Exception):
                logger.error("reading %s failed: %r", item.path, outcome)
                self._fail(item, internal_error(outcome))
            elif outcome[0].metadata.get("sha256") not in (None, item.sha256):
                # The file changed after it was queued; the watcher sees the change and queues it again.
                logger.info("%s changed while queued; it will be read again", item.path)
                self.ledger.release(item.path, now=self.clock())
            else:
                inbox = self.inbox_for(item.path)
                spectra = resolve_all(outcome, profile=None if inbox is None else inbox.profile())
                readable.append(_ReadFile(item, spectra, started))
        return readable

    def _classify(self, readable: Sequence[_ReadFile]) -> list[Classified]:
        """Each file with its results, classified in one model call (one by one if that fails)."""
        with self.models.lock:
            model = self.models.get()
            try:
                results = model.classify([s for r in readable for s in r.spectra], aging=False)
            except Exception:
                logger.exception(
                    "batch classification failed; classifying its %d files one by one", len(readable)
                )
                return [pair for one in readable if (pair := self._classify_alone(model, one))]
        classified, start = [], 0
        for one in readable:
            classified.append((one, results[start : start + len(one.spectra)]))
            start += len(one.spectra)
        return classified

    def _classify_alone(self, model: IdentificationModel, one: _ReadFile) -> Classified | None:
        try:
            return one, model.classify(one.spectra, aging=False)
        except Exception as exc:
            logger.exception("classifying %s failed", one.item.path)
            self._fail(one.item, internal_error(exc))
            return None

    def _add_aging(self, classified: Sequence[Classified]) -> None:
        """Aging indices for every identified particle of the batch, computed by the helpers."""
        wanted = [
            (spectrum, result)
            for one, results in classified
            for spectrum, result in zip(one.spectra, results, strict=True)
            if wants_aging(result)
        ]
        outcomes = self.helpers.aging([(spectrum, str(result.label)) for spectrum, result in wanted])
        for (_, result), outcome in zip(wanted, outcomes, strict=True):
            if isinstance(outcome, Exception):
                logger.error("aging indices failed for a %s particle: %r", result.label, outcome)
                outcome = {"error": internal_error(outcome)}
            result.extra["aging"] = outcome

    def _record(self, one: _ReadFile, results: Sequence[Result]) -> bool:
        """Results and the terminal state in the ledger (inside the batch's transaction)."""
        records = [result_record(i, r, s) for i, (r, s) in enumerate(zip(results, one.spectra, strict=True))]
        try:
            self.ledger.complete(one.item.sha256, records, now=self.clock(), map_record=one.mapped)
        except Exception as exc:
            logger.exception("recording results of %s failed", one.item.path)
            self._fail(one.item, internal_error(exc))
            return False
        return True

    def _announce(self, one: _ReadFile, results: Sequence[Result]) -> None:
        """After the commit: metrics, the results files, listeners and the optional move."""
        now = self.clock()
        for r in results:
            self.metrics.observe_result(r.status, r.label)
            if r.extra.get("disagreement"):
                self.metrics.member_disagreement()
            carbonyl = r.extra.get("aging", {}).get("carbonyl")
            if r.label is not None and carbonyl is not None:
                self.metrics.observe_carbonyl_index(r.label, carbonyl)
        self.metrics.file_finished("done", now=now, seconds=time.perf_counter() - one.started)
        self.exporter.mark(one.item.path)
        if self.on_result:
            self.on_result(one.item, results)
        if self.processed_dir is not None:
            move_into(Path(one.item.path), self.processed_dir)

    def _fail(self, item: WorkItem, reason: str) -> None:
        record = self.ledger.fail(item.path, reason, now=self.clock())
        outcome = "quarantined" if str(record.state) == "quarantined" else "failed"
        if outcome == "quarantined":
            self._note_quarantine(item, reason)
        self.metrics.file_finished(outcome, now=self.clock())

    def _ignore(self, item: WorkItem, reason: str) -> None:
        self.ledger.ignore(item.path, reason, now=self.clock())  # the ledger logs it, once
        self.exporter.mark(item.path)  # a result of its earlier content is no longer current
        self.metrics.file_finished("ignored", now=self.clock())

    def _quarantine(self, item: WorkItem, reason: str) -> None:
        self.ledger.quarantine(item.path, reason, now=self.clock())
        self._note_quarantine(item, reason)
        self.metrics.file_finished("quarantined", now=self.clock())  # the ledger logs it, once

    def _note_quarantine(self, item: WorkItem, reason: str) -> None:
        """A note beside the quarantine: what, why, when; the file itself moves only if configured.

        Its folder's result files are rewritten: a result of its earlier content is no longer current.
        """
        self.exporter.mark(item.path)
        path = Path(item.path)
        note = json.dumps({"path": str(path), "sha256": item.sha256, "reason": reason, "at": self.clock()})
        try:
            atomic_write_text(self.quarantine_dir / f"{item.sha256[:16]}-{path.name}.reason.json", note)
            if self.move_quarantined:
                move_into(path, self.quarantine_dir)
        except OSError:
            logger.exception("could not write the quarantine note for %s", path)


def move_into(path: Path, folder: Path, *, note: str | None = None) -> None:
    """Move a file into ``folder`` (made if missing), with ``note`` beside it; a failure is only logged."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = Path(shutil.move(str(path), folder / path.name))
        if note:
            target.with_name(target.name + ".reason.txt").write_text(note + "\n", encoding="utf-8")
    except OSError:
        logger.exception("could not move %s to %s", path, folder)
