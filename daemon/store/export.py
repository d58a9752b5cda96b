"""Result files: JSON lines and a CSV summary per sample folder, regenerated atomically from the ledger.

The ledger is the record; these files are views of it for people and for
other programs. For every sample folder (the folder a spectrum file sits in)
the exporter writes, under ``<state_dir>/results/<inbox>/<relative folder>/``:

- ``results.jsonl``: one JSON object per classified spectrum (:func:`result_row`);
- ``summary.csv``: particles per polymer and status for that sample: one per spectrum file
  (an instrument that writes a file per particle) and one per particle of its imaging maps.

Both count final labels: an analyst's confirmation or rejection overrides the
classifier's answer, and the folder is rewritten when a decision is made.

Both are replaced atomically, so a reader never sees half a file. Folders
are marked dirty as results arrive and rewritten at most every
``min_interval`` seconds, and once more at shutdown. A sample folder of
many thousand particles takes a while to rewrite, so the interval also grows
to :data:`COST_FACTOR` times the last rewrite's duration: exporting never
takes more than about 5 % of the daemon's time, however large a sample grows.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.store.ledger import Ledger, StoredParticle, StoredResult, iso_time
from daemon.store.reports import ReportSettings, sample_folders, sample_rows, write_sample_report
from engine.core.storage import atomic_write_text

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = [
    "SUMMARY_FIELDS",
    "ResultsExporter",
    "report_settings",
    "result_row",
    "sample_name",
    "summary_rows",
]

logger = logging.getLogger(__name__)


#: The pause between rewrites is at least this many times the last rewrite's duration.
COST_FACTOR = 20.0


def sample_name(source: str) -> str:
    """The sample a spectrum file belongs to: the name of the folder it sits in.

    >>> sample_name("/data/ftir/2024-05/filter-3/p1.csv")
    'filter-3'
    """
    return PurePosixPath(source).parent.name


def result_row(r: StoredResult) -> dict[str, Any]:
    """One stored result as the JSON object ``mpwatch results``, results.jsonl and the API give.

    ``status``, ``label``, ``material`` and ``confidence`` are final; ``decision`` says who
    decided, when, and what the classifier had said (None: nobody decided). ``best_hit``
    and ``best_r`` are the closest library reference and its Pearson r, whatever the status.
    """
    hits = r.payload.get("hits") or [{}]
    return {
        "result_id": r.id,
        "source": r.source_path,
        "sample": sample_name(r.source_path),
        "index": r.spectrum_index,
        "sha256": r.sha256,
        "created_at": iso_time(r.created_at),
        "status": str(r.status),
        "label": r.label,
        "material": r.material,
        "confidence": r.confidence,
        "best_hit": hits[0].get("label"),
        "best_r": hits[0].get("r"),
        "decision": r.decision.as_dict() if r.decision else None,
        "duplicate_of": r.duplicate_of,
        "model_version": r.model_version,
        **{k: v for k, v in r.payload.items() if k not in _FINAL_FIELDS},
    }


#: The fields a decision may change, and those :func:`result_row` sets itself: never from the payload.
_FINAL_FIELDS = frozenset({"status", "label", "material", "confidence", "decision", "duplicate_of", "sample"})


#: Columns of summary.csv.
SUMMARY_FIELDS = (
    "status",
    "label",
    "particles",
    "share",
    "carbonyl_n",
    "carbonyl_median",
    "carbonyl_q1",
    "carbonyl_q3",
)


def _carbonyl(r: StoredResult | StoredParticle) -> float | None:
    value = (r.payload.get("aging") or {}).get("carbonyl")
    return float(value) if value is not None else None


def summary_rows(particles: Iterable[StoredResult | StoredParticle]) -> list[dict[str, Any]]:
    """Particles per (status, label), their share of the sample, and the carbonyl index distribution.

    A particle is a result of a spectrum file or a particle of a map; labels are final.
    """
    groups: dict[tuple[str, str], list[StoredResult | StoredParticle]] = {}
    for r in particles:
        groups.setdefault((str(r.status), r.label or ""), []).append(r)
    total = sum(len(g) for g in groups.values())
    rows = []
    for (status, label), members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        carbonyl = [c for c in map(_carbonyl, members) if c is not None]
        quartiles = np.percentile(carbonyl, [50, 25, 75]).round(4).tolist() if carbonyl else ["", "", ""]
        rows.append(
            {
                "status": status,
                "label": label,
                "particles": len(members),
                "share": round(len(members) / total, 4),
                "carbonyl_n": len(carbonyl),
                "carbonyl_median": quartiles[0],
                "carbonyl_q1": quartiles[1],
                "carbonyl_q3": quartiles[2],
            }
        )
    return rows


def report_settings(config: Config) -> ReportSettings:
    """The sample reports' settings from a configuration: its report section, libraries and thresholds."""
    from daemon.pipeline.serving import served_library_dirs  # the pipeline imports this module

    maps = config.maps
    return ReportSettings(
        size_classes=config.report.size_classes,
        blank_pattern=config.report.blank_pattern,
        blanks=config.report.blanks,
        libraries=served_library_dirs(config),
        thresholds={
            "vote share for a known label (model.min_vote)": config.model.min_vote,
            "ensemble (model)": f"{config.model.n_learners} learners, k = {config.model.n_neighbors}, "
            f"subspace {config.model.subspace_fraction:g}, {config.model.search} search",
            "map background (maps.background_fraction, background_r)": f"{maps.background_fraction:g}, "
            f"{'off' if maps.background_r is None else f'{maps.background_r:g}'}",
            "smallest particle (maps.min_particle_pixels)": f"{maps.min_particle_pixels} pixels",
        },
    )


class ResultsExporter:
    """Rewrites the result files of folders that received results (and their sample reports).

    Result files are rewritten every ``min_interval`` seconds at most (longer when a rewrite
    is slow), sample reports every ``report_interval``, the first one an interval after the
    first result: a report takes about 0.3 s to draw (the first, which imports matplotlib, far
    longer), and even drawn in another thread it holds Python's lock long enough to delay the
    files arriving meanwhile (p95 latency at an instrument's pace went from about 30 to 100-300 ms
    when every rewrite drew one). With ``background``, a due :meth:`flush` hands the folders to a
    thread of their own and returns at once. One flush runs at a time; a forced one (at shutdown)
    waits for it and writes everything left, reports included, in the caller's thread.
    """

    def __init__(
        self,
        ledger: Ledger,
        results_dir: Path,
        inboxes: Sequence[tuple[str, Path]],
        *,
        min_interval: float = 2.0,
        report: ReportSettings | None = None,
        report_interval: float = 0.0,
        background: bool = False,
    ) -> None:
        self.ledger = ledger
        self.results_dir = results_dir
        self.inboxes = list(inboxes)
        self.min_interval = min_interval
        #: The sample reports' settings; None: no reports beside the result files.
        self.report = report
        self.report_interval = report_interval
        self.background = background
        self._dirty: set[Path] = set()
        #: Folders whose result files are current but whose report is not yet.
        self._stale_reports: set[Path] = set()
        #: When the reports were last drawn, or the first result came (None: none came yet).
        self._last_report: float | None = None
        self._lock = threading.Lock()
        self._last_flush = float("-inf")
        self._last_cost = 0.0
        self._writer: threading.Thread | None = None
        self._failure: Exception | None = None

    @classmethod
    def for_config(cls, ledger: Ledger, config: Config) -> ResultsExporter:
        """The exporter of a daemon's configuration: its state folder, inboxes and report settings."""
        inboxes = [(inbox.name, inbox.path) for inbox in config.inboxes]
        report = report_settings(config) if config.report.enabled else None
        every = config.report.interval_seconds
        results = config.state_dir / "results"
        return cls(ledger, results, inboxes, report=report, report_interval=every, background=True)

    def mark(self, source: str | Path) -> None:
        """A result for ``source`` was written: its folder needs rewriting."""
        with self._lock:
            self._dirty.add(Path(source).parent)

    def target(self, folder: Path) -> Path:
        """Where a sample folder's result files go."""
        for name, root in self.inboxes:
            if folder == root or root in folder.parents:
                return self.results_dir / name / folder.relative_to(root)
        return self.results_dir / "_other" / folder.name

    def flush(self, *, now: float, force: bool = False) -> int:
        """Rewrite dirty folders if the interval has passed (or ``force``); return how many.

        In the background (see the class), the count is of the folders handed to the writer.
        """
        failure, self._failure = self._failure, None
        if failure is not None and not force:
            raise failure  # the writer thread's, for the main loop's guard to count and back off
        writer = self._writer
        if writer is not None and writer.is_alive():
            if not force:
                return 0
            writer.join()
        results_due = force or now - self._last_flush >= max(self.min_interval, COST_FACTOR * self._last_cost)
        if self._last_report is None and self._dirty:
            self._last_report = now  # the first report too waits an interval: a burst's start is left alone
        since = now - (now if self._last_report is None else self._last_report)
        reports_due = self.report is not None and (force or since >= self.report_interval)
        with self._lock:
            if not results_due and not (reports_due and self._stale_reports):
                return 0
            dirty = self._dirty if results_due else set()
            if results_due:
                self._dirty = set()
            if self.report is not None:
                self._stale_reports |= dirty
            reports = self._stale_reports if reports_due else set()
            if reports_due:
                self._stale_reports = set()
        if results_due:
            self._last_flush = now
        if reports:
            self._last_report = now
        if self.background and not force and (dirty or reports):
            self._writer = threading.Thread(target=self._write_behind, args=(dirty, reports), daemon=True)
            self._writer.start()
            return len(dirty)
        return self._write(dirty, reports)

    def _write_behind(self, dirty: set[Path], reports: set[Path]) -> None:
        try:
            self._write(dirty, reports)
        except Exception as exc:
            self._failure = exc

    def _write(self, dirty: set[Path], reports: set[Path]) -> int:
        """Rewrite the result files of ``dirty`` and the reports of ``reports`` (and of the samples
        their blanks correct); a folder that fails stays to do."""
        started = time.perf_counter()
        try:
            reports = self._with_blanks_neighbours(reports)
        except BaseException:
            self._requeue(dirty, reports)
            raise
        for folder in sorted(dirty | reports):
            try:
                self.write_folder(folder, report=folder in reports)
            except OSError:
                logger.exception("could not write results for %s", folder)
                self._requeue({folder} & dirty, {folder} & reports)
            except BaseException:
                self._requeue(dirty, reports)  # none is lost: the next flush writes them again
                raise
        if dirty:
            self._last_cost = time.perf_counter() - started
        return len(dirty)

    def _requeue(self, dirty: set[Path], reports: set[Path]) -> None:
        with self._lock:
            self._dirty |= dirty
            self._stale_reports |= reports

    def _with_blanks_neighbours(self, dirty: set[Path]) -> set[Path]:
        """``dirty``, and the samples beside a dirty procedural blank: their blank-corrected counts change."""
        if self.report is None or not any(self.report.is_blank(folder) for folder in dirty):
            return dirty
        out = set(dirty)
        for other in map(Path, sample_folders(self.ledger)):
            if any(other.parent == f.parent and self.report.is_blank(f) for f in dirty):
                out.add(other)
        return out

    def write_folder(self, folder: Path, *, report: bool = True) -> Path:
        """Rewrite ``folder``'s results.jsonl and summary.csv, and its sample report with ``report``."""
        rows = sample_rows(self.ledger, folder)  # read once: the files below and the report
        results, particles, _ = rows
        target = self.target(folder)
        lines = "".join(json.dumps(result_row(r), sort_keys=True) + "\n" for r in results)
        atomic_write_text(target / "results.jsonl", lines)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary_rows([*results, *particles]))
        atomic_write_text(target / "summary.csv", buffer.getvalue())
        if report and self.report is not None:
            write_sample_report(self.ledger, str(folder), target / "report", self.report, rows=rows)
        return target
