"""Debian's Prometheus for the tests: promtool on deploy/prometheus/, and a real server on a free
loopback port that scrapes the tests' gateways and evaluates the dashboard's queries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.paths import ROOT
from harness.ports import free_port
from harness.process_tree import stop_then_kill
from harness.waiting import wait_for

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "gateway.json"
MISSING = (
    "prometheus is not installed: scripts/ensure-prometheus installs Debian's package (make test runs it)"
)


def binary(name: str) -> str | None:
    """``prometheus`` or ``promtool``: on PATH, or where Debian's package puts it."""
    found = shutil.which(name)
    if found:
        return found
    path = f"/usr/bin/{name}"
    return path if os.access(path, os.X_OK) else None


class Prometheus:
    """``prometheus`` with a temporary config and storage, scraping ``targets`` every second as job
    ``gateway`` (the job the dashboard and the alerts select) and evaluating ``rule_files``."""

    def __init__(self, targets: Sequence[str], rule_files: Sequence[Path] = ()) -> None:
        executable = binary("prometheus")
        if executable is None:
            raise RuntimeError(MISSING)
        self.executable = executable
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="gateway-prometheus-"))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": "gateway", "static_configs": [{"targets": list(targets)}]}],
        }
        # JSON is YAML: no YAML writer needed.
        (self.directory / "prometheus.yml").write_text(json.dumps(config))
        self.log_path = self.directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, timeout=30, interval=0.1, what="prometheus to be ready")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>: the decoded answer, errors included (status "error", errorType)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.process is not None:
            stop_then_kill(self.process, 15)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def running_prometheus(targets: Sequence[str], rule_files: Sequence[Path] = ()) -> Iterator[Prometheus]:
    server = Prometheus(targets, rule_files)
    try:
        server.start()
        yield server
    finally:
        server.close()
