"""The ledger: one SQLite database that records every inbox file, every result and the review queue.

The sha256 of a file's bytes is the identity of its content. Paths come and go (an
instrument re-exports, an analyst copies a map into a second folder), but content is
classified once: ``results`` holds at most one row per ``(sha256, spectrum_index)``.

The ledger is built from five rooms over one connection (:mod:`daemon.store.connection`):
the file state machine (:mod:`daemon.store.files`), the stored results
(:mod:`daemon.store.results`), the maps and their particles (:mod:`daemon.store.maps`),
the review queue (:mod:`daemon.store.reviews`) and the reviews of maps' unknown particles
(:mod:`daemon.store.particle_reviews`).

Time is always passed in (``now``, epoch seconds); the ledger never reads a clock.

>>> ledger = Ledger(":memory:")
>>> ledger.observe("/inbox/a.spa", size=10, mtime=1.0, now=100.0).state
<FileState.SEEN: 'seen'>
>>> ledger.mark_pending("/inbox/a.spa", "ab" * 32, now=101.0)
<Admission.NEW: 'new'>
>>> item = ledger.claim_next(now=102.0)
>>> outcome = ledger.complete(item.sha256, [ResultRecord(spectrum_index=0, status=ResultStatus.UNKNOWN,
...     model_version="m1")], now=103.0)
>>> outcome.results_written, outcome.reviews_opened
(1, 1)
>>> ledger.observe("/inbox/copy.spa", size=10, mtime=5.0, now=104.0).state
<FileState.SEEN: 'seen'>
>>> ledger.mark_pending("/inbox/copy.spa", "ab" * 32, now=105.0)
<Admission.DUPLICATE: 'duplicate'>
>>> ledger.file("/inbox/copy.spa").duplicate_of
'/inbox/a.spa'
>>> ledger.close()
"""


from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from daemon.store import records
from daemon.store.files import FileStates
from daemon.store.maps import MapQueries, MapRecord, StoredMap, StoredParticle
from daemon.store.particle_reviews import ParticleReview, ParticleReviews
from daemon.store.records import *  # noqa: F403 (the records are part of the ledger's interface)
from daemon.store.results import ResultQueries
from daemon.store.reviews import ReviewQueue
from daemon.store.schema import SCHEMA_VERSION, migrate

__all__ = [
    "LEDGER_FILENAME",
    "SCHEMA_VERSION",
    "Ledger",
    "MapRecord",
    "ParticleReview",
    "StoredMap",
    "StoredParticle",
    "migrate",
    *records.__all__,
]

#: The ledger's file name inside the daemon's state directory.
LEDGER_FILENAME: Final = "ledger.sqlite3"


class Ledger(FileStates, ResultQueries, MapQueries, ReviewQueue, ParticleReviews):
    """The daemon's durable memory: files, results and reviews in one SQLite database.

    See :mod:`daemon.store.files` for the file states and :mod:`daemon.store.connection`
    for durability and concurrency.
    """

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, **options: Any) -> Ledger:
        """Open (creating if needed) ``state_dir/ledger.sqlite3``."""
        return cls(Path(state_dir) / LEDGER_FILENAME, **options)

