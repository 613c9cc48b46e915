"""A master and its replica, the replication link through a fault proxy: a test can starve the
replica of the master's last writes and then promote it, as a failover under asynchronous
replication does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from harness.fault_proxy import Fault, FaultProxy
from harness.redis_server import RedisServer
from harness.waiting import wait_for


class ReplicatedPair:
    def __init__(self) -> None:
        self.master = RedisServer()
        self.master.start()
        self.link = FaultProxy(self.master.port).start()
        self.replica = RedisServer("--replicaof", "127.0.0.1", str(self.link.port))
        self.replica.start()
        wait_for(self._in_sync, timeout=20, what="the replica to sync")

    def _in_sync(self) -> bool:
        with self.replica.client() as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def settle(self) -> None:
        """Return once the replica holds every write the master made so far."""
        with self.master.client() as client:
            assert client.execute_command("WAIT", 1, 5000) == 1, "the replica did not catch up"

    def cut_replication(self) -> None:
        """From now on the master's writes never reach the replica (nor does either notice)."""
        self.link.inject(Fault.BLACKHOLE, 120)

    def promote(self) -> None:
        """The replica becomes a master with what it has (a new replication id, as in a failover)."""
        with self.replica.client() as client:
            client.execute_command("REPLICAOF", "NO", "ONE")

    def close(self) -> None:
        self.replica.close()
        self.link.close()
        self.master.close()


@contextlib.contextmanager
def replicated_pair() -> Iterator[ReplicatedPair]:
    pair = ReplicatedPair()
    try:
        yield pair
    finally:
        pair.close()
