"""The command line without a configuration file: ``mpwatch run`` falls back to the packaged defaults.

With no ``--config``, no ./config.yaml and no /etc/mpwatch/config.yaml, the daemon
runs on daemon/cli/default_config.yaml (package data): an inbox ./inbox and a state
folder ./mpwatch-state, both relative to the working directory. The environment and
the command line's flags still override it, and ``mpwatch confirm`` finds the daemon
at the default address the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from daemon.cli import build_parser
from daemon.cli.run import CONFIG_SEARCH, PACKAGED_CONFIG, _daemon_url, _load
from tests.conftest import REPO_ROOT, ledger_count, wait_until

MPWATCH = [sys.executable, "-m", "daemon.cli"]

no_system_config = pytest.mark.skipif(
    any(p.is_absolute() and p.is_file() for p in CONFIG_SEARCH),
    reason="this machine has a system-wide mpwatch configuration",
)


@pytest.fixture
def bare_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, and no MPWATCH__ settings in the environment."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key in list(os.environ):
        if key.startswith("MPWATCH__"):
            monkeypatch.delenv(key)
    return work


def test_the_packaged_defaults_ship_with_the_package() -> None:
    packaged = resources.files("daemon.cli") / PACKAGED_CONFIG
    assert packaged.is_file()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert PACKAGED_CONFIG in pyproject["tool"]["setuptools"]["package-data"]["daemon.cli"]


@no_system_config
def test_the_packaged_defaults_resolve_against_the_working_directory(
    bare_cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, path = _load(None)
    assert path is None
    assert [(i.name, i.path) for i in config.inboxes] == [("inbox", bare_cwd / "inbox")]
    assert config.state_dir == bare_cwd / "mpwatch-state"
    assert config.http.port == 9108 and config.library is None  # the schema's defaults
    monkeypatch.setenv("MPWATCH__STATE_DIR", "elsewhere")  # the environment wins over the defaults
    config, _ = _load(None, {"http": {"port": 0}})  # and the command line over both
    assert config.state_dir == bare_cwd / "elsewhere" and config.http.port == 0


@no_system_config
def test_a_config_yaml_in_the_working_directory_wins(bare_cwd: Path) -> None:
    (bare_cwd / "config.yaml").write_text(
        "inboxes: [{path: mine, name: mine}]\nstate_dir: state\n", encoding="utf-8"
    )
    config, path = _load(None)
    assert path == Path("config.yaml")
    assert [i.name for i in config.inboxes] == ["mine"] and config.state_dir == bare_cwd / "state"


@no_system_config
def test_confirm_without_a_configuration_finds_the_daemon_at_the_default_address(bare_cwd: Path) -> None:
    args = build_parser().parse_args(["confirm", "1", "--label", "PE"])
    assert _daemon_url(args) == "http://127.0.0.1:9108"


@no_system_config
def test_run_without_a_configuration_classifies_into_the_packaged_defaults(
    tmp_path: Path, particles: list[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPWATCH__")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    log = tmp_path / "daemon.log"
    db = work / "mpwatch-state" / "ledger.sqlite3"

    def n_results() -> int:
        return ledger_count(db, "SELECT count(*) FROM results")

    with log.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            [*MPWATCH, "run", "--metrics-port", "0"],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_until(lambda: (work / "inbox").is_dir() or proc.poll() is not None, timeout=30)
            assert proc.poll() is None, log.read_text(encoding="utf-8")
            staged = work / "p.csv.part"  # written outside the inbox, then moved in whole
            staged.write_text(particles[0], encoding="utf-8")
            staged.replace(work / "inbox" / "p.csv")
            wait_until(lambda: n_results() == 1 or proc.poll() is not None, timeout=40)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    said = log.read_text(encoding="utf-8")
    assert code == 0, said
    assert "no configuration file found" in said and "packaged defaults" in said and "--config" in said
    done = subprocess.run(
        [*MPWATCH, "results", "--state", "./mpwatch-state", "--format", "jsonl"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert Path(row["source"]).name == "p.csv" and row["status"]
