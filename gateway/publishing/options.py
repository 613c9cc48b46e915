"""What ``Publisher`` and ``AsyncPublisher`` share (gateway/publishing/publisher.py): checked settings, the
history options, messages checked and turned into script calls, and results."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from gateway.config import table
from gateway.history.position import format_position
from gateway.keys import (
    BROADCAST,
    checked_user_id,
    group_channel,
    group_source,
    history_key,
    history_meta_key,
    is_valid_group_id,
    user_channel,
)
from gateway.keys import idempotency_key as idempotency_key_name
from gateway.payload_limit import PayloadTooLarge
from gateway.publishing import control, replication
from gateway.publishing.replication import NotReplicated
from gateway.topology.modes import AsyncClient, SyncClient, Topology, is_cluster
from gateway.topology.scripts import Call, LuaScript

DEFAULT_HISTORY_LENGTH = 100
DEFAULT_HISTORY_TTL = 300.0
_PUBLISH = LuaScript.load("publish.lua", prelude=False)
ClientT = TypeVar("ClientT", bound=SyncClient | AsyncClient)


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
        return publish_call(prefix, sharded, user_id, channel, data, self.length, self.ttl_ms)


def publish_call(
    prefix: str,
    sharded: bool,
    user_id: str,
    channel: str,
    data: bytes,
    length: str,
    ttl_ms: str,
    idempotency_key: str | None = None,
) -> Call:
    """The call of gateway/lua/publish.lua for one message; with ``idempotency_key``, a repeat of
    an earlier publish under that key within ``ttl_ms`` publishes nothing (the reply says so)."""
    keys = [history_meta_key(prefix, user_id), history_key(prefix, user_id)]
    if idempotency_key is not None:
        keys.append(idempotency_key_name(prefix, user_id, idempotency_key))
    shard = "1" if sharded else ""
    return Call(_PUBLISH, keys, [channel, data, length, ttl_ms, secrets.token_hex(4), shard])


def published(reply: list[Any]) -> Published:
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
    return user_channel(prefix, checked_user_id(user_id))


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


# redis-py's own read timeout, kept for a publisher's own client unless WAIT may take longer.
_SOCKET_TIMEOUT = 5.0
# What a read waits past WAIT's timeout: the round trip and the scripts before it.
_WAIT_MARGIN = 5.0


def _client_options(replicas: int, replica_timeout: float) -> dict[str, Any]:
    """Options of the client a publisher builds: its reads outlast WAIT's timeout, which would
    otherwise end in the client's TimeoutError, the publish's results lost, not NotReplicated. A
    client passed in is the caller's to configure so."""
    if not replicas or replica_timeout + _WAIT_MARGIN <= _SOCKET_TIMEOUT:
        return {}
    return {"socket_timeout": replica_timeout + _WAIT_MARGIN}


class PublisherBase(Generic[ClientT]):
    """What the two publishers share: the client (built from the topology unless passed in), the
    prefix, the payload limit and the history options, and how messages become commands. Only the
    client's kind and its awaits differ."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        client: ClientT | None = None,
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
        self._limit = _limit(max_payload_size)
        ttl = table.JWT_REVOCATION_TTL.from_environ() if revocation_ttl is None else revocation_ttl
        if ttl <= 0:
            raise ValueError("revocation_ttl must be positive")
        self._revocation_ms = max(1, int(ttl * 1000))
        if replicas < 0 or replica_timeout <= 0:
            raise ValueError("replicas must be 0 or more and replica_timeout positive")
        if replicas and not history:
            raise ValueError("replicas needs history: a plain publish has nothing a failover could keep")
        self._wait = replication.Wait(replicas, max(1, int(replica_timeout * 1000))) if replicas else None
        self._prefix = _prefix(prefix)
        self._history = _History(history, history_length, history_ttl)
        # A client passed in is the caller's: closing the publisher leaves it (and its sentinels) open.
        self._owns_client = client is None
        if client is None:
            where = _topology(redis_url, cluster_nodes, sentinels, sentinel_master)
            client = self._build(where, _client_options(replicas, replica_timeout))
        self._client: ClientT = client
        self._sentinel = _sentinel_of(client) if self._owns_client else None
        # A Redis Cluster: user channels are shard channels.
        self._sharded = is_cluster(client)
        self._publish = "SPUBLISH" if self._sharded else "PUBLISH"

    def _build(self, where: Topology, options: dict[str, Any]) -> ClientT:
        """The publisher's own client of ``where``, with ``options`` (redis-py's)."""
        raise NotImplementedError

    def _with_history(self, history: bool | None) -> bool:
        """A call's ``history=`` over the publisher's; a plain publish cannot honour ``replicas``."""
        if history is None:
            return self._history.enabled
        if not history and self._wait is not None:
            raise ValueError("replicas needs history: a plain publish has nothing a failover could keep")
        return history

    def _plain(self, user_id: str, payload: Any) -> tuple[str, bytes]:
        return _channel(self._prefix, user_id), _checked(payload, self._limit)

    def _group(self, group_id: str, payload: Any, broadcast: bool = False) -> tuple[str, str, bytes]:
        """(history source, channel, data) of a message to a group (``broadcast``: to everyone):
        its history keys are ``{prefix:{group}:meta`` and ``:history`` (gateway/keys.py)."""
        if broadcast:
            group_id = BROADCAST
        elif not is_valid_group_id(group_id):
            raise ValueError('group id: as a user id (1 to 256 printable characters, no spaces), not "*"')
        channel = group_channel(self._prefix, group_id)
        return group_source(group_id), channel, _checked(payload, self._limit)

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
            exc.results = [published(r) if isinstance(r, list) else int(r) for r in replies]
            raise

    def _disconnect_call(self, user_id: str, connection_id: str | None) -> Call:
        return control.disconnect_call(
            self._prefix, user_id, connection_id, self._sharded, self._revocation_ms
        )


def _sentinel_of(client: Any) -> Any:
    """The sentinels' clients behind a master's client (they outlive it unless closed)."""
    return getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
