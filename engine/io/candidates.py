"""Which files in a folder are worth reading, judged by name: the file filters and the walk.

- :class:`SpectrumFileFilter` says which paths are candidates at all: temporary and
  partial files, system clutter and hidden or excluded folders are not. They are
  passed over without a word (they come and go while instruments and copy tools work).
- :class:`NonSpectrumFilter` says which candidates are plainly not spectra by their
  name: the images, documents and spreadsheets analysts keep beside the spectra of a
  sample. They are skipped with a word, not read (a note in a ``.txt`` is told by its
  content instead, when no reader recognises it: see :func:`engine.io.registry.read_spectra`).
- :func:`candidate_files` walks a folder tree with a :class:`SpectrumFileFilter`; it never
  raises: a folder without permission is logged and skipped, and links to folders are
  not followed.

Both filters take their defaults from class constants; patterns given to them extend
the defaults, never replace them. ``mpwatch classify`` and the daemon's inboxes use the
same two.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath
from typing import ClassVar

__all__ = ["NonSpectrumFilter", "SpectrumFileFilter", "candidate_files"]

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
    """Decides by name whether a path under a root folder is a candidate spectrum file.

    Matching is case-insensitive (instrument PCs run Windows). A pattern without ``/``
    matches the file name; a pattern with ``/`` matches the path relative to the root
    in POSIX form (``"archive/*.spa"``). Folder patterns match any folder name between
    the root and the file; files below a matching folder are never candidates.

    Suffixes are not restricted by default, since spectrum formats vary (OPUS files end
    in ``.0``, ``.1``, ...); ``include`` patterns restrict them. ``exclude`` and
    ``exclude_dirs`` patterns extend the defaults, never replace them.

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


class NonSpectrumFilter:
    """Tells by name the files that are plainly not spectra: images, documents, spreadsheets.

    Sample folders hold an analyst's photos, notes and tables beside the spectra. They
    are not damaged spectra, so whoever walks the folder skips them with a word instead
    of trying to read them. No default pattern matches a suffix a reader claims
    (``.txt``, ``.csv``, ``.dat`` and ``.tsv`` are real spectrum formats); ``extra``
    patterns (matched against the file name, in any case) extend the defaults.

    >>> rule = NonSpectrumFilter(extra=["*.log"])
    >>> rule.reason_for(PurePath("sample 3/photo.JPG"))
    'an image (*.jpg)'
    >>> rule.reason_for(PurePath("run.log"))
    'a configured non-spectrum pattern (*.log)'
    >>> rule.reason_for(PurePath("particle.csv")) is None
    True
    """

    #: What each kind of file is called, with the name patterns that give it away.
    DEFAULT_PATTERNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "an image": (
            "*.png",
            "*.jpg",
            "*.jpeg",
            "*.gif",
            "*.bmp",
            "*.tif",
            "*.tiff",
            "*.webp",
            "*.heic",
            "*.svg",
        ),
        "a document": (
            "*.pdf",
            "*.doc",
            "*.docx",
            "*.odt",
            "*.rtf",
            "*.md",
            "*.htm",
            "*.html",
            "*.ppt",
            "*.pptx",
            "*.odp",
        ),
        "a spreadsheet": ("*.xls", "*.xlsx", "*.xlsm", "*.ods"),
    }
    #: What a file matching one of the ``extra`` patterns is called.
    EXTRA_KIND: ClassVar[str] = "a configured non-spectrum pattern"

    def __init__(self, *, extra: Iterable[str] = ()) -> None:
        self.extra = _check_patterns("non-spectrum", extra)
        kinds = [(kind, pattern) for kind, patterns in self.DEFAULT_PATTERNS.items() for pattern in patterns]
        kinds += [(self.EXTRA_KIND, pattern) for pattern in self.extra]
        self._rules = [(kind, pattern, _compile([pattern])) for kind, pattern in kinds]

    @property
    def patterns(self) -> tuple[str, ...]:
        """Every pattern in force: the defaults, then the extra ones."""
        return tuple(pattern for _, pattern, _ in self._rules)

    def reason_for(self, path: PurePath) -> str | None:
        """What ``path`` plainly is by its name (``"an image (*.png)"``), or None for a possible spectrum."""
        for kind, pattern, regex in self._rules:
            if regex is not None and regex.match(path.name):
                return f"{kind} ({pattern})"
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


def candidate_files(
    root: str | Path, *, file_filter: SpectrumFileFilter, under: str | Path | None = None
) -> Iterator[Path]:
    """Every candidate file below ``root`` (or below ``under``, a folder inside it). Never raises.

    Files come in name order, each folder's files before its subfolders'. Excluded
    folders are not descended into, links to folders are not followed (a link to a file
    is a file like any other), and folders that cannot be listed are logged and skipped.
    """
    base = Path(root)
    start = base if under is None else Path(under)
    if not file_filter.accepts_directory(start, root=base):
        return
    folders = [start]
    while folders:
        folder = folders.pop()
        subfolders = []
        for entry in _list_directory(folder):
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if file_filter.accepts_directory(path, root=base):
                        subfolders.append(path)
                    continue
                is_file = entry.is_file()
            except OSError as error:
                logger.warning("cannot examine %s: %s", path, error)
                continue
            if is_file and file_filter.accepts(path, root=base):
                yield path
        folders.extend(reversed(subfolders))
