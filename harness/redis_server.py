"""A private redis-server for a test or a benchmark, and readers of the gateway's state in it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import redis

from gateway import keys
from harness.ports import free_cluster_port, free_port
from harness.process_tree import stop_then_kill
from harness.waiting import wait_for


class RedisServer:
    """A private redis-server on a free port; can be killed, paused and restarted on the same port."""

    def __init__(self, *extra_args: str) -> None:
        # Extra redis-server options, e.g. ("--cluster-enabled", "yes") for a cluster node.
        self.extra_args = extra_args
        self.port = free_cluster_port() if "--cluster-enabled" in extra_args else free_port()
        self.dir = tempfile.mkdtemp(prefix="gateway-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"), *self.extra_args]
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

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP: Redis keeps its sockets open but answers nothing, so every command waits."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: a crashed server, which answers nothing (no RST for connections in flight)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_then_kill(self.process, 10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since Redis started (INFO commandstats), INFO itself left out."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


def leases_key(user: str, prefix: str = "ws") -> str:
    """The hash of a user's leases (gateway/keys.py connections_key)."""
    return f"{{{prefix}:{user}}}:conns"


def live_leases(client: redis.Redis | redis.RedisCluster, user: str, prefix: str = "ws") -> int:
    """The user's places in the limit: leases whose worker's key lives (gateway/lua/_prelude.lua),
    or deadlines of the previous release ahead of the Redis clock; never a tombstone."""
    key = leases_key(user, prefix)
    # On a cluster, the clock of the node that holds the key.
    on_node: Any = client
    cluster = isinstance(client, redis.RedisCluster)
    if isinstance(client, redis.RedisCluster):
        on_node = client.get_redis_connection(client.get_node_from_key(key))  # type: ignore[no-untyped-call]
    seconds, micros = on_node.time()
    now = seconds * 1000 + micros // 1000
    leases: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    tag = keys.holder_tag(prefix, user, cluster)
    live = 0
    for field, raw in leases.items():
        value = int(raw)
        if value >= keys.HELD:
            worker = field.decode().rpartition(":")[0]
            live += bool(client.exists(keys.worker_leases_key(worker, tag)))
        elif value > now:
            live += 1
    return live
