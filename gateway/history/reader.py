"""Read a user's history after a position: one atomic script call (gateway/lua/history_read.lua)
on the user's own keys only, bounded by a cap on the entries returned; or count what such a read
would return, so that a resume of many sources sends nothing before it knows they fit its cap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from gateway import keys, wire
from gateway.topology import scripts
from gateway.topology.modes import AsyncClient
from gateway.topology.scripts import Call, LuaScript

_READ = LuaScript.load("history_read.lua", prelude=False)


class Reading(NamedTuple):
    """``result`` is "ok" or why the gap cannot be filled (see history_read.lua); ``entries`` are
    the data of offsets ``after + 1`` onwards, in order; ``epoch``/``offset`` the history's now
    (or the offset read up to); ``counted`` a count's answer (with no entries; 0 for a read)."""

    result: str
    epoch: str
    offset: int
    entries: list[bytes]
    counted: int = 0

    @property
    def missed(self) -> int:
        """How many entries there are to read: counted, or read."""
        return self.counted + len(self.entries)


_LOST = Reading("lost", "", 0, [])
COUNT = "count"  # a mode of read_many: how many entries, not their data


class HistoryReader:
    def __init__(self, client: AsyncClient, prefix: str, replay_cap: int) -> None:
        self._client = client
        self._prefix = prefix
        self.replay_cap = replay_cap

    async def read(self, user_id: str, epoch: str, after: int) -> Reading:
        return (await self.read_many([(user_id, epoch, after)]))[0]

    async def entry_time(self, user_id: str, offset: int) -> int | None:
        """When the user's history entry at ``offset`` was written (ms, Redis clock); None when
        it is gone. Raises RedisError."""
        key = keys.history_key(self._prefix, user_id)
        entry_id = f"{offset}-0"
        try:
            entries: Any = await self._client.xrange(key, entry_id, entry_id)
        except RedisClusterException as exc:
            raise RedisConnectionError(str(exc)) from exc
        for _, fields in entries:
            at = fields.get(b"t")
            return int(at) if at is not None and at.isdigit() else None
        return None

    async def read_many(
        self, gaps: Sequence[tuple[str, str, int]], modes: Sequence[str] | None = None
    ) -> list[Reading]:
        """(user id, epoch, offset) each; one round trip for all (per node on a cluster: each
        call reads one user's keys). ``modes``, one per gap: "" reads, ``COUNT`` counts, an
        offset reads up to it only. Raises RedisError."""
        prefix = self._prefix
        modes = modes or [""] * len(gaps)
        calls = [
            Call(
                _READ,
                [keys.history_meta_key(prefix, user_id), keys.history_key(prefix, user_id)],
                [epoch, after, self.replay_cap, mode],
            )
            for (user_id, epoch, after), mode in zip(gaps, modes, strict=True)
        ]
        try:
            replies = await scripts.run(self._client, calls)
        except RedisClusterException as exc:  # no node reached: not a RedisError
            raise RedisConnectionError(str(exc)) from exc
        return [_reading(reply, mode == COUNT) for reply, mode in zip(replies, modes, strict=True)]


def _reading(reply: list[Any], counting: bool) -> Reading:
    # A meta hash the publish script never wrote (the keys are anyone's with write access) is as
    # good as no history, and its epoch must not reach a position or an envelope. (An offset
    # that is not a number leaves a hole in the script's reply: the entries move up.)
    if len(reply) < 3 or not isinstance(reply[2], int) or (reply[1] and not wire.is_epoch(reply[1])):
        return _LOST
    result, epoch, offset, *entries = reply
    if counting:
        counted = entries[0] if entries and isinstance(entries[0], int) else 0
        return Reading(result.decode(), epoch.decode(), offset, [], counted)
    return Reading(result.decode(), epoch.decode(), offset, list(entries))
