"""What the HTTP API asks of Redis: the library's scripts (history publish, disconnect, online)
and a plain publish, run through ``gateway.topology.scripts.run_apart``, so a batch is one
pipeline per Redis node and a node that does not answer fails only its own calls.

Every reply that is an error (Redis down, a node unreachable, a script refused) becomes
``redis_unavailable`` in its place: the caller retries, with the same idempotency key if it set
one, and the message is published at most once. For that, a publish is never sent twice by the
gateway: it goes on a client that retries nothing (gateway/redis_wiring.py), at most once
(``run_apart``'s ``at_most_once``); a reply lost after Redis ran it is a 503 like any other,
though the message went out. Disconnect and online are safe to repeat: they go on the worker's
command client, which sends a command again after a connection error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway import keys
from gateway.api.bodies import ApiError, PublishRequest
from gateway.history.position import format_position
from gateway.publishing import control
from gateway.publishing.options import publish_call
from gateway.topology import scripts
from gateway.topology.modes import AsyncClient, is_cluster
from gateway.topology.scripts import Call, LuaScript

_PLAIN = LuaScript.load("publish_plain.lua", prelude=False)


def unavailable() -> ApiError:
    return ApiError(503, "redis_unavailable")


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """The history the API's publishes write (WEBSOCKET_API_HISTORY_LENGTH, _TTL)."""

    length: int
    ttl: float

    @property
    def ttl_ms(self) -> str:
        return str(max(1, int(self.ttl * 1000)))


class Commands:
    """One worker's Redis side of the API: publishes on ``once``, a client that never sends a
    command again, the rest on the worker's command client."""

    def __init__(
        self,
        client: AsyncClient,
        once: AsyncClient,
        prefix: str,
        history: HistoryOptions,
        revocation_ttl: float,
    ):
        self._client = client
        self._once = once
        self._prefix = prefix
        self._sharded = is_cluster(client)
        self._length = str(history.length)
        self._ttl_ms = history.ttl_ms
        self._revocation_ms = max(1, int(revocation_ttl * 1000))

    def _call(self, request: PublishRequest) -> Call:
        source = request.target.source  # a user id, or a group's (keys.group_source)
        channel = keys.user_channel(self._prefix, source)
        if not request.history:
            shard = "1" if self._sharded else ""
            meta = keys.history_meta_key(self._prefix, source)
            return Call(_PLAIN, [meta], [channel, request.data, shard])
        return publish_call(
            self._prefix,
            self._sharded,
            source,
            channel,
            request.data,
            self._length,
            self._ttl_ms,
            request.idempotency_key,
        )

    async def publish(self, requests: Sequence[PublishRequest]) -> list[dict[str, Any] | ApiError]:
        """Each request's answer, in order: ``{"receivers", "position"}`` (and ``"repeated":
        true`` for a repeat of an idempotency key), or ``redis_unavailable``."""
        calls = [self._call(r) for r in requests]
        replies = await scripts.run_apart(self._once, calls, at_most_once=True)
        return [_published(reply) for reply in replies]

    async def disconnect(self, user_id: str) -> int:
        call = control.disconnect_call(self._prefix, user_id, None, self._sharded, self._revocation_ms)
        return int(_checked(await scripts.run_apart(self._client, [call]))[0])

    async def online(self, users: list[str]) -> dict[str, int]:
        calls = control.online_calls(self._prefix, users, self._sharded)
        counts = _checked(await scripts.run_apart(self._client, calls))
        return {user: int(n) for user, n in zip(users, counts, strict=True)}


def _published(reply: Any) -> dict[str, Any] | ApiError:
    if isinstance(reply, Exception):
        return unavailable()
    if not isinstance(reply, list):  # a plain publish: its receivers
        return {"receivers": int(reply), "position": None}
    epoch, offset, receivers, *repeated = reply
    text = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
    answer: dict[str, Any] = {"receivers": int(receivers), "position": format_position(text, int(offset))}
    if repeated and int(repeated[0]):
        answer["repeated"] = True
    return answer


def _checked(replies: list[Any]) -> list[Any]:
    if any(isinstance(reply, Exception) for reply in replies):
        raise unavailable()
    return replies
