"""Spectra grouped by likeness: DBSCAN on the Pearson distance between their model features.

Unknown spectra of one polymer the library lacks look alike: their features (the
preprocessed derivative the model computes Pearson r on) correlate at r of 0.95
and more, while two polymers rarely reach 0.9. :func:`cluster_rows` groups such
rows with scikit-learn's DBSCAN on the distance ``1 - r``: two rows are
neighbours when their r reaches ``min_r``, and a cluster is every row reachable
through neighbours that have at least ``min_samples - 1`` neighbours of their
own. A row that joins no cluster stays alone (DBSCAN's noise).

Each cluster names its medoid, the row with the highest mean r to the other
members: the one spectrum that best stands for the whole group.

>>> rows = [[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.1, 3.0], [3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.2]]
>>> (group,) = cluster_rows(rows, min_r=0.9)
>>> group.rows, group.medoid
((0, 1, 3), 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.cluster import DBSCAN

from engine.models.openset import pearson_rows

__all__ = ["RowCluster", "cluster_rows"]


@dataclass(frozen=True)
class RowCluster:
    """One group of alike rows."""

    #: The rows in the group, ascending.
    rows: tuple[int, ...]
    #: The member with the highest mean Pearson r to the others.
    medoid: int
    #: That mean r.
    mean_r: float
    #: The lowest r of any member to the medoid (DBSCAN chains neighbours, so it may be below ``min_r``).
    lowest_r: float


def cluster_rows(features: npt.ArrayLike, *, min_r: float = 0.9, min_samples: int = 2) -> list[RowCluster]:
    """Groups of rows whose Pearson r reaches ``min_r``, the largest group first; lone rows are left out.

    Raises:
        ValueError: ``features`` is not a finite 2-D matrix, or ``min_r`` is not in (-1, 1],
            or ``min_samples`` is below 2.
    """
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix, not {X.ndim}-D")
    if not np.isfinite(X).all():
        raise ValueError("features must be finite (no NaN or inf)")
    if not -1.0 < min_r <= 1.0:
        raise ValueError(f"min_r must be in (-1, 1], not {min_r}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be at least 2, not {min_samples}")
    if len(X) < min_samples:
        return []
    Z = pearson_rows(X).astype(np.float64)
    r = np.clip(Z @ Z.T, -1.0, 1.0)
    distance = np.clip(1.0 - r, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    labels = DBSCAN(eps=max(1.0 - min_r, 1e-9), min_samples=min_samples, metric="precomputed").fit_predict(
        distance
    )
    groups = []
    for label in sorted(set(labels.tolist()) - {-1}):
        members = np.flatnonzero(labels == label)
        within = r[np.ix_(members, members)]
        mean_r = (within.sum(axis=1) - 1.0) / (len(members) - 1)  # each member's own r of 1 left out
        best = int(np.argmax(mean_r))  # ties: the lowest row
        groups.append(
            RowCluster(
                rows=tuple(int(i) for i in members),
                medoid=int(members[best]),
                mean_r=float(mean_r[best]),
                lowest_r=float(within[best].min()),
            )
        )
    return sorted(groups, key=lambda g: (-len(g.rows), g.rows[0]))
