"""The numbers behind the review console: results per status, polymer, sample folder and time.

Plain data, no HTML: :func:`all_particles` reads the stored particles from the ledger (the
results of spectrum files and the particles of imaging maps, final labels),
:func:`summarise` counts them into an :class:`Overview`, :func:`time_buckets` bins
result times by hour or by day, and :func:`sample_folder` names the folder a
spectrum file came from. The pages of :mod:`daemon.web.console` render these numbers.

>>> time_buckets([0.0, 10.0, 3700.0], now=7300.0).bucket_seconds
3600
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from daemon.store.ledger import Ledger, StoredParticle, StoredResult

__all__ = [
    "MAX_OVERVIEW_RESULTS",
    "Counted",
    "Overview",
    "Timeline",
    "all_particles",
    "sample_folder",
    "summarise",
    "time_buckets",
]

#: Particles the overview reads at most (results first, then the particles of maps).
MAX_OVERVIEW_RESULTS: Final = 200_000
_PAGE: Final = 5000


def sample_folder(source: str, inboxes: Sequence[tuple[str, Path]]) -> str:
    """The sample folder of a spectrum file, named ``<inbox>/<folder inside it>``.

    >>> sample_folder("/data/ftir/2024-05/filter-3/p1.csv", [("ftir", Path("/data/ftir"))])
    'ftir/2024-05/filter-3'
    >>> sample_folder("/data/ftir/p1.csv", [("ftir", Path("/data/ftir"))])
    'ftir'
    >>> sample_folder("/elsewhere/p1.csv", [("ftir", Path("/data/ftir"))])
    '/elsewhere'
    """
    parent = Path(source).parent
    for name, root in inboxes:
        if parent == root or root in parent.parents:
            inside = parent.relative_to(root).as_posix()
            return name if inside == "." else f"{name}/{inside}"
    return str(parent)


@dataclass(frozen=True)
class Counted:
    """A particle as the overview counts it: the result of a spectrum file, or a particle of a map."""

    status: str
    label: str | None
    source_path: str
    created_at: float
    in_map: bool = False

    @classmethod
    def of(cls, item: StoredResult | StoredParticle) -> Counted:
        in_map = isinstance(item, StoredParticle)
        return cls(str(item.status), item.label, item.source_path, item.created_at, in_map=in_map)


def _category(particle: Counted) -> str:
    """What a particle counts as: its polymer label when known, else its status."""
    if particle.status == "known" and particle.label:
        return particle.label
    return particle.status


@dataclass(frozen=True)
class Timeline:
    """Results per time bucket (an hour or a day), oldest first, by status."""

    bucket_seconds: int
    starts: list[float]
    counts: list[Counter[str]]


def time_buckets(
    created: Iterable[float],
    *,
    now: float,
    statuses: Iterable[str] = (),
    max_buckets: int = 48,
    pad: bool = False,
) -> Timeline:
    """Bucket result times by hour (data spanning up to two days) or by day, up to ``now``.

    ``statuses`` runs parallel to ``created``; without it every result counts as ``known``.
    ``pad`` shows at least the last 24 hours or 14 days, so a young daemon's chart still
    reads as a timeline.

    >>> timeline = time_buckets([0.0, 100.0, 7300.0], now=7300.0, statuses=["known", "unknown", "known"])
    >>> [dict(c) for c in timeline.counts]
    [{'known': 1, 'unknown': 1}, {}, {'known': 1}]
    """
    times = list(created)
    kinds = list(statuses) or ["known"] * len(times)
    if not times:
        return Timeline(3600, [], [])
    first = min(times)
    size = 3600 if now - first <= 2 * 86400 else 86400
    last_bucket = math.floor(max(now, max(times)) / size)
    first_bucket = max(math.floor(first / size), last_bucket - max_buckets + 1)
    if pad:
        first_bucket = min(first_bucket, last_bucket - (24 if size == 3600 else 14) + 1)
    counts = [Counter[str]() for _ in range(last_bucket - first_bucket + 1)]
    for t, kind in zip(times, kinds, strict=True):
        index = math.floor(t / size) - first_bucket
        if index >= 0:
            counts[index][kind] += 1
    return Timeline(size, [float((first_bucket + i) * size) for i in range(len(counts))], counts)


@dataclass(frozen=True)
class Overview:
    """What the overview page shows, computed from stored results and map particles."""

    total: int
    by_status: Counter[str]
    by_category: Counter[str]
    by_folder: dict[str, Counter[str]]
    timeline: Timeline
    truncated: bool = False
    first_at: float | None = None
    last_at: float | None = None
    recent: Counter[str] = field(default_factory=Counter)
    #: How many of ``total`` are particles of imaging maps.
    in_maps: int = 0


def summarise(
    results: Sequence[Counted],
    *,
    inboxes: Sequence[tuple[str, Path]],
    now: float,
    truncated: bool = False,
) -> Overview:
    """Counts per status, per polymer, per sample folder and over time, plus the last 24 h by status."""
    by_status: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    by_folder: dict[str, Counter[str]] = {}
    recent: Counter[str] = Counter()
    for r in results:
        status = str(r.status)
        by_status[status] += 1
        category = _category(r)
        by_category[category] += 1
        by_folder.setdefault(sample_folder(r.source_path, inboxes), Counter())[category] += 1
        if r.created_at >= now - 86400:
            recent[status] += 1
    timeline = time_buckets(
        [r.created_at for r in results], now=now, statuses=[str(r.status) for r in results], pad=True
    )
    return Overview(
        total=len(results),
        by_status=by_status,
        by_category=by_category,
        by_folder=dict(sorted(by_folder.items())),
        timeline=timeline,
        truncated=truncated,
        first_at=min((r.created_at for r in results), default=None),
        last_at=max((r.created_at for r in results), default=None),
        recent=recent,
        in_maps=sum(r.in_map for r in results),
    )


def all_particles(ledger: Ledger) -> tuple[list[Counted], bool]:
    """Every current result, then every particle of a map, up to :data:`MAX_OVERVIEW_RESULTS`;
    and whether there were more."""
    out: list[Counted] = []
    for fetch in (ledger.results, ledger.particles):
        offset = 0
        while True:
            page: Sequence[StoredResult | StoredParticle] = fetch(limit=_PAGE, offset=offset)
            offset += len(page)
            out.extend(map(Counted.of, page))
            if len(out) >= MAX_OVERVIEW_RESULTS:
                return out[:MAX_OVERVIEW_RESULTS], True
            if len(page) < _PAGE:
                break
    return out, False
