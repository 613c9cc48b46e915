"""The gateway's own server stack (its gunicorn worker, HTTP and WebSocket protocols from
``gateway.server``) serving a test-only app that echoes every message: what a conformance suite
needs to judge the protocol on its own, since ``/ws`` answers no client message with an echo.

The process is gunicorn with ``harness/echo_gunicorn_conf.py``: one worker, the settings read
from the environment as ``gunicorn.conf.py`` reads them, and ``EchoWorker`` as the worker class.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.app import GatewayApp
from gateway.server.worker import GatewayWorker
from harness.paths import ROOT
from harness.ports import free_port
from harness.process_tree import stop_then_kill
from harness.tokens import SECRET
from harness.waiting import wait_for

ECHO_PATH = "/echo"
_CONFIG = Path(__file__).with_name("echo_gunicorn_conf.py")


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


def echo_app() -> Starlette:
    return Starlette(routes=[WebSocketRoute(ECHO_PATH, _echo)])


class EchoWorker(GatewayWorker):
    """The gateway's worker with the echo app instead of the gateway's."""

    def load_wsgi(self) -> None:
        # In GatewayApp, as the gateway's app is: /echo reaches it through Starlette's router.
        self.wsgi = GatewayApp(echo_app())


class EchoGateway:
    """gunicorn with one ``EchoWorker`` on a free loopback port."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        self.log_path = Path(tempfile.mkstemp(prefix="echo-log-", suffix=".txt")[1])
        self.env = {
            **os.environ,
            "JWT_SECRET_KEY": SECRET,
            "WEBSOCKET_HOST": "127.0.0.1",
            "WEBSOCKET_PORT": str(self.port),
            "WEB_CONCURRENCY": "1",
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{ECHO_PATH}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(_CONFIG)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._booted, timeout=30, what="the echo worker to boot")

    def _booted(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
        return "Application startup complete" in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process is not None:
            stop_then_kill(self.process, 30)
        self.process = None
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def running_echo_gateway(**env: str) -> Iterator[EchoGateway]:
    server = EchoGateway(**env)
    try:
        server.start()
        yield server
    except BaseException:
        sys.stderr.write(f"--- echo gateway log ---\n{server.log()[-5000:]}\n")
        raise
    finally:
        server.close()
