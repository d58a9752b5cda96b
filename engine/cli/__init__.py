"""The ``mpwatch`` commands that need only the engine, one module per job.

- :mod:`engine.cli.inspect`: ``inspect``, read one spectrum file and describe it;
- :mod:`engine.cli.library`: ``library build|info|log|rollback``;
- :mod:`engine.cli.classify`: ``classify``, identify files with the served model;
- :mod:`engine.cli.evaluate`: ``evaluate``, cross-source, study, conventions and aging reports;
- :mod:`engine.cli.reclassify`: ``reclassify``, a whole archive again, on Dask distributed;
- :mod:`engine.cli.common`: what they share (exit codes, :class:`~engine.cli.common.UsageError`,
  the console, the progress bar).

Each module has ``add_parsers(sub)``; :func:`add_parsers` adds them all. The program
itself (:mod:`daemon.cli`) adds the daemon's own commands beside these. Nothing here
imports the daemon.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    """Add the engine's commands to the subparsers ``sub``: inspect, library, classify, evaluate."""
    # imported here: the modules bring in the model (FAISS, scikit-learn), which only a command needs
    from engine.cli import classify, evaluate, inspect, library, reclassify

    for module in (inspect, library, classify, evaluate, reclassify):
        module.add_parsers(sub)
