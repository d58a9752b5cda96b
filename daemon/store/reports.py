"""The sample reports' records gathered from the ledger, for :mod:`engine.report` to count and write.

A sample is a folder that holds classified files. Its particles are the particles of its maps and
the results of its other files (an instrument that writes one file per particle, such as an LDIR,
gives one result per particle; its size is what the file states, else unknown). Status and label
are final: an analyst's decision counts. A sample's procedural blanks are the blank folders beside
it (the same parent folder), by name (:func:`engine.report.is_blank_name`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import TypeVar

from daemon.store.ledger import Ledger, StoredMap, StoredParticle, StoredResult
from daemon.store.records import iso_time, path_from_db
from engine.core.families import family_of
from engine.report import MapImage, ParticleRecord, SampleReport, build_report, is_blank_name, write_report

__all__ = [
    "ReportSettings",
    "SampleRows",
    "all_pages",
    "library_facts",
    "sample_folders",
    "sample_particles",
    "sample_report",
    "sample_rows",
    "software_version",
    "write_sample_report",
]

logger = logging.getLogger(__name__)

PAGE = 1000
T = TypeVar("T")


@dataclass(frozen=True)
class ReportSettings:
    """What a report needs beyond the ledger: size classes, how blanks are named, the method's facts."""

    size_classes: tuple[tuple[float, float], ...]
    blank_pattern: str = "blank*"
    blanks: tuple[str, ...] = ()
    #: The library folder of each technique (for the library's name, version and content hash).
    libraries: Mapping[str, Path] = field(default_factory=dict)
    #: The decision thresholds in force, in order (model and map settings).
    thresholds: Mapping[str, object] = field(default_factory=dict)

    def is_blank(self, folder: str | Path) -> bool:
        return is_blank_name(PurePosixPath(str(folder)).name, pattern=self.blank_pattern, named=self.blanks)


def software_version() -> str:
    """mpwatch's version as installed."""
    try:
        return metadata.version("mpwatch")
    except metadata.PackageNotFoundError:
        from engine import __version__

        return __version__


def library_facts(libdir: Path) -> str:
    """A library's name, version and content hash (sha256 of its current version's data), in one line."""
    try:
        version = int(json.loads((libdir / "HEAD.json").read_text(encoding="utf-8"))["version"])
        info = json.loads((libdir / "versions" / f"{version:06d}.json").read_text(encoding="utf-8"))
        digest = hashlib.sha256((libdir / "versions" / f"{version:06d}.npz").read_bytes()).hexdigest()
    except (OSError, ValueError, KeyError) as exc:
        return f"{libdir.name} (could not be read: {exc})"
    what = info.get("message") or libdir.name
    return (
        f"{libdir.name}: {what}; version {version}, {info.get('n_spectra', '?')} spectra in "
        f"{info.get('n_classes', '?')} classes; content sha256 {digest}"
    )


def sample_folders(ledger: Ledger) -> list[str]:
    """Every folder that holds current results or maps, sorted."""
    folders: set[str] = set()
    with ledger._read() as conn:
        for table in ("results", "maps"):
            rows = conn.execute(
                f"SELECT DISTINCT rtrim(source_path, replace(source_path, '/', '')) FROM {table} "
                "WHERE superseded_at IS NULL"
            ).fetchall()
            folders.update(path_from_db(str(row[0])).rstrip("/") or "/" for row in rows)
    return sorted(folders)


def all_pages(fetch: Callable[..., Sequence[T]]) -> list[T]:
    """Every row a paged ledger query gives: ``fetch(limit=..., offset=...)`` until a short page."""
    out: list[T] = []
    while True:
        page = fetch(limit=PAGE, offset=len(out))
        out.extend(page)
        if len(page) < PAGE:
            return out


def _from_result(r: StoredResult) -> ParticleRecord:
    size = r.payload.get("particle_size") or {}
    feret = size.get("feret_max_um")
    return ParticleRecord(
        sample=PurePosixPath(r.source_path).parent.name,
        source=r.source_path,
        index=r.spectrum_index,
        status=str(r.status),
        label=r.label,
        material=r.material,
        family=family_of(r.label) if r.label else None,
        confidence=r.confidence,
        feret_max=feret,
        feret_min=size.get("feret_min_um"),
        area=size.get("area_um2"),
        unit="um" if feret is not None else None,
        origin="file",
        decision=r.decision.state if r.decision else None,
    )


def _from_particle(p: StoredParticle) -> ParticleRecord:
    v = p.values
    in_um = v["feret_max_um"] is not None
    suffix = "um" if in_um else "px"
    return ParticleRecord(
        sample=p.sample,
        source=p.source_path,
        index=p.index,
        status=str(v["status"]),
        label=v["label"],
        material=v["material"],
        family=v["family"] or family_of(v["label"]),
        confidence=v["confidence"],
        feret_max=v[f"feret_max_{suffix}"],
        feret_min=v[f"feret_min_{suffix}"],
        area=v["area_um2"] if in_um else v["area_px"],
        x=v[f"x_{suffix}"],
        y=v[f"y_{suffix}"],
        unit=suffix,
        origin="map",
        decision=p.decision.state if p.decision else None,
    )


#: A sample folder's current results, its maps' particles and its maps (:func:`sample_rows`).
SampleRows = tuple[list[StoredResult], list[StoredParticle], list[StoredMap]]


def sample_rows(ledger: Ledger, folder: str | Path) -> SampleRows:
    """The sample folder's current results, its maps' particles and its maps, as the ledger holds them."""
    return (
        all_pages(partial(ledger.results, folder=folder)),
        all_pages(partial(ledger.particles, folder=folder)),
        all_pages(partial(ledger.maps, folder=folder)),
    )


def _records(results: list[StoredResult], particles: list[StoredParticle]) -> list[ParticleRecord]:
    return [*map(_from_particle, particles), *map(_from_result, results)]


def sample_particles(ledger: Ledger, folder: str | Path) -> tuple[list[ParticleRecord], list[StoredMap]]:
    """The particles of the sample folder ``folder`` (final labels) and its maps."""
    results, particles, maps = sample_rows(ledger, folder)
    return _records(results, particles), maps


def _method(
    settings: ReportSettings,
    folder: str,
    results: Iterable[ParticleRecord],
    maps: list[StoredMap],
    rows: list[StoredResult],
) -> dict[str, object]:
    instruments = sorted(
        {
            str(r.payload["acquisition"]["instrument"])
            for r in rows
            if "instrument" in r.payload.get("acquisition", {})
        }
        | {
            str(m.payload.get("metadata", {}).get("instrument"))
            for m in maps
            if m.payload.get("metadata", {}).get("instrument")
        }
    )
    method: dict[str, object] = {
        "sample folder": folder,
        "instrument": instruments or "not stated in the files",
        "files": f"{len({r.source for r in results})} files"
        + (f", {len(maps)} of them maps" if maps else ""),
    }
    times = [r.created_at for r in rows] + [m.created_at for m in maps]
    if times:
        method["classified"] = f"{iso_time(min(times))} to {iso_time(max(times))}"
    for m in maps:
        size = (
            f"pixel size {m.pixel_size_um:g} µm ({m.pixel_size_source})"
            if m.pixel_size_um
            else "no pixel size: sizes in pixels"
        )
        meta = m.payload.get("metadata") or {}
        extra = "; ".join(f"{k}: {v}" for k, v in list(meta.items())[:6] if isinstance(v, str | int | float))
        method[f"map {PurePosixPath(m.source_path).name}"] = (
            f"{m.lines} x {m.samples} pixels, {m.bands} bands, {size}, {m.n_particles} particles"
            + (f"; {extra}" if extra else "")
        )
    for technique, libdir in settings.libraries.items():
        method[f"{technique} library"] = library_facts(libdir)
    thresholds = [float(t) for r in rows if (t := r.payload.get("threshold")) is not None]
    if thresholds:
        method["reject thresholds (Pearson r, per class)"] = f"{min(thresholds):.3f} to {max(thresholds):.3f}"
    for key, value in settings.thresholds.items():
        method[key] = value
    versions = sorted({r.model_version for r in rows} | {m.model_version for m in maps})
    method["model version"] = versions or "no results"
    method["software"] = f"mpwatch {software_version()}"
    method["size classes"] = "largest Feret diameter, " + ", ".join(
        f"{low:g}-{high:g} µm" for low, high in settings.size_classes
    )
    return method


def sample_report(
    ledger: Ledger,
    folder: str,
    settings: ReportSettings,
    *,
    folders: list[str],
    rows: SampleRows | None = None,
) -> SampleReport:
    """The report of the sample folder ``folder``; ``folders`` are all sample folders (for its blanks);
    ``rows``: :func:`sample_rows` of ``folder``, when the caller has read them already."""
    results, stored_particles, maps = sample_rows(ledger, folder) if rows is None else rows
    particles = _records(results, stored_particles)
    is_blank = settings.is_blank(folder)
    blanks: dict[str, list[ParticleRecord]] = {}
    if not is_blank:
        parent = PurePosixPath(folder).parent
        for other in folders:
            if other != folder and PurePosixPath(other).parent == parent and settings.is_blank(other):
                blanks[PurePosixPath(other).name] = sample_particles(ledger, other)[0]
    images = []
    for m in maps:
        if m.image_path and Path(m.image_path).is_file():
            caption = f"{PurePosixPath(m.source_path).name}: {m.n_particles} particles, coloured by polymer"
            images.append(MapImage(caption, Path(m.image_path).read_bytes()))
    return build_report(
        PurePosixPath(folder).name,
        particles,
        classes=settings.size_classes,
        blanks=blanks,
        is_blank=is_blank,
        method=_method(settings, folder, particles, maps, results),
        images=images,
    )


def write_sample_report(
    ledger: Ledger,
    folder: str,
    out: Path,
    settings: ReportSettings,
    *,
    folders: list[str] | None = None,
    rows: SampleRows | None = None,
) -> dict[str, Path]:
    """Write the report of ``folder`` into ``out`` (report.html, particles.csv, summary.csv); ``rows`` as
    for :func:`sample_report`."""
    report = sample_report(
        ledger, folder, settings, folders=sample_folders(ledger) if folders is None else folders, rows=rows
    )
    return write_report(report, out)
