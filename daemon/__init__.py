"""mpwatch's service around the engine, in rooms by seam; nothing here does science.

- :mod:`daemon.config`: the configuration, validated, with the service's defaults;
- :mod:`daemon.service`: the :class:`~daemon.service.Daemon` that wires the rooms and runs the main loop;
- :mod:`daemon.intake`: inbox watchers, stable files admitted into the ledger, retries;
- :mod:`daemon.pipeline`: the claim queue, worker and finisher threads, helper processes, the served model;
- :mod:`daemon.growth`: library growth from confirmations and the drop folder, drift, the CNN challenger;
- :mod:`daemon.store`: the SQLite ledger (files, results, reviews), its lock and the result files;
- :mod:`daemon.web`: metrics, health, the review API and console over HTTP;
- :mod:`daemon.cli`: the ``mpwatch`` program.
"""

from __future__ import annotations

__all__: list[str] = []
