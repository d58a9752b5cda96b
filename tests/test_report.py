"""Maps to particles in the ledger, ``mpwatch results --particles`` and ``mpwatch report``.

Counting (size classes, blank correction) is checked on hand-built particles; the ledger on
hand-built map records; the report of a per-particle (LDIR-style) folder on results with and without a
stated size; the HTML in headless Chromium; and the whole way on a 48 x 48 ENVI map, painted with
library spectra, dropped into a running daemon's inbox.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from daemon.cli import main
from daemon.store.ledger import Ledger, MapRecord, ResultRecord, ResultStatus
from daemon.store.reports import ReportSettings, sample_folders, sample_report, write_sample_report
from engine.core.library import ReferenceLibrary
from engine.io import read_spectra
from engine.io.envi import envi_header_text
from engine.report import DEFAULT_SIZE_CLASSES, ParticleRecord, build_report, sizes_from_metadata
from tests import test_console
from tests.conftest import FORMATS, MPWATCH, REPO_ROOT, daemon_process, ledger_count, wait_until
from tests.test_console import By, screenshot

#: The console tests' headless Chromium, as a fixture here too.
browser = test_console.browser

SETTINGS = ReportSettings(size_classes=DEFAULT_SIZE_CLASSES)


def particle(
    label: str | None,
    feret: float | None,
    *,
    status: str = "known",
    unit: str | None = "um",
    index: int = 0,
    sample: str = "f1",
) -> ParticleRecord:
    return ParticleRecord(
        sample=sample,
        source=f"/in/{sample}/m.hdr",
        index=index,
        status=status,
        label=label,
        feret_max=feret,
        unit=unit if feret is not None else None,
    )


def sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def map_particle(index: int, label: str, feret_um: float | None, *, status: str = "known") -> dict[str, Any]:
    px = 12.0
    return {
        "index": index,
        "status": status,
        "label": label if status == "known" else None,
        "material": label,
        "family": None,
        "confidence": 0.9,
        "n_pixels": 40,
        "area_um2": None if feret_um is None else 4000.0,
        "feret_max_um": feret_um,
        "feret_min_um": None if feret_um is None else feret_um / 2,
        "x_um": None if feret_um is None else 50.0,
        "y_um": None if feret_um is None else 60.0,
        "area_px": 40.0,
        "feret_max_px": px,
        "feret_min_px": 5.0,
        "x_px": 5.0,
        "y_px": 6.0,
        "hits": [{"label": label, "material": label, "r": 0.97, "ref_id": 3, "source": "lib"}],
        "aging": {},
        "bbox": [0, 0, 5, 5],
    }


def map_record(particles: list[dict[str, Any]], *, pixel_size: float | None = 10.0) -> MapRecord:
    summary = {
        "lines": 48,
        "samples": 48,
        "bands": 300,
        "pixel_size_um": pixel_size,
        "pixel_size_source": "profile" if pixel_size else "none",
        "n_pixels": 2304,
        "n_background": 2000,
        "n_unknown_pixels": 3,
        "n_low_quality_pixels": 1,
        "model_version": "lib1.r0",
        "particles_by_label": {},
        "metadata": {"instrument": "Spotlight 400"},
    }
    return MapRecord(summary=summary, particles=particles, image_path=None)


def deliver(ledger: Ledger, path: str, content: str, *, now: float, **complete: Any) -> Any:
    ledger.observe(path, size=10, mtime=now, now=now)
    ledger.mark_pending(path, sha(content), now=now)
    item = ledger.claim_next(now=now)
    assert item is not None
    return ledger.complete(item.sha256, complete.pop("results", []), now=now, **complete)


class TestCounts:
    def test_particles_fall_in_their_iso_size_class_by_largest_feret(self) -> None:
        particles = [
            particle("PE", 5),
            particle("PE", 10),
            particle("PE", 19.9),
            particle("PP", 700),
            particle("PP", 0.5),
            particle("PP", 6000),
            particle(None, 30, status="unknown"),
            particle(None, None, status="low_quality"),
        ]
        report = build_report("f1", particles)
        raw = report.raw
        assert raw.cell("PE", "1-10 µm") == 1 and raw.cell("PE", "10-20 µm") == 2
        assert raw.cell("PP", "500-1000 µm") == 1
        assert raw.cell("PP", "< 1 µm") == 1 and raw.cell("PP", ">= 5000 µm") == 1
        assert raw.cell("unknown", "20-50 µm") == 1 and raw.cell("low_quality", "size unknown") == 1
        assert report.rows() == ["PE", "PP", "unknown", "low_quality"]  # 3 each: by name
        assert any("size of 1 particle is unknown" in note for note in report.notes)

    def test_configured_classes_replace_the_default(self) -> None:
        report = build_report("f1", [particle("PE", 5), particle("PE", 150)], classes=[(0, 100), (100, 1000)])
        assert report.raw.cell("PE", "0-100 µm") == 1 and report.raw.cell("PE", "100-1000 µm") == 1

    def test_the_blank_is_subtracted_per_polymer_and_class_floored_at_zero(self) -> None:
        sample = [particle("PE", 15, index=i) for i in range(5)] + [particle("PP", 15)]
        blanks = {
            "blank-1": [
                particle("PE", 15, sample="blank-1"),
                particle("PE", 15, sample="blank-1"),
                particle("PP", 15, sample="blank-1"),
                particle("PP", 15, sample="blank-1"),
            ],
            "blank-2": [
                particle("PP", 15, sample="blank-2"),
                particle("PP", 15, sample="blank-2"),
                particle("PS", 15, sample="blank-2"),
            ],
        }
        report = build_report("f1", sample, blanks=blanks)
        # mean blank: PE 1, PP 2, PS 0.5 in 10-20 µm
        assert report.blank is not None and report.corrected is not None
        assert report.blank.cell("PE", "10-20 µm") == 1 and report.blank.cell("PS", "10-20 µm") == 0.5
        assert report.corrected.cell("PE", "10-20 µm") == 4
        assert report.corrected.cell("PP", "10-20 µm") == 0  # 1 - 2, floored
        assert report.corrected.cell("PS", "10-20 µm") == 0
        rows = {(r["row"], r["size_class"]): r for r in report.summary_rows()}
        assert (
            rows["PE", "10-20 µm"]["raw"],
            rows["PE", "10-20 µm"]["blank"],
            rows["PE", "10-20 µm"]["corrected"],
        ) == ("5", "1", "4")
        assert (rows["PP", "all"]["raw"], rows["PP", "all"]["corrected"]) == ("1", "0")
        assert rows["PS", "all"]["blank"] == "0.5"
        assert any("blank-1, blank-2" in note for note in report.notes)

    def test_a_blank_is_not_corrected_by_itself(self) -> None:
        report = build_report(
            "blank-1", [particle("PE", 15)], blanks={"blank-2": [particle("PE", 15)]}, is_blank=True
        )
        assert report.corrected is None and report.final.cell("PE", "10-20 µm") == 1

    def test_sizes_of_a_map_without_pixel_size_are_pixels_and_the_report_says_so(self) -> None:
        report = build_report("f1", [particle("PE", 15, unit="px")])
        assert report.raw.cell("PE", "10-20 px") == 1
        assert any("in pixels" in note for note in report.notes)

    def test_a_per_particle_file_states_its_size_in_its_header(self) -> None:
        assert sizes_from_metadata({"header": {"Feret Max [µm]": "35.2", "Area (um^2)": "510"}}) == {
            "feret_max_um": 35.2,
            "area_um2": 510.0,
        }
        assert sizes_from_metadata({"header": {"Size (px)": "12"}}) == {}

    @pytest.mark.parametrize("name", ["spectrochempy_depth.wdf", "renishaw_wdf_pkg_Si-map.wdf"])
    def test_a_raman_file_states_its_laser_not_a_particle_size(self, name: str) -> None:
        """Every spectrum of a Renishaw file was a 532 um particle: the laser wavelength, read as a length."""
        spectrum = read_spectra(FORMATS / "renishaw_wdf" / name)[0]
        assert spectrum.metadata.get("laser_wavelength_nm")
        assert sizes_from_metadata(spectrum.metadata) == {}


class TestParticlesLedger:
    def test_a_map_is_recorded_once_and_redelivery_adds_nothing(self, tmp_path: Path) -> None:
        record = map_record([map_particle(0, "PE", 120.0), map_particle(1, "PP", 40.0)])
        with Ledger(tmp_path / "l.sqlite3") as ledger:
            first = deliver(ledger, "/in/f1/map.hdr", "map", now=1.0, map_record=record)
            assert first.particles_written == 2
            again = ledger.complete(sha("map"), [], now=2.0, map_record=record)  # a second completion
            assert again.particles_written == 0
            ledger.observe("/in/f1/copy.hdr", size=10, mtime=3.0, now=3.0)  # the same bytes under a new name
            assert str(ledger.mark_pending("/in/f1/copy.hdr", sha("map"), now=3.0)) == "duplicate"
            assert [m.n_particles for m in ledger.maps()] == [2]
            assert [(p.index, p.values["label"]) for p in ledger.particles()] == [(0, "PE"), (1, "PP")]
            assert [p.sample for p in ledger.particles(sample="f1")] == ["f1", "f1"]
            assert ledger.particles(sample="f2") == []

    def test_a_rewritten_map_supersedes_its_particles(self, tmp_path: Path) -> None:
        with Ledger(tmp_path / "l.sqlite3") as ledger:
            deliver(
                ledger, "/in/f1/map.hdr", "v1", now=1.0, map_record=map_record([map_particle(0, "PE", 10.0)])
            )
            ledger.observe("/in/f1/map.hdr", size=11, mtime=5.0, now=5.0)
            ledger.mark_pending("/in/f1/map.hdr", sha("v2"), now=5.0)
            item = ledger.claim_next(now=5.0)
            assert item is not None
            two = map_record([map_particle(0, "PS", 10.0), map_particle(1, "PS", 20.0)])
            ledger.complete(item.sha256, [], now=6.0, map_record=two)
            assert [p.values["label"] for p in ledger.particles()] == ["PS", "PS"]
            assert len(ledger.particles(superseded=True)) == 3 and len(ledger.maps()) == 1


def ldir_state(tmp_path: Path) -> Path:
    """A ledger with a map folder, an LDIR folder (sizes stated), one without sizes and a blank."""
    state = tmp_path / "state"
    with Ledger.in_state_dir(state) as ledger:
        deliver(
            ledger,
            "/in/run/f1/map.hdr",
            "map",
            now=1.0,
            map_record=map_record(
                [
                    map_particle(0, "PE", 120.0),
                    map_particle(1, "PP", 40.0),
                    map_particle(2, "PE", 15.0, status="unknown"),
                ]
            ),
        )
        for i, (label, size) in enumerate([("PE", 35.0), ("PET", 250.0), ("PE", 60.0)]):
            payload = {"particle_size": {"feret_max_um": size}, "hits": [], "threshold": 0.7}
            deliver(
                ledger,
                f"/in/run/ldir/p{i}.csv",
                f"l{i}",
                now=2.0 + i,
                results=[
                    ResultRecord(
                        spectrum_index=0,
                        status=ResultStatus.KNOWN,
                        label=label,
                        model_version="lib1.r0@975-1800",
                        payload=payload,
                    )
                ],
            )
        deliver(
            ledger,
            "/in/run/nosize/p.csv",
            "n",
            now=6.0,
            results=[
                ResultRecord(spectrum_index=0, status=ResultStatus.KNOWN, label="PP", model_version="m")
            ],
        )
        deliver(
            ledger,
            "/in/run/blank-1/p.csv",
            "b",
            now=7.0,
            results=[
                ResultRecord(
                    spectrum_index=0,
                    status=ResultStatus.KNOWN,
                    label="PE",
                    model_version="m",
                    payload={"particle_size": {"feret_max_um": 30.0}},
                )
            ],
        )
    return state


class TestSampleReports:
    def test_per_particle_files_are_particles_sized_by_their_metadata_or_unknown(
        self, tmp_path: Path
    ) -> None:
        state = ldir_state(tmp_path)
        with Ledger.in_state_dir(state) as ledger:
            folders = sample_folders(ledger)
            assert folders == ["/in/run/blank-1", "/in/run/f1", "/in/run/ldir", "/in/run/nosize"]
            ldir = sample_report(ledger, "/in/run/ldir", SETTINGS, folders=folders)
            nosize = sample_report(ledger, "/in/run/nosize", SETTINGS, folders=folders)
        assert ldir.raw.cell("PE", "20-50 µm") == 1 and ldir.raw.cell("PET", "100-500 µm") == 1
        assert ldir.corrected is not None and ldir.corrected.cell("PE", "20-50 µm") == 0  # blank-1 has one PE
        assert ldir.method["reject thresholds (Pearson r, per class)"] == "0.700 to 0.700"
        assert nosize.raw.cell("PP", "size unknown") == 1
        assert any("size of 1 particle is unknown" in note for note in nosize.notes)

    def test_report_command_writes_html_particles_and_summary(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        state = ldir_state(tmp_path)
        out = tmp_path / "reports"
        assert main(["report", "--state", str(state), "--sample", "f1", "--out", str(out)]) == 0
        assert capsys.readouterr().out.startswith("f1: ")
        rows = list(csv.DictReader((out / "f1" / "particles.csv").open(encoding="utf-8")))
        assert [(r["label"], r["size_class"], r["source"]) for r in rows] == [
            ("PE", "100-500 µm", "/in/run/f1/map.hdr"),
            ("PP", "20-50 µm", "/in/run/f1/map.hdr"),
            ("", "10-20 µm", "/in/run/f1/map.hdr"),
        ]
        summary = list(csv.DictReader((out / "f1" / "summary.csv").open(encoding="utf-8")))
        assert {(r["row"], r["size_class"]): r["corrected"] for r in summary}[("PE", "100-500 µm")] == "1"
        html = (out / "f1" / "report.html").read_text(encoding="utf-8")
        assert "data:image/png;base64," in html and "Spotlight 400" in html and "<script" not in html

    @pytest.mark.parametrize("form", ["jsonl", "csv", "table"])
    def test_results_lists_particles(
        self, tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        state = ldir_state(tmp_path)
        assert main(["results", "--state", str(state), "--particles", "--format", form]) == 0
        out = capsys.readouterr().out
        if form == "jsonl":
            rows = [json.loads(line) for line in out.splitlines()]
            assert [(r["sample"], r["index"], r["label"], r["feret_max_um"]) for r in rows] == [
                ("f1", 0, "PE", 120.0),
                ("f1", 1, "PP", 40.0),
                ("f1", 2, None, 15.0),
            ]
            assert rows[0]["source"] == "/in/run/f1/map.hdr" and rows[0]["hits"][0]["r"] == 0.97
        elif form == "csv":
            rows = list(csv.DictReader(io.StringIO(out)))
            assert [r["label"] for r in rows] == ["PE", "PP", ""] and rows[1]["area_px"] == "40.0"
        else:
            assert "map.hdr" in out and "120.0 µm" in out and "PP" in out

    def test_results_says_where_a_samples_map_particles_are(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A map gives no result per spectrum: its particles were missing from ``results`` unsaid."""
        state = ldir_state(tmp_path)
        assert main(["results", "--state", str(state), "--sample", "f1"]) == 0
        err = capsys.readouterr().err
        assert "the 1 imaging map(s) hold 3 particles, listed apart: add --particles" in err
        assert main(["results", "--state", str(state), "--sample", "ldir"]) == 0
        assert "imaging map" not in capsys.readouterr().err


@pytest.mark.parametrize("width", [80, 120])
def test_the_particle_table_fits_the_terminal_one_line_per_particle(width: int) -> None:
    from rich.console import Console

    from daemon.cli.results import particles_table

    row = {
        "id": 43210,
        "sample": "filter-2026-12-07",
        "source": "/in/run/filter-2026-12-07/CA_tiny_map_of_the_whole_filter.zip",
        "index": 123,
        "status": "low_quality",
        "label": "cellulose acetate",
        "confidence": 0.5,
        "n_pixels": 98765,
        "feret_max_um": 1234.5,
        "feret_min_um": 10.0,
        "area_um2": 1234567.0,
    }
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(particles_table([row, dict(row, index=124, status="known")], width=width))
    lines = [line for line in console.export_text().splitlines() if line.strip()]
    assert len(lines) == 4 and all(len(line) <= width for line in lines)  # header, rule, two particles
    assert "…" not in lines[0]  # every header whole
    assert "low_quality" in lines[2] and "1234.5 µm" in lines[2] and "1234567 µm²" in lines[2]
    assert ("98765" in lines[2]) is (width >= 100)
    assert lines[2].split()[0] == "43210"  # the id 'mpwatch confirm --particle' takes, whole


def painted_map(folder: Path, *, n: int = 48) -> dict[str, int]:
    """An ENVI map (BIP, absorbance) with particles painted from library spectra; labels painted."""
    library = ReferenceLibrary.load(REPO_ROOT / "engine" / "data" / "default_library")
    grid = np.arange(700.0, 3800.0, 8.0)

    def reference(label: str) -> np.ndarray:
        for entry, spectrum in zip(library.entries, library.measured, strict=True):
            if (
                entry["label"] == label
                and spectrum.wavenumbers.min() < 750
                and spectrum.wavenumbers.max() > 3700
            ):
                values = np.interp(grid, spectrum.wavenumbers, spectrum.values)
                return (values - values.min()) / np.ptp(values)
        raise KeyError(label)

    rng = np.random.default_rng(0)
    cube = 0.002 + rng.normal(0, 0.001, (n, n, grid.size))
    paint = [("PE", 5, 5, 8, 8), ("PE", 30, 6, 6, 12), ("PP", 8, 30, 10, 7), ("PS", 34, 32, 9, 9)]
    for label, y, x, h, w in paint:
        cube[y : y + h, x : x + w] = reference(label) + rng.normal(0, 0.005, (h, w, grid.size))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "filter.dat").write_bytes(cube.astype("<f4").tobytes())
    (folder / "filter.hdr").write_text(envi_header_text(samples=n, lines=n, wavenumbers=grid))
    return dict(Counter(label for label, *_ in paint))


class TestAMapHoldsUpNothing:
    """A whole map takes tens of seconds: it runs on a snapshot of the model, not under its lock."""

    def test_the_map_is_identified_on_a_snapshot_while_the_lock_is_free(
        self, tmp_path: Path, library_dir: Path, model: Any
    ) -> None:
        from daemon.intake.stability import FileStat
        from tests.test_daemon import unstarted

        with unstarted(tmp_path, library_dir, model, worker={"helper_processes": 0}) as daemon:
            route = daemon.worker.maps
            assert route is not None
            identify, seen = route.identify, {}

            def spying(served: Any, path: str) -> Any:
                taken: list[bool] = []

                def another_thread() -> None:  # a confirmation, or the next batch of files
                    taken.append(daemon.models.lock.acquire(timeout=5))
                    if taken[-1]:
                        daemon.models.lock.release()

                thread = threading.Thread(target=another_thread)
                thread.start()
                thread.join()
                served_now = daemon.models.get()
                seen.update(lock_free=taken == [True], copy=served is not served_now)
                seen.update(same_version=served.version == served_now.version)
                return identify(served, path)

            route.identify = spying  # type: ignore[method-assign]
            painted_map(tmp_path / "inbox" / "filter-1")
            header = tmp_path / "inbox" / "filter-1" / "filter.hdr"
            stat = FileStat(header, header.stat().st_size, header.stat().st_mtime)
            daemon.intake.admit([stat], now=time.time())
            daemon.worker.process(daemon.ledger.claim(1, now=time.time()))
            assert seen == {"lock_free": True, "copy": True, "same_version": True}
            (record,) = daemon.ledger.maps()
            assert record.n_particles >= 4


class TestAMapStillArriving:
    """The header turns quiet before its data is whole: retried, not quarantined, until the data is quiet."""

    def _route(self, now: float) -> Any:
        from daemon.config import MapsConfig
        from daemon.pipeline.maps import MapRoute

        return MapRoute(MapsConfig(), Path("unused"), quiet_seconds=2.0, clock=lambda: now)

    def _header(self, folder: Path) -> Path:
        header = folder / "map.hdr"
        header.write_text(envi_header_text(samples=4, lines=4, wavenumbers=[1000, 1004, 1008]))
        return header

    def test_short_data_still_changing_is_arriving_then_truncated_once_quiet(self, tmp_path: Path) -> None:
        from engine.core.spectrum import SpectrumError

        header = self._header(tmp_path)
        (tmp_path / "map.dat").write_bytes(b"\0" * 12)
        written = (tmp_path / "map.dat").stat().st_mtime
        truncated = SpectrumError("truncated", "map.dat: 12 bytes, 192 expected")
        assert self._route(written + 1.0).arriving(str(header), truncated)
        assert not self._route(written + 5.0).arriving(str(header), truncated)

    def test_a_header_without_its_data_yet_is_arriving(self, tmp_path: Path) -> None:
        from engine.core.spectrum import SpectrumError

        header = self._header(tmp_path)
        missing = SpectrumError("no_spectrum", "map.hdr: no ENVI data file beside it")
        assert self._route(time.time() + 3600).arriving(str(header), missing)

    def test_other_faults_are_not_arriving(self, tmp_path: Path) -> None:
        from engine.core.spectrum import SpectrumError

        header = self._header(tmp_path)
        (tmp_path / "map.dat").write_bytes(b"\0" * 12)
        route = self._route((tmp_path / "map.dat").stat().st_mtime)
        too_long = SpectrumError("length_mismatch", "longer than the header says")
        assert not route.arriving(str(header), too_long)


class TestMapEndToEnd:
    def test_a_map_in_the_inbox_gives_particles_a_console_image_and_a_report(self, tmp_path: Path) -> None:
        inbox, state = tmp_path / "inbox", tmp_path / "state"
        inbox.mkdir()
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "inboxes": [{"path": str(inbox), "name": "lab", "pixel_size_um": 10.0}],
                    "state_dir": str(state),
                    "watch": {"quiet_seconds": 0.2, "rescan_interval_seconds": 3600},
                    "http": {"port": 0},
                    "model": {"n_synthetic": 10, "n_learners": 10},
                    "worker": {"helper_processes": 0},
                    "report": {"interval_seconds": 0},  # the report with the map's results, not 30 s on
                }
            )
        )
        with daemon_process(config, state, tmp_path / "daemon.log", timeout=90) as url:
            painted = painted_map(inbox / "filter-1")
            broken = inbox / "filter-1" / "broken.dat"
            broken.write_bytes(b"\0" * 12)  # far fewer bytes than 4 x 4 x 3
            long_ago = time.time() - 3600  # written long ago: truncated, not still arriving
            os.utime(broken, (long_ago, long_ago))
            (inbox / "filter-1" / "broken.hdr").write_text(
                "ENVI\nsamples = 4\nlines = 4\nbands = 3\n"
                "data type = 4\ninterleave = bsq\nbyte order = 0\n"
                "wavelength = {1000, 1004, 1008}\n"
            )
            db = state / "ledger.sqlite3"
            wait_until(
                lambda: (
                    ledger_count(db, "SELECT count(*) FROM files WHERE state NOT IN ('seen', 'pending')")
                    == 4
                ),
                timeout=90,
            )
            report = state / "results" / "lab" / "filter-1" / "report" / "report.html"
            wait_until(report.exists, timeout=30)
            import urllib.request

            page = urllib.request.urlopen(f"{url}/maps", timeout=10).read().decode()
        rows = [
            json.loads(line)
            for line in subprocess.run(
                [*MPWATCH, "results", "--state", str(state), "--particles", "--format", "jsonl"],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO_ROOT,
            ).stdout.splitlines()
        ]
        assert Counter(r["label"] for r in rows) == painted
        assert all(r["source"].endswith("filter.hdr") and r["feret_max_um"] > 50 for r in rows)
        assert (
            ledger_count(db, "SELECT count(*) FROM maps") == 1
        )  # the .dat is the map's data, not a second map
        states = dict(sqlite_rows(db, "SELECT path, state FROM files"))
        assert states[str(inbox / "filter-1" / "broken.hdr")] == "quarantined"
        assert states[str(inbox / "filter-1" / "filter.dat")] == "ignored"
        summary = list(csv.DictReader((report.parent / "summary.csv").open(encoding="utf-8")))
        totals = {r["row"]: int(r["raw"]) for r in summary if r["size_class"] == "all"}
        assert totals == painted
        assert "/maps/" in page and ".png" in page
        sha = ledger_sha(db)
        assert (state / "maps" / f"{sha}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def sqlite_rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return list(conn.execute(query).fetchall())


def ledger_sha(db: Path) -> str:
    return str(sqlite_rows(db, "SELECT sha256 FROM maps")[0][0])


class TestReportInABrowser:
    def test_the_report_renders_with_its_tables_and_chart(self, tmp_path: Path, browser: Any) -> None:
        state = ldir_state(tmp_path)
        with Ledger.in_state_dir(state) as ledger:
            paths = write_sample_report(ledger, "/in/run/ldir", tmp_path / "out", SETTINGS)
        browser.get(paths["report.html"].as_uri())
        tables = {t.get_attribute("id") for t in browser.find_elements(By.TAG_NAME, "table")}
        assert {"counts-raw", "counts-blank", "counts-corrected", "method", "particles"} <= tables
        loaded = browser.execute_script(
            "const i = document.getElementById('chart'); return i.complete && i.naturalWidth > 100;"
        )
        assert loaded
        assert browser.find_element(By.ID, "n-particles").text == "3"
        shot = screenshot(browser, "report")
        assert shot.stat().st_size > 10_000
