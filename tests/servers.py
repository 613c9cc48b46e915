"""Real servers for the tests: redis-server and gunicorn on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
# 64 bytes: long enough for HS512 too (RFC 7518 3.2), which some tests sign with.
SECRET = "test-secret-that-is-long-enough-for-every-hs-algorithm-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


async def eventually(condition: Callable[[], Awaitable[Any]], timeout: float = 5.0, what: str = "") -> Any:
    """The async ``wait_for``: await ``condition`` until it is truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.01)


def make_token(user_id: str, ttl: float = 3600, secret: str = SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": user_id, "exp": int(time.time() + ttl), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


async def admit(url: str, user: str) -> ClientConnection | int:
    """Open a connection for ``user``: the open socket when admitted, else the close code it got.

    Admission is read from the first frame: a pong for an admitted socket, or the close frame
    a refused one gets right after the upgrade.
    """
    ws = await connect(f"{url}?token={make_token(user)}", open_timeout=10)
    try:
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code
    return ws


class RedisServer:
    """A private redis-server on a free port; can be killed, paused and restarted on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gateway-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")]
        self.process = subprocess.Popen(
            [binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, what="redis-server to answer PING")

    def _answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5) as r:
                return bool(r.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since Redis started (INFO commandstats), INFO itself left out."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")  # type: ignore[assignment]
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


def live_leases(client: redis.Redis, user: str) -> int:
    """The user's places in the limit: leases whose deadline is ahead of the Redis clock (not a
    lapsed lease, nor the tombstone of a close that raced a renewal)."""
    seconds, micros = client.time()  # type: ignore[misc]
    now = seconds * 1000 + micros // 1000
    deadlines: list[bytes] = client.hvals(f"ws:conns:{user}")  # type: ignore[assignment]
    return sum(1 for deadline in deadlines if int(deadline) > now)


class Gateway:
    """``gunicorn -c gunicorn.conf.py`` from the repository root, as operators run it."""

    def __init__(self, redis_url: str, workers: int, **env: str) -> None:
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
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_all_workers_ready()

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Connection": "close"}
        )
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
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        code = self.process.returncode
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
