"""mpwatch's service around the engine: the inbox watcher, the SQLite ledger of every file's
state and results, the worker, retraining, Prometheus metrics, the HTTP endpoints and the CLI.
Nothing here does science; each module wraps :mod:`engine` for unattended operation.
"""

from __future__ import annotations

__all__: list[str] = []
