"""Which files in an inbox are candidates: the file filter, one path's stat, and the walk.

- :class:`SpectrumFileFilter` decides by name whether a path is a candidate: temporary
  and partial files, system clutter and hidden or excluded folders are not. Its
  defaults are class constants; configured patterns extend them.
- :func:`stat_candidate` accepts one path (filter, then stat) and :func:`scan` walks a
  tree; neither ever raises: a vanished file or a folder without permission is logged
  and skipped. Directory links are not followed out of the inbox or back into it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath
from typing import ClassVar

from daemon.intake.stability import FileStat

__all__ = ["SpectrumFileFilter", "scan", "stat_candidate"]

logger = logging.getLogger(__name__)


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for a set of glob patterns (None when there are none)."""
    translated = [fnmatch.translate(pattern) for pattern in patterns]
    if not translated:
        return None
    return re.compile("|".join(f"(?:{t})" for t in translated), re.IGNORECASE)


def _check_patterns(kind: str, patterns: Iterable[str]) -> tuple[str, ...]:
    checked = tuple(patterns)
    for pattern in checked:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError(f"{kind} patterns must be non-empty strings, got {pattern!r}")
    return checked


class SpectrumFileFilter:
    """Decides by name whether a path under an inbox is a candidate spectrum file.

    Matching is case-insensitive (instrument PCs run Windows). A pattern without ``/``
    matches the file name; a pattern with ``/`` matches the path relative to the inbox
    root in POSIX form (``"archive/*.spa"``). Folder patterns match any folder name
    between the root and the file; files below a matching folder are never candidates.

    Suffixes are not restricted by default, since spectrum formats vary (OPUS files end
    in ``.0``, ``.1``, ...); configured ``include`` patterns restrict them. Configured
    ``exclude`` and ``exclude_dirs`` patterns extend the defaults, never replace them.

    >>> inbox = Path("/inbox")
    >>> spectra = SpectrumFileFilter(exclude=["*.log"])
    >>> [spectra.accepts(inbox / name, root=inbox) for name in ["a.0", "~$a.spa", "run.LOG"]]
    [True, False, False]
    >>> spectra.accepts(inbox / "quarantine" / "a.spa", root=inbox)
    False
    """

    #: Temporary, partial and lock files that instruments, browsers, copy tools and
    #: editors leave while writing, and operating-system clutter.
    DEFAULT_IGNORE_PATTERNS: ClassVar[tuple[str, ...]] = (
        ".*",  # hidden: .DS_Store, ._AppleDouble, .~lock.x#, .nfs000123, rsync's .name.XXXXXX
        "~$*",  # Office owner files
        "*.tmp",
        "*.temp",
        "*.part",
        "*.partial",
        "*.crdownload",
        "*.download",
        "*.opdownload",
        "*.filepart",
        "*.!ut",
        "*.$$$",
        "*.lock",
        "*.lck",
        "*.swp",
        "*.swo",
        "*~",
        "Thumbs.db",
        "ehthumbs.db",
        "desktop.ini",
    )
    #: Folders never descended into: the daemon's own, quarantine, trash and NAS metadata.
    DEFAULT_IGNORE_DIRS: ClassVar[tuple[str, ...]] = (
        ".*",
        "_mpwatch",
        "quarantine",
        "$RECYCLE.BIN",
        "System Volume Information",
        "@eaDir",
        "#recycle",
        "#snapshot",
        "lost+found",
    )

    def __init__(
        self,
        *,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        exclude_dirs: Iterable[str] = (),
    ) -> None:
        self.include = _check_patterns("include", include)
        self.exclude = (*self.DEFAULT_IGNORE_PATTERNS, *_check_patterns("exclude", exclude))
        self.exclude_dirs = (*self.DEFAULT_IGNORE_DIRS, *_check_patterns("exclude_dirs", exclude_dirs))
        self._include = _compile(self.include)
        self._exclude_names = _compile(p for p in self.exclude if "/" not in p)
        self._exclude_paths = _compile(p for p in self.exclude if "/" in p)
        self._include_names = _compile(p for p in self.include if "/" not in p)
        self._include_paths = _compile(p for p in self.include if "/" in p)
        self._exclude_dirs = _compile(self.exclude_dirs)

    def _relative(self, path: PurePath, root: PurePath) -> PurePath | None:
        try:
            return path.relative_to(root)
        except ValueError:
            return None

    def _folder_excluded(self, name: str) -> bool:
        return self._exclude_dirs is not None and self._exclude_dirs.match(name) is not None

    def accepts(self, path: PurePath, *, root: PurePath) -> bool:
        """Whether ``path`` (a file under ``root``) is a candidate, judged by name only."""
        relative = self._relative(path, root)
        if relative is None or not relative.parts:
            return False
        if any(self._folder_excluded(folder) for folder in relative.parts[:-1]):
            return False
        name, posix = relative.name, relative.as_posix()
        if self._exclude_names is not None and self._exclude_names.match(name):
            return False
        if self._exclude_paths is not None and self._exclude_paths.match(posix):
            return False
        if self._include is None:
            return True
        return bool(
            (self._include_names is not None and self._include_names.match(name))
            or (self._include_paths is not None and self._include_paths.match(posix))
        )

    def accepts_directory(self, path: PurePath, *, root: PurePath) -> bool:
        """Whether files below the folder ``path`` can be candidates (the root itself can)."""
        relative = self._relative(path, root)
        if relative is None:
            return False
        return not any(self._folder_excluded(folder) for folder in relative.parts)


# --------------------------------------------------------------------------- accepting files


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


def _list_directory(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except FileNotFoundError:
        logger.debug("%s vanished during a scan", directory)
    except OSError as error:
        logger.warning("cannot list %s: %s", directory, error)
    return []


def scan(
    root: str | Path, *, file_filter: SpectrumFileFilter, under: str | Path | None = None
) -> Iterator[FileStat]:
    """Every candidate file below ``root`` (or below ``under``, a folder inside it). Never raises.

    Used for the catch-up scan at start, for folders moved into the inbox and as the
    periodic safety net. Excluded folders are not descended into, symbolic links to
    folders are not followed, and unreadable folders are logged and skipped.
    """
    base = Path(root)
    start = base if under is None else Path(under)
    if not file_filter.accepts_directory(start, root=base):
        return
    folders = [start]
    while folders:
        folder = folders.pop()
        for entry in _list_directory(folder):
            path = Path(entry.path)
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError as error:
                logger.warning("cannot examine %s: %s", path, error)
                continue
            if is_folder:
                if file_filter.accepts_directory(path, root=base):
                    folders.append(path)
                continue
            candidate = stat_candidate(path, root=base, file_filter=file_filter)
            if candidate is not None:
                yield candidate


# --------------------------------------------------------------------------- watchdog wiring
