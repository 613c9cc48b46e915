"""The gateway as operators run it: ``gunicorn -c gunicorn.conf.py`` on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.paths import ROOT
from harness.ports import free_port
from harness.process_tree import stop_then_kill
from harness.tokens import SECRET
from harness.waiting import wait_for


class Gateway:
    """``gunicorn -c gunicorn.conf.py`` from the repository root, as operators run it."""

    def __init__(self, redis_url: str, workers: int, **env: str) -> None:
        # The command line gunicorn runs under, if set before start (harness/hung_resolver.py).
        self.wrap: Callable[[list[str]], list[str]] | None = None
        self.port = free_port()
        self.workers = workers
        self.metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        self.log_path = Path(tempfile.mkstemp(prefix="gateway-log-", suffix=".txt")[1])
        self.env = {
            **os.environ,
            "JWT_SECRET_KEY": SECRET,
            "REDIS_URL": redis_url,
            "WEBSOCKET_HOST": "127.0.0.1",
            "WEBSOCKET_PORT": str(self.port),
            # Used only with WEBSOCKET_DEV_CONSOLE; chosen here, not WEBSOCKET_PORT + 1 (the
            # default), which may be another test's.
            "WEBSOCKET_DEV_CONSOLE_PORT": str(free_port()),
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        self.launch()
        self.wait_all_workers_ready()

    def launch(self) -> None:
        """Start gunicorn without waiting for its workers."""
        argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.wrap(argv) if self.wrap else argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def operational_port(self) -> int:
        """Where /metrics and /healthz/websocket are served: METRICS_PORT when it is set."""
        return int(self.env.get("METRICS_PORT") or 0) or self.port

    @property
    def console_port(self) -> int:
        """Where the dev console (WEBSOCKET_DEV_CONSOLE) is served, on 127.0.0.1."""
        return int(self.env["WEBSOCKET_DEV_CONSOLE_PORT"])

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        port = self.operational_port if path in ("/metrics", "/healthz/websocket") else self.port
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Connection": "close"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def worker_states(self, timeout: float = 20.0) -> dict[int, dict[str, Any]]:
        """/healthz/websocket of every live worker, polled until each has answered at least once."""
        pids = set(self.worker_pids())
        states: dict[int, dict[str, Any]] = {}

        def all_answered() -> bool:
            with contextlib.suppress(OSError):
                status, body = self.get("/healthz/websocket", timeout=2)
                if status == 200:
                    state = json.loads(body)
                    states[state["pid"]] = state
            return pids <= states.keys()

        wait_for(
            all_answered, timeout=timeout, interval=0.0, what="every worker to answer /healthz/websocket"
        )
        return {pid: states[pid] for pid in pids}

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def wait_all_workers_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            if len(self.worker_pids()) != self.workers:
                return False
            try:
                states = self.worker_states(timeout=5)
            except (AssertionError, OSError):
                return False
            return all(s["subscriber_ready"] for s in states.values())

        wait_for(ready, timeout=timeout, interval=0.1, what="all gunicorn workers to be ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        code = stop_then_kill(self.process, timeout, sig)
        self.process = None
        return code

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def running_gateway(redis_url: str, workers: int, **env: str) -> Iterator[Gateway]:
    gateway = Gateway(redis_url, workers, **env)
    try:
        gateway.start()
        yield gateway
    except BaseException:
        sys.stderr.write(f"--- gateway log ---\n{gateway.log()[-5000:]}\n")
        raise
    finally:
        gateway.close()
