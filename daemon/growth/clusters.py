"""The review queue in clusters: unknown spectra of one kind, confirmed in one action.

Particles of a polymer the library lacks arrive as many unknowns that look
alike. :class:`ReviewClusters` groups the open reviews by the served model's
features (:func:`engine.models.clusters.cluster_rows`: DBSCAN on Pearson
distance, ``clusters.min_r`` and ``clusters.min_samples``), each spectrum with
those of its own technique. A cluster (:class:`ReviewCluster`) names its
representative (the medoid: the member most like the others) and the label
most of its members came closest to; a spectrum like no other stays a single
review. An analyst then decides a whole cluster at once
(:meth:`daemon.growth.library.LibraryGrowth.confirm_results`): one library version.

A cluster's id is a digest of its members' result ids, so it names exactly the
spectra the analyst saw: when the queue changes and the cluster with it, the old
id no longer names an open cluster, and an analyst's repeat of a decision on it
finds the members it had (:meth:`ReviewClusters.members`).

Re-reading every open review's file is the costly part, so each spectrum's
features are kept for as long as the model that made them is served, and the
clusters are computed again only when the open queue, the served model or the
settings change.

>>> cluster_id([7, 3, 12])
'c6e1edfa5'
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.config import ClustersConfig
from daemon.growth.library import ConfirmError
from daemon.pipeline.serving import ModelHolder
from daemon.store.ledger import Ledger, ReviewItem, StoredResult
from engine.core.spectrum import Spectrum
from engine.models.clusters import cluster_rows
from engine.models.served import IdentificationModel

__all__ = ["ReviewCluster", "ReviewClusters", "cluster_id"]

logger = logging.getLogger(__name__)

#: The most cluster ids remembered for repeated decisions (the oldest are forgotten first).
REMEMBERED_CLUSTERS = 10_000


def cluster_id(result_ids: Sequence[int]) -> str:
    """The id of the cluster of exactly these results: ``c`` and 8 hex digits of their digest."""
    text = ",".join(str(i) for i in sorted(result_ids))
    return "c" + hashlib.sha256(text.encode("ascii")).hexdigest()[:8]


@dataclass(frozen=True)
class ReviewCluster:
    """Open reviews whose spectra look alike."""

    cluster_id: str
    #: The members' result ids, ascending.
    result_ids: tuple[int, ...]
    #: The medoid's result id: the member with the highest mean Pearson r to the others.
    representative: int
    #: That mean r.
    mean_r: float
    #: The lowest r of any member to the representative.
    lowest_r: float
    technique: str
    #: The label most members came closest to (their candidate, else their best hit), and how many did.
    candidate: str | None
    candidate_count: int
    #: The mean r to that label of the members that came closest to it.
    candidate_r: float | None
    #: The members' source files, in the order of ``result_ids`` (for the console's member list).
    sources: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.result_ids)

    def as_dict(self) -> dict[str, Any]:
        """The cluster as ``GET /api/clusters`` and ``mpwatch clusters`` give it."""
        return {
            "cluster_id": self.cluster_id,
            "size": self.size,
            "representative": self.representative,
            "result_ids": list(self.result_ids),
            "technique": self.technique,
            "candidate": self.candidate,
            "candidate_count": self.candidate_count,
            "candidate_r": None if self.candidate_r is None else round(self.candidate_r, 4),
            "mean_r": round(self.mean_r, 4),
            "lowest_r": round(self.lowest_r, 4),
        }


def closest_label(payload: Any) -> tuple[str | None, float | None]:
    """The label a result came closest to and its r: its candidate, else its best hit."""
    candidate, r = payload.get("candidate"), payload.get("candidate_r")
    if not candidate:
        hits = payload.get("hits") or []
        best = hits[0] if hits and isinstance(hits[0], dict) else {}
        candidate, r = best.get("label"), best.get("r")
    return (str(candidate) if candidate else None), (float(r) if isinstance(r, int | float) else None)


def _candidate(results: Sequence[StoredResult]) -> tuple[str | None, int, float | None]:
    """The label most of ``results`` came closest to (ties: the higher mean r), its count and mean r."""
    scores: dict[str, list[float]] = {}
    counts: Counter[str] = Counter()
    for result in results:
        label, r = closest_label(result.payload)
        if label is None:
            continue
        counts[label] += 1
        if r is not None:
            scores.setdefault(label, []).append(r)
    if not counts:
        return None, 0, None
    mean = {label: float(np.mean(scores[label])) if label in scores else None for label in counts}
    best = max(counts, key=lambda label: (counts[label], mean[label] or -1.0))
    return best, counts[best], mean[best]


class ReviewClusters:
    """The open review queue grouped into clusters, kept until the queue or the model changes."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        models: ModelHolder,
        spectrum_of: Callable[[StoredResult], Spectrum],
        settings: Callable[[], ClustersConfig] = ClustersConfig,
    ) -> None:
        self.ledger = ledger
        self.models = models
        self.spectrum_of = spectrum_of
        self.settings = settings
        self._lock = threading.Lock()
        #: (result id, sha256) -> (technique, feature row), made by ``_features_model``.
        self._features: dict[tuple[int, str], tuple[str, npt.NDArray[np.float32]] | None] = {}
        self._features_model: IdentificationModel | None = None
        self._key: tuple[Any, ...] | None = None
        self._clusters: list[ReviewCluster] = []
        #: Every cluster id handed out -> its members, so a repeated decision finds them.
        self._seen: dict[str, tuple[int, ...]] = {}

    @classmethod
    def for_daemon(cls, daemon: Any) -> ReviewClusters:
        """The clusters of a daemon's review queue: its ledger, served model and ``clusters`` settings."""
        return cls(
            ledger=daemon.ledger,
            models=daemon.models,
            spectrum_of=daemon.growth.spectrum_of,
            settings=lambda: daemon.config.clusters,
        )

    def current(self) -> list[ReviewCluster]:
        """The clusters of the open reviews (the largest first); single reviews are in none."""
        settings = self.settings()
        reviews = self.ledger.open_reviews(limit=settings.max_reviews)
        served = self.models.get()
        key = (tuple((r.result.id, r.result.sha256) for r in reviews), served, settings)
        with self._lock:
            if key != self._key:
                self._clusters = self._compute(reviews, served, settings)
                self._key = key
                for cluster in self._clusters:
                    self._seen.pop(cluster.cluster_id, None)
                    self._seen[cluster.cluster_id] = cluster.result_ids
                while len(self._seen) > REMEMBERED_CLUSTERS:
                    del self._seen[next(iter(self._seen))]
            return list(self._clusters)

    def members(self, cluster: str) -> tuple[int, ...]:
        """The result ids of the cluster ``cluster`` names: an open one, or one decided before.

        Raises:
            ConfirmError: no cluster has that id (the queue changed since it was listed, or the
                daemon restarted since).
        """
        self.current()
        with self._lock:
            found = self._seen.get(cluster)
        if found is None:
            raise ConfirmError(
                f"no cluster {cluster}: the review queue changed since it was listed "
                "(GET /api/clusters or 'mpwatch clusters' lists the current ones)"
            )
        return found

    def of_result(self) -> dict[int, ReviewCluster]:
        """Each clustered open review's cluster, by result id."""
        return {rid: cluster for cluster in self.current() for rid in cluster.result_ids}

    def _compute(
        self, reviews: Sequence[ReviewItem], served: IdentificationModel, settings: ClustersConfig
    ) -> list[ReviewCluster]:
        if served is not self._features_model:  # a rebuilt model may preprocess differently
            self._features.clear()
            self._features_model = served
        wanted = {(r.result.id, r.result.sha256) for r in reviews}
        for stale in set(self._features) - wanted:
            del self._features[stale]
        new = [r.result for r in reviews if (r.result.id, r.result.sha256) not in self._features]
        self._add_features(new, served)
        by_technique: dict[str, list[tuple[StoredResult, npt.NDArray[np.float32]]]] = {}
        for review in reviews:
            made = self._features.get((review.result.id, review.result.sha256))
            if made is not None:
                by_technique.setdefault(made[0], []).append((review.result, made[1]))
        clusters = []
        for technique, rows in sorted(by_technique.items()):
            groups = cluster_rows(
                np.vstack([f for _, f in rows]), min_r=settings.min_r, min_samples=settings.min_samples
            )
            for group in groups:
                members = sorted((rows[i][0] for i in group.rows), key=lambda m: m.id)
                candidate, count, candidate_r = _candidate(members)
                ids = tuple(m.id for m in members)
                clusters.append(
                    ReviewCluster(
                        cluster_id=cluster_id(ids),
                        result_ids=ids,
                        representative=rows[group.medoid][0].id,
                        mean_r=group.mean_r,
                        lowest_r=group.lowest_r,
                        technique=technique,
                        candidate=candidate,
                        candidate_count=count,
                        candidate_r=candidate_r,
                        sources=tuple(str(m.source_path) for m in members),
                    )
                )
        clusters.sort(key=lambda c: (-c.size, c.result_ids[0]))
        if clusters:
            logger.debug(
                "%d open reviews in %d clusters (%d clustered)",
                len(reviews),
                len(clusters),
                sum(c.size for c in clusters),
            )
        return clusters

    def _add_features(self, results: Sequence[StoredResult], served: IdentificationModel) -> None:
        """Read each result's spectrum again and keep its features under the model of its technique."""
        spectra: dict[str, list[tuple[StoredResult, Spectrum]]] = {}
        for result in results:
            try:
                spectrum = self.spectrum_of(result)
            except ConfirmError as exc:  # unreadable now: it stays a single review
                logger.debug("result %d is not clustered: %s", result.id, exc)
                self._features[(result.id, result.sha256)] = None
                continue
            spectra.setdefault(str(spectrum.technique), []).append((result, spectrum))
        for technique, pairs in spectra.items():
            model = served.model_for(technique)
            if model is None:
                for result, _ in pairs:
                    self._features[(result.id, result.sha256)] = None
                continue
            _, features = model.features([s for _, s in pairs])
            for (result, _), row in zip(pairs, features, strict=True):
                finite = bool(np.isfinite(row).all())  # a row the model could not fill stays single
                self._features[(result.id, result.sha256)] = (technique, row) if finite else None
