"""The helper processes: same outcomes as in-process, errors per item, a dead helper costs nothing.

Real processes (spawned as the daemon spawns them) on real FLOPP-e particles.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from daemon.pipeline.helpers import HelperPool, _chunks
from engine.analysis.evaluate import load_source
from engine.core.aging import aging_indices
from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import read_spectra
from tests.conftest import REPO_ROOT, SHARED_DATA, wait_until


@pytest.fixture(scope="module")
def polyethylene() -> list[Spectrum]:
    spectra = load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")
    return [s for s in spectra if s.metadata.get("label") in ("PE", "HDPE", "LDPE")][:6]


@pytest.fixture
def files(tmp_path: Path, polyethylene: list[Spectrum]) -> list[Path]:
    paths = []
    for i, s in enumerate(polyethylene):
        path = tmp_path / f"particle_{i}.csv"
        body = "".join(f"{x:.3f},{y:.5f}\n" for x, y in zip(s.wavenumbers, s.values, strict=True))
        path.write_text("wavenumber,transmittance\n" + body)
        paths.append(path)
    (tmp_path / "broken.csv").write_text("wavenumber,transmittance\n400,1\n402,oops,3\n")
    paths.insert(2, tmp_path / "broken.csv")
    paths.append(tmp_path / "vanished.csv")
    return paths


def helper_pids(pool: HelperPool) -> list[int]:
    executor = pool._executor
    assert executor is not None
    return [p.pid for p in executor._processes.values() if p.pid is not None]


def test_reading_in_helpers_matches_reading_in_process(files: list[Path]) -> None:
    with closing(HelperPool(2)) as pool:
        outcomes = pool.read([str(f) for f in files])
    assert len(outcomes) == len(files)
    for path, outcome in zip(files, outcomes, strict=True):
        if path.name == "broken.csv":
            assert isinstance(outcome, SpectrumError) and outcome.reason == "unreadable"
        elif path.name == "vanished.csv":
            assert isinstance(outcome, SpectrumError) and outcome.reason == "not_accessible"
        else:
            assert isinstance(outcome, list)
            expected = read_spectra(path)[0]
            np.testing.assert_array_equal(outcome[0].values, expected.values)
            assert outcome[0].metadata["sha256"] == expected.metadata["sha256"]


def test_aging_in_helpers_matches_aging_in_process(polyethylene: list[Spectrum]) -> None:
    with closing(HelperPool(2)) as pool:
        outcomes = pool.aging([(s, "PE") for s in polyethylene])
    expected = [aging_indices(s, "PE").as_dict() for s in polyethylene]
    assert outcomes == expected
    assert all(isinstance(o, dict) and o["carbonyl"] is not None for o in outcomes)


def test_a_killed_helper_costs_only_a_restart(files: list[Path]) -> None:
    paths = [str(f) for f in files]
    with closing(HelperPool(2)) as pool:
        assert not pool.ready
        pool.start()
        wait_until(lambda: pool.ready, timeout=60)
        first = pool.read(paths)
        victims = helper_pids(pool)
        os.kill(victims[0], signal.SIGKILL)
        again = pool.read(paths)  # the broken pool is noticed, the batch done in-process
        assert [type(o) for o in again] == [type(o) for o in first]
        after = pool.read(paths)  # and a fresh pool serves the next one
        assert [type(o) for o in after] == [type(o) for o in first]
        assert set(helper_pids(pool)).isdisjoint(victims)
        wait_until(lambda: pool.ready, timeout=60)  # restarted, so ready again


def test_a_program_whose_helper_died_still_exits(tmp_path: Path) -> None:
    """The pool stops the surviving helper of a broken pool; nothing is left to wait for at exit."""
    script = (
        "import os, signal\n"
        "from daemon.pipeline.helpers import HelperPool\n"
        "pool = HelperPool(2)\n"
        "pool.read(['a', 'b'])\n"
        "os.kill(next(iter(pool._executor._processes)), signal.SIGKILL)\n"
        "assert len(pool.read(['a', 'b'])) == 2\n"
        "pool.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_helpers_exit_when_the_daemon_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from daemon.pipeline.helpers import HelperPool\n"
        "pool = HelperPool(2)\n"
        "pool.read(['a', 'b'])\n"
        "print(*[p.pid for p in pool._executor._processes.values()], flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(Path(f"/proc/{pid}").exists() for pid in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in pids)

    wait_until(gone, timeout=15)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_zero_processes_runs_in_process(files: list[Path]) -> None:
    pool = HelperPool(0)
    assert pool.ready
    outcomes = pool.read([str(f) for f in files])
    assert pool._executor is None
    assert sum(isinstance(o, list) for o in outcomes) == len(files) - 2


@pytest.mark.parametrize("n_items,n_chunks", [(0, 2), (1, 4), (5, 2), (7, 3), (64, 2)])
def test_chunks_keep_order_and_cover_everything(n_items: int, n_chunks: int) -> None:
    items = list(range(n_items))
    chunks = _chunks(items, n_chunks)
    assert [x for c in chunks for x in c] == items
    assert len(chunks) == max(1, min(n_chunks, n_items))
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1


def test_negative_processes_are_refused() -> None:
    with pytest.raises(ValueError, match="processes"):
        HelperPool(-1)
