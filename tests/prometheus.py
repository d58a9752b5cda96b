"""A real Prometheus server for tests: started on loopback, scraping given targets every second."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml


def require_tool(name: str) -> str:
    """The path of a system tool; skip without it, or fail under CI."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name!r} is not on PATH; install it with scripts/install-system-deps.sh"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (required under CI)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Prometheus:
    """A running Prometheus: its API base URL, process and log file."""

    base: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expression: str) -> list[dict[str, object]]:
        url = f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.load(response)
        assert payload["status"] == "success", payload
        result: list[dict[str, object]] = payload["data"]["result"]
        return result

    def wait_for_value(self, expression: str, *, expected: float, timeout: float = 60.0) -> dict[str, object]:
        """Poll the query API until ``expression`` has the expected value."""
        deadline = time.monotonic() + timeout
        last: object = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            try:
                result = self.query(expression)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                last = error  # still starting: not listening yet, or 503 until ready
            else:
                last = result
                for series in result:
                    sample = series["value"]
                    assert isinstance(sample, list)
                    if float(sample[1]) == expected:
                        return series
            time.sleep(0.2)
        pytest.fail(
            f"Prometheus never returned {expression} == {expected}; last answer: {last!r}\n{self.log()}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def running_prometheus(tmp_path: Path, targets: list[str]) -> Iterator[Prometheus]:
    """Start ``prometheus`` scraping ``targets`` (host:port) every second; stop it afterwards."""
    binary = require_tool("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "mpwatch",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": targets}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            yield Prometheus(f"http://127.0.0.1:{port}", process, log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
