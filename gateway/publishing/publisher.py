"""Publish notifications to users from backend services: ``Publisher`` and ``AsyncPublisher``.

Imports only redis, the key names, the payload limit, the settings table, the topology
(gateway/topology/: ``modes``, ``scripts``) and its neighbours in this package (``control``,
``replication``), so services can depend on it cheaply; ``options`` holds what the two
publishers share. ``disconnect``
and ``online`` are the control calls (README "Control"). What is not passed is read as the gateway
reads it: ``REDIS_URL``, ``REDIS_CLUSTER_NODES``, ``REDIS_SENTINELS`` with
``REDIS_SENTINEL_MASTER``, ``REDIS_CHANNEL_PREFIX``, ``WEBSOCKET_MAX_PAYLOAD_SIZE`` and
``JWT_REVOCATION_TTL`` (how long a ``disconnect`` refuses the user's older tokens;
``revocation_ttl=``), else the table's defaults; a bad value raises ``SettingsError`` (a
``ValueError``) naming the variable. A payload over the limit raises
``PayloadTooLarge`` before anything is sent: the gateway would drop it.

Which Redis: ``cluster_nodes="host:port,..."`` (a Redis Cluster) or ``sentinels="host:port,..."``
with ``sentinel_master=name`` (the master Sentinel names, found again after a failover), in the
variables' format; ``redis_url`` alone means that one Redis; with none of the three, the variables
decide. A given ``client`` (``redis.Redis`` or ``redis.RedisCluster``) is used as it is. On a
cluster every publish is an ``SPUBLISH`` to the user's shard channel (history on or off).

With ``history`` (the default) each message is written to the user's bounded history and
published in one atomic step (gateway/lua/publish.lua), so a client that reconnects with
``since=<position>`` gets what it missed; the result's ``position`` is the message's place in it.
``history=False`` publishes plainly, as a bare ``PUBLISH`` (``SPUBLISH`` on a cluster) would.

Replication is asynchronous: a failover may lose what the old master had confirmed. With
``replicas=N`` every publish and disconnect is followed by ``WAIT N`` in the same round trip, on
the connection that wrote it (``gateway/publishing/replication.py``), and raises ``NotReplicated``
(it was done, but fewer than N replicas acknowledged it within ``replica_timeout`` seconds); what
it returns survives a failover to one of those replicas.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.config.parsers import SettingsError
from gateway.payload_limit import PayloadTooLarge
from gateway.publishing import control, replication
from gateway.publishing.options import (
    DEFAULT_HISTORY_LENGTH,
    DEFAULT_HISTORY_TTL,
    Published,
    PublishOptions,
    client_options,
    encode_payload,
    published,
    sentinel_of,
    topology,
)
from gateway.publishing.replication import NotReplicated
from gateway.topology import scripts
from gateway.topology.modes import AsyncClient, SyncClient, is_cluster
from gateway.topology.scripts import Call

__all__ = [
    "AsyncPublisher",
    "NotReplicated",
    "PayloadTooLarge",
    "Published",
    "Publisher",
    "SettingsError",
    "encode_payload",
]


class Publisher(PublishOptions):
    """Synchronous publisher. ``publish`` returns a ``Published``: how many gateway workers
    received the message, and its ``position`` in the user's history."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        client: SyncClient | None = None,
        max_payload_size: int | None = None,
        history: bool = True,
        history_length: int = DEFAULT_HISTORY_LENGTH,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        cluster_nodes: str | None = None,
        sentinels: str | None = None,
        sentinel_master: str | None = None,
        revocation_ttl: float | None = None,
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> None:
        built = client is None
        if client is None:
            options = client_options(replicas, replica_timeout)
            client = topology(redis_url, cluster_nodes, sentinels, sentinel_master).sync_client(**options)
        self._sentinel = sentinel_of(client) if built else None
        sharded = is_cluster(client)
        super().__init__(
            prefix,
            max_payload_size,
            history,
            history_length,
            history_ttl,
            sharded,
            revocation_ttl,
            replicas,
            replica_timeout,
        )
        self._client: SyncClient = client

    def publish(self, user_id: str, payload: Any) -> Published:
        if not self._history.enabled:  # one command: no pipeline to build
            client: Any = self._client  # execute_command is untyped on a cluster client
            return Published(int(client.execute_command(self._publish, *self._plain(user_id, payload))))
        return self.publish_many([(user_id, payload)])[0]

    def publish_many(self, messages: Iterable[tuple[str, Any]]) -> list[Published]:
        """Publish (user_id, payload) pairs in one round trip; in order, one result per message."""
        encoded = self._encoded(messages)
        if not self._history.enabled:
            pipeline: Any = self._client.pipeline(transaction=False)
            for _, channel, data in encoded:
                pipeline.execute_command(self._publish, channel, data)
            return [Published(int(n)) for n in pipeline.execute()]
        return [published(reply) for reply in self._run(self._calls(encoded))]

    def _run(self, calls: list[Call]) -> list[Any]:
        if self._wait is None:
            return scripts.run_sync(self._client, calls)
        replies, acknowledged = replication.run_sync(self._client, calls, self._wait)
        return self._confirmed(replies, acknowledged)

    def disconnect(self, user_id: str, connection_id: str | None = None) -> int:
        """Close the user's connections (or the one named) on every host with 4003, freeing their
        places now, and refuse the user's tokens issued before now for ``revocation_ttl``; how many
        live connections it reached (0: none)."""
        return int(self._run([self._disconnect_call(user_id, connection_id)])[0])

    def online(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Live connections per user, cluster-wide (lapsed leases do not count); one round trip."""
        users = control.online_users(user_ids)
        if not users:
            return {}
        counts = scripts.run_sync(self._client, control.online_calls(self._prefix, users, self._sharded))
        return {user_id: int(n) for user_id, n in zip(users, counts, strict=True)}

    def close(self) -> None:
        self._client.close()
        if self._sentinel is not None:
            self._sentinel.close()


class AsyncPublisher(PublishOptions):
    """asyncio publisher. ``publish`` returns a ``Published``: how many gateway workers received
    the message, and its ``position`` in the user's history."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        client: AsyncClient | None = None,
        max_payload_size: int | None = None,
        history: bool = True,
        history_length: int = DEFAULT_HISTORY_LENGTH,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        cluster_nodes: str | None = None,
        sentinels: str | None = None,
        sentinel_master: str | None = None,
        revocation_ttl: float | None = None,
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> None:
        built = client is None
        if client is None:
            options = client_options(replicas, replica_timeout)
            client = topology(redis_url, cluster_nodes, sentinels, sentinel_master).async_client(**options)
        self._sentinel = sentinel_of(client) if built else None
        sharded = is_cluster(client)
        super().__init__(
            prefix,
            max_payload_size,
            history,
            history_length,
            history_ttl,
            sharded,
            revocation_ttl,
            replicas,
            replica_timeout,
        )
        self._client: AsyncClient = client
        self._nodes = replication.NodeClients()  # a cluster's nodes, for WAIT after their writes

    async def publish(self, user_id: str, payload: Any) -> Published:
        if not self._history.enabled:  # one command: no pipeline to build
            channel, data = self._plain(user_id, payload)
            return Published(int(await self._client.execute_command(self._publish, channel, data)))
        return (await self.publish_many([(user_id, payload)]))[0]

    async def publish_many(self, messages: Iterable[tuple[str, Any]]) -> list[Published]:
        """Publish (user_id, payload) pairs in one round trip; in order, one result per message."""
        encoded = self._encoded(messages)
        if not self._history.enabled:
            async with self._client.pipeline(transaction=False) as pipeline:
                for _, channel, data in encoded:
                    pipeline.execute_command(self._publish, channel, data)
                counts = await pipeline.execute()
            return [Published(int(n)) for n in counts]
        return [published(reply) for reply in await self._run(self._calls(encoded))]

    async def _run(self, calls: list[Call]) -> list[Any]:
        if self._wait is None:
            return await scripts.run(self._client, calls)
        replies, acknowledged = await replication.run(self._client, calls, self._wait, self._nodes)
        return self._confirmed(replies, acknowledged)

    async def disconnect(self, user_id: str, connection_id: str | None = None) -> int:
        """Close the user's connections (or the one named) on every host with 4003, freeing their
        places now, and refuse the user's tokens issued before now for ``revocation_ttl``; how many
        live connections it reached (0: none)."""
        return int((await self._run([self._disconnect_call(user_id, connection_id)]))[0])

    async def online(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Live connections per user, cluster-wide (lapsed leases do not count); one round trip."""
        users = control.online_users(user_ids)
        if not users:
            return {}
        counts = await scripts.run(self._client, control.online_calls(self._prefix, users, self._sharded))
        return {user_id: int(n) for user_id, n in zip(users, counts, strict=True)}

    async def aclose(self) -> None:
        await self._nodes.aclose()
        await self._client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
