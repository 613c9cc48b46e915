"""Read a user's history after a position: one atomic script call (gateway/lua/history_read.lua)
on the user's own keys only, bounded by a cap on the entries returned."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from gateway import keys

_READ_LUA = resources.files("gateway").joinpath("lua", "history_read.lua").read_text()


class Reading(NamedTuple):
    """``result`` is "ok" or why the gap cannot be filled (see history_read.lua); ``entries`` are
    the data of offsets ``after + 1`` onwards, in order; ``epoch``/``offset`` the history's now."""

    result: str
    epoch: str
    offset: int
    entries: list[bytes]


class HistoryReader:
    def __init__(self, client: aioredis.Redis, prefix: str, replay_cap: int) -> None:
        self._client = client
        self._prefix = prefix
        self.replay_cap = replay_cap
        self._script = client.register_script(_READ_LUA)

    async def read(self, user_id: str, epoch: str, after: int) -> Reading:
        return (await self.read_many([(user_id, epoch, after)]))[0]

    async def read_many(self, gaps: Sequence[tuple[str, str, int]]) -> list[Reading]:
        """(user id, epoch, offset) each; one round trip for all. Raises RedisError."""
        pipeline = self._client.pipeline(transaction=False)
        for user_id, epoch, after in gaps:
            prefix = self._prefix
            user_keys = [keys.history_meta_key(prefix, user_id), keys.history_key(prefix, user_id)]
            await self._script(user_keys, [epoch, after, self.replay_cap], client=pipeline)
        return [_reading(reply) for reply in await pipeline.execute()]


def _reading(reply: list[Any]) -> Reading:
    result, epoch, offset, *entries = reply
    return Reading(result.decode(), epoch.decode(), int(offset), list(entries))
