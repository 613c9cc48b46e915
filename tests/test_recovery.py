"""A resume (``?since=``) against a real Redis: what it queues for hostile history entries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.history.cursor import Cursor
from gateway.history.position import Position
from gateway.history.reader import HistoryReader
from gateway.history.recovery import resume
from gateway.history.resume_budget import ResumeBudget
from gateway.publishing.publisher import AsyncPublisher
from harness.redis_server import RedisServer

LIMIT = 64 * 1024

# Resumes are not what these tests budget.
UNLIMITED = ResumeBudget(resumes_per_minute=10**6, bytes_per_minute=10**12)


class Resuming:
    def __init__(self, user_id: str, groups: tuple[str, ...] = ()) -> None:
        self.user_id = user_id
        self.groups = groups
        self.cursor = Cursor(0)
        self.frames: list[bytes] = []
        self.last: Position | None = None

    def start_with(self, frames: list[bytes], cursor: Cursor | None) -> None:
        self.frames, self.last = frames, None if cursor is None else cursor.user


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_a_resume_over_hostile_entries_replays_what_fits_and_never_raises(
    client: aioredis.Redis, user: str
) -> None:
    """Entries nested 1,500 deep (RecursionError in Python's parser) go as JSON strings; entries
    whose envelope would be over the frame bound (control characters escape to 6 bytes) are
    dropped and counted; the replay count and the position still cover everything read."""
    publisher = AsyncPublisher(client=client, max_payload_size=LIMIT)
    first = await publisher.publish(user, {"n": 0})
    deep = "[" * 1500 + "]" * 1500
    await publisher.publish(user, deep)
    await publisher.publish(user, "\x01" * 65_000)
    last = await publisher.publish(user, {"n": 3})
    connection = Resuming(user)
    assert (
        await resume(HistoryReader(client, "ws", 100), connection, first.position, LIMIT, UNLIMITED) is None
    )
    frames = [json.loads(frame) for frame in connection.frames]
    assert frames[0] == {"type": "recovery", "recovered": True, "replayed": 2}
    assert [frame["data"] for frame in frames[1:]] == [deep, {"n": 3}]
    assert frames[-1]["position"] == last.position
    assert connection.last is not None and connection.last.offset == int(last.position.split("-")[0])


async def test_a_history_whose_meta_was_written_by_hand_reads_as_lost(
    client: aioredis.Redis, user: str
) -> None:
    """The epoch goes unescaped into positions and envelope JSON, and the meta hash is anyone's
    with write access: one the publish script would never make reads as no history at all."""
    publisher = AsyncPublisher(client=client, max_payload_size=LIMIT)
    first = await publisher.publish(user, {"n": 0})
    await publisher.publish(user, {"n": 1})
    reader = HistoryReader(client, "ws", 100)
    forged = 'a","forged":"1'
    await client.hset(f"{{ws:{user}}}:meta", "epoch", forged)
    assert (await reader.read(user, forged, 1)).result == "lost"
    assert (await reader.read(user, "", 0)).result == "lost"
    connection = Resuming(user)
    assert await resume(reader, connection, first.position, LIMIT, UNLIMITED) is None
    assert [json.loads(frame) for frame in connection.frames] == [
        {"type": "recovery", "recovered": False, "replayed": 0, "reason": "lost"}
    ]
    await client.hset(f"{{ws:{user}}}:meta", mapping={"epoch": "abc", "offset": "x"})
    assert (await reader.read(user, "", 0)).result == "lost"


async def test_the_replay_cap_bounds_a_resume_across_all_its_sources(
    client: aioredis.Redis, user: str
) -> None:
    """Two missed messages each from the user and a group, a cap of three: not recovered, nothing
    replayed (each source alone is within the cap); a cap of four replays all four."""
    prefix = f"iso-{user}"  # broadcasts of other tests (this Redis is shared) are not in it
    publisher = AsyncPublisher(client=client, max_payload_size=LIMIT, prefix=prefix)
    team = f"team-{user}"
    first = await publisher.publish(user, {"u": 0})
    for n in (1, 2):
        await publisher.publish(user, {"u": n})
        await publisher.publish_group(team, {"g": n})
    assert first.position is not None
    since = f"t0.u{first.position}"
    for cap, expected in (
        (3, {"type": "recovery", "recovered": False, "replayed": 0, "reason": "too_long"}),
        (4, {"type": "recovery", "recovered": True, "replayed": 4}),
    ):
        connection = Resuming(user, (team,))
        reader = HistoryReader(client, prefix, cap)
        assert await resume(reader, connection, since, LIMIT, UNLIMITED) is None
        assert json.loads(connection.frames[0]) == expected
