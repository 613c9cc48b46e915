"""Sentinel mode: one worker's Redis connections follow the master the sentinels name.

Every connection asks the sentinels where the master is when it connects (gateway/topology/sentinels.py), so
a connection lost with its master comes back on the new one. But a failover does not always cost a
connection: when the sentinels promote the replica while the old master lives on (``SENTINEL
FAILOVER``, a healed network split), the old master keeps serving for seconds before they demote
it, and what is published to the new master never reaches a subscriber of the old one. So
``MasterFollower`` listens for ``+switch-master`` on one sentinel (the next one after an error) and
at once moves the command connections and the pub/sub connection to the new master; the broker then
subscribes every local user again and the gap fill runs, as after any loss.

``SentinelBroker`` is ``RedisBroker`` on such connections, with its follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import MasterNotFoundError, SentinelConnectionPool
from redis.exceptions import RedisError

from gateway.broker import BrokerSetup, RedisHealth
from gateway.broker.commands import pubsub_options
from gateway.broker.redis import RedisBroker
from gateway.tasks import cancel_and_wait
from gateway.topology.modes import Topology
from gateway.topology.sentinels import Address, AsyncSentinels

log = logging.getLogger("gateway.subscriber")

_SWITCH = b"+switch-master"
# A sentinel silent this long is pinged; one that does not answer the ping as long is left.
_HEARTBEAT = 5.0
_BACKOFF_FIRST = 0.1
_BACKOFF_CAP = 2.0


class MasterFollower:
    def __init__(
        self,
        sentinels: AsyncSentinels,
        addresses: Sequence[Address],
        master_name: str,
        broker: RedisBroker,
        pubsub_pool: SentinelConnectionPool,
        command_pools: Sequence[SentinelConnectionPool],
        worker_id: str,
    ) -> None:
        self._sentinels = sentinels
        self._addresses = list(addresses)
        self._name = master_name
        self._broker = broker
        self._pubsub_pool = pubsub_pool
        self._command_pools = command_pools
        self._client_name = f"gateway-sentinel:{worker_id}"
        # The master as last named by the sentinels (None until first asked).
        self.master: Address | None = None
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-sentinel-follower")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        delay = _BACKOFF_FIRST
        start = random.randrange(len(self._addresses))  # spread the workers over the sentinels
        for turn in itertools.count(start):
            host, port = self._addresses[turn % len(self._addresses)]
            self._listening = False
            try:
                await self._listen(host, port)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("sentinel %s:%d: no +switch-master feed: %s", host, port, type(exc).__name__)
            except Exception:
                # A bug, not a sentinel: the worker must not stay deaf to failovers for good.
                log.exception("sentinel %s:%d: follower failed; listening again", host, port)
            if self._listening:  # it worked for a while: the next sentinel at once
                delay = _BACKOFF_FIRST
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)

    async def _listen(self, host: str, port: int) -> None:
        conn = Connection(
            host=host,
            port=port,
            protocol=2,
            socket_connect_timeout=1,
            socket_timeout=1,
            client_name=self._client_name,
        )
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command("SUBSCRIBE", _SWITCH)
            await conn.read_response()
            self._listening = True
            # Listening from now on; a switch missed while not listening shows here (none is named
            # while the master is down: the switch will be heard).
            with contextlib.suppress(MasterNotFoundError):
                await self.follow(await self._sentinels.discover_master(self._name))
            pinged = False
            while True:
                reply = await conn.read_response(timeout=_HEARTBEAT)
                if reply is None:
                    if pinged:
                        raise TimeoutError("sentinel does not answer")
                    await conn.send_command("PING")
                    pinged = True
                    continue
                pinged = False
                if reply[0] == b"message" and reply[1] == _SWITCH:
                    await self._switched(reply[2])
        finally:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    async def _switched(self, payload: bytes) -> None:
        # "<master name> <old ip> <old port> <new ip> <new port>"
        fields = payload.decode(errors="replace").split()
        if len(fields) == 5 and fields[0] == self._name and fields[4].isdigit():
            await self.follow((fields[3], int(fields[4])))

    async def follow(self, master: Address) -> None:
        """The sentinels name ``master``: move every connection still on another server to it."""
        previous, self.master = self.master, master
        moved = previous is not None and previous != master
        if previous is not None and moved:
            log.warning("redis master moved from %s:%d to %s:%d", *previous, *master)
        for pool in self._command_pools:
            if pool.master_address not in (None, master):
                # Commands in flight on the old master fail and are retried once on a new
                # connection, which asks the sentinels (every command the gateway sends is safe
                # to repeat).
                await pool.disconnect()
        # A broker between tries (its master was killed) tries the new one now, not after its back-off.
        if self._pubsub_pool.master_address not in (None, master) or (moved and not self._broker.ready):
            self._broker.reconnect_now()


class SentinelBroker(RedisBroker):
    """``RedisBroker`` on the master the sentinels name, following it with a ``MasterFollower``
    that also moves ``command_clients`` (made by ``AsyncSentinels.master``)."""

    def __init__(
        self,
        topology: Topology,
        sentinels: AsyncSentinels,
        probe_client: aioredis.Redis,
        setup: BrokerSetup,
        command_clients: Sequence[aioredis.Redis],
    ) -> None:
        pool = sentinels.pubsub_pool(topology.master_name, **pubsub_options(setup.worker_id))
        super().__init__(topology.url, probe_client, setup, pool=pool)
        self._sentinels = sentinels
        self._master_name = topology.master_name
        pools = [cast(SentinelConnectionPool, client.connection_pool) for client in command_clients]
        self._follower = MasterFollower(
            sentinels, topology.sentinels, topology.master_name, self, pool, pools, setup.worker_id
        )

    def start(self) -> None:
        super().start()
        self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()
        await super().stop()

    async def master(self) -> Address:
        """The master the sentinels name now (``MasterNotFoundError`` when none is reachable)."""
        return await self._sentinels.discover_master(self._master_name)

    async def redis_health(self, timeout: float) -> RedisHealth:
        """Which master the sentinels name (``host:port``), or ``no_master`` when they name none
        (they do not answer, or a failover is under way): no new connection can find it."""
        try:
            host, port = await asyncio.wait_for(self.master(), timeout)
        except (RedisError, OSError, TimeoutError):
            return RedisHealth({"master": None}, "no_master")
        return RedisHealth({"master": f"{host}:{port}"})
