"""The decision controls every review card carries (a result, a cluster, a map's particle).

``static/console.js`` finds them by their ``data-action`` and ``data-role`` attributes and sends
the decision to the card's route; the card itself says what it decides (``data-result-id``,
``data-cluster-id`` or ``data-particle-id``).
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.web.charts import escape

__all__ = ["decision_controls"]


def decision_controls(labels: Iterable[str], *, size: int | None = None) -> str:
    """Confirm-as buttons for ``labels``, a new-label field, confirm-new and reject, and the status
    line; ``size``: the card decides that many spectra at once (a cluster), and the buttons say so."""
    whole = f"all {size} " if size is not None else ""
    confirm = "".join(
        f'<button type="button" data-action="confirm" data-label="{escape(label)}">'
        f"Confirm {whole}as {escape(label)}</button>"
        for label in dict.fromkeys(labels)
    )
    new = f"Confirm {whole}as the new label" if size is not None else "Confirm new label"
    reject = f"Reject all {size}" if size is not None else "Reject"
    return f"""<div class="actions">{confirm}
<label>new label <input type="text" data-role="new-label" placeholder="e.g. PET" autocomplete="off"></label>
<button type="button" class="primary" data-action="confirm-new">{new}</button>
<button type="button" class="danger" data-action="reject">{reject}</button></div>
<p class="status" data-role="status" aria-live="polite"></p>"""
