"""Publish notifications to users from backend services: ``Publisher`` and ``AsyncPublisher``.

Imports only redis, the key names, the payload limit, the settings table, the topology
(gateway/topology/: ``modes``, ``scripts``) and its neighbours in this package (``control``,
``replication``), so services can depend on it cheaply (the distribution's core: redis alone);
``options`` holds what the two publishers share (``PublisherBase``: the constructor, the checks,
the script calls). ``disconnect`` and ``online`` are the control calls (docs/publishing.md,
"Control"). What is not passed is read as the gateway reads it:
``REDIS_URL``, ``REDIS_CLUSTER_NODES``, ``REDIS_SENTINELS`` with ``REDIS_SENTINEL_MASTER``,
``REDIS_CHANNEL_PREFIX``, ``WEBSOCKET_MAX_PAYLOAD_SIZE`` and ``JWT_REVOCATION_TTL`` (how long a
``disconnect`` refuses the user's older tokens; ``revocation_ttl=``), else the table's defaults; a
bad value raises ``SettingsError`` (a ``ValueError``) naming the variable. A payload over the limit
raises ``PayloadTooLarge`` before anything is sent: the gateway would drop it.

Which Redis: ``cluster_nodes="host:port,..."`` (a Redis Cluster) or ``sentinels="host:port,..."``
with ``sentinel_master=name`` (the master Sentinel names, found again after a failover), in the
variables' format; ``redis_url`` alone means that one Redis; with none of the three, the variables
decide. A given ``client`` (``redis.Redis`` or ``redis.RedisCluster``) is used as it is, and stays
open when the publisher closes: it is the caller's. ``with Publisher() as p:`` and
``async with AsyncPublisher() as p:`` close what the publisher built. On a
cluster every publish is an ``SPUBLISH`` to the user's shard channel (history on or off).

With ``history`` (the default) each message is written to the user's bounded history and
published in one atomic step (gateway/lua/publish.lua), so a client that reconnects with
``since=<position>`` gets what it missed; the result's ``position`` is the message's place in it.
``history=False`` publishes plainly, as a bare ``PUBLISH`` (``SPUBLISH`` on a cluster) would: on the
constructor for every call, or on one ``publish``/``publish_many`` call, which overrides it.

Replication is asynchronous: a failover may lose what the old master had confirmed. With
``replicas=N`` every publish and disconnect is followed by ``WAIT N`` in the same round trip, on
the connection that wrote it (``gateway/publishing/replication.py``), and raises ``NotReplicated``
(it was done, but fewer than N replicas acknowledged it within ``replica_timeout`` seconds); what
it returns survives a failover to one of those replicas.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from gateway.config.parsers import SettingsError
from gateway.keys import BROADCAST
from gateway.payload_limit import PayloadTooLarge
from gateway.publishing import control, replication
from gateway.publishing.options import Published, PublisherBase, encode_payload, published
from gateway.publishing.replication import NotReplicated
from gateway.topology import scripts
from gateway.topology.modes import AsyncClient, SyncClient, Topology
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


class Publisher(PublisherBase[SyncClient]):
    """Synchronous publisher. ``publish`` returns a ``Published``: how many gateway workers
    received the message, and its ``position`` in the user's history."""

    def _build(self, where: Topology, options: dict[str, Any]) -> SyncClient:
        return where.sync_client(**options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def publish(self, user_id: str, payload: Any, *, history: bool | None = None) -> Published:
        """Publish one message; ``history`` (None: the publisher's) says whether it is recoverable."""
        if not self._with_history(history):  # one command: no pipeline to build
            client: Any = self._client  # execute_command is untyped on a cluster client
            return Published(int(client.execute_command(self._publish, *self._plain(user_id, payload))))
        return self.publish_many([(user_id, payload)], history=True)[0]

    def publish_many(
        self, messages: Iterable[tuple[str, Any]], *, history: bool | None = None
    ) -> list[Published]:
        """Publish (user_id, payload) pairs in one round trip; in order, one result per message."""
        encoded = self._encoded(messages)
        if not self._with_history(history):
            pipeline: Any = self._client.pipeline(transaction=False)
            for _, channel, data in encoded:
                pipeline.execute_command(self._publish, channel, data)
            return [Published(int(n)) for n in pipeline.execute()]
        return [published(reply) for reply in self._run(self._calls(encoded))]

    def publish_group(self, group_id: str, payload: Any) -> Published:
        """Publish to every member of a group (a connection whose token's ``groups`` names it),
        on every host: one message, however many members."""
        return self._one(self._group(group_id, payload))

    def broadcast(self, payload: Any) -> Published:
        """Publish to every connection, on every host."""
        return self._one(self._group(BROADCAST, payload, broadcast=True))

    def _one(self, message: tuple[str, str, bytes]) -> Published:
        if not self._history.enabled:
            client: Any = self._client
            return Published(int(client.execute_command(self._publish, *message[1:])))
        return published(self._run(self._calls([message]))[0])

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
        """Close the client this publisher built; a client passed in stays open, the caller's."""
        if self._owns_client:
            self._client.close()
        if self._sentinel is not None:
            self._sentinel.close()


class AsyncPublisher(PublisherBase[AsyncClient]):
    """asyncio publisher. ``publish`` returns a ``Published``: how many gateway workers received
    the message, and its ``position`` in the user's history."""

    def _build(self, where: Topology, options: dict[str, Any]) -> AsyncClient:
        return where.async_client(**options)

    @functools.cached_property
    def _nodes(self) -> replication.NodeClients:
        """A cluster's nodes, for WAIT after their writes."""
        return replication.NodeClients()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def publish(self, user_id: str, payload: Any, *, history: bool | None = None) -> Published:
        """Publish one message; ``history`` (None: the publisher's) says whether it is recoverable."""
        if not self._with_history(history):  # one command: no pipeline to build
            channel, data = self._plain(user_id, payload)
            return Published(int(await self._client.execute_command(self._publish, channel, data)))
        return (await self.publish_many([(user_id, payload)], history=True))[0]

    async def publish_many(
        self, messages: Iterable[tuple[str, Any]], *, history: bool | None = None
    ) -> list[Published]:
        """Publish (user_id, payload) pairs in one round trip; in order, one result per message."""
        encoded = self._encoded(messages)
        if not self._with_history(history):
            async with self._client.pipeline(transaction=False) as pipeline:
                for _, channel, data in encoded:
                    pipeline.execute_command(self._publish, channel, data)
                counts = await pipeline.execute()
            return [Published(int(n)) for n in counts]
        return [published(reply) for reply in await self._run(self._calls(encoded))]

    async def publish_group(self, group_id: str, payload: Any) -> Published:
        """Publish to every member of a group (a connection whose token's ``groups`` names it),
        on every host: one message, however many members."""
        return await self._one(self._group(group_id, payload))

    async def broadcast(self, payload: Any) -> Published:
        """Publish to every connection, on every host."""
        return await self._one(self._group(BROADCAST, payload, broadcast=True))

    async def _one(self, message: tuple[str, str, bytes]) -> Published:
        if not self._history.enabled:
            return Published(int(await self._client.execute_command(self._publish, *message[1:])))
        return published((await self._run(self._calls([message])))[0])

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
        """Close the clients this publisher built; a client passed in stays open, the caller's."""
        await self._nodes.aclose()
        if self._owns_client:
            await self._client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
