"""The review page's clusters: unknown spectra that look alike, each decided in one action.

The open review queue is grouped by :class:`daemon.growth.clusters.ReviewClusters`
(the :class:`~daemon.web.context.Context` holds the one the API's cluster routes use
too). :func:`cluster_section` draws each cluster above the single reviews: its size,
the library class its members came closest to, how alike they are, its representative
spectrum over its best hits (drawn by the review page's own plot, passed in as
``plot``), its members, and one set of buttons that decide the whole cluster through
``POST /api/clusters/{id}/confirm``. :func:`cluster_note` marks a single review's card
with the cluster it belongs to.

Every name taken from a file, a label or a path passes through :func:`html.escape`.

>>> cluster_note(None)
''
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Final

from daemon.growth.clusters import ReviewCluster
from daemon.store.ledger import StoredResult
from daemon.web.cards import decision_controls
from daemon.web.charts import escape
from daemon.web.context import Context

__all__ = ["cluster_note", "cluster_section", "open_clusters"]

logger = logging.getLogger(__name__)

#: Members named under each cluster; the rest are counted.
LISTED_MEMBERS: Final = 40


def open_clusters(ctx: Context) -> tuple[list[ReviewCluster], dict[str, StoredResult], str]:
    """The clusters of the open queue, each cluster's representative result by cluster id, and a
    note when they could not be made (the single reviews are shown all the same)."""
    try:
        clusters = ctx.clusters.current()
    except Exception as exc:
        logger.exception("cannot group the review queue into clusters")
        return [], {}, f'<p class="fail">The queue could not be grouped: {escape(type(exc).__name__)}</p>'
    representatives = {}
    for cluster in clusters:
        result = ctx.ledger.result(cluster.representative)
        if result is not None:
            representatives[cluster.cluster_id] = result
    return clusters, representatives, ""


def _r(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _members(cluster: ReviewCluster) -> str:
    items = "".join(
        f'<li><a href="#review-{result_id}">{escape(PurePath(source).name)}</a> '
        f'<span class="muted">result {result_id}</span></li>'
        for result_id, source in list(zip(cluster.result_ids, cluster.sources, strict=True))[:LISTED_MEMBERS]
    )
    more = cluster.size - LISTED_MEMBERS
    rest = f'<li class="muted">and {more} more</li>' if more > 0 else ""
    return f"<details><summary>The {cluster.size} spectra</summary><ul>{items}{rest}</ul></details>"


def _cluster_card(
    cluster: ReviewCluster, representative: StoredResult | None, plot: Callable[[StoredResult], str]
) -> str:
    n = cluster.size
    if cluster.candidate:
        closest = (
            f"closest library class <strong>{escape(cluster.candidate)}</strong> for "
            f"{cluster.candidate_count} of {n} (their mean r {_r(cluster.candidate_r)})"
        )
    else:
        closest = "no library class near"
    if representative is None:
        drawing = '<p class="muted">The representative is no longer in the ledger.</p>'
        named = f"result {cluster.representative}"
    else:
        drawing = plot(representative)
        named = f"{escape(PurePath(representative.source_path).name)} (result {representative.id})"
    return f"""<article class="cluster" id="cluster-{escape(cluster.cluster_id)}" \
data-cluster-id="{escape(cluster.cluster_id)}" data-size="{n}">
<h3>Cluster {escape(cluster.cluster_id)}
<span class="muted small">{n} spectra · {escape(cluster.technique)}</span></h3>
<p class="small">{closest} · alike at mean r {_r(cluster.mean_r)} to the representative
(lowest {_r(cluster.lowest_r)})</p>
<div class="grid"><div><p class="small">Representative: {named}</p>{drawing}</div>
<div>{_members(cluster)}</div></div>
{decision_controls([cluster.candidate] if cluster.candidate else [], size=n)}
</article>"""


def cluster_section(
    clusters: Sequence[ReviewCluster],
    representatives: Mapping[str, StoredResult],
    *,
    min_r: float,
    plot: Callable[[StoredResult], str],
) -> str:
    """The clusters of the review queue, the largest first ("" when no two reviews look alike)."""
    if not clusters:
        return ""
    cards = "\n".join(
        _cluster_card(cluster, representatives.get(cluster.cluster_id), plot) for cluster in clusters
    )
    clustered = sum(cluster.size for cluster in clusters)
    return f"""<section id="clusters"><h2>Clusters ({len(clusters)}, {clustered} spectra)</h2>
<p class="small muted">Open reviews whose model features correlate at Pearson r {min_r:g} or more,
grouped (DBSCAN), each drawn by its representative: the member most like the others. Confirming a
cluster adds all its spectra under one label as one library version; rejecting it rejects each.
Its spectra are also listed one by one below.</p>
{cards}
</section>
<h2>One by one</h2>"""


def cluster_note(cluster: ReviewCluster | None) -> str:
    """The line on a single review's card that names its cluster ("" for a review in none)."""
    if cluster is None:
        return ""
    return (
        f'<p class="small">In <a href="#cluster-{escape(cluster.cluster_id)}">cluster '
        f"{escape(cluster.cluster_id)}</a> with {cluster.size - 1} more like it.</p>"
    )
