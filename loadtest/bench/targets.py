"""The servers under test: how to start each one, how a client connects, how a backend publishes.

Every target runs 2 worker processes on 127.0.0.1 against the same private Redis, and checks the
same HS256 JWT. The gateway runs as operators run it (gunicorn.conf.py, auth, limits and metrics
on); each alternative runs under uvicorn with ``--workers``, as its documentation shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.gateway_process import Gateway
from harness.paths import ROOT
from harness.ports import free_port
from harness.process_tree import stop_then_kill
from harness.tokens import SECRET
from harness.waiting import wait_for
from loadtest.bench.wsclient import Dialect, SocketIODialect, WsClient

TARGETS = ("gateway", "socketio", "channels", "broadcaster")
LABELS = {
    "gateway": "gateway",
    "socketio": "python-socketio + AsyncRedisManager",
    "channels": "Django Channels + channels_redis (pub/sub)",
    "broadcaster": "Starlette + broadcaster",
}
_APPS = {
    "socketio": "loadtest.bench.alternatives.socketio_app:create_app",
    "channels": "loadtest.bench.alternatives.channels_app:create_app",
    "broadcaster": "loadtest.bench.alternatives.broadcaster_app:create_app",
}
_REQUIRES = {
    "gateway": ("gateway",),
    "socketio": ("socketio",),
    "channels": ("django", "channels", "channels_redis"),
    "broadcaster": ("broadcaster",),
}


def missing_packages(target: str) -> list[str]:
    """The modules a target needs that do not import here (empty: it can run)."""
    missing = []
    for module in _REQUIRES[target]:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def connect_path(target: str, token: str) -> tuple[str, Dialect]:
    if target == "socketio":
        auth = json.dumps({"token": token}, separators=(",", ":")).encode()
        return "/socket.io/?EIO=4&transport=websocket", SocketIODialect(auth)
    return f"/ws?token={token}", Dialect()


@dataclass
class Server:
    """A running target: its port and the process tree whose memory counts."""

    target: str
    port: int
    master_pid: int
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def worker_pids(self) -> list[int]:
        return _children(self.master_pid)

    def rss_bytes(self) -> int:
        """Resident memory of the master and all its descendants."""
        total = 0
        for pid in [self.master_pid, *_descendants(self.master_pid)]:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def cpu_seconds(self) -> float:
        """CPU time of the master and all its descendants, including reaped ones (a worker that
        exits mid-run moves its time to its parent's children fields, so none is lost)."""
        ticks = 0
        for pid in [self.master_pid, *_descendants(self.master_pid)]:
            with contextlib.suppress(OSError):
                # Fields 14 to 17 (utime, stime, cutime, cstime) follow the command name.
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ticks += sum(int(field) for field in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return _children_by_scan(pid)
    return [int(p) for p in text.split()]


def _children_by_scan(pid: int) -> list[int]:
    """For kernels without /proc/PID/task/PID/children (gVisor): every process's parent."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return sorted(found)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for child in _children(pid):
        found.append(child)
        found.extend(_descendants(child))
    return found


def raise_file_limit() -> None:
    """Each socket is a descriptor on both sides: lift the soft limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def running(
    target: str, redis_url: str, workers: int = 2, max_per_worker: int = 30000, **env: str
) -> Iterator[Server]:
    """``env`` (the gateway only): more settings, such as ``REDIS_CLUSTER_NODES``."""
    raise_file_limit()
    if target == "gateway":
        with _running_gateway(redis_url, workers, max_per_worker, **env) as server:
            yield server
    else:
        with _running_alternative(target, redis_url, workers) as server:
            yield server


@contextlib.contextmanager
def _running_gateway(redis_url: str, workers: int, max_per_worker: int, **env: str) -> Iterator[Server]:
    gateway = Gateway(
        redis_url,
        workers,
        WEBSOCKET_MAX_CONNECTIONS_PER_WORKER=str(max_per_worker),
        WEBSOCKET_IDLE_TIMEOUT="600",
        # Every bench client comes from 127.0.0.1, as no real population does: the per-address
        # share of a worker's handshakes (100) would refuse the capacity scenario's bursts.
        WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS="100000",
        **env,
    )
    try:
        gateway.start()
        assert gateway.process is not None
        yield Server("gateway", gateway.port, gateway.process.pid, gateway.log_path)
    finally:
        gateway.close()


@contextlib.contextmanager
def _running_alternative(target: str, redis_url: str, workers: int) -> Iterator[Server]:
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix=f"bench-{target}-", suffix=".log")[1])
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "BENCH_JWT_SECRET": SECRET}
    args = [sys.executable, "-m", "uvicorn", _APPS[target], "--factory", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(target, port, process.pid, log_path)
    try:
        _wait_ready(server, process, workers)
        yield server
    finally:
        stop_then_kill(process, 20, signal.SIGINT)
        log_path.unlink(missing_ok=True)


def _wait_ready(server: Server, process: subprocess.Popen[bytes], workers: int) -> None:
    from harness.tokens import make_token

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"{server.target} exited with {process.returncode}:\n{server.log_path.read_text()}"
            )
        if len(server.worker_pids()) < workers:
            return False
        try:
            asyncio.run(_probe(server, make_token("bench-probe")))
        except (OSError, ConnectionError, TimeoutError):
            return False
        return True

    wait_for(up, timeout=60, interval=0.2, what=f"{server.target} to accept a WebSocket")
    # Both workers have imported the app once the supervisor has forked them; give the second a beat.
    time.sleep(1.0)


async def _probe(server: Server, token: str) -> None:
    path, dialect = connect_path(server.target, token)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: WsClient("127.0.0.1", server.port, path, dialect, lambda _: None), "127.0.0.1", server.port
    )
    try:
        async with asyncio.timeout(5):
            await client.ready
    finally:
        client.close()


class Publisher(Protocol):
    async def publish(self, user_id: str, payload: str) -> None: ...

    async def encode(self, user_id: str, payload: str) -> tuple[str, bytes]:
        """The (channel, message) this target's own publish call would send to Redis."""
        ...

    async def aclose(self) -> None: ...


class _Recorder:
    """Takes the place of a library's Redis client to keep what its publish call would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, channel: str | bytes, message: str | bytes) -> int:
        name = channel.decode() if isinstance(channel, bytes) else channel
        self.sent.append((name, message.encode() if isinstance(message, str) else message))
        return 0

    def pop(self) -> tuple[str, bytes]:
        assert len(self.sent) == 1, f"expected one publish, got {len(self.sent)}"
        return self.sent.pop()

    async def aclose(self, **_: Any) -> None:
        """Libraries close their client on the way out; there is nothing to close."""

    close = aclose


class _GatewayPublisher:
    def __init__(self, redis_url: str) -> None:
        from gateway import AsyncPublisher

        # Plain PUBLISH, as the other targets do; loadtest/bench/history.py measures history.
        self._publisher = AsyncPublisher(redis_url, history=False)

    async def publish(self, user_id: str, payload: str) -> None:
        await self._publisher.publish(user_id, payload)

    async def encode(self, user_id: str, payload: str) -> tuple[str, bytes]:
        from gateway.keys import user_channel
        from gateway.publishing.publisher import encode_payload

        return user_channel("ws", user_id), encode_payload(payload)

    async def aclose(self) -> None:
        await self._publisher.aclose()


class _SocketIOPublisher:
    """An external process emitting through ``AsyncRedisManager(write_only=True)`` to a room per user."""

    def __init__(self, redis_url: str) -> None:
        import socketio

        self._manager = socketio.AsyncRedisManager(redis_url, write_only=True)
        self._encoder = socketio.AsyncRedisManager(redis_url, write_only=True)
        self._recorder = _Recorder()
        self._encoder.redis = self._recorder
        self._encoder.connected = True

    async def publish(self, user_id: str, payload: str) -> None:
        await self._manager.emit("notification", payload, room=user_id)

    async def encode(self, user_id: str, payload: str) -> tuple[str, bytes]:
        await self._encoder.emit("notification", payload, room=user_id)
        return self._recorder.pop()

    async def aclose(self) -> None:
        redis = getattr(self._manager, "redis", None)
        if redis is not None:
            await redis.aclose()


class _ChannelsPublisher:
    """``group_send`` on the same channel layer the consumers use, to a group per user."""

    def __init__(self, redis_url: str) -> None:
        from channels_redis.pubsub import RedisPubSubChannelLayer

        self._layer = RedisPubSubChannelLayer(hosts=[redis_url])
        self._encoder = RedisPubSubChannelLayer(hosts=[redis_url])
        self._recorder = _Recorder()
        self._recording = False

    async def publish(self, user_id: str, payload: str) -> None:
        await self._layer.group_send(f"user_{user_id}", {"type": "notify", "text": payload})

    async def encode(self, user_id: str, payload: str) -> tuple[str, bytes]:
        if not self._recording:
            for shard in self._encoder._get_layer()._shards:
                shard._redis = self._recorder
            self._recording = True
        await self._encoder.group_send(f"user_{user_id}", {"type": "notify", "text": payload})
        return self._recorder.pop()

    async def aclose(self) -> None:
        await self._layer.flush()


class _BroadcasterPublisher:
    def __init__(self, redis_url: str) -> None:
        from broadcaster import Broadcast

        self._broadcast = Broadcast(redis_url)
        self._connected = False
        self._encoder = Broadcast(redis_url)
        self._recorder = _Recorder()
        backend: Any = self._encoder._backend  # its Redis connection is not public API
        backend._conn = self._recorder

    async def publish(self, user_id: str, payload: str) -> None:
        if not self._connected:
            await self._broadcast.connect()
            self._connected = True
        await self._broadcast.publish(channel=f"user:{user_id}", message=payload)

    async def encode(self, user_id: str, payload: str) -> tuple[str, bytes]:
        await self._encoder.publish(channel=f"user:{user_id}", message=payload)
        return self._recorder.pop()

    async def aclose(self) -> None:
        if self._connected:
            await self._broadcast.disconnect()


def make_publisher(target: str, redis_url: str) -> Publisher:
    factories: dict[str, Callable[[str], Publisher]] = {
        "gateway": _GatewayPublisher,
        "socketio": _SocketIOPublisher,
        "channels": _ChannelsPublisher,
        "broadcaster": _BroadcasterPublisher,
    }
    return factories[target](redis_url)
