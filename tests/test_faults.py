"""Faults that used to end the daemon or break a promise, each reproduced as a user meets it.

- a file name that is not UTF-8 killed the daemon, at every start while it was there;
- an inbox deleted and recreated was never watched again (and one missing at start is
  now waited for, with a warning);
- a full disk ended the daemon from the admission's commit; now it stays up, says so in
  /readyz and ``mpwatch_storage_ok``, retries with backoff and loses nothing;
- a taken metrics port: one line naming the port, exit code 2 (was a 28-line traceback);
- a second daemon on the same state folder: refused with one line (it took the first
  one's files over as "interrupted");
- a flat spectrum with one spike: a finite S/N, valid JSON (was Infinity);
- ``mpwatch classify ... | head``: no BrokenPipe traceback;
- SIGHUP with command-line overrides ended the daemon ("unknown inbox root"); a reload
  now keeps the overrides and adds and removes inboxes with their metrics;
- the API: a negative limit or a result id past 64 bits gave a 500, an unknown status was
  ignored, and ``Origin: null`` was let through.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest

from daemon.config import load_config
from daemon.service import Daemon
from daemon.store.lock import StateDirInUse
from engine.models.served import IdentificationModel
from tests.conftest import MPWATCH, wait_until
from tests.test_daemon import Running, write_config


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def test_a_taken_metrics_port_is_one_line_and_exit_2(tmp_path: Path, library_dir: Path) -> None:
    config = write_config(tmp_path, library_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*MPWATCH, "run", "--config", str(config), "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("mpwatch: ") and str(port) in lines[-1]
    assert "Traceback" not in done.stderr


def test_a_second_daemon_on_the_same_state_dir_is_refused(
    tmp_path: Path, library_dir: Path, model: IdentificationModel
) -> None:
    config = load_config(write_config(tmp_path, library_dir))
    with Running(Daemon(config, model=model)):
        second = Daemon(config, model=model)
        with pytest.raises(StateDirInUse, match="in use by another mpwatch daemon"):
            second.run()
        done = subprocess.run(
            [*MPWATCH, "run", "--config", str(tmp_path / "config.yaml"), "--metrics-port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("mpwatch: state_dir")
    third = Daemon(config, model=model)  # the lock goes with the daemon that held it
    with Running(third) as d:
        wait_until(lambda: d.http.running)


def test_a_flat_spectrum_with_one_spike_is_valid_json(tmp_path: Path) -> None:
    x = np.arange(650.0, 4000.0, 2.0)
    y = np.full(x.size, 50.0)
    y[x.size // 2] = 90.0
    path = tmp_path / "spike.csv"
    path.write_text("wavenumber,absorbance\n" + "".join(f"{a},{b}\n" for a, b in zip(x, y, strict=True)))
    done = subprocess.run([*MPWATCH, "classify", str(path)], capture_output=True, text=True, check=True)
    (row,) = [json.loads(line, parse_constant=_no_constants) for line in done.stdout.splitlines()]
    assert np.isfinite(row["quality"]["snr"])
    assert row["status"] == "low_quality"


def test_classify_into_a_closed_pipe_prints_no_traceback(shared_data: Path) -> None:
    folder = shared_data / "flopp_frond2021"
    shell = f"{sys.executable} -m daemon.cli classify --format jsonl {folder} | head -1"
    done = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=300, check=False)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def _request(port: int, path: str, *, body: dict[str, object] | None = None, **headers: str) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers={"Content-Type": "application/json", **headers} if data else headers,
        method="POST" if data else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except urllib.error.URLError:
        return 0  # nobody listening (yet)


def test_the_api_answers_bad_numbers_and_foreign_origins_with_4xx(
    tmp_path: Path, library_dir: Path, model: IdentificationModel
) -> None:
    config = load_config(write_config(tmp_path, library_dir))
    with Running(Daemon(config, model=model)) as d:
        port = d.http.port
        assert _request(port, "/api/results?limit=5") == 200
        for query in ("limit=-1", "limit=0", "limit=100000", "status=bogus", "since=yesterday"):
            assert _request(port, f"/api/results?{query}") == 400, query
        assert _request(port, "/api/reviews?limit=-1") == 400
        assert _request(port, "/api/confirm", body={"result_id": 10**30, "label": "PE"}) == 400
        assert _request(port, "/api/confirm", body={"result_id": 1, "label": "PE"}, Origin="null") == 403


def test_results_lists_quarantined_files_with_their_reasons(
    tmp_path: Path, library_dir: Path, model: IdentificationModel
) -> None:
    config = load_config(write_config(tmp_path, library_dir))
    with Running(Daemon(config, model=model)) as d:
        (tmp_path / "inbox" / "cut-short.csv").write_text("wavenumber;absorbance\n1234.5;")
        (tmp_path / "inbox" / "random.spa").write_bytes(bytes(range(256)) * 4)
        wait_until(lambda: d.ledger.counts().get("quarantined", 0) == 2)
    command = [*MPWATCH, "results", "--state", str(tmp_path / "state"), "--status", "quarantined"]
    done = subprocess.run([*command, "--format", "jsonl"], capture_output=True, text=True, check=True)
    rows = {Path(row["source"]).name: row for row in map(json.loads, done.stdout.splitlines())}
    assert set(rows) == {"cut-short.csv", "random.spa"}
    assert all(row["state"] == "quarantined" and row["reason"] for row in rows.values())
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row["updated_at"]) for row in rows.values()
    )
    table = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "cut-short.csv" in table and "quarantined" in table


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sighup_keeps_the_command_line_and_the_daemon(
    tmp_path: Path, library_dir: Path, particles: list[str]
) -> None:
    """A reload with an unchanged file and command-line overrides used to end the daemon."""
    config = write_config(tmp_path, library_dir)
    inbox, state, port = tmp_path / "override-inbox", tmp_path / "override-state", _free_port()
    inbox.mkdir()
    command = [*MPWATCH, "run", "--config", str(config), "--inbox", str(inbox), "--state", str(state)]
    process = subprocess.Popen([*command, "--metrics-port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _request(port, "/readyz") == 200, timeout=120)
        process.send_signal(signal.SIGHUP)
        (inbox / "after-reload.csv").write_text(particles[0])
        wait_until(lambda: (state / "ledger.sqlite3").exists() and _done_files(state) == 1, timeout=60)
        assert process.poll() is None and _request(port, "/healthz") == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert "unknown inbox root" not in stderr and "Traceback" not in stderr, stderr[-3000:]


def _done_files(state: Path) -> int:
    from daemon.store.ledger import Ledger

    with Ledger.in_state_dir(state) as ledger:
        return int(ledger.counts().get("done", 0))


def test_a_reload_adds_and_removes_inboxes_and_their_metrics(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
) -> None:
    path = write_config(tmp_path, library_dir)
    daemon = Daemon(load_config(path), config_path=path, model=model)
    with Running(daemon) as d:
        second = tmp_path / "second"
        second.mkdir()
        settings = yaml.safe_load(path.read_text())
        settings["inboxes"] = [{"path": str(second), "name": "second"}]
        path.write_text(yaml.safe_dump(settings))
        d.reload.set()
        wait_until(lambda: [i.name for i in d.config.inboxes] == ["second"])
        (second / "p.csv").write_text(particles[1])
        wait_until(lambda: d.ledger.counts().get("done", 0) == 1)
        exposition = generate_latest(d.registry).decode()
        assert 'mpwatch_watcher_up{root="second"} 1.0' in exposition
        assert 'root="lab"' not in exposition


def test_a_file_name_that_is_not_utf8_is_classified(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
) -> None:
    """Such a name (an instrument PC with another code page) used to kill the daemon at every start."""
    name = os.fsdecode(b"particle-\xe9\xff.csv")  # Latin-1 bytes, not UTF-8
    config = load_config(write_config(tmp_path, library_dir))
    (tmp_path / "inbox" / name).write_text(particles[2])
    for _ in range(2):  # and the daemon starts again with the file still there
        with Running(Daemon(config, model=model)) as d:
            wait_until(lambda: d.ledger.counts().get("done", 0) == 1)
            (record,) = d.ledger.files()
            (result,) = d.ledger.results()
    assert os.fsencode(record.path) == os.fsencode(tmp_path / "inbox" / name)
    assert Path(result.source_path).exists()
    done = subprocess.run(
        [*MPWATCH, "results", "--state", str(tmp_path / "state"), "--format", "jsonl"],
        capture_output=True,
        text=True,
        check=True,
    )
    (row,) = map(json.loads, done.stdout.splitlines())
    assert os.fsencode(row["source"]).endswith(b"particle-\xe9\xff.csv")
    for form in ("table", "csv"):
        command = [*MPWATCH, "results", "--state", str(tmp_path / "state"), "--format", form]
        shown = subprocess.run(command, capture_output=True, check=False)
        assert shown.returncode == 0 and b"particle-\xe9\xff" in shown.stdout, shown.stderr


def test_a_lost_inbox_is_watched_again_when_it_returns(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
) -> None:
    """Deleted and recreated, an inbox used to stay unwatched until the next full rescan."""
    config = load_config(write_config(tmp_path, library_dir))  # rescans once an hour
    inbox = tmp_path / "inbox"
    with Running(Daemon(config, model=model)) as d:
        wait_until(lambda: _request(d.http.port, "/readyz") == 200, timeout=60)
        shutil.rmtree(inbox)
        wait_until(lambda: not d.readiness()["watchers_up"]["lab"], timeout=30)
        assert _request(d.http.port, "/readyz") == 503
        inbox.mkdir()
        wait_until(lambda: d.readiness()["watchers_up"]["lab"], timeout=30)
        (inbox / "after.csv").write_text(particles[3])
        wait_until(lambda: d.ledger.counts().get("done", 0) == 1, timeout=30)
        wait_until(lambda: _request(d.http.port, "/readyz") == 200, timeout=60)


def test_an_inbox_missing_at_start_is_waited_for(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
) -> None:
    config = load_config(write_config(tmp_path, library_dir))
    inbox = tmp_path / "inbox"
    inbox.rmdir()
    daemon = Daemon(config, model=model)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: daemon.http.running, timeout=30)
        assert not daemon.readiness()["watchers_up"]["lab"]
        inbox.mkdir()
        (inbox / "late.csv").write_text(particles[4])
        wait_until(lambda: daemon.ledger.counts().get("done", 0) == 1, timeout=30)
    finally:
        daemon.stop.set()
        thread.join(timeout=60)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs, as a state folder that can fill up; unmounted after."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs to fill (root needed): {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; return the filler file."""
    filler = folder / "filler.bin"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_survived_and_nothing_is_lost(
    small_disk: Path, tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
) -> None:
    """The disk full used to end the daemon from the admission's commit."""
    path = write_config(tmp_path, library_dir, state_dir=str(small_disk / "state"))
    with Running(Daemon(load_config(path), model=model)) as d:
        wait_until(lambda: _request(d.http.port, "/readyz") == 200, timeout=60)
        filler = _fill(small_disk)
        for i in range(5):
            (tmp_path / "inbox" / f"while-full-{i}.csv").write_text(particles[10 + i])
        wait_until(lambda: not d.readiness()["storage_ok"], timeout=30)
        assert _request(d.http.port, "/readyz") == 503 and d.http.running
        assert "mpwatch_storage_ok 0.0" in generate_latest(d.registry).decode()
        filler.unlink()
        wait_until(lambda: d.ledger.counts().get("done", 0) == 5, timeout=90)
        assert d.readiness()["storage_ok"]
        assert "mpwatch_storage_ok 1.0" in generate_latest(d.registry).decode()
        assert len({r.source_path for r in d.ledger.results(limit=100)}) == 5


def test_a_rewritten_file_has_one_current_result(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
) -> None:
    """Its old results stayed beside the new ones and inflated counts and reports."""
    config = load_config(write_config(tmp_path, library_dir))
    target = tmp_path / "inbox" / "particle.csv"
    with Running(Daemon(config, model=model)) as d:
        target.write_text(particles[5])
        wait_until(lambda: len(d.ledger.results()) == 1)
        first = d.ledger.results()[0].sha256
        target.write_text(particles[6])  # the instrument writes the file again
        wait_until(lambda: [r.sha256 for r in d.ledger.results()] not in ([], [first]))
        d.exporter.flush(now=d.clock(), force=True)
        (current,) = d.ledger.results()
        assert len(d.ledger.results(superseded=True)) == 2
    lines = (tmp_path / "state" / "results" / "lab" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["sha256"] for line in lines] == [current.sha256]
    summary = (tmp_path / "state" / "results" / "lab" / "summary.csv").read_text().splitlines()
    assert sum(int(row.split(",")[2]) for row in summary[1:]) == 1, summary


def test_a_file_rewritten_as_a_copy_of_another_has_one_current_result(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str]
) -> None:
    """b.csv rewritten with a.csv's bytes kept its old result: summary.csv counted a class no file held."""
    config = load_config(write_config(tmp_path, library_dir))
    a, b = tmp_path / "inbox" / "a.csv", tmp_path / "inbox" / "b.csv"
    with Running(Daemon(config, model=model)) as d:
        a.write_text(particles[5])
        b.write_text(particles[6])
        wait_until(lambda: len(d.ledger.results()) == 2)
        b.write_text(particles[5])  # the same bytes as a.csv
        wait_until(lambda: getattr(d.ledger.file(b), "duplicate_of", None) is not None)
        wait_until(lambda: len(d.ledger.results()) == 1)
        d.exporter.flush(now=d.clock(), force=True)
        (current,) = d.ledger.results()
    assert current.source_path == str(a)
    summary = (tmp_path / "state" / "results" / "lab" / "summary.csv").read_text().splitlines()
    assert sum(int(row.split(",")[2]) for row in summary[1:]) == 1, summary


@pytest.mark.parametrize("polling", [False, True])
def test_links_to_folders_are_not_followed(
    tmp_path: Path, library_dir: Path, model: IdentificationModel, particles: list[str], *, polling: bool
) -> None:
    """A link back into the inbox recorded every file again under each of its names (polling)."""
    inbox = [
        {"path": str(tmp_path / "inbox"), "name": "lab", "polling": polling, "poll_interval_seconds": 0.2}
    ]
    config = load_config(write_config(tmp_path, library_dir, inboxes=inbox))
    sample, outside = tmp_path / "inbox" / "sample", tmp_path / "outside"
    sample.mkdir()
    outside.mkdir()
    (sample / "back").symlink_to(tmp_path / "inbox")
    (tmp_path / "inbox" / "elsewhere").symlink_to(outside)
    (outside / "not-ours.csv").write_text(particles[7])
    with Running(Daemon(config, model=model)) as d:
        (sample / "a.csv").write_text(particles[8])
        (tmp_path / "inbox" / "top.csv").write_text(particles[9])
        wait_until(lambda: d.ledger.counts().get("done", 0) >= 2)
        d.intake.rescan()
        d.tick()
        paths = sorted(Path(r.path).relative_to(tmp_path / "inbox").as_posix() for r in d.ledger.files())
    assert paths == ["sample/a.csv", "top.csv"]
