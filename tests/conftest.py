"""Shared fixtures: the real spectra under ../shared/data, beside the repository."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real labelled sets and vendor files live beside the repository, never inside it.
SHARED_DATA = Path(os.environ.get("MPWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
#: The command line, as the tests run it in a subprocess.
MPWATCH = [sys.executable, "-m", "daemon.cli"]
FORMATS = SHARED_DATA / "formats"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; set MPWATCH_SHARED_DATA")
    return SHARED_DATA


def wait_until(predicate: Callable[[], object], *, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@contextmanager
def daemon_process(config: Path, state: Path, log: Path, *, timeout: float = 60.0) -> Iterator[str]:
    """``mpwatch run --config CONFIG`` as a process, its standard error in ``log``: yields the URL it
    answers at (from ``STATE/daemon.json``), then stops it with SIGTERM and checks it exited 0."""
    with log.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            [*MPWATCH, "run", "--config", str(config)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            address = state / "daemon.json"
            wait_until(lambda: address.exists() or proc.poll() is not None, timeout=timeout)
            assert proc.poll() is None, log.read_text(encoding="utf-8")
            yield str(json.loads(address.read_text())["url"])
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
    assert code == 0, log.read_text(encoding="utf-8")


def ledger_count(db: Path, query: str) -> int:
    """A ``SELECT count(*)`` on a running daemon's ledger, read-only; 0 before the ledger exists."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(query).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet, or the schema is being written
        return 0


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real library on disk: FLOPP pristine (185 spectra), fast to build and load."""
    from engine.analysis.evaluate import library_from_sources

    lib = library_from_sources([f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP"])
    folder = tmp_path_factory.mktemp("library")
    lib.save(folder, message="FLOPP pristine")
    return folder


@pytest.fixture(scope="module")
def model(library_dir: Path) -> Any:
    """The served model on :func:`library_dir`, with a small ensemble."""
    from engine.core.library import ReferenceLibrary
    from engine.models.served import IdentificationModel, ModelConfig

    return IdentificationModel(ReferenceLibrary.load(library_dir), ModelConfig(n_synthetic=10, n_learners=10))


def spectrum_csv(s: Any) -> str:
    """A spectrum as an instrument-like CSV file with a %T unit header."""
    return "wavenumber,transmittance\n" + "".join(
        f"{x:.3f},{y:.5f}\n" for x, y in zip(s.wavenumbers, s.values, strict=True)
    )


@pytest.fixture(scope="module")
def particles() -> list[str]:
    """CSV texts of real environmental particles (FLOPP-e)."""
    from engine.analysis.evaluate import load_source

    return [spectrum_csv(s) for s in load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")[:120]]
