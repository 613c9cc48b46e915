"""The gateway's Lua scripts (gateway/lua/), run with EVALSHA through a pipeline on any command
client: one Redis, a Redis Cluster or the master Sentinel names.

redis-py's ``Script`` cannot go into a Redis Cluster pipeline (EVALSHA is blocked there by name)
and in a plain pipeline it asks SCRIPT EXISTS first, one more round trip per batch. So the calls
go as raw EVALSHA commands, which a cluster pipeline routes by their keys, node by node; a call
Redis did not run because it lacks the script (a restart, a new node, a failover) is run again
after SCRIPT LOAD, which a cluster client sends to every master. Every call's keys must share one
hash slot: a cluster client refuses anything else before sending it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

from redis.exceptions import NoScriptError

from gateway.redis_topology import AsyncClient, SyncClient


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


def _queue(pipeline: Any, calls: Sequence[Call]) -> None:
    for script, keys, args in calls:
        pipeline.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


def _missing(replies: Sequence[Any]) -> list[int]:
    return [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]


def _checked(replies: list[Any], raise_on_error: bool) -> list[Any]:
    if raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


async def run(client: AsyncClient, calls: Sequence[Call], raise_on_error: bool = True) -> list[Any]:
    """The replies of ``calls``, in order, in one round trip per node (two if a script was
    missing). With ``raise_on_error`` the first error reply is raised, else left in its place."""
    if not calls:
        return []
    async with client.pipeline(transaction=False) as pipeline:
        _queue(pipeline, calls)
        replies = list(await pipeline.execute(raise_on_error=False))
    missing = _missing(replies)
    if missing:
        for script in {calls[i].script for i in missing}:
            await client.script_load(script.text)
        async with client.pipeline(transaction=False) as pipeline:
            _queue(pipeline, [calls[i] for i in missing])
            for i, reply in zip(missing, await pipeline.execute(raise_on_error=False), strict=True):
                replies[i] = reply
    return _checked(replies, raise_on_error)


def run_sync(client: SyncClient, calls: Sequence[Call], raise_on_error: bool = True) -> list[Any]:
    """``run`` for a synchronous client."""
    if not calls:
        return []
    pipeline: Any = client.pipeline(transaction=False)
    _queue(pipeline, calls)
    replies = list(pipeline.execute(raise_on_error=False))
    missing = _missing(replies)
    if missing:
        for script in {calls[i].script for i in missing}:
            client.script_load(script.text)
        pipeline = client.pipeline(transaction=False)
        _queue(pipeline, [calls[i] for i in missing])
        for i, reply in zip(missing, pipeline.execute(raise_on_error=False), strict=True):
            replies[i] = reply
    return _checked(replies, raise_on_error)
