"""``mpwatch reclassify``: an archive walked into bounded tasks, classified on Dask, written to Parquet once.

The planning and the dataset are tested alone; a LocalCluster in this process runs a
whole archive and its answers are compared with ``mpwatch classify``'s on the same
files; the end-to-end test starts a real ``dask scheduler`` and two ``dask worker``
processes on loopback, kills one of them while ``mpwatch reclassify`` runs, and checks
that every spectrum still has exactly one row.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest

from daemon.cli import main
from engine.analysis.evaluate import load_source
from engine.cli import classify as classify_command
from engine.core.families import family_of
from engine.io.envi import envi_header_text
from engine.reclassify import (
    PARTICLES,
    DoneKeys,
    Source,
    cluster_client,
    library_hash,
    plan_tasks,
    read_dataset,
    reclassify,
    survey,
)
from engine.reclassify.dataset import SPECTRA, partition_dir, write_partition
from engine.reclassify.tasks import sample_of
from tests.conftest import REPO_ROOT, SHARED_DATA, spectrum_csv, wait_until

DASK = Path(sys.executable).with_name("dask")
#: Small tasks, so the archive below makes many of them and its labelled sets are cut into blocks.
TASK_SPECTRA = 10


def source(name: str, sample: str = "a/s1", *, n: int = 1, size: int = 10, kind: str = "file") -> Source:
    return Source(f"{sample}/{name}", sample, f"sha-{name}", n, size, kind)


class TestPlanning:
    def test_sources_are_bundled_per_sample_folder_within_the_bounds(self) -> None:
        files = [source(f"f{i}.csv") for i in range(5)] + [source("g.csv", "a/s2")]
        tasks = plan_tasks(files, task_spectra=2)
        assert sorted([s.path for s in t.sources] for t in tasks) == [
            ["a/s1/f0.csv", "a/s1/f1.csv"],
            ["a/s1/f2.csv", "a/s1/f3.csv"],
            ["a/s1/f4.csv"],
            ["a/s2/g.csv"],
        ]
        by_bytes = plan_tasks([source(f"f{i}.csv", size=40) for i in range(5)], task_bytes=100)
        assert [len(t.sources) for t in by_bytes] == [2, 2, 1]

    def test_a_source_larger_than_the_bounds_is_a_task_of_its_own_never_cut(self) -> None:
        files = [source("a.csv"), source("set", n=250, kind="set"), source("b.csv")]
        tasks = plan_tasks(files, task_spectra=100)
        assert [[s.path for s in t.sources] for t in tasks] == [["a/s1/a.csv"], ["a/s1/set"], ["a/s1/b.csv"]]
        assert [t.n_spectra for t in tasks] == [1, 250, 1]

    def test_done_sources_are_left_out_and_ids_depend_on_content_and_model(self) -> None:
        files = [source("a.csv"), source("b.csv"), source("c.csv")]
        tasks = plan_tasks(files, done={files[0].key}, served_key="m1")
        assert [s.path for t in tasks for s in t.sources] == ["a/s1/b.csv", "a/s1/c.csv"]
        again = plan_tasks(files, done={files[0].key}, served_key="m1")
        other = plan_tasks(files, done={files[0].key}, served_key="m2")
        assert [t.task_id for t in tasks] == [t.task_id for t in again]
        assert not {t.task_id for t in tasks} & {t.task_id for t in other}
        with pytest.raises(ValueError, match="task_spectra"):
            plan_tasks(files, task_spectra=0)

    def test_the_sample_folder_starts_at_the_archives_own_name(self, tmp_path: Path) -> None:
        root = tmp_path / "archive"
        assert sample_of(root / "lake" / "s1" / "x.csv", root) == "archive/lake/s1"
        assert sample_of(root / "x.csv", root) == "archive"
        assert sample_of(root, root) == tmp_path.name  # an input given directly: the folder it lies in

    def test_a_source_that_cannot_be_examined_is_still_a_source(self, tmp_path: Path) -> None:
        gone = survey(tmp_path / "gone.csv", tmp_path)
        assert gone.sha256 is None and gone.reason and "gone.csv" in gone.reason
        assert gone.key == f"path:{tmp_path / 'gone.csv'}"
        labelled = survey(SHARED_DATA / "flopp_frond2021", SHARED_DATA)
        assert (labelled.kind, labelled.n_spectra) == ("set", 380) and labelled.sha256


class TestDataset:
    ROW: ClassVar[dict[str, Any]] = {
        "source": "x.csv",
        "index": 0,
        "sha256": "s",
        "status": "known",
        "confidence": 0.5,
        "hits": [],
    }

    def test_a_task_written_twice_leaves_one_file_and_no_temporary(self, tmp_path: Path) -> None:
        for _ in range(2):
            write_partition(tmp_path, SPECTRA, "lake/s 1", "task1", [dict(self.ROW, library_hash="h")])
        folder = partition_dir(tmp_path, SPECTRA, "lake/s 1")
        assert sorted(p.name for p in folder.iterdir()) == ["task1.parquet"]
        table = read_dataset(tmp_path)
        assert table.num_rows == 1 and table["sample"].to_pylist() == ["lake/s 1"]

    def test_a_killed_writers_temporary_of_this_run_is_swept_and_no_other(self, tmp_path: Path) -> None:
        from engine.reclassify.cluster import _sweep_orphans

        write_partition(tmp_path, SPECTRA, "s", "mine", [dict(self.ROW, library_hash="h")])
        folder = partition_dir(tmp_path, SPECTRA, "s")
        for name in (".mine.parquet.k1ll3d.tmp", ".theirs.parquet.w0rk1n.tmp"):  # killed worker; other run
            (folder / name).write_bytes(b"PAR1 half written")
        _sweep_orphans(tmp_path, {"mine"})
        assert sorted(p.name for p in folder.iterdir()) == [".theirs.parquet.w0rk1n.tmp", "mine.parquet"]
        assert read_dataset(tmp_path).num_rows == 1

    def test_done_keys_hold_the_sources_one_model_answered(self, tmp_path: Path) -> None:
        rows = [dict(self.ROW, index=i, sha256="big", library_hash="h") for i in (0, 1, 2)]
        rows.append(dict(self.ROW, index=None, sha256=None, status="unreadable", library_hash="h"))
        write_partition(tmp_path, SPECTRA, "s", "t1", rows)
        write_partition(tmp_path, SPECTRA, "s", "t2", [dict(self.ROW, sha256="old", library_hash="h0")])
        done = DoneKeys.from_output(tmp_path, library_hash="h")
        assert "big" in done and "path:x.csv" in done and len(done) == 2
        assert "old" not in done and "other" not in done and None not in done
        assert "x" not in DoneKeys() and len(DoneKeys.from_output(tmp_path / "none", library_hash="h")) == 0


# ---------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def served_model(library_dir: Path) -> Any:
    """The model ``--library LIBDIR`` serves: the small FLOPP library, the bundled Raman one beside it."""

    return classify_command.served_model([library_dir])


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample folders of particle files, two labelled sets (cut into blocks) and one unreadable file."""
    root = tmp_path_factory.mktemp("archive") / "lab"
    particles = load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")[:120]
    for i, spectrum in enumerate(particles):
        folder = root / "lake-a" / f"sample-{i // 40:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"particle-{i:03d}.csv").write_text(spectrum_csv(spectrum), encoding="utf-8")
    for name in ("flopp_frond2021", "openspecy_ftir_2023"):
        shutil.copytree(SHARED_DATA / name, root / "lake-b" / "sets" / name)
    (root / "lake-a" / "sample-000" / "broken.spc").write_bytes(b"\x00not a spectrum at all" * 8)
    return root


@pytest.fixture(scope="module")
def expected(archive: Path, served_model: Any) -> dict[tuple[str, int], dict[str, Any]]:
    """``mpwatch classify --format jsonl`` on the archive, with the same model: rows by (source, index)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(classify_command, "served_model", lambda folders: served_model)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert main(["classify", "--format", "jsonl", str(archive)]) == 0
    assert "broken.spc" in stderr.getvalue()
    rows = [json.loads(line) for line in stdout.getvalue().splitlines()]
    return {(r["source"], r["index"]): r for r in rows}


def answers(row: dict[str, Any]) -> tuple[Any, ...]:
    """What must be the same as ``classify`` gave: the decision and the hits exactly, the numbers to
    the last decimal written (r to 4 decimals). A labelled set is classified here in blocks and by
    ``classify`` whole, and FAISS's batched products differ in the last bits of float32."""
    hits = [(h["label"], h["ref_id"]) for h in row["hits"]]
    numbers = [row["confidence"], row.get("candidate_r") or 0.0, *(h["r"] for h in row["hits"])]
    return (row["status"], row["label"], row["candidate"], hits), numbers


def assert_same_as_classify(table: pa.Table, expected: dict[tuple[str, int], dict[str, Any]]) -> None:
    rows = [r for r in table.to_pylist() if r["status"] != "unreadable"]
    keys = Counter((r["source"], r["index"]) for r in rows)
    assert max(keys.values()) == 1, "a spectrum has more than one row"
    assert set(keys) == set(expected)
    for row in rows:
        decision, numbers = answers(row)
        same_decision, same_numbers = answers(expected[(row["source"], row["index"])])
        assert decision == same_decision, row["source"]
        assert numbers == pytest.approx(same_numbers, abs=1.01e-4), row["source"]
    unreadable = [r for r in table.to_pylist() if r["status"] == "unreadable"]
    assert [Path(r["source"]).name for r in unreadable] == ["broken.spc"]
    assert unreadable[0]["reason"] and unreadable[0]["sha256"]


class TestLocalCluster:
    def test_the_archive_once_with_the_same_answers_as_classify_and_a_second_run_adds_nothing(
        self, archive: Path, served_model: Any, expected: dict[tuple[str, int], Any], tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        seen: list[int] = []
        with cluster_client(workers=2, processes=False) as client:
            first = reclassify(
                client,
                served_model,
                [archive],
                out,
                task_spectra=TASK_SPECTRA,
                on_task=lambda o: seen.append(o.rows),
            )
            table = read_dataset(out)
            assert first.failed == [] and first.spectra == table.num_rows == len(expected) + 1 == sum(seen)
            assert first.by_status["unreadable"] == 1 and first.tasks == 15
            assert_same_as_classify(table, expected)
            assert set(table["library_hash"].to_pylist()) == {library_hash(served_model)}
            assert {"lab/lake-a/sample-000", "lab/lake-b/sets"} <= set(table["sample"].to_pylist())
            assert set(table["family"].to_pylist()) - {None}

            second = reclassify(client, served_model, [archive], out, task_spectra=TASK_SPECTRA)
        assert (second.tasks, second.spectra, second.skipped_sources) == (0, 0, 123)
        assert read_dataset(out).num_rows == table.num_rows

    def test_the_command_prints_its_summary_and_not_dasks_chatter(
        self, archive: Path, library_dir: Path, tmp_path: Path
    ) -> None:
        run = [sys.executable, "-m", "daemon.cli", "reclassify", str(archive / "lake-a")]
        run += ["--out", str(tmp_path / "out"), "--library", str(library_dir), "--workers", "1"]
        done = subprocess.run(run, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert "reclassified" in done.stdout and "spectra/s" in done.stdout
        assert "distributed." not in done.stderr, done.stderr  # a worker's start and stop are not news

    def test_a_maps_pixels_are_spectra_and_its_particles_a_second_dataset(
        self, served_model: Any, tmp_path: Path
    ) -> None:
        axis = np.arange(676.0, 4000.0, 8.0)
        pe = next(
            s
            for s in load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP")
            if s.metadata["label"] == "PE"
        )
        absorbance = -np.log10(np.clip(np.interp(axis, pe.wavenumbers, pe.values) / 100.0, 1e-4, None))
        absorbance = 0.5 * (absorbance - absorbance.min()) / np.ptp(absorbance)
        rng = np.random.default_rng(0)
        cube = (0.01 + rng.normal(0.0, 0.003, (16, 16, axis.size))).astype(np.float32)
        cube[4:10, 4:12] += absorbance.astype(np.float32)
        folder = tmp_path / "maps" / "filter-1"
        folder.mkdir(parents=True)
        header = envi_header_text(
            samples=16, lines=16, wavenumbers=axis, interleave="bip", pixel_size_um=(5.0, 5.0)
        )
        (folder / "map.hdr").write_text(header)
        (folder / "map.dat").write_bytes(cube.astype("<f4").tobytes())
        out = tmp_path / "out"
        with cluster_client(workers=1, processes=False) as client:
            summary = reclassify(client, served_model, [tmp_path / "maps"], out)
        spectra, particles = read_dataset(out), read_dataset(out, PARTICLES)
        assert summary.spectra == spectra.num_rows == 256  # read once, through its header
        # the background pixels were "low_quality 85 %" of a run's spectra: pixels are counted apart
        assert summary.pixels == 256 and not summary.by_status
        assert sum(summary.particles_by_status.values()) == particles.num_rows
        assert set(spectra["source"].to_pylist()) == {str(folder / "map.hdr")}
        assert particles.num_rows >= 1 and set(particles["sample"].to_pylist()) == {"maps/filter-1"}
        biggest = max(particles.to_pylist(), key=lambda p: p["n_pixels"])
        assert (biggest["label"], biggest["family"], biggest["area_um2"]) == (
            "PE",
            family_of("PE"),
            48 * 25.0,
        )


# ---------------------------------------------------------------------- a real cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def processes(*commands: list[str]) -> Any:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = [
        subprocess.Popen(c, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for c in commands
    ]
    try:
        yield started
    finally:
        for proc in reversed(started):  # the workers before their scheduler
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class TestEndToEnd:
    def test_a_worker_killed_mid_run_leaves_exactly_one_row_per_spectrum(
        self, archive: Path, library_dir: Path, expected: dict[tuple[str, int], Any], tmp_path: Path
    ) -> None:
        from distributed import Client

        address = f"tcp://127.0.0.1:{free_port()}"
        scheduler = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
        worker = [str(DASK), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
        worker += ["--preload", "engine.reclassify.work"]  # as deploy/dask/compose.yaml starts them
        out = tmp_path / "out"
        with processes([*scheduler, "--no-dashboard"], worker, worker) as (_, doomed, _):
            with Client(address, timeout=30) as client:
                wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=30)
            run = [sys.executable, "-m", "daemon.cli", "reclassify", str(archive), "--out", str(out)]
            run += [
                "--library",
                str(library_dir),
                "--scheduler",
                address,
                "--task-spectra",
                str(TASK_SPECTRA),
            ]
            with processes(run) as (cli,):
                wait_until(lambda: any(out.glob("spectra/*/*.parquet")), timeout=60, interval=0.02)
                assert cli.poll() is None, "the run ended before a worker could be killed"
                doomed.send_signal(signal.SIGKILL)
                killed_at = len(list(out.glob("spectra/*/*.parquet")))
                assert cli.wait(timeout=90) == 0
        table = read_dataset(out)
        assert killed_at < len(list(out.glob("spectra/*/*.parquet")))
        assert table.num_rows == len(expected) + 1
        assert_same_as_classify(table, expected)
        assert not list(out.glob("spectra/*/.*.tmp"))
