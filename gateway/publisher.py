"""Publish notifications to users from backend services: ``Publisher`` and ``AsyncPublisher``.

Imports only redis, the key names, the payload limit, the settings table, the topology
(``redis_topology``) and the scripts (``scripts``, ``control_client``), so services can depend on it
cheaply. ``disconnect`` and ``online`` are the
control calls (README "Control"). What is not passed is read as the gateway reads it: ``REDIS_URL``,
``REDIS_CLUSTER_NODES``, ``REDIS_SENTINELS`` with ``REDIS_SENTINEL_MASTER``,
``REDIS_CHANNEL_PREFIX``, ``WEBSOCKET_MAX_PAYLOAD_SIZE`` and ``JWT_REVOCATION_TTL`` (how long a
``disconnect`` refuses the user's older tokens; ``revocation_ttl=``), else the table's defaults; a bad value
raises ``SettingsError`` (a ``ValueError``) naming the variable. A payload over the limit raises
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
the connection that wrote it (``gateway/replication.py``), and raises ``NotReplicated`` (it was done,
but fewer than N replicas acknowledged it within ``replica_timeout`` seconds); what it returns
survives a failover to one of those replicas.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aioredis

from gateway import control_client, replication, scripts
from gateway import settings_table as table
from gateway.history.position import format_position
from gateway.keys import history_key, history_meta_key, is_valid_user_id, user_channel
from gateway.payload_limit import PayloadTooLarge
from gateway.redis_topology import AsyncClient, SyncClient, Topology
from gateway.replication import NotReplicated
from gateway.scripts import Call, LuaScript
from gateway.settings_parsers import SettingsError

__all__ = [
    "AsyncPublisher",
    "NotReplicated",
    "PayloadTooLarge",
    "Published",
    "Publisher",
    "SettingsError",
    "encode_payload",
]

DEFAULT_HISTORY_LENGTH = 100
DEFAULT_HISTORY_TTL = 300.0
_PUBLISH = LuaScript.load("publish.lua", prelude=False)


class Published(int):
    """How many gateway workers received the message (an int, as ``PUBLISH`` answers), and its
    ``position`` in the user's history: an opaque string for ``?since=``; None without history."""

    position: str | None

    def __new__(cls, receivers: int, position: str | None = None) -> Published:
        published = super().__new__(cls, receivers)
        published.position = position
        return published


class _History:
    """The history options of one publisher, and how a script call for one message looks."""

    def __init__(self, enabled: bool, length: int, ttl: float) -> None:
        if length < 1 or ttl <= 0:
            raise ValueError("history_length must be at least 1 and history_ttl positive")
        self.enabled = enabled
        self.length = str(length)
        self.ttl_ms = str(max(1, int(ttl * 1000)))

    def call(self, prefix: str, sharded: bool, user_id: str, channel: str, data: bytes) -> Call:
        """The call of gateway/lua/publish.lua for one message."""
        keys = [history_meta_key(prefix, user_id), history_key(prefix, user_id)]
        shard = "1" if sharded else ""
        return Call(_PUBLISH, keys, [channel, data, self.length, self.ttl_ms, secrets.token_hex(4), shard])


def _published(reply: list[Any]) -> Published:
    epoch, offset, receivers = reply
    text = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
    return Published(int(receivers), format_position(text, int(offset)))


def encode_payload(payload: Any) -> bytes:
    """str and bytes go as they are (UTF-8, since clients get text frames); anything else as JSON."""
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
        data.decode()  # raises UnicodeDecodeError: a text frame must be valid UTF-8
        return data
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _channel(prefix: str, user_id: str) -> str:
    if not is_valid_user_id(user_id):
        raise ValueError("user id: 1 to 256 printable characters, no spaces")
    return user_channel(prefix, user_id)


def _checked(payload: Any, limit: int) -> bytes:
    data = encode_payload(payload)
    if len(data) > limit:
        raise PayloadTooLarge(len(data), limit)
    return data


def _limit(max_payload_size: int | None) -> int:
    return table.WEBSOCKET_MAX_PAYLOAD_SIZE.from_environ() if max_payload_size is None else max_payload_size


def _prefix(prefix: str | None) -> str:
    return table.REDIS_CHANNEL_PREFIX.from_environ() if prefix is None else prefix


def _topology(
    redis_url: str | None, cluster_nodes: str | None, sentinels: str | None, sentinel_master: str | None
) -> Topology:
    """What is passed, else the variables (all of them when no Redis is named)."""
    if redis_url is None and cluster_nodes is None and sentinels is None:
        return Topology.from_environ()
    given = {
        table.REDIS_CLUSTER_NODES.variable: cluster_nodes,
        table.REDIS_SENTINELS.variable: sentinels,
        table.REDIS_SENTINEL_MASTER.variable: sentinel_master,
    }
    url = table.REDIS_URL.from_environ() if redis_url is None else redis_url
    return Topology.from_environ({table.REDIS_URL.variable: url, **{k: v for k, v in given.items() if v}})


class _Options:
    """What the two publishers share: the prefix, the payload limit and the history options,
    and how messages become commands. Only the client and its awaits differ."""

    def __init__(
        self,
        prefix: str | None,
        max_payload_size: int | None,
        history: bool,
        history_length: int,
        history_ttl: float,
        sharded: bool,
        revocation_ttl: float | None,
        wait_for: int,
        replica_timeout: float,
    ) -> None:
        self._limit = _limit(max_payload_size)
        ttl = table.JWT_REVOCATION_TTL.from_environ() if revocation_ttl is None else revocation_ttl
        if ttl <= 0:
            raise ValueError("revocation_ttl must be positive")
        self._revocation_ms = max(1, int(ttl * 1000))
        if wait_for < 0 or replica_timeout <= 0:
            raise ValueError("replicas must be 0 or more and replica_timeout positive")
        if wait_for and not history:
            raise ValueError("replicas needs history: a plain publish has nothing a failover could keep")
        self._wait = replication.Wait(wait_for, max(1, int(replica_timeout * 1000))) if wait_for else None
        self._prefix = _prefix(prefix)
        self._history = _History(history, history_length, history_ttl)
        # A Redis Cluster: user channels are shard channels.
        self._sharded = sharded
        self._publish = "SPUBLISH" if sharded else "PUBLISH"

    def _plain(self, user_id: str, payload: Any) -> tuple[str, bytes]:
        return _channel(self._prefix, user_id), _checked(payload, self._limit)

    def _encoded(self, messages: Iterable[tuple[str, Any]]) -> list[tuple[str, str, bytes]]:
        # Every message is checked before any is sent, so a bad one leaves the batch unsent.
        return [(user_id, *self._plain(user_id, payload)) for user_id, payload in messages]

    def _calls(self, encoded: list[tuple[str, str, bytes]]) -> list[Call]:
        return [self._history.call(self._prefix, self._sharded, *message) for message in encoded]

    def _confirmed(self, replies: list[Any], acknowledged: list[int]) -> list[Any]:
        """The replies, or NotReplicated carrying them as the caller would have got them."""
        assert self._wait is not None
        try:
            return replication.confirmed(replies, acknowledged, self._wait.replicas)
        except NotReplicated as exc:
            # A publish's results as Published, a disconnect's as its count.
            exc.results = [_published(r) if isinstance(r, list) else int(r) for r in replies]
            raise

    def _disconnect_call(self, user_id: str, connection_id: str | None) -> Call:
        return control_client.disconnect_call(
            self._prefix, user_id, connection_id, self._sharded, self._revocation_ms
        )


def _sentinel_of(client: Any) -> Any:
    """The sentinels' clients behind a master's client (they outlive it unless closed)."""
    return getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)


class Publisher(_Options):
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
            client = _topology(redis_url, cluster_nodes, sentinels, sentinel_master).sync_client()
        self._sentinel = _sentinel_of(client) if built else None
        sharded = isinstance(client, redis.RedisCluster)
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
        return [_published(reply) for reply in self._run(self._calls(encoded))]

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
        users = control_client.online_users(user_ids)
        if not users:
            return {}
        counts = scripts.run_sync(self._client, control_client.online_calls(self._prefix, users))
        return {user_id: int(n) for user_id, n in zip(users, counts, strict=True)}

    def close(self) -> None:
        self._client.close()
        if self._sentinel is not None:
            self._sentinel.close()


class AsyncPublisher(_Options):
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
            client = _topology(redis_url, cluster_nodes, sentinels, sentinel_master).async_client()
        self._sentinel = _sentinel_of(client) if built else None
        sharded = isinstance(client, aioredis.RedisCluster)
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
        return [_published(reply) for reply in await self._run(self._calls(encoded))]

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
        users = control_client.online_users(user_ids)
        if not users:
            return {}
        counts = await scripts.run(self._client, control_client.online_calls(self._prefix, users))
        return {user_id: int(n) for user_id, n in zip(users, counts, strict=True)}

    async def aclose(self) -> None:
        await self._nodes.aclose()
        await self._client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
