"""A real Redis Sentinel set on free ports (Debian's redis-server), for tests and benchmarks.

One master, one replica (``--replicaof``) and three sentinels (``redis-server sentinel.conf
--sentinel``, each with its own config file, which Sentinel rewrites as it learns), quorum 2. A short
``down-after-milliseconds`` makes a killed master's replica take over within a few seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from harness.ports import free_port
from harness.process_tree import stop_then_kill
from harness.redis_server import RedisServer
from harness.waiting import wait_for

MASTER_NAME = "gateway"
# Milliseconds a master may be unreachable before the sentinels call it down and fail it over.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
_QUORUM = 2
# Redis waits 5 s by default before a diskless full sync, in case more replicas come: none will.
_SERVER_OPTIONS = ("--repl-diskless-sync-delay", "0")


class Sentinel:
    """One sentinel process with its own config file and directory."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gateway-sentinel-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"logfile {os.path.join(self.dir, 'sentinel.log')}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {_QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        with open(self.config, "w") as file:
            file.write("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, self.config, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def ask(self, *command: Any) -> Any:
        with self.client() as client:
            return client.execute_command(*command)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP: the sentinel hears and says nothing (and misses what the others decide)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.stopped = True
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)
            self.stopped = False

    def kill(self) -> None:
        """SIGKILL: a crashed sentinel."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        if self.process is not None:
            stop_then_kill(self.process, 10)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisSentinelSet:
    def __init__(self) -> None:
        self.master = RedisServer(*_SERVER_OPTIONS)
        self.replica: RedisServer | None = None
        self.sentinels: list[Sentinel] = []

    @property
    def sentinel_addresses(self) -> str:
        """``REDIS_SENTINELS`` for the gateway: every sentinel."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    @property
    def master_name(self) -> str:
        """``REDIS_SENTINEL_MASTER``."""
        return MASTER_NAME

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master] + ([self.replica] if self.replica is not None else [])

    def start(self) -> None:
        self.master.start()
        self.replica = RedisServer(*_SERVER_OPTIONS, "--replicaof", "127.0.0.1", str(self.master.port))
        self.replica.start()
        wait_for(self._replica_in_sync, timeout=20, what="the replica to sync with the master")
        self.sentinels = [Sentinel(self.master.port) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for(self.healthy, timeout=30, what="the sentinels to see each other and the replica")

    def _replica_in_sync(self) -> bool:
        assert self.replica is not None
        try:
            with self.replica.client() as client:
                info = client.info("replication")
        except redis.RedisError:
            return False
        return bool(info.get("master_link_status") == "up")

    def current_master(self) -> tuple[str, int]:
        """The master's address as the first answering sentinel names it."""
        for sentinel in self._live():
            try:
                host, port = sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            except (redis.RedisError, TypeError, ValueError):
                continue
            return host.decode(), int(port)
        raise AssertionError("no sentinel names a master")

    def server_at(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def healthy(self) -> bool:
        """Every sentinel names the same master, which says it is one, knows the two other
        sentinels and sees one replica, and no sentinel thinks the master is down."""
        try:
            named = {
                tuple(sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME))
                for sentinel in self._live()
            }
            if len(named) != 1:
                return False
            port = int(next(iter(named))[1])
            with self.server_at(port).client() as client:
                if client.info("replication").get("role") != "master":
                    return False
            for sentinel in self._live():
                state = _pairs(sentinel.ask("SENTINEL", "MASTER", MASTER_NAME))
                if int(state["num-other-sentinels"]) != len(self._live()) - 1:
                    return False
                if int(state["num-slaves"]) < 1 and self._live_replicas_of(port) > 0:
                    return False
                if b"s_down" in state["flags"] or b"o_down" in state["flags"]:
                    return False
        except (redis.RedisError, StopIteration, TypeError, ValueError):
            return False
        return True

    def _live(self) -> list[Sentinel]:
        return [
            s for s in self.sentinels if s.process is not None and s.process.poll() is None and not s.stopped
        ]

    def _live_replicas_of(self, master_port: int) -> int:
        return sum(
            1
            for server in self.servers
            if server.port != master_port and server.process is not None and server.process.poll() is None
        )

    def _all_name(self, port: int) -> bool:
        try:
            named = [
                sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME) for sentinel in self._live()
            ]
            if any(int(address[1]) != port for address in named):
                return False
            with self.server_at(port).client() as client:
                return bool(client.info("replication").get("role") == "master")
        except (redis.RedisError, TypeError, ValueError):
            return False

    def kill_master(self) -> RedisServer:
        """SIGKILL the master; the server the sentinels should promote (``wait_for_failover``)."""
        _, old_port = self.current_master()
        old = self.server_at(old_port)
        old.kill()
        return next(server for server in self.servers if server is not old)

    def wait_for_failover(self, new: RedisServer, timeout: float = 30) -> None:
        """Wait until every sentinel names ``new`` and it reports role master."""
        wait_for(
            lambda: self._all_name(new.port), timeout=timeout, what="the sentinels to promote the replica"
        )

    def kill_master_and_wait_for_failover(self, timeout: float = 30) -> RedisServer:
        """SIGKILL the master, then wait until every sentinel names the replica and it reports
        role master; the new master."""
        new = self.kill_master()
        self.wait_for_failover(new, timeout)
        return new

    def failover_and_wait(self, timeout: float = 30) -> RedisServer:
        """``SENTINEL FAILOVER``: the replica is promoted while the old master is alive; wait until
        every sentinel names the new one and it reports role master. The old master is demoted
        (made a replica) only some seconds later: ``wait_demoted``."""
        _, old_port = self.current_master()
        new = next(server for server in self.servers if server.port != old_port)
        self._live()[0].ask("SENTINEL", "FAILOVER", MASTER_NAME)
        wait_for(lambda: self._all_name(new.port), timeout=timeout, what="the sentinels to switch the master")
        return new

    def wait_demoted(self, server: RedisServer, timeout: float = 30) -> None:
        """Wait until a former master reports role slave and its link to the new master is up
        (Sentinel converts a stale master about 8 s after the switch)."""

        def demoted() -> bool:
            try:
                with server.client() as client:
                    info = client.info("replication")
            except redis.RedisError:
                return False
            return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")

        wait_for(demoted, timeout=timeout, what="the old master to become a replica")

    def client(self) -> redis.Redis:
        """A client of the master the sentinels name now (for tests that publish and read)."""
        host, port = self.current_master()
        return redis.Redis(host=host, port=port, socket_timeout=5)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()


def _pairs(reply: Any) -> dict[str, Any]:
    """A SENTINEL MASTER reply (a flat list of names and values) as a dict."""
    if isinstance(reply, dict):
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in reply.items()}
    items = list(reply)
    return {items[i].decode(): items[i + 1] for i in range(0, len(items) - 1, 2)}


@contextmanager
def running_sentinel() -> Iterator[RedisSentinelSet]:
    sentinels = RedisSentinelSet()
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.close()
