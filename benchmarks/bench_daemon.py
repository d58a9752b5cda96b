"""Daemon benchmark: files dropped into the inbox through to their results.

Runs ``mpwatch run`` as a subprocess on the bundled library, drops N
instrument-like CSV files (real FLOPP-e particles, each made unique) into its
inbox as fast as the disk takes them, and reads the ledger:

- sustained throughput: files per second between the 10th and 90th percentile
  of completion times;
- latency beyond the stability window: result time - arrival in the inbox -
  quiet_seconds, median and p95 (in the burst it includes the queue; the
  at-pace run shows the latency of one instrument writing 20 files a second);
- peak RSS (VmHWM) of the daemon process, and of the daemon plus its helper
  processes (a sum of peaks, so an upper bound);
- the share of CPU time the hypervisor stole during the burst: on a shared
  virtual machine a run with much stolen time measures the neighbours too.

The baseline in the same run is the engine alone: read + classify the same
files in one process, in batches, with no watcher and no ledger. The ratio
shows what the service costs on top of the science. Each repeat also runs the
daemon with its CNN member off (``cnn.enabled: false``, as before the CNN was
served by default) right after the default one: ``ratio_to_without_cnn`` is
the default daemon's throughput over that one's.

    python -m benchmarks.bench_daemon --files 2000 --out artifacts/bench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from engine.analysis.evaluate import load_source
from engine.core.library import DEFAULT_LIBRARY, ReferenceLibrary
from engine.io import read_spectra
from engine.models.served import IdentificationModel

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
QUIET_SECONDS = 0.2


def write_particles(folder: Path, n: int) -> list[Path]:
    spectra = load_source(f"{SHARED / 'flopp_frond2021'}@library=FLOPP-e")
    paths = []
    for i in range(n):
        s = spectra[i % len(spectra)]
        y = s.values.copy()
        y[-1] += 1e-4 * (i + 1)  # unique content, same spectrum
        path = folder / f"particle_{i:05d}.csv"
        body = "".join(f"{a:.3f},{b:.5f}\n" for a, b in zip(s.wavenumbers, y, strict=True))
        path.write_text("wavenumber,transmittance\n" + body)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET ``url``, or POST ``body`` as JSON; the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@contextlib.contextmanager
def daemon_process(
    root: Path, inbox: Path, state: Path, **extra: Any
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``mpwatch run`` on ``inbox`` as a subprocess, yielded once ``/readyz`` answers ready.

    ``extra`` are further configuration sections. Yields (process, base URL); stops it after.
    """
    port = free_port()
    config = {
        "inboxes": [{"path": str(inbox), "name": "bench"}],
        "state_dir": str(state),
        "watch": {"quiet_seconds": QUIET_SECONDS, "rescan_interval_seconds": 3600},
        "http": {"port": port},
        "logging": {"level": "WARNING"},
        **extra,
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(root / "config.yaml")],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode} while starting")
            with contextlib.suppress(OSError, ValueError):
                if http_json(f"{url}/readyz").get("ready"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon was not ready within 300 s")
            time.sleep(0.2)
        yield process, url
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextlib.contextmanager
def running_daemon(
    root: Path, n_files: int, **extra: Any
) -> Iterator[tuple[subprocess.Popen[bytes], Path, list[Path], Path]]:
    """A ready daemon subprocess with an empty inbox; yields (process, ledger, files, inbox)."""
    staging, inbox, state = root / "staging", root / "inbox", root / "state"
    staging.mkdir()
    inbox.mkdir()
    files = write_particles(staging, n_files)
    with daemon_process(root, inbox, state, **extra) as (process, _):
        yield process, state / "ledger.sqlite3", files, inbox


def wait_done(db: Path, n_files: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            done = conn.execute(
                "SELECT count(*) FROM files WHERE state IN ('done','quarantined')"
            ).fetchone()[0]
        if done >= n_files:
            return
        time.sleep(0.2)


def result_times(db: Path, arrived: dict[str, float]) -> list[tuple[float, float]]:
    """(time the file arrived in the inbox, first result time) per classified file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT f.path, min(r.created_at) FROM files f "
            "JOIN results r ON r.sha256 = f.sha256 GROUP BY f.path"
        ).fetchall()
    return [(arrived[Path(path).name], done) for path, done in rows]


def drop(files: list[Path], inbox: Path, *, rate: float | None = None) -> dict[str, float]:
    """Move files into the inbox (an instrument's write-then-rename); return when each arrived."""
    arrived = {}
    for f in files:
        f.rename(inbox / f.name)
        arrived[f.name] = time.time()
        if rate:
            time.sleep(1.0 / rate)
    return arrived


def engine_baseline(files: list[Path], *, batch: int = 64) -> float:
    """Files per second for read + classify in-process, no daemon."""
    model = IdentificationModel(ReferenceLibrary.load(DEFAULT_LIBRARY))
    started = time.perf_counter()
    for i in range(0, len(files), batch):
        spectra = [s for f in files[i : i + batch] for s in read_spectra(f)]
        model.classify(spectra)
    return len(files) / (time.perf_counter() - started)


def steal_clock() -> tuple[int, int]:
    """(CPU time the hypervisor stole, all CPU time) so far, in clock ticks, from /proc/stat.

    On a shared virtual machine another guest can take a large share of the cores;
    a run with much stolen time measures the neighbours as much as the daemon.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


def stolen_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time stolen between two :func:`steal_clock` readings."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1)


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def family_hwm_mb(pid: int) -> float:
    """Peak RSS of the daemon plus its helper processes (a sum of peaks: an upper bound)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return vm_hwm_mb(pid) + sum(vm_hwm_mb(int(child)) for child in children)


def run(n_files: int, **extra: Any) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_daemon(Path(tmp), n_files, **extra) as (proc, db, files, inbox),
    ):
        baseline = engine_baseline(files)
        idle_rss = vm_hwm_mb(proc.pid)
        clock = steal_clock()
        arrived = drop(files, inbox)
        wait_done(db, n_files, timeout=600)
        stolen = stolen_fraction(clock, steal_clock())
        peak_rss = vm_hwm_mb(proc.pid)
        peak_rss_helpers = family_hwm_mb(proc.pid)
        rows = result_times(db, arrived)
    done_at = np.sort([done for _, done in rows])
    lo, hi = np.percentile(done_at, [10, 90])
    middle = (done_at >= lo) & (done_at <= hi)
    throughput = middle.sum() / max(hi - lo, 1e-9)
    latency = np.array([done - arrival - QUIET_SECONDS for arrival, done in rows])
    return {
        "files": float(len(rows)),
        "throughput_files_per_s": float(throughput),
        "engine_baseline_files_per_s": float(baseline),
        "ratio_to_engine": float(throughput / baseline),
        "latency_beyond_quiet_median_s": float(np.median(latency)),
        "latency_beyond_quiet_p95_s": float(np.percentile(latency, 95)),
        "rss_idle_mb": idle_rss,
        "rss_peak_mb": peak_rss,
        "rss_peak_with_helpers_mb": peak_rss_helpers,
        "cpu_stolen_fraction": stolen,
    }


def trickle(n_files: int, rate: float, **extra: Any) -> dict[str, float]:
    """Latency at an instrument's pace: files arrive at ``rate`` per second."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_daemon(Path(tmp), n_files, **extra) as (_, db, files, inbox),
    ):
        arrived = drop(files, inbox, rate=rate)
        wait_done(db, n_files, timeout=120)
        rows = result_times(db, arrived)
    latency = np.array([done - arrival - QUIET_SECONDS for arrival, done in rows])
    return {
        "files": float(len(rows)),
        "rate_per_s": rate,
        "latency_beyond_quiet_median_s": float(np.median(latency)),
        "latency_beyond_quiet_p95_s": float(np.percentile(latency, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trickle", type=int, default=200, help="files for the at-pace latency run")
    parser.add_argument("--rate", type=float, default=20.0, help="files per second in the at-pace run")
    parser.add_argument("--out", default="artifacts/bench")
    args = parser.parse_args()
    runs, runs_without_cnn = [], []
    for _ in range(args.repeats):
        runs.append(run(args.files))
        runs_without_cnn.append(run(args.files, cnn={"enabled": False}))
        plain = runs_without_cnn[-1]["throughput_files_per_s"]
        runs[-1]["ratio_to_without_cnn"] = runs[-1]["throughput_files_per_s"] / plain
    summary = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
    without_cnn = {key: float(np.median([r[key] for r in runs_without_cnn])) for key in runs_without_cnn[0]}
    summary_trickle = trickle(args.trickle, args.rate)
    trickle_without_cnn = trickle(args.trickle, args.rate, cnn={"enabled": False})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "daemon.json").write_text(
        json.dumps(
            {
                "burst_runs": runs,
                "burst_median": summary,
                "burst_runs_without_cnn": runs_without_cnn,
                "burst_median_without_cnn": without_cnn,
                "at_pace": summary_trickle,
                "at_pace_without_cnn": trickle_without_cnn,
            },
            indent=2,
        )
    )
    print(f"daemon benchmark, burst of {args.files} files, median of {args.repeats} runs")
    for key, value in summary.items():
        print(f"  {key:34s} {value:10.3f}")
    shown = ("throughput_files_per_s", "latency_beyond_quiet_p95_s", "rss_peak_mb")
    shown += ("rss_peak_with_helpers_mb",)
    for key in shown:
        print(f"  without the CNN: {key:27s} {without_cnn[key]:10.3f}")
    for key, unit, scale in [
        ("throughput_files_per_s", "files/s", 1.0),
        ("engine_baseline_files_per_s", "files/s", 1.0),
        ("cpu_stolen_fraction", "%", 100.0),
    ]:
        print(f"  each run: {key:28s} " + " / ".join(f"{r[key] * scale:.0f}" for r in runs) + f" {unit}")
    print(f"at an instrument's pace ({args.rate:g} files/s, {args.trickle} files)")
    for key, value in summary_trickle.items():
        print(f"  {key:34s} {value:10.3f}  (without the CNN {trickle_without_cnn[key]:.3f})")


if __name__ == "__main__":
    main()
