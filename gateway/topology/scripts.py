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
repeat, except that a history publish could be written twice. So ``run_apart(...,
at_most_once=True)`` (the HTTP API's publishes, on a client that retries nothing) sends a call
again only where its node said it did not run it (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, NOSCRIPT) or
the connection could not even be made; a lost reply stays an error, and one pipeline per node, so
a node that fails fails only its own calls.
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
# Replies of a node that did not run the call.
_NOT_RUN = (MovedError, AskError, TryAgainError, ClusterDownError)


def never_sent(error: BaseException) -> bool:
    """Whether a command failed before it reached its node: the connection could not be made.
    redis-py says so only in its message ("Error 111 connecting to ...", "Timeout connecting to
    server"); any other connection error may come after the node ran the command."""
    return isinstance(error, RedisConnectionError | RedisTimeoutError) and "connecting to" in str(error)


def _reread_slot_map(client: Any) -> None:
    """What a cluster client does itself after a connection error in a command it may retry: its
    next command reads the slot map again first (the node may be a dead master, replaced). A
    client that retries nothing, and a pipeline, leave it to us."""
    if isinstance(client, aioredis.RedisCluster):
        client._initialize = True


def _cut_off(client: Any, replies: Sequence[Any], at_most_once: bool = False) -> list[int]:
    if not isinstance(client, redis.RedisCluster | aioredis.RedisCluster):
        return []  # a plain pipeline raises a connection error, and its client retries
    cut = [i for i, reply in enumerate(replies) if isinstance(reply, _CUT_OFF)]
    if not at_most_once:
        return cut
    if any(not isinstance(replies[i], _NOT_RUN) for i in cut):
        _reread_slot_map(client)
    return [i for i in cut if isinstance(replies[i], _NOT_RUN) or never_sent(replies[i])]


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
    at_most_once: bool = False,
) -> list[Any]:
    """The replies of ``calls``, in order, in one round trip per node (two if a script was
    missing). With ``raise_on_error`` the first error reply is raised, else left in its place.
    ``first``: plain commands sent ahead in the same pipeline, on one connection so Redis runs
    them first (not for a cluster client, which sends to nodes in no set order); their replies
    are not returned, and an error in them is raised. ``at_most_once``: see above."""
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
        *(
            _again(client, calls, group, replies)
            for group in _by_slot(calls, _cut_off(client, replies, at_most_once))
        )
    )
    return _checked(replies, raise_on_error)


async def run_apart(client: AsyncClient, calls: Sequence[Call], at_most_once: bool = False) -> list[Any]:
    """``run`` with every error left in its call's place, never raised: on a Redis Cluster,
    where redis-py fails a whole pipeline once a node it reaches is unreachable (after its own
    retries), the calls go again in one pipeline per node, so a dead master fails only its own.
    ``at_most_once``: one pipeline per node from the start, none sent again (see above)."""
    cluster = isinstance(client, aioredis.RedisCluster)
    try:
        if at_most_once and cluster and len(calls) > 1:
            await client.initialize()  # the slot map, to split the calls by node
            return await _node_by_node(client, calls, at_most_once)
        return await run(client, calls, raise_on_error=False, at_most_once=at_most_once)
    except UNAVAILABLE as exc:
        if at_most_once:
            _reread_slot_map(client)
        if at_most_once or not cluster or len(calls) < 2:
            return [exc] * len(calls)
    return await _node_by_node(client, calls, at_most_once)


async def _node_by_node(client: Any, calls: Sequence[Call], at_most_once: bool) -> list[Any]:
    """A cluster's calls in one pipeline per node at once, each failing alone (the calls of a
    slot no node is known for in one more)."""
    groups: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        try:
            node = client.get_node_from_key(call.keys[0]) if call.keys else None
        except UNAVAILABLE:
            node = None
        groups.setdefault(node.name if node is not None else "", []).append(i)
    replies: list[Any] = [None] * len(calls)

    async def one_node(group: list[int]) -> None:
        try:
            group_calls = [calls[i] for i in group]
            answers = await run(client, group_calls, raise_on_error=False, at_most_once=at_most_once)
        except UNAVAILABLE as exc:
            if at_most_once:
                _reread_slot_map(client)
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
