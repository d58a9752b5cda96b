"""The reference library: spectra as measured and as preprocessed, labels and provenance, versioned on disk.

On disk a library is a folder::

    LIBDIR/
      HEAD.json                 {"version": N}: the version in use
      versions/000001.npz       one immutable file per version: spectra + entries
      versions/000001.json      that version's manifest: parent, time, message, counts
      ATTRIBUTION.md            optional: who measured the spectra

Every file is written atomically (:mod:`engine.core.storage`) and a version's
files exist before HEAD points at them, so a crash leaves the library at the
old version or the new one. A rollback writes a new version equal to an old
one: history only grows.

Each reference has a stable integer ``ref_id``, a canonical ``label``
(:func:`engine.core.labels.canonical_label`), the specific ``material`` name and
provenance: ``source``, ``sha256``, ``confirmed_by``, ``confirmed_at``,
``organisation``. A library made with ``keep_labels`` files its references under
the labels as given instead, then and whenever it grows (:meth:`ReferenceLibrary.class_label`).

>>> import numpy as np, tempfile
>>> from engine.core.spectrum import Spectrum
>>> x = np.linspace(600.0, 4000.0, 851)
>>> peak = lambda c: Spectrum.create(x, np.exp(-((x - c) / 20.0) ** 2) + 0.01, y_unit="absorbance")
>>> lib = ReferenceLibrary.empty()
>>> lib.add([peak(2915.0), peak(1720.0)], ["HDPE", "polyester"], confirmed_by="doctest").tolist()
[1, 2]
>>> lib.labels
['PE', 'PET']
>>> folder = tempfile.mkdtemp()
>>> lib.save(folder, message="two references")
1
>>> ReferenceLibrary.load(folder).class_counts()
{'PE': 1, 'PET': 1}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.conventions import TECHNIQUES, measured_range, resolve_all
from engine.core.labels import canonical_label
from engine.core.preprocess import build_pipeline, coarsely_sampled, pipeline_grid, transform
from engine.core.spectrum import Spectrum, SpectrumError
from engine.core.storage import atomic_write_bytes, atomic_write_text
from engine.io import read_spectra
from engine.io.candidates import NonSpectrumFilter
from engine.io.labelled_set import is_labelled_set

__all__ = [
    "DEFAULT_LIBRARIES",
    "DEFAULT_LIBRARY",
    "DEFAULT_RAMAN_LIBRARY",
    "PIPELINE_FOR_TECHNIQUE",
    "Imported",
    "LibraryError",
    "ReferenceLibrary",
    "VersionInfo",
    "library_log",
    "read_head",
    "rollback",
]

logger = logging.getLogger(__name__)

#: The library shipped inside the package (Open Specy FTIR references, see its ATTRIBUTION.md).
DEFAULT_LIBRARY = Path(__file__).parents[1] / "data" / "default_library"
#: The Raman library shipped beside it (Open Specy Raman polymer references).
DEFAULT_RAMAN_LIBRARY = Path(__file__).parents[1] / "data" / "default_raman_library"
#: The bundled library of each technique.
DEFAULT_LIBRARIES = {"ir": DEFAULT_LIBRARY, "raman": DEFAULT_RAMAN_LIBRARY}

#: The preprocessing a new library of each technique gets unless told otherwise.
PIPELINE_FOR_TECHNIQUE = {"ir": "default", "raman": "raman"}

HEAD = "HEAD.json"
VERSIONS = "versions"
FORMAT_VERSION = 1

#: The library setting (``pipeline_spec["labels"]``) of a library that keeps its labels as given.
LABELS_AS_GIVEN = "as_given"

#: Provenance and descriptive fields kept per reference.
ENTRY_FIELDS: tuple[str, ...] = ("ref_id", "label", "material", "technique", "y_unit", "source", "sha256")
ENTRY_FIELDS += ("organisation", "confirmed_by", "confirmed_at")


class LibraryError(RuntimeError):
    """A library folder that is missing, damaged or asked for a version it lacks."""


@dataclass(frozen=True)
class VersionInfo:
    """One line of a library's history."""

    version: int
    parent: int | None
    created_at: str
    message: str
    n_spectra: int
    n_classes: int
    pipeline: dict[str, Any]


@dataclass(frozen=True)
class Imported:
    """What :meth:`ReferenceLibrary.import_folder` added: how many spectra, and their raw labels."""

    added: int
    #: Each raw label once, as the folder gave it, in the order met.
    raw_labels: tuple[str, ...]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _spectrum_sha(s: Spectrum) -> str:
    known = s.metadata.get("sha256")
    if known and s.metadata.get("format") != "labelled-set":
        return str(known)
    digest = hashlib.sha256(s.wavenumbers.tobytes())
    digest.update(s.values.tobytes())
    return digest.hexdigest()


@dataclass
class ReferenceLibrary:
    """An in-memory reference library; :meth:`load` and :meth:`save` move it to and from disk."""

    pipeline_spec: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)
    measured: list[Spectrum] = field(default_factory=list)
    preprocessed: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    version: int | None = None
    attribution: str | None = None
    next_ref_id: int = 1
    _rows: dict[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def empty(
        cls,
        pipeline: str | None = None,
        *,
        grid: Sequence[float] | None = None,
        technique: str | None = None,
        keep_labels: bool = False,
    ) -> ReferenceLibrary:
        """A library with no references, preprocessing with the named pipeline.

        A library holds one technique. With ``technique`` unset it is taken from the
        first spectra added; with ``pipeline`` unset it follows the technique
        (``raman`` for Raman, else ``default``). With ``keep_labels`` its references
        keep their labels as given (no canonical abbreviations), for good.
        """
        if technique is not None and technique not in TECHNIQUES:
            raise LibraryError(f"technique must be one of {', '.join(TECHNIQUES)}, got {technique!r}")
        name = pipeline or PIPELINE_FOR_TECHNIQUE.get(technique or "ir", "default")
        spec: dict[str, Any] = {"name": name, "grid": list(grid) if grid else None}
        if technique is not None:
            spec["technique"] = technique
        elif pipeline is None:
            spec["pipeline_by_technique"] = True  # settled by the first spectra added
        if keep_labels:
            spec["labels"] = LABELS_AS_GIVEN
        lib = cls(pipeline_spec=spec)
        lib.preprocessed = np.zeros((0, lib.grid.wavenumbers.size), np.float32)
        return lib

    @property
    def pipeline(self) -> Any:
        """A fresh preprocessing pipeline as this library's references were preprocessed."""
        grid = self.pipeline_spec.get("grid")
        return build_pipeline(self.pipeline_spec["name"], grid=tuple(grid) if grid else None)

    @property
    def grid(self) -> Any:
        return pipeline_grid(self.pipeline)

    @property
    def technique(self) -> str:
        """``ir`` or ``raman``: what the library was built with (libraries from before this was
        recorded: what most of its references are)."""
        recorded = self.pipeline_spec.get("technique")
        if recorded:
            return str(recorded)
        counts = Counter(e["technique"] for e in self.entries if e.get("technique") in TECHNIQUES)
        if counts:
            return str(counts.most_common(1)[0][0])
        return "raman" if self.pipeline_spec.get("name") == "raman" else "ir"

    def span(self) -> tuple[float, float]:
        """The (low, high) cm-1 window most references measured: the grid, narrowed to the
        median start and the median end of the references."""
        grid = self.grid.wavenumbers
        if not self.measured:
            return float(grid[0]), float(grid[-1])
        ranges = np.array([measured_range(s) for s in self.measured])
        low = max(float(grid[0]), float(np.median(ranges[:, 0])))
        high = min(float(grid[-1]), float(np.median(ranges[:, 1])))
        return (low, high) if low < high else (float(grid[0]), float(grid[-1]))

    # -- contents -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[str]:
        return [e["label"] for e in self.entries]

    @property
    def content_hash(self) -> str:
        """A sha256 of what a model learns from this library: its pipeline, and every reference's
        label and spectrum (by its sha256), in order. Versions with the same content share it."""
        digest = hashlib.sha256(json.dumps(self.pipeline_spec, sort_keys=True, default=str).encode())
        for entry in self.entries:
            digest.update(f"\n{entry['label']}\t{entry['sha256']}".encode())
        return digest.hexdigest()

    @property
    def keeps_labels(self) -> bool:
        """Whether references keep their labels as given, rather than canonical ones."""
        return self.pipeline_spec.get("labels") == LABELS_AS_GIVEN

    def class_label(self, raw: str) -> str:
        """The class a reference labelled ``raw`` is filed under in this library.

        The canonical label (``"HDPE"`` -> ``"PE"``), or, in a library that keeps its
        labels, ``raw`` itself without surrounding blanks.

        >>> ReferenceLibrary.empty().class_label("HDPE")
        'PE'
        >>> ReferenceLibrary.empty(keep_labels=True).class_label(" HDPE ")
        'HDPE'
        """
        if not self.keeps_labels:
            return canonical_label(raw)
        label = raw.strip()
        if not label:
            raise ValueError("an empty label cannot name a class")
        return label

    @property
    def ref_ids(self) -> npt.NDArray[np.int64]:
        return np.array([e["ref_id"] for e in self.entries], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        """References per canonical label, largest first."""
        return dict(Counter(self.labels).most_common())

    def entry(self, ref_id: int) -> dict[str, Any]:
        """The entry (label, material, provenance) of one reference."""
        if self._rows is None or len(self._rows) != len(self.entries):
            self._rows = {e["ref_id"]: i for i, e in enumerate(self.entries)}
        try:
            return self.entries[self._rows[int(ref_id)]]
        except KeyError:
            raise KeyError(f"no reference with id {ref_id}") from None

    def add(
        self,
        spectra: Sequence[Spectrum],
        labels: Sequence[str],
        *,
        materials: Sequence[str] | None = None,
        confirmed_by: str = "import",
        confirmed_at: str | None = None,
        organisations: Sequence[str] | None = None,
    ) -> npt.NDArray[np.int64]:
        """Add references; return their new ids.

        Each is filed under :meth:`class_label` of its label; the raw name is kept as its
        material unless ``materials`` are given.
        """
        if len(spectra) != len(labels):
            raise ValueError(f"{len(spectra)} spectra but {len(labels)} labels")
        if not spectra:
            return np.zeros(0, np.int64)
        classes = [self.class_label(raw) for raw in labels]  # a bad label refused before any change
        spectra = self._of_one_technique(resolve_all(spectra))
        features = transform(self.pipeline, spectra)
        start = max(self.next_ref_id, max((e["ref_id"] for e in self.entries), default=0) + 1)
        ids = np.arange(start, start + len(spectra), dtype=np.int64)
        self.next_ref_id = start + len(spectra)
        when = confirmed_at or _now()
        for i, (s, raw) in enumerate(zip(spectra, labels, strict=True)):
            self.entries.append(
                {
                    "ref_id": int(ids[i]),
                    "label": classes[i],
                    "material": materials[i] if materials else raw,
                    "technique": s.technique,
                    "y_unit": s.y_unit,
                    "source": str(s.metadata.get("source", "")),
                    "sha256": _spectrum_sha(s),
                    "organisation": organisations[i] if organisations else "",
                    "confirmed_by": confirmed_by,
                    "confirmed_at": when,
                }
            )
        self.measured.extend(spectra)
        self.preprocessed = np.vstack([self.preprocessed, features])
        return ids

    def _of_one_technique(self, spectra: list[Spectrum]) -> list[Spectrum]:
        """``spectra`` when they are of this library's technique (recording it on first use)."""
        kinds = Counter(str(s.technique) for s in spectra)
        by_technique = self.pipeline_spec.pop("pipeline_by_technique", False)
        if "technique" not in self.pipeline_spec and not self.entries:
            technique = kinds.most_common(1)[0][0]
            self.pipeline_spec["technique"] = technique
            if by_technique:
                self.pipeline_spec["name"] = PIPELINE_FOR_TECHNIQUE.get(technique, "default")
                self.preprocessed = np.zeros((0, self.grid.wavenumbers.size), np.float32)
        foreign = {k: n for k, n in kinds.items() if k != self.technique}
        if foreign:
            found = ", ".join(f"{n} {k}" for k, n in foreign.items())
            raise LibraryError(
                f"a library holds one technique: this one is {self.technique}, but {found} "
                "spectra were given (build a library of their own for them)"
            )
        return spectra

    def restricted(
        self, low: float, high: float, *, sampling: float | None = None, min_coverage: float = 0.5
    ) -> ReferenceLibrary:
        """The library cut to ``low``-``high`` cm-1: preprocessed again on a grid over that window (with
        ``sampling``, each reference first as an instrument sampling every ``sampling`` cm-1 writes it,
        :func:`~engine.core.preprocess.coarsely_sampled`, so it meets the grid as such spectra do).

        References that measured less than ``min_coverage`` of the window are left out.
        Reference ids, entries and the version stay those of this library, so hits
        point at the same references.
        """
        grid = [float(low), float(high), float(self.grid.step)]
        spec = {**self.pipeline_spec, "grid": grid, "technique": self.technique}
        spans, width = [measured_range(s) for s in self.measured], min_coverage * (high - low)
        rows = [i for i, (a, b) in enumerate(spans) if min(b, high) - max(a, low) >= width]
        measured = [self.measured[i] for i in rows]
        measured = [coarsely_sampled(s, sampling) for s in measured] if sampling else measured
        view = ReferenceLibrary(
            pipeline_spec=spec,
            entries=[self.entries[i] for i in rows],
            measured=measured,
            version=self.version,
            attribution=self.attribution,
            next_ref_id=self.next_ref_id,
        )
        d = view.grid.wavenumbers.size
        view.preprocessed = transform(view.pipeline, view.measured) if rows else np.zeros((0, d), np.float32)
        return view

    def remove(self, ref_ids: Iterable[int]) -> int:
        """Remove references by id; return how many were removed."""
        drop = {int(i) for i in ref_ids}
        keep = [i for i, e in enumerate(self.entries) if e["ref_id"] not in drop]
        removed = len(self.entries) - len(keep)
        self.entries = [self.entries[i] for i in keep]
        self._rows = None
        self.measured = [self.measured[i] for i in keep]
        self.preprocessed = self.preprocessed[keep]
        return removed

    def subset(self, keep: Callable[[dict[str, Any]], bool]) -> ReferenceLibrary:
        """A new library holding the references whose entry satisfies ``keep``."""
        rows = [i for i, e in enumerate(self.entries) if keep(e)]
        return ReferenceLibrary(
            pipeline_spec=dict(self.pipeline_spec),
            entries=[dict(self.entries[i]) for i in rows],
            measured=[self.measured[i] for i in rows],
            preprocessed=self.preprocessed[rows],
            attribution=self.attribution,
            next_ref_id=self.next_ref_id,
        )

    def info(self) -> dict[str, Any]:
        """Classes, counts, version and a provenance summary (``mpwatch library info``)."""
        return {
            "version": self.version,
            "n_spectra": len(self),
            "n_classes": len(self.class_counts()),
            "pipeline": self.pipeline_spec,
            "labels": "as given" if self.keeps_labels else "canonical",
            "classes": self.class_counts(),
            "confirmed_by": dict(Counter(e["confirmed_by"] for e in self.entries).most_common()),
            "organisations": dict(
                Counter(e["organisation"] or "unknown" for e in self.entries).most_common()
            ),
            "techniques": dict(Counter(e["technique"] or "unknown" for e in self.entries).most_common()),
        }

    # -- importing ----------------------------------------------------------------------------

    def import_folder(
        self, folder: str | Path, *, confirmed_by: str = "import", progress: Any = None
    ) -> Imported:
        """Import a labelled-set folder, or a folder whose subfolders name the labels of their files.

        Unreadable files are skipped with a warning and counted in the log;
        they never abort an import. Returns how many spectra were added, and
        under which raw labels (each is filed under :meth:`class_label`).
        """
        folder = Path(folder)
        if is_labelled_set(folder):
            spectra = read_spectra(folder)
            labels = [s.metadata["label"] for s in spectra]
            materials = [_material(s) for s in spectra]
            organisations = [
                str(s.metadata.get("organization") or s.metadata.get("library") or "") for s in spectra
            ]
            if progress:
                progress(len(spectra))
            ids = self.add(
                spectra,
                labels,
                materials=materials,
                organisations=organisations,
                confirmed_by=confirmed_by,
            )
            return Imported(len(ids), tuple(dict.fromkeys(labels)))
        if not folder.is_dir():
            raise LibraryError(f"{folder} is neither a labelled set nor a folder of labelled subfolders")
        added, raw_labels = 0, []
        non_spectra = NonSpectrumFilter()  # notes, photos, spreadsheets beside the references
        for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            found: list[Spectrum] = []
            for path in sorted(p for p in label_dir.rglob("*") if p.is_file()):
                try:
                    if (kind := non_spectra.reason_for(path)) is None:
                        found.extend(read_spectra(path))
                    else:
                        logger.info("%s left out: %s, not a spectrum", path, kind)
                except SpectrumError as exc:
                    logger.warning("skipped %s: %s", path, exc)
                if progress:
                    progress(1)
            added += len(self.add(found, [label_dir.name] * len(found), confirmed_by=confirmed_by))
            if found:
                raw_labels.append(label_dir.name)
        return Imported(added, tuple(raw_labels))

    # -- disk ---------------------------------------------------------------------------------

    def save(self, libdir: str | Path, *, message: str) -> int:
        """Write this library as a new version of ``libdir``; return the version number."""
        libdir = Path(libdir)
        history = library_log(libdir) if (libdir / HEAD).exists() else []
        parent = read_head(libdir) if history else None
        version = (max(v.version for v in history) + 1) if history else 1
        stem = libdir / VERSIONS / f"{version:06d}"
        buffer = io.BytesIO()
        offsets = np.cumsum([0] + [s.n_points for s in self.measured]).astype(np.int64)
        np.savez_compressed(
            buffer,
            format_version=np.array(FORMAT_VERSION),
            wavenumbers=np.concatenate([s.wavenumbers for s in self.measured]).astype(np.float32)
            if self.measured
            else np.zeros(0, np.float32),
            values=np.concatenate([s.values for s in self.measured]).astype(np.float32)
            if self.measured
            else np.zeros(0, np.float32),
            offsets=offsets,
            preprocessed=self.preprocessed.astype(np.float32),
            entries=np.array(json.dumps(self.entries)),
            pipeline=np.array(json.dumps(self.pipeline_spec)),
            next_ref_id=np.array(self.next_ref_id),
        )
        atomic_write_bytes(stem.with_suffix(".npz"), buffer.getvalue())
        manifest = {
            "version": version,
            "parent": parent,
            "created_at": _now(),
            "message": message,
            "n_spectra": len(self),
            "n_classes": len(self.class_counts()),
            "pipeline": self.pipeline_spec,
        }
        atomic_write_text(stem.with_suffix(".json"), json.dumps(manifest, indent=2))
        if self.attribution:
            atomic_write_text(libdir / "ATTRIBUTION.md", self.attribution)
        atomic_write_text(libdir / HEAD, json.dumps({"version": version}))
        self.version = version
        return version

    @classmethod
    def load(cls, libdir: str | Path, *, version: int | None = None) -> ReferenceLibrary:
        """Load ``libdir`` at its current version, or at ``version``, its references preprocessed as this
        mpwatch preprocesses (the rows stored are what the mpwatch that saved them served)."""
        libdir = Path(libdir)
        number = version if version is not None else read_head(libdir)
        path = libdir / VERSIONS / f"{number:06d}.npz"
        if not path.is_file():
            raise LibraryError(f"{libdir} has no version {number}")
        try:
            with np.load(path, allow_pickle=False) as data:
                wavenumbers = data["wavenumbers"].astype(np.float64)
                values = data["values"].astype(np.float64)
                offsets = data["offsets"]
                preprocessed = data["preprocessed"]
                entries = json.loads(str(data["entries"]))
                spec = json.loads(str(data["pipeline"]))
                next_ref_id = int(data["next_ref_id"])
        except (OSError, ValueError, KeyError) as exc:
            raise LibraryError(f"{path} is damaged: {exc}") from exc
        attribution_path = libdir / "ATTRIBUTION.md"
        lib = cls(
            pipeline_spec=spec,
            entries=entries,
            measured=_stored_spectra(wavenumbers, values, offsets, entries),
            preprocessed=preprocessed,
            version=number,
            next_ref_id=next_ref_id,
            attribution=attribution_path.read_text(encoding="utf-8") if attribution_path.is_file() else None,
        )
        lib.preprocessed = transform(lib.pipeline, lib.measured) if lib.measured else preprocessed
        return lib


def _stored_spectra(
    wavenumbers: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.int64],
    entries: list[dict[str, Any]],
) -> list[Spectrum]:
    """The measured spectra back from how :meth:`ReferenceLibrary.save` stores them: every axis
    and every value array concatenated, spectrum i at ``offsets[i]:offsets[i + 1]``."""
    return [
        Spectrum(
            wavenumbers[a:b],
            values[a:b],
            e["y_unit"],
            e["technique"],
            {"source": e["source"], "sha256": e["sha256"], "ref_id": e["ref_id"]},
        )
        for a, b, e in zip(offsets[:-1], offsets[1:], entries, strict=True)
    ]


def _material(s: Spectrum) -> str:
    keys = ("spectrum_identity", "name_from_sample_id", "label_original", "label")
    return next((str(s.metadata[key]) for key in keys if s.metadata.get(key)), "")


def read_head(libdir: Path) -> int:
    head = libdir / HEAD
    try:
        return int(json.loads(head.read_text(encoding="utf-8"))["version"])
    except FileNotFoundError as exc:
        raise LibraryError(
            f"{libdir} is not a library (no {HEAD}); build one with 'mpwatch library build'"
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise LibraryError(f"{head} is damaged: {exc}") from exc


def library_log(libdir: str | Path) -> list[VersionInfo]:
    """Every version of ``libdir``, oldest first."""
    libdir = Path(libdir)
    out = []
    for path in sorted((libdir / VERSIONS).glob("*.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        out.append(
            VersionInfo(
                version=m["version"],
                parent=m["parent"],
                created_at=m["created_at"],
                message=m["message"],
                n_spectra=m["n_spectra"],
                n_classes=m["n_classes"],
                pipeline=m["pipeline"],
            )
        )
    return out


def rollback(libdir: str | Path, version: int) -> int:
    """Make ``version``'s content current again, as a new version; return the new number.

    Reference ids handed out after ``version`` are never reused.
    """
    current = ReferenceLibrary.load(libdir)
    old = ReferenceLibrary.load(libdir, version=version)
    old.next_ref_id = max(old.next_ref_id, current.next_ref_id)
    return old.save(libdir, message=f"rollback to version {version}")
