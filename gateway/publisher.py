"""Publish notifications to users from backend services: ``Publisher`` and ``AsyncPublisher``.

Imports only redis, the key names, the payload limit, the settings table and the control scripts
(``control_client``), so services can depend on it cheaply. ``disconnect`` and ``online`` are the
control calls (README "Control"). What is not passed is read as the gateway reads it: ``REDIS_URL``,
``REDIS_CHANNEL_PREFIX`` and ``WEBSOCKET_MAX_PAYLOAD_SIZE``, else the table's defaults; a bad value
raises ``SettingsError`` (a ``ValueError``) naming the variable. A payload over the limit raises
``PayloadTooLarge`` before anything is sent: the gateway would drop it.

With ``history`` (the default) each message is written to the user's bounded history and
published in one atomic step (gateway/lua/publish.lua), so a client that reconnects with
``since=<position>`` gets what it missed; the result's ``position`` is the message's place in it.
``history=False`` publishes plainly, as a bare ``PUBLISH`` would.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from gateway import control_client
from gateway import settings_table as table
from gateway.history.position import format_position
from gateway.keys import connections_key, history_key, history_meta_key, is_valid_user_id, user_channel
from gateway.payload_limit import PayloadTooLarge
from gateway.settings_parsers import SettingsError

__all__ = ["AsyncPublisher", "PayloadTooLarge", "Published", "Publisher", "SettingsError", "encode_payload"]

DEFAULT_HISTORY_LENGTH = 100
DEFAULT_HISTORY_TTL = 300.0
_PUBLISH_LUA = resources.files("gateway").joinpath("lua", "publish.lua").read_text()
# EVALSHA, and the script loaded only when Redis says it lacks it: redis-py's Script in a
# pipeline would ask SCRIPT EXISTS first, one more round trip per batch.
_PUBLISH_SHA = hashlib.sha1(_PUBLISH_LUA.encode()).hexdigest()


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

    def args(self, prefix: str, user_id: str, channel: str, data: bytes) -> tuple[list[str], list[Any]]:
        """The keys and arguments of gateway/lua/publish.lua for one message."""
        keys = [history_meta_key(prefix, user_id), history_key(prefix, user_id)]
        return keys, [channel, data, self.length, self.ttl_ms, secrets.token_hex(4)]


def _raised(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


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


def _url(redis_url: str | None) -> str:
    return table.REDIS_URL.from_environ() if redis_url is None else redis_url


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
    ) -> None:
        self._limit = _limit(max_payload_size)
        self._prefix = _prefix(prefix)
        self._history = _History(history, history_length, history_ttl)

    def _plain(self, user_id: str, payload: Any) -> tuple[str, bytes]:
        return _channel(self._prefix, user_id), _checked(payload, self._limit)

    def _encoded(self, messages: Iterable[tuple[str, Any]]) -> list[tuple[str, str, bytes]]:
        # Every message is checked before any is sent, so a bad one leaves the batch unsent.
        return [(user_id, *self._plain(user_id, payload)) for user_id, payload in messages]

    def _calls(self, encoded: list[tuple[str, str, bytes]]) -> list[tuple[list[str], list[Any]]]:
        return [self._history.args(self._prefix, *message) for message in encoded]


def _no_script(replies: list[Any]) -> list[int]:
    """The calls Redis did not run because it lost its script cache (a restart)."""
    return [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]


class Publisher(_Options):
    """Synchronous publisher. ``publish`` returns a ``Published``: how many gateway workers
    received the message, and its ``position`` in the user's history."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        client: redis.Redis | None = None,
        max_payload_size: int | None = None,
        history: bool = True,
        history_length: int = DEFAULT_HISTORY_LENGTH,
        history_ttl: float = DEFAULT_HISTORY_TTL,
    ) -> None:
        super().__init__(prefix, max_payload_size, history, history_length, history_ttl)
        self._client = client or redis.Redis.from_url(_url(redis_url))
        self._disconnect = self._client.register_script(control_client.DISCONNECT_SCRIPT)
        self._online = self._client.register_script(control_client.ONLINE_SCRIPT)

    def publish(self, user_id: str, payload: Any) -> Published:
        if not self._history.enabled:  # one command: no pipeline to build
            return Published(int(self._client.publish(*self._plain(user_id, payload))))
        return self.publish_many([(user_id, payload)])[0]

    def publish_many(self, messages: Iterable[tuple[str, Any]]) -> list[Published]:
        """Publish (user_id, payload) pairs in one round trip; in order, one result per message."""
        encoded = self._encoded(messages)
        if not self._history.enabled:
            pipeline = self._client.pipeline(transaction=False)
            for _, channel, data in encoded:
                pipeline.publish(channel, data)
            return [Published(int(n)) for n in pipeline.execute()]
        calls = self._calls(encoded)
        replies = self._evalsha(calls)
        missing = _no_script(replies)
        if missing:
            # Redis lost its script cache (a restart): none of those ran; load it and run them.
            self._client.script_load(_PUBLISH_LUA)
            for i, reply in zip(missing, self._evalsha([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        return [_published(_raised(reply)) for reply in replies]

    def _evalsha(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        pipeline = self._client.pipeline(transaction=False)
        for keys, args in calls:
            pipeline.evalsha(_PUBLISH_SHA, len(keys), *keys, *args)
        return list(pipeline.execute(raise_on_error=False))

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


class AsyncPublisher(_Options):
    """asyncio publisher. ``publish`` returns a ``Published``: how many gateway workers received
    the message, and its ``position`` in the user's history."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        client: aioredis.Redis | None = None,
        max_payload_size: int | None = None,
        history: bool = True,
        history_length: int = DEFAULT_HISTORY_LENGTH,
        history_ttl: float = DEFAULT_HISTORY_TTL,
    ) -> None:
        super().__init__(prefix, max_payload_size, history, history_length, history_ttl)
        self._client = client or aioredis.Redis.from_url(_url(redis_url))
        self._disconnect = self._client.register_script(control_client.DISCONNECT_SCRIPT)
        self._online = self._client.register_script(control_client.ONLINE_SCRIPT)

    async def publish(self, user_id: str, payload: Any) -> Published:
        if not self._history.enabled:  # one command: no pipeline to build
            return Published(int(await self._client.publish(*self._plain(user_id, payload))))
        return (await self.publish_many([(user_id, payload)]))[0]

    async def publish_many(self, messages: Iterable[tuple[str, Any]]) -> list[Published]:
        """Publish (user_id, payload) pairs in one round trip; in order, one result per message."""
        encoded = self._encoded(messages)
        if not self._history.enabled:
            pipeline = self._client.pipeline(transaction=False)
            for _, channel, data in encoded:
                pipeline.publish(channel, data)
            return [Published(int(n)) for n in await pipeline.execute()]
        calls = self._calls(encoded)
        replies = await self._evalsha(calls)
        missing = _no_script(replies)
        if missing:
            # Redis lost its script cache (a restart): none of those ran; load it and run them.
            await self._client.script_load(_PUBLISH_LUA)
            for i, reply in zip(missing, await self._evalsha([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        return [_published(_raised(reply)) for reply in replies]

    async def _evalsha(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        pipeline = self._client.pipeline(transaction=False)
        for keys, args in calls:
            pipeline.evalsha(_PUBLISH_SHA, len(keys), *keys, *args)
        return list(await pipeline.execute(raise_on_error=False))

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
