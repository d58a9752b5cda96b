"""Daemon latency while a CNN challenger retrains: the p95 must stay within 2x idle.

Runs ``mpwatch run`` as a subprocess on the bundled library with the CNN
enabled (``cnn.enabled``, ``retrain_after_confirmations: 1``, the schedule a
year away), and drops real FLOPP-e particles into its inbox at an
instrument's pace (``--rate`` files per second, as in ``bench_daemon``),
after ``WARMUP`` files that are not measured:

1. **idle**: ``--files`` files, no retrain running;
2. one result is confirmed through ``POST /api/confirm`` (``add: true``), so
   the scheduler starts ``python -m daemon.growth.challenger``; the benchmark waits
   for that child of the daemon to appear and checks it runs at nice 10;
3. **retrain**: ``--files`` more files while the challenger trains. The
   challenger is checked alive before and after the window; its CPU time over
   the window shows it was really working, not waiting (the daemon's, helper
   processes included, is recorded beside it). A run whose retrain
   ended before the window did is an error, not a result.

Latency is the ledger's result time - arrival in the inbox - the stability
window (``quiet_seconds``), per file. Each run reports median and p95 idle and
during the retrain, the p95 ratio and the retrain's duration (the challenger
process's lifetime, and the seconds its own report gives); the summary is the
median over ``--repeats`` runs (each a fresh daemon), written to
``--out``/retrain_latency.json.

    python -m benchmarks.bench_retrain_latency --repeats 3 --out artifacts/bench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_daemon import QUIET_SECONDS, daemon_process, drop, http_json, wait_done, write_particles

#: The target: p95 latency during a retrain over idle p95.
MAX_RATIO = 2.0
#: Files classified before the idle window, not measured: the first ones pay for lazy set-up.
WARMUP = 40
#: Clock ticks per second of /proc/PID/stat's CPU times.
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Daemon:
    """A daemon subprocess: its process, ledger, inbox, state folder and HTTP base URL."""

    process: subprocess.Popen[bytes]
    ledger: Path
    inbox: Path
    state: Path
    url: str


@contextlib.contextmanager
def cnn_daemon(root: Path, max_epochs: int) -> Iterator[Daemon]:
    """A daemon with the CNN challenger enabled, ready (``/readyz``), inbox empty; stopped after."""
    inbox, state = root / "inbox", root / "state"
    inbox.mkdir()
    cnn = {
        "enabled": True,
        "retrain_after_confirmations": 1,
        "retrain_hours": 24 * 365,
        "max_epochs": max_epochs,
    }
    with daemon_process(root, inbox, state, cnn=cnn) as (process, url):
        yield Daemon(process, state / "ledger.sqlite3", inbox, state, url)


def children(pid: int) -> dict[int, list[bytes]]:
    """The live child processes of ``pid`` and their command lines (a zombie's is empty)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:  # the parent's pid
                cmdline = (stat.parent / "cmdline").read_bytes()
                if cmdline:
                    found[int(stat.parent.name)] = cmdline.split(b"\0")
    return found


def challenger_pid(daemon_pid: int) -> int | None:
    """The running ``daemon.growth.challenger`` child of the daemon, if any."""
    found = (pid for pid, argv in children(daemon_pid).items() if b"daemon.growth.challenger" in argv)
    return next(found, None)


def daemon_cpu_s(daemon_pid: int, challenger: int) -> float:
    """CPU seconds of the daemon and its children (helper processes) but the challenger."""
    pids = [daemon_pid, *(pid for pid in children(daemon_pid) if pid != challenger)]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += process_stat(pid)["cpu_s"]
    return total


def process_stat(pid: int) -> dict[str, float]:
    """CPU seconds (user + system), nice value and thread count of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state ppid ... utime(12) stime(13) ... nice(17) num_threads(18), 0-based.
    return {
        "cpu_s": (int(fields[11]) + int(fields[12])) / TICKS,
        "nice": float(fields[16]),
        "threads": float(fields[17]),
    }


def done_times(db: Path) -> dict[str, float]:
    """The first result time of each file in the ledger, by file name."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT f.path, min(r.created_at) FROM files f "
            "JOIN results r ON r.sha256 = f.sha256 GROUP BY f.path"
        ).fetchall()
    return {Path(path).name: float(done) for path, done in rows}


def latencies(done: dict[str, float], arrived: dict[str, float]) -> dict[str, float]:
    """Median and p95 of the latency beyond the stability window of the files that ``arrived``."""
    latency = np.array([done[name] - at - QUIET_SECONDS for name, at in arrived.items() if name in done])
    return {
        "files": float(latency.size),
        "median_s": float(np.median(latency)),
        "p95_s": float(np.percentile(latency, 95)),
    }


def trigger_retrain(daemon: Daemon, *, timeout: float = 60.0) -> int:
    """Confirm one result into the library (the challenger's trigger); the challenger's pid."""
    results = http_json(f"{daemon.url}/api/results?status=known&limit=1")
    if not results:
        raise RuntimeError("no known result to confirm")
    http_json(
        f"{daemon.url}/api/confirm",
        {"result_id": results[0]["result_id"], "label": results[0]["label"], "add": True},
    )
    deadline = time.monotonic() + timeout
    while (pid := challenger_pid(daemon.process.pid)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no challenger process {timeout:.0f} s after the confirmation")
        time.sleep(0.05)
    return pid


def run(files: int, rate: float, max_epochs: int, settle: float) -> dict[str, Any]:
    """One daemon: idle window, retrain trigger, window during the retrain, wait for the retrain's end."""
    with tempfile.TemporaryDirectory() as tmp, cnn_daemon(Path(tmp), max_epochs) as daemon:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        particles = write_particles(staging, WARMUP + 2 * files)
        drop(particles[:WARMUP], daemon.inbox, rate=rate)  # first files pay for lazy imports and caches
        wait_done(daemon.ledger, WARMUP, timeout=120)
        if challenger_pid(daemon.process.pid) is not None:
            raise RuntimeError("a challenger runs before it was asked for: the idle window would not be idle")
        idle = drop(particles[WARMUP : WARMUP + files], daemon.inbox, rate=rate)
        wait_done(daemon.ledger, WARMUP + files, timeout=120)

        pid = trigger_retrain(daemon)
        started = time.monotonic()
        time.sleep(settle)  # past the interpreter's start and torch's import: training proper
        if challenger_pid(daemon.process.pid) != pid:
            raise RuntimeError("the challenger ended before the measured window began")
        before = process_stat(pid)
        daemon_before = daemon_cpu_s(daemon.process.pid, pid)
        daemon_children = len(children(daemon.process.pid)) - 1  # helpers (and their resource tracker)
        window_started = time.monotonic()
        busy = drop(particles[WARMUP + files :], daemon.inbox, rate=rate)
        wait_done(daemon.ledger, WARMUP + 2 * files, timeout=120)
        window_s = time.monotonic() - window_started
        if challenger_pid(daemon.process.pid) != pid:
            raise RuntimeError("the challenger ended inside the measured window: use more files or epochs")
        after = process_stat(pid)
        daemon_cpu = daemon_cpu_s(daemon.process.pid, pid) - daemon_before

        while challenger_pid(daemon.process.pid) == pid:
            time.sleep(0.2)
        retrain_s = time.monotonic() - started
        report_path = daemon.state / "cnn" / "challenger.json"
        deadline = time.monotonic() + 30
        while not report_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        done = done_times(daemon.ledger)
        quiet, loaded = latencies(done, idle), latencies(done, busy)
    return {
        "idle": quiet,
        "retrain": loaded,
        "p95_ratio": loaded["p95_s"] / quiet["p95_s"],
        "median_ratio": loaded["median_s"] / quiet["median_s"],
        "window_s": window_s,
        "challenger_cpu_share_in_window": (after["cpu_s"] - before["cpu_s"]) / window_s,
        "daemon_cpu_share_in_window": daemon_cpu / window_s,
        "daemon_child_processes": float(daemon_children),
        "challenger_nice": after["nice"],
        "challenger_threads": after["threads"],
        "retrain_seconds_process": retrain_s,
        "retrain_seconds_report": float(report.get("seconds", float("nan"))),
        "retrain_epochs": float(report.get("epochs", float("nan"))),
        "retrain_training_spectra": float(report.get("n_train", float("nan"))),
    }


FLAT_KEYS = (
    ("idle", "median_s"),
    ("idle", "p95_s"),
    ("retrain", "median_s"),
    ("retrain", "p95_s"),
)


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over runs of every number a run reports."""
    summary = {f"{phase}_{key}": float(np.median([r[phase][key] for r in runs])) for phase, key in FLAT_KEYS}
    for key, value in runs[0].items():
        if isinstance(value, float):
            summary[key] = float(np.median([r[key] for r in runs]))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=200, help="files per window (idle, then retrain)")
    parser.add_argument("--rate", type=float, default=20.0, help="files per second")
    parser.add_argument("--repeats", type=int, default=3, help="runs, each on a fresh daemon")
    parser.add_argument("--max-epochs", type=int, default=30, help="the challenger's cnn.max_epochs")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between retrain start and window")
    parser.add_argument("--out", default="artifacts/bench")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    runs = []
    for i in range(args.repeats):
        runs.append(run(args.files, args.rate, args.max_epochs, args.settle))
        r = runs[-1]
        print(
            f"run {i + 1}: p95 idle {1000 * r['idle']['p95_s']:.0f} ms, during retrain "
            f"{1000 * r['retrain']['p95_s']:.0f} ms (x{r['p95_ratio']:.2f}); retrain "
            f"{r['retrain_seconds_process']:.0f} s",
            flush=True,
        )
    summary = summarise(runs)
    met = summary["p95_ratio"] <= MAX_RATIO
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrain_latency.json").write_text(
        json.dumps(
            {
                "benchmark": "bench_retrain_latency",
                "files_per_window": args.files,
                "rate_per_s": args.rate,
                "max_epochs": args.max_epochs,
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "runs": runs,
                "median": summary,
                "target_p95_ratio": MAX_RATIO,
                "target_met": met,
            },
            indent=2,
        )
    )
    print(
        f"latency beyond the {QUIET_SECONDS} s stability window at {args.rate:g} files/s, "
        f"{args.files} files per window, median of {args.repeats} runs"
    )
    print(f"  {'':24s}{'median ms':>10s}{'p95 ms':>10s}")
    for phase in ("idle", "retrain"):
        median, p95 = summary[f"{phase}_median_s"], summary[f"{phase}_p95_s"]
        print(f"  {phase:24s}{1000 * median:10.1f}{1000 * p95:10.1f}")
    print(f"  p95 ratio {summary['p95_ratio']:.2f} (target <= {MAX_RATIO:g}: {'met' if met else 'NOT met'})")
    print(
        f"  retrain: {summary['retrain_seconds_process']:.0f} s ({summary['retrain_seconds_report']:.0f} s "
        f"training and evaluation), nice {summary['challenger_nice']:.0f}; in the window the challenger "
        f"used {100 * summary['challenger_cpu_share_in_window']:.0f} % of a core, the daemon and its "
        f"helpers {100 * summary['daemon_cpu_share_in_window']:.0f} %"
    )
    print(f"wrote {out / 'retrain_latency.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
