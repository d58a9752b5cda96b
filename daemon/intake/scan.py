"""Which files in an inbox are candidates: one path's stat, and the walk, stat'ed.

The filters themselves are the engine's (:mod:`engine.io.candidates`), shared with
``mpwatch classify``; :class:`SpectrumFileFilter` is re-exported here for the intake.

- :func:`stat_candidate` accepts one path (filter, then stat) and :func:`scan` walks a
  tree; neither ever raises: a vanished file or a folder without permission is logged
  and skipped. Directory links are not followed out of the inbox or back into it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from daemon.intake.stability import FileStat
from engine.io.candidates import SpectrumFileFilter, candidate_files

__all__ = ["SpectrumFileFilter", "scan", "stat_candidate"]

logger = logging.getLogger(__name__)


def _through_a_link(path: Path, *, root: Path) -> bool:
    """Whether ``path``'s folder is reached through a link to a folder (out of the inbox, or a loop).

    Such a path names a file that lives elsewhere, or a second name of one already in the
    inbox; links to folders are not followed. A link to a file is a file like any other.
    """
    try:
        folder = path.parent.relative_to(root)
    except ValueError:
        return True
    return Path(os.path.realpath(path.parent)) != Path(os.path.realpath(root)) / folder


def stat_candidate(path: Path, *, root: Path, file_filter: SpectrumFileFilter) -> FileStat | None:
    """Filter and stat one path; None if it is not a candidate regular file. Never raises.

    A path that vanished, cannot be stat'ed (permission denied, a share that went away)
    or is not a regular file is logged and answered with None.
    """
    try:
        if not file_filter.accepts(path, root=root) or _through_a_link(path, root=root):
            return None
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            return None
        return FileStat(path, status.st_size, status.st_mtime)
    except FileNotFoundError:
        logger.debug("%s vanished before it could be examined", path)
    except OSError as error:  # permission denied, a share that went away, ...
        logger.warning("cannot examine %s: %s", path, error)
    except Exception:
        logger.exception("unexpected error examining %s", path)
    return None


def scan(
    root: str | Path, *, file_filter: SpectrumFileFilter, under: str | Path | None = None
) -> Iterator[FileStat]:
    """Every candidate file below ``root`` (or below ``under``, a folder inside it), stat'ed. Never raises.

    Used for the catch-up scan at start, for folders moved into the inbox and as the
    periodic safety net. The walk is the engine's (:func:`engine.io.candidates.candidate_files`):
    excluded folders are not descended into, links to folders are not followed, and
    unreadable folders are logged and skipped.
    """
    base = Path(root)
    for path in candidate_files(base, file_filter=file_filter, under=under):
        candidate = stat_candidate(path, root=base, file_filter=file_filter)
        if candidate is not None:
            yield candidate
