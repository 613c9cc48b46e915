"""Sentinel mode's Redis parts for one worker (``REDIS_SENTINELS``), built by ``gateway/app.py``.

The command client, the probe's client and the pub/sub connection all reach the master through
the sentinels (gateway/sentinels.py), and ``MasterFollower`` (gateway/broker/sentinel.py) moves
them at once when the sentinels switch masters.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from gateway.broker import LocalUsers, MessageHandler, Resubscribed
from gateway.broker.commands import pubsub_options
from gateway.broker.redis import RedisBroker
from gateway.broker.sentinel import MasterFollower
from gateway.redis_topology import Topology
from gateway.sentinels import Address


class SentinelRedis:
    def __init__(
        self,
        topology: Topology,
        worker_id: str,
        command_options: dict[str, Any],
        probe_options: dict[str, Any],
    ) -> None:
        self._topology = topology
        self._worker_id = worker_id
        self._sentinels = topology.async_sentinels()
        self.client: aioredis.Redis = self._sentinels.master(topology.master_name, **command_options)
        # One connection, as in single mode: a probe queued behind an admission storm would come
        # back late and tear down a healthy pub/sub connection.
        self.probe_client = self._sentinels.master(topology.master_name, max_connections=1, **probe_options)
        self._follower: MasterFollower | None = None

    def broker(
        self,
        prefix: str,
        on_message: MessageHandler,
        users: LocalUsers,
        probe_interval: float,
        on_resubscribed: Resubscribed,
    ) -> RedisBroker:
        pool = self._sentinels.pubsub_pool(self._topology.master_name, **pubsub_options(self._worker_id))
        broker = RedisBroker(
            self._topology.url,
            prefix,
            self._worker_id,
            self.probe_client,
            on_message,
            users,
            probe_interval,
            on_resubscribed=on_resubscribed,
            pool=pool,
        )
        self._follower = MasterFollower(
            self._sentinels,
            self._topology.sentinels,
            self._topology.master_name,
            broker,
            pool,
            [
                cast(SentinelConnectionPool, client.connection_pool)
                for client in (self.client, self.probe_client)
            ],
            self._worker_id,
        )
        return broker

    def start(self) -> None:
        if self._follower is not None:
            self._follower.start()

    async def master(self) -> Address:
        """The master the sentinels name now (raises ``MasterNotFoundError`` when none is)."""
        return await self._sentinels.discover_master(self._topology.master_name)

    async def aclose(self) -> None:
        if self._follower is not None:
            await self._follower.stop()
        await self.probe_client.aclose()
        await self.client.aclose()
        await self._sentinels.aclose()
