"""What a ``Shard`` (gateway/broker/shard.py) holds besides its state: the two connections to its
master (the pub/sub one, made fresh for each session, and the probe's, which publishes to the
shard's control channel), the hooks into its broker, and its metrics.

The probe has a connection of its own, as in ``RedisBroker``: the command client's pool can be
busy with an admission storm, and a late probe would tear down a healthy pub/sub connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool, SSLConnection

from gateway.broker import MessageHandler, Resubscribed
from gateway.broker.slot_map import Address
from gateway.telemetry import metrics


@dataclass(slots=True)
class ShardHooks:
    """What a shard calls in its broker."""

    on_message: MessageHandler
    on_resubscribed: Resubscribed
    # The master at this address no longer holds these users' channels (slot moved, MOVED):
    # route them again.
    displaced: Callable[[Address, list[str]], None]
    # The connection to the master at this address was lost, or could not be made: refresh the
    # slot map.
    trouble: Callable[[Address], None]
    # A control channel name in one of this master's slots, or None if it serves none now.
    control_channel: Callable[[Address], str | None]
    # The master's number in the slot map, for the metric label.
    label: Callable[[Address], str]


class ShardLinks:
    def __init__(
        self, address: Address, worker_id: str, node_options: dict[str, Any], probe_interval: float
    ) -> None:
        pool_options = dict(node_options)
        if pool_options.pop("ssl", False):
            pool_options["connection_class"] = SSLConnection
        host, port = address
        # RESP2, as RedisBroker: no per-message push-handler work in redis-py.
        self._pool = ConnectionPool(
            host=host,
            port=port,
            protocol=2,
            socket_connect_timeout=2,
            socket_timeout=5,
            client_name=f"gateway-sub:{worker_id}",
            **pool_options,
        )
        self._probe = aioredis.Redis(
            host=host,
            port=port,
            single_connection_client=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            client_name=f"gateway-probe:{worker_id}",
            **node_options,
        )
        self.probe_interval = probe_interval

    def pubsub_connection(self) -> AbstractConnection:
        connection: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        return connection

    async def spublish(self, channel: bytes, payload: bytes) -> object:
        return await self._probe.execute_command("SPUBLISH", channel, payload)  # type: ignore[no-untyped-call]

    def count_reconnect(self, label: str) -> None:
        metrics.REDIS_RECONNECTS.inc()
        metrics.REDIS_SHARD_RECONNECTS.labels(label).inc()

    def count_gap(self, seconds: float, label: str) -> None:
        metrics.REDIS_DISCONNECTED.inc(seconds)
        metrics.REDIS_SHARD_DISCONNECTED.labels(label).inc(seconds)

    async def close(self) -> None:
        await self._probe.aclose()
        await self._pool.disconnect()
