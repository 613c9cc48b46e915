"""Publish notifications to users from backend services: ``Publisher`` and ``AsyncPublisher``.

Imports only redis, the key names, the payload limit, the settings table and the control scripts
(``control_client``), so services can depend on it cheaply. ``disconnect`` and ``online`` are the
control calls (README "Control"). What is not passed is read as the gateway reads it: ``REDIS_URL``,
``REDIS_CHANNEL_PREFIX`` and ``WEBSOCKET_MAX_PAYLOAD_SIZE``, else the table's defaults; a bad value
raises ``SettingsError`` (a ``ValueError``) naming the variable. A payload over the limit raises
``PayloadTooLarge`` before anything is sent: the gateway would drop it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aioredis

from gateway import control_client
from gateway import settings_table as table
from gateway.keys import connections_key, is_valid_user_id, user_channel
from gateway.payload_limit import PayloadTooLarge
from gateway.settings_parsers import SettingsError

__all__ = ["AsyncPublisher", "PayloadTooLarge", "Publisher", "SettingsError", "encode_payload"]


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


def _url(redis_url: str | None) -> str:
    return table.REDIS_URL.from_environ() if redis_url is None else redis_url


def _encoded(prefix: str, limit: int, messages: Iterable[tuple[str, Any]]) -> list[tuple[str, bytes]]:
    # Every message is checked before any is sent, so a bad one leaves the batch unsent.
    return [(_channel(prefix, user_id), _checked(payload, limit)) for user_id, payload in messages]


class Publisher:
    """Synchronous publisher. ``publish`` returns how many gateway workers received the message."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        client: redis.Redis | None = None,
        max_payload_size: int | None = None,
    ) -> None:
        self._limit = _limit(max_payload_size)
        self._prefix = _prefix(prefix)
        self._client = client or redis.Redis.from_url(_url(redis_url))
        self._disconnect = self._client.register_script(control_client.DISCONNECT_SCRIPT)
        self._online = self._client.register_script(control_client.ONLINE_SCRIPT)

    def publish(self, user_id: str, payload: Any) -> int:
        channel = _channel(self._prefix, user_id)
        return int(self._client.publish(channel, _checked(payload, self._limit)))

    def publish_many(self, messages: Iterable[tuple[str, Any]]) -> list[int]:
        """Publish (user_id, payload) pairs in one round trip; in order, one count per message."""
        pipeline = self._client.pipeline(transaction=False)
        for channel, data in _encoded(self._prefix, self._limit, messages):
            pipeline.publish(channel, data)
        return [int(n) for n in pipeline.execute()]

    def disconnect(self, user_id: str, connection_id: str | None = None) -> int:
        """Close the user's connections (or the one named) on every host with 4003, freeing their
        places now; how many live connections it reached (0: none, a no-op)."""
        keys, args = control_client.disconnect_call(self._prefix, user_id, connection_id)
        return int(self._disconnect(keys=keys, args=args))

    def online(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Live connections per user, cluster-wide (lapsed leases do not count); one round trip."""
        users = control_client.online_users(user_ids)
        if not users:
            return {}
        pipeline = self._client.pipeline(transaction=False)
        for user_id in users:
            self._online(keys=[connections_key(self._prefix, user_id)], args=[""], client=pipeline)
        return {user_id: int(n) for user_id, n in zip(users, pipeline.execute(), strict=True)}

    def close(self) -> None:
        self._client.close()


class AsyncPublisher:
    """asyncio publisher. ``publish`` returns how many gateway workers received the message."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        client: aioredis.Redis | None = None,
        max_payload_size: int | None = None,
    ) -> None:
        self._limit = _limit(max_payload_size)
        self._prefix = _prefix(prefix)
        self._client = client or aioredis.Redis.from_url(_url(redis_url))
        self._disconnect = self._client.register_script(control_client.DISCONNECT_SCRIPT)
        self._online = self._client.register_script(control_client.ONLINE_SCRIPT)

    async def publish(self, user_id: str, payload: Any) -> int:
        channel = _channel(self._prefix, user_id)
        return int(await self._client.publish(channel, _checked(payload, self._limit)))

    async def publish_many(self, messages: Iterable[tuple[str, Any]]) -> list[int]:
        """Publish (user_id, payload) pairs in one round trip; in order, one count per message."""
        pipeline = self._client.pipeline(transaction=False)
        for channel, data in _encoded(self._prefix, self._limit, messages):
            pipeline.publish(channel, data)
        return [int(n) for n in await pipeline.execute()]

    async def disconnect(self, user_id: str, connection_id: str | None = None) -> int:
        """Close the user's connections (or the one named) on every host with 4003, freeing their
        places now; how many live connections it reached (0: none, a no-op)."""
        keys, args = control_client.disconnect_call(self._prefix, user_id, connection_id)
        return int(await self._disconnect(keys=keys, args=args))

    async def online(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Live connections per user, cluster-wide (lapsed leases do not count); one round trip."""
        users = control_client.online_users(user_ids)
        if not users:
            return {}
        async with self._client.pipeline(transaction=False) as pipeline:
            for user_id in users:
                await self._online(keys=[connections_key(self._prefix, user_id)], args=[""], client=pipeline)
            counts = await pipeline.execute()
        return {user_id: int(n) for user_id, n in zip(users, counts, strict=True)}

    async def aclose(self) -> None:
        await self._client.aclose()
