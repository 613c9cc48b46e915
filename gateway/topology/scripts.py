"""The gateway's Lua scripts (gateway/lua/), run with EVALSHA through a pipeline on any command
client: one Redis, a Redis Cluster or the master Sentinel names.

redis-py's ``Script`` cannot go into a Redis Cluster pipeline (EVALSHA is blocked there by name)
and in a plain pipeline it asks SCRIPT EXISTS first, one more round trip per batch. So the calls
go as raw EVALSHA commands, which a cluster pipeline routes by their keys, node by node; a call
Redis did not run because it lacks the script (a restart, a new node, a failover) is run again
after SCRIPT LOAD, which a cluster client sends to every master. Every call's keys must share one
hash slot: a cluster client refuses anything else before sending it.

A cluster pipeline leaves a connection error in the reply of each call sent to a node it could not
reach (a master killed, its replica not yet known) rather than retrying: those calls go again one
by one through the client, which finds the new master and retries as for any command. A call may
then run twice, as redis-py's own retries may run any command twice: every script here is safe to
repeat, except that a history publish could be written twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.topology.modes import UNAVAILABLE, AsyncClient, SyncClient


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    text: str
    sha: str

    @classmethod
    def load(cls, name: str, prelude: bool = True) -> LuaScript:
        """gateway/lua/<name>, after the helpers the lease scripts share (_prelude.lua)."""
        lua = resources.files("gateway").joinpath("lua")
        text = (lua.joinpath("_prelude.lua").read_text() if prelude else "") + lua.joinpath(name).read_text()
        return cls(name, text, hashlib.sha1(text.encode()).hexdigest())


class Call(NamedTuple):
    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Any]


def _queue(pipeline: Any, calls: Sequence[Call], client: Any = None) -> None:
    """``client``: a synchronous cluster client, whose pipeline would otherwise ask a node
    (COMMAND GETKEYS) where each EVALSHA goes, one round trip per call (redis-py 8.1)."""
    for script, keys, args in calls:
        route = {"target_nodes": client.get_node_from_key(keys[0])} if client is not None and keys else {}
        pipeline.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **route)


def _missing(replies: Sequence[Any]) -> list[int]:
    return [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]


def _checked(replies: list[Any], raise_on_error: bool) -> list[Any]:
    if raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


# A node out of reach, or a slot that moved: the client's own command path handles these.
_CUT_OFF = (RedisConnectionError, RedisTimeoutError, MovedError, AskError, TryAgainError, ClusterDownError)


def _cut_off(client: Any, replies: Sequence[Any]) -> list[int]:
    if not isinstance(client, redis.RedisCluster | aioredis.RedisCluster):
        return []  # a plain pipeline raises a connection error, and its client retries
    return [i for i, reply in enumerate(replies) if isinstance(reply, _CUT_OFF)]


async def _alone(client: Any, call: Call) -> Any:
    command = ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
    try:
        try:
            return await client.execute_command(*command)
        except NoScriptError:
            await client.script_load(call.script.text)
            return await client.execute_command(*command)
    except RedisError as exc:
        return exc


def _alone_sync(client: Any, call: Call) -> Any:
    command = ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
    try:
        try:
            return client.execute_command(*command)
        except NoScriptError:
            client.script_load(call.script.text)
            return client.execute_command(*command)
    except RedisError as exc:
        return exc


def _by_slot(calls: Sequence[Call], indices: list[int]) -> list[list[int]]:
    """Calls again one slot after another in order (a user's release before its acquire), the
    slots at once."""
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(key_slot(calls[i].keys[0].encode()) if calls[i].keys else -1, []).append(i)
    return list(groups.values())


async def _again(client: Any, calls: Sequence[Call], group: list[int], replies: list[Any]) -> None:
    for i in group:
        replies[i] = await _alone(client, calls[i])


async def run(
    client: AsyncClient,
    calls: Sequence[Call],
    raise_on_error: bool = True,
    first: Sequence[tuple[Any, ...]] = (),
) -> list[Any]:
    """The replies of ``calls``, in order, in one round trip per node (two if a script was
    missing). With ``raise_on_error`` the first error reply is raised, else left in its place.
    ``first``: plain commands sent ahead in the same pipeline, on one connection so Redis runs
    them first (not for a cluster client, which sends to nodes in no set order); their replies
    are not returned, and an error in them is raised."""
    if not calls:
        return []
    if first and isinstance(client, aioredis.RedisCluster):
        raise ValueError("commands sent first need one connection, not a cluster pipeline")
    async with client.pipeline(transaction=False) as pipeline:
        for command in first:
            pipeline.execute_command(*command)
        _queue(pipeline, calls)
        replies = list(await pipeline.execute(raise_on_error=False))
    _checked(replies[: len(first)], True)
    replies = replies[len(first) :]
    missing = _missing(replies)
    if missing:
        for script in {calls[i].script for i in missing}:
            await client.script_load(script.text)
        async with client.pipeline(transaction=False) as pipeline:
            _queue(pipeline, [calls[i] for i in missing])
            for i, reply in zip(missing, await pipeline.execute(raise_on_error=False), strict=True):
                replies[i] = reply
    await asyncio.gather(
        *(_again(client, calls, group, replies) for group in _by_slot(calls, _cut_off(client, replies)))
    )
    return _checked(replies, raise_on_error)


async def run_apart(client: AsyncClient, calls: Sequence[Call]) -> list[Any]:
    """``run`` with every error left in its call's place, never raised: on a Redis Cluster,
    where redis-py fails a whole pipeline once a node it reaches is unreachable (after its own
    retries), the calls go again in one pipeline per node, so a dead master fails only its own."""
    try:
        return await run(client, calls, raise_on_error=False)
    except UNAVAILABLE as exc:
        if not isinstance(client, aioredis.RedisCluster) or len(calls) < 2:
            return [exc] * len(calls)
        failure: Exception = exc
    groups: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        try:
            node = client.get_node_from_key(call.keys[0]) if call.keys else None
        except UNAVAILABLE:
            node = None
        groups.setdefault(node.name if node is not None else "", []).append(i)
    replies: list[Any] = [failure] * len(calls)

    async def one_node(group: list[int]) -> None:
        try:
            answers = await run(client, [calls[i] for i in group], raise_on_error=False)
        except UNAVAILABLE as exc:
            answers = [exc] * len(group)
        for i, answer in zip(group, answers, strict=True):
            replies[i] = answer

    await asyncio.gather(*(one_node(group) for group in groups.values()))
    return replies


def run_sync(client: SyncClient, calls: Sequence[Call], raise_on_error: bool = True) -> list[Any]:
    """``run`` for a synchronous client."""
    if not calls:
        return []
    cluster = client if isinstance(client, redis.RedisCluster) else None
    pipeline: Any = client.pipeline(transaction=False)
    _queue(pipeline, calls, cluster)
    try:
        replies = list(pipeline.execute(raise_on_error=False))
    except _CUT_OFF as exc:  # a sync cluster pipeline raises these: every call goes again
        replies = [exc] * len(calls)
    missing = _missing(replies)
    if missing:
        for script in {calls[i].script for i in missing}:
            client.script_load(script.text)
        pipeline = client.pipeline(transaction=False)
        _queue(pipeline, [calls[i] for i in missing], cluster)
        for i, reply in zip(missing, pipeline.execute(raise_on_error=False), strict=True):
            replies[i] = reply
    for i in _cut_off(client, replies):
        replies[i] = _alone_sync(client, calls[i])
    return _checked(replies, raise_on_error)
