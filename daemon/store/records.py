"""The ledger's vocabulary: its errors, states, retry policy, records and row converters.

:class:`daemon.store.ledger.Ledger` hands these records out and takes them in; the ``_*`` converters
turn its ``sqlite3.Row`` results into them. Import the public names from :mod:`daemon.store.ledger`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

__all__ = [
    "CLASSIFIER_STATUSES",
    "MODEL_DECIDER",
    "PATH_ESCAPE",
    "Admission",
    "Completion",
    "Decision",
    "FileRecord",
    "FileState",
    "InvalidTransitionError",
    "LedgerError",
    "ResultRecord",
    "ResultStatus",
    "RetryPolicy",
    "ReviewItem",
    "ReviewState",
    "SchemaVersionError",
    "StoredResult",
    "UnknownPathError",
    "UnknownReviewError",
    "WorkItem",
    "decided_by_model",
    "iso_time",
    "path_from_db",
    "path_to_db",
    "text_to_db",
]

#: Marks an escape in a stored path: itself doubled, or two hex digits of a byte that is not UTF-8.
PATH_ESCAPE = "\uf8ff"


def path_to_db(path: str) -> str:
    r"""A file path as SQLite can store it, losslessly.

    Paths are ``str`` as the operating system gives them: bytes that are not UTF-8
    (a file name written by an instrument PC with another code page) stand as lone
    surrogates, which SQLite cannot store. Those become :data:`PATH_ESCAPE` and the
    byte in hex. Every other path is stored as it is.

    >>> import os
    >>> name = os.fsdecode(b"/data/particle-\xff.csv")
    >>> stored = path_to_db(name)
    >>> stored == "/data/particle-\uf8ffff.csv", path_from_db(stored) == name
    (True, True)
    >>> path_to_db("/data/PE-01.csv")
    '/data/PE-01.csv'
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        if PATH_ESCAPE not in path:
            return path
    out = []
    for ch in path:
        if ch == PATH_ESCAPE:
            out.append(PATH_ESCAPE * 2)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(f"{PATH_ESCAPE}{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def path_from_db(stored: str) -> str:
    """The path :func:`path_to_db` stored, as the operating system names it."""
    if PATH_ESCAPE not in stored:
        return stored
    out, i = [], 0
    while i < len(stored):
        if stored[i] != PATH_ESCAPE:
            out.append(stored[i])
            i += 1
        elif stored[i + 1 : i + 2] == PATH_ESCAPE:
            out.append(PATH_ESCAPE)
            i += 2
        else:
            out.append(chr(0xDC00 + int(stored[i + 1 : i + 3], 16)))
            i += 3
    return "".join(out)


def text_to_db(text: str) -> str:
    """Free text (a reason naming a file) made storable: undecodable bytes become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class LedgerError(Exception):
    """Any problem the ledger reports."""


class SchemaVersionError(LedgerError):
    """The database was written by a newer mpwatch, or cannot be put in WAL mode."""


class UnknownPathError(LedgerError, LookupError):
    """No file row exists for the path (call :meth:`~daemon.store.ledger.Ledger.observe` first)."""


class UnknownReviewError(LedgerError, LookupError):
    """No review exists for the result id."""


class InvalidTransitionError(LedgerError):
    """The requested state change is not allowed from the file's current state."""


class FileState(StrEnum):
    """Where a file is in its life; see :mod:`daemon.store.ledger` for the transitions."""

    SEEN = "seen"
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    #: Plainly not a spectrum (a photo, a note): left where it is, not read again.
    IGNORED = "ignored"


class ResultStatus(StrEnum):
    """A result's outcome: the classifier's three (never a forced label), and an analyst's rejection.

    The classifier answers ``known``, ``unknown`` or ``low_quality``. An analyst's
    decision overrides it in every view: a confirmed result is ``known`` under the
    analyst's label, a rejected one is ``rejected`` (see :class:`Decision`).
    """

    KNOWN = "known"
    UNKNOWN = "unknown"
    LOW_QUALITY = "low_quality"
    REJECTED = "rejected"


#: The outcomes the classifier gives (``rejected`` comes only from an analyst).
CLASSIFIER_STATUSES: tuple[ResultStatus, ...] = (
    ResultStatus.KNOWN,
    ResultStatus.UNKNOWN,
    ResultStatus.LOW_QUALITY,
)


class ReviewState(StrEnum):
    """An analyst's decision on an unknown result."""

    OPEN = "open"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class Admission(StrEnum):
    """What :meth:`~daemon.store.ledger.Ledger.mark_pending` did with a hashed file."""

    #: The content is not classified yet; the file is now ``pending``. If another path
    #: with the same bytes is pending too, the content is still classified only once.
    NEW = "new"
    #: The content is already classified; the file is ``done`` with ``duplicate_of`` set.
    DUPLICATE = "duplicate"
    #: The content is already quarantined under another path; so is this file.
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for failed files, then quarantine.

    The n-th failure (n starts at 1) waits ``min(cap_seconds, base_seconds * factor**(n-1))``
    before the file is due again; the ``max_attempts``-th failure quarantines it.

    >>> policy = RetryPolicy(base_seconds=10.0, cap_seconds=60.0, max_attempts=5)
    >>> [policy.delay(n) for n in range(1, 6)]
    [10.0, 20.0, 40.0, 60.0, 60.0]
    """

    base_seconds: float = 30.0
    cap_seconds: float = 3600.0
    factor: float = 2.0
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if not (self.base_seconds > 0 and self.cap_seconds >= self.base_seconds):
            raise ValueError("RetryPolicy needs 0 < base_seconds <= cap_seconds")
        if self.factor < 1:
            raise ValueError("RetryPolicy.factor must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        try:
            delay = self.base_seconds * self.factor ** (attempt - 1)
        except OverflowError:
            return float(self.cap_seconds)
        return float(min(self.cap_seconds, delay))


@dataclass(frozen=True)
class ResultRecord:
    """One spectrum's classification, as the worker hands it to :meth:`~daemon.store.ledger.Ledger.complete`.

    ``payload`` holds the evidence (top-k hits with their Pearson r, ensemble members'
    votes, open-set scores); it is stored as JSON. numpy scalars and arrays are accepted
    (converted with ``tolist``); NaN or infinity is rejected.
    """

    spectrum_index: int
    status: ResultStatus
    model_version: str
    label: str | None = None
    material: str | None = None
    confidence: float | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", ResultStatus(self.status))
        if self.spectrum_index < 0:
            raise ValueError(f"spectrum_index must be >= 0, got {self.spectrum_index}")
        if not self.model_version:
            raise ValueError("a result needs the model_version that produced it")
        if self.status is ResultStatus.KNOWN and not self.label:
            raise ValueError("a known result needs a label")
        if self.status not in CLASSIFIER_STATUSES:
            raise ValueError("only an analyst rejects a result (a review decision), never the classifier")
        if self.confidence is not None:
            confidence = float(self.confidence)
            if not math.isfinite(confidence):
                raise ValueError(f"confidence must be finite, got {self.confidence!r}")
            object.__setattr__(self, "confidence", confidence)


@dataclass(frozen=True)
class Decision:
    """An analyst's (or a grown model's) decision on a result, and what the classifier had said.

    The classifier's own answer stays in the ledger unchanged; the decision is laid
    over it, so every view shows the final label and can still show the original.
    """

    state: ReviewState  # confirmed | rejected
    #: The label decided (canonical), None for a rejection.
    label: str | None
    decided_by: str
    decided_at: float
    #: What the classifier answered before the decision.
    original_status: ResultStatus
    original_label: str | None
    original_confidence: float | None
    #: Library references this decision added (a confirmation that grew the library).
    ref_ids: tuple[int, ...] = ()

    @property
    def by_model(self) -> bool:
        """Whether a grown model, not a person, closed the review (:data:`MODEL_DECIDER`)."""
        return decided_by_model(self.decided_by)

    def as_dict(self) -> dict[str, Any]:
        """The decision as results.jsonl, ``mpwatch results`` and the API give it (times in ISO 8601)."""
        return {
            "state": str(self.state),
            "label": self.label,
            "by": self.decided_by,
            "at": iso_time(self.decided_at),
            "original_status": str(self.original_status),
            "original_label": self.original_label,
            "original_confidence": self.original_confidence,
            "ref_ids": list(self.ref_ids),
        }


#: How a review closed by a re-check with a grown model names its decider (``model <version>``).
MODEL_DECIDER = "model "


def decided_by_model(decided_by: str) -> bool:
    """Whether ``decided_by`` names a grown model (:data:`MODEL_DECIDER`), not a person."""
    return decided_by.startswith(MODEL_DECIDER)


def iso_time(epoch: float) -> str:
    """An epoch time as ISO 8601 in UTC, to the second.

    >>> iso_time(0.0)
    '1970-01-01T00:00:00+00:00'
    """
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StoredResult:
    """A row of ``results``: one classified spectrum of one content (sha256).

    ``status``, ``label``, ``material`` and ``confidence`` are final: an analyst's
    :class:`Decision` overrides the classifier's, which ``decision`` keeps. A
    confirmed result has the confidence of its classification only when the
    analyst confirmed the classifier's own label (otherwise None: no model gave it).
    """

    id: int
    sha256: str
    source_path: str
    spectrum_index: int
    created_at: float
    status: ResultStatus
    label: str | None
    material: str | None
    confidence: float | None
    payload: Mapping[str, Any]
    model_version: str
    #: When a newer content of the same file replaced this result (None: it is current).
    superseded_at: float | None = None
    #: The decision laid over the classifier's answer (None: nobody decided yet).
    decision: Decision | None = None
    #: Set on a duplicate file's row: the path whose classification this is (``source_path``
    #: is then the duplicate's own path).
    duplicate_of: str | None = None

    @property
    def classified_status(self) -> ResultStatus:
        """What the classifier answered, whatever was decided since."""
        return self.decision.original_status if self.decision else self.status

    @property
    def classified_label(self) -> str | None:
        """The classifier's label, whatever was decided since."""
        return self.decision.original_label if self.decision else self.label


@dataclass(frozen=True)
class FileRecord:
    """A row of ``files``: one path in an inbox and where it stands."""

    id: int
    path: str
    sha256: str | None
    size: int
    mtime: float
    state: FileState
    attempts: int
    next_attempt_at: float | None
    reason: str | None
    first_seen: float
    updated_at: float
    duplicate_of: str | None
    claimed_at: float | None


@dataclass(frozen=True)
class WorkItem:
    """A pending file handed to a worker: read ``path``, classify, then complete ``sha256``."""

    file_id: int
    path: str
    sha256: str
    size: int
    attempts: int


@dataclass(frozen=True)
class Completion:
    """What :meth:`~daemon.store.ledger.Ledger.complete` committed."""

    sha256: str
    #: The path whose classification this is (the claimed file, or the earlier done one).
    source_path: str
    results_written: int
    reviews_opened: int
    #: Paths finished in the same transaction as duplicates of ``source_path``.
    duplicates: tuple[str, ...]
    #: Particles of a map written (0 for a file of spectra).
    particles_written: int = 0


@dataclass(frozen=True)
class ReviewItem:
    """An entry of the review queue with the result it is about."""

    result: StoredResult
    state: ReviewState
    label: str | None
    decided_by: str | None
    decided_at: float | None
    opened_at: float


_R = TypeVar("_R")

#: How a stored column becomes a record's field; the other columns are taken as they are.
_FROM_COLUMN: dict[str, Callable[[Any], Any]] = {
    "path": path_from_db,
    "source_path": path_from_db,
    "duplicate_of": lambda stored: stored and path_from_db(stored),
    "state": FileState,
    "status": ResultStatus,
    "payload": json.loads,
}


def _from_row(
    record: type[_R], row: sqlite3.Row, *, given: Mapping[str, Any] | None = None, **columns: str
) -> _R:
    """A record from a row: each field from the column of its name (or the one ``columns`` names).

    ``given`` holds the fields made otherwise (from several columns), taken as they are.
    """
    values = dict(given or {})
    for f in fields(record):  # type: ignore[arg-type]
        if f.name in values:
            continue
        stored = row[columns.get(f.name, f.name)]
        convert = _FROM_COLUMN.get(f.name)
        values[f.name] = stored if convert is None else convert(stored)
    return record(**values)


def _file_record(row: sqlite3.Row) -> FileRecord:
    return _from_row(FileRecord, row)


def _decision(row: sqlite3.Row) -> Decision | None:
    if row["decision_state"] is None:
        return None
    return Decision(
        state=ReviewState(row["decision_state"]),
        label=row["decision_label"],
        decided_by=row["decision_by"],
        decided_at=row["decision_at"],
        original_status=ResultStatus(row["original_status"]),
        original_label=row["original_label"],
        original_confidence=row["original_confidence"],
        ref_ids=tuple(json.loads(row["decision_ref_ids"] or "[]")),
    )


def _stored_result(row: sqlite3.Row) -> StoredResult:
    return _from_row(StoredResult, row, given={"decision": _decision(row)})


def _work_item(row: sqlite3.Row) -> WorkItem:
    return _from_row(WorkItem, row, file_id="id")


def _review_item(row: sqlite3.Row) -> ReviewItem:
    return ReviewItem(
        result=_stored_result(row),
        state=ReviewState(row["review_state"]),
        label=row["review_label"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        opened_at=row["opened_at"],
    )
