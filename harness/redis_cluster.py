"""A real Redis Cluster on free ports (Debian's redis-server and redis-cli), for tests and benchmarks.

``RedisCluster(masters=3)`` or ``RedisCluster(masters=3, replicas=1)``; ``start()`` creates it with
``redis-cli --cluster create`` and waits until every node sees every slot served. A short
``cluster-node-timeout`` makes a killed master's replica take over within a few seconds.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.crc import key_slot

from harness.redis_server import RedisServer
from harness.waiting import wait_for

# Milliseconds a node may be unreachable before it is failed (and its replica promoted).
NODE_TIMEOUT_MS = 1000


class RedisCluster:
    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.masters = masters
        self.replicas = replicas
        # A replica's first sync starts at once (the default waits 5 s for more replicas to share it).
        options: tuple[str, ...] = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--repl-diskless-sync-delay",
            "0",
        )
        options += ("--cluster-node-timeout", str(NODE_TIMEOUT_MS))
        # A replica may take over at once, however long it was cut off (tests kill masters).
        options += ("--cluster-replica-validity-factor", "0", "--cluster-require-full-coverage", "no")
        self.nodes = [RedisServer(*options) for _ in range(masters * (1 + replicas))]

    @property
    def startup_nodes(self) -> str:
        """``REDIS_CLUSTER_NODES`` for the gateway: every node (a client needs only one alive)."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self.healthy, timeout=30, what="every cluster node to see all slots served")
        # Until then a replica has nothing, and WAIT (Publisher(replicas=...)) times out.
        # A loaded 2-core machine starting six nodes once took longer than 30 s.
        wait_for(self._replicas_in_sync, timeout=60, what="every replica to sync with its master")

    def _replicas_in_sync(self) -> bool:
        synced = 0
        for node in self.live_nodes():
            with node.client() as client:
                info = client.info("replication")
            synced += info.get("role") == "slave" and info.get("master_link_status") == "up"
        return synced == self.masters * self.replicas

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, and agrees on who serves each slot."""
        views = []
        for node in self.live_nodes():
            try:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    if b"cluster_state:ok" not in info:
                        return False
                    views.append(_slot_owners(client))
            except redis.RedisError:
                return False
        return bool(views) and all(view == views[0] for view in views) and len(views[0]) == 16384

    def client(self) -> redis.RedisCluster:
        """A cluster client following the slot map (for tests that publish and read)."""
        from redis.cluster import ClusterNode

        node: Any = ClusterNode  # untyped in redis-py
        live = self.live_nodes()[0]
        return redis.RedisCluster(startup_nodes=[node("127.0.0.1", live.port)], socket_timeout=5)

    def owner(self, slot: int) -> RedisServer:
        """The master serving a slot now."""
        for node in self.live_nodes():
            with node.client() as client:
                owners = _slot_owners(client)
                port = owners.get(slot)
                if port is not None:
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no live node serves slot {slot}")

    def users_on_every_master(self, count: int) -> list[str]:
        """``count`` fresh user ids (at least one per master) whose ``ws:`` channels are served by
        every master. Random names alone sometimes all land on one master (1 in 27 for four users
        on three), so names are drawn until each master serves one; the rest come as they come."""
        with self.live_nodes()[0].client() as client:
            owners = _slot_owners(client)  # one read of the slot map for every draw
        masters = set(owners.values())
        assert count >= len(masters)
        firsts: dict[int, str] = {}
        for _ in range(10_000):
            user = f"user-{uuid.uuid4().hex[:12]}"
            firsts.setdefault(owners[key_slot(f"ws:{user}".encode())], user)
            if len(firsts) == len(masters):
                break
        assert set(firsts) == masters, "the users should span every master"
        rest = [f"user-{uuid.uuid4().hex[:12]}" for _ in range(count - len(firsts))]
        return [*firsts.values(), *rest]

    def master_of(self, channel: str) -> RedisServer:
        """The master that owns a shard channel (or a key) such as ``ws:alice``."""
        return self.owner(key_slot(channel.encode()))

    def kill_master_and_wait_for_failover(self, master: RedisServer, timeout: float = 30) -> RedisServer:
        """SIGKILL a master, then wait until one of its replicas serves its slots; the new master."""
        with master.client() as client:
            slots = [slot for slot, port in _slot_owners(client).items() if port == master.port]
        master.kill()
        wait_for(
            lambda: self.healthy() and self.owner(slots[0]).port != master.port,
            timeout=timeout,
            what="a replica to take over the killed master's slots",
        )
        return self.owner(slots[0])

    def reshard(self, source: RedisServer, target: RedisServer, slots: int | None = None) -> None:
        """Move ``slots`` of ``source``'s slots (all of them by default) to ``target`` with
        ``redis-cli --cluster reshard``, then wait until every node agrees."""
        ids = {}
        for node in (source, target):
            with node.client() as client:
                ids[node.port] = client.execute_command("CLUSTER", "MYID").decode()
        with source.client() as client:
            owned = sum(1 for port in _slot_owners(client).values() if port == source.port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                f"127.0.0.1:{source.port}",
                "--cluster-from",
                ids[source.port],
                "--cluster-to",
                ids[target.port],
                "--cluster-slots",
                str(owned if slots is None else slots),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wait_for(self.healthy, timeout=30, what="every node to agree on the moved slots")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _slot_owners(client: Any) -> dict[int, int]:
    """Slot -> port of the master serving it, as this node sees it (CLUSTER SLOTS)."""
    owners: dict[int, int] = {}
    for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        port = int(master[1])
        for slot in range(int(start), int(end) + 1):
            owners[slot] = port
    return owners


@contextmanager
def running_cluster(masters: int = 3, replicas: int = 0) -> Iterator[RedisCluster]:
    cluster = RedisCluster(masters, replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
