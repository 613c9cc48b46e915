"""Groups and broadcast through a real gunicorn worker and a real Redis: membership from the
token's ``groups`` claim, one channel per group per worker, live changes on refresh, and the one
cursor per connection that resumes across the user, its groups and broadcasts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.publishing.publisher import AsyncPublisher, Publisher
from harness.bystander import watching_bystander
from harness.gateway_process import Gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually


@pytest.fixture
def team() -> str:
    return f"team-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def publisher(redis_server: RedisServer) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher(redis_server.url) as publisher:
        yield publisher


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _open(gateway: Gateway, user: str, groups: list[str] | None, query: str = "") -> ClientConnection:
    token = make_token(user, groups=groups)
    return await connect(f"{gateway.ws_url}?token={token}{query}", open_timeout=10)


async def _frames(ws: ClientConnection, count: int) -> list[Any]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(count)]


async def _quiet(ws: ClientConnection) -> bool:
    """Nothing more arrives: a ping's pong is the next frame."""
    await ws.send('{"type":"ping"}')
    return json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def _subscribers(client: aioredis.Redis, channel: str) -> int:
    return int(dict(await client.pubsub_numsub(channel))[channel.encode()])


async def test_members_get_their_groups_messages_and_everyone_gets_broadcasts(
    gateway_one: Gateway, publisher: AsyncPublisher, user: str, team: str
) -> None:
    """A member's raw socket gets the payload byte for byte; an envelope frame says which group
    (or "*" for a broadcast); a socket whose token does not name the group gets nothing of it."""
    async with (
        await _open(gateway_one, user, [team]) as raw,
        await _open(gateway_one, user, [team], "&envelope=1") as env,
        await _open(gateway_one, f"{user}-x", None, "&envelope=1") as outsider,
    ):
        group = await publisher.publish_group(team, {"to": "team"})
        everyone = await publisher.broadcast("to everyone")
        mine = await publisher.publish(user, {"to": "me"})
        assert int(group) == 1 and group.position is not None and everyone.position is not None
        assert int(mine) == 1
        assert [await asyncio.wait_for(raw.recv(), 5) for _ in range(3)] == [
            '{"to":"team"}',
            "to everyone",
            '{"to":"me"}',
        ]
        frames = await _frames(env, 3)
        assert [(f.get("group"), f["data"]) for f in frames] == [
            (team, {"to": "team"}),
            ("*", "to everyone"),
            (None, {"to": "me"}),
        ]
        assert all("position" in f for f in frames)
        seen = await _frames(outsider, 1)
        assert [(f["group"], f["data"]) for f in seen] == [("*", "to everyone")]
        assert await _quiet(outsider)


async def test_a_group_channel_is_held_once_while_a_local_member_is_connected(
    gateway_one: Gateway, redis_client: aioredis.Redis, user: str, team: str
) -> None:
    """Two members on one worker: one subscription; the last one gone: none (PUBSUB NUMSUB)."""
    channel = f"ws:{{{team}"
    assert await _subscribers(redis_client, channel) == 0
    first = await _open(gateway_one, user, [team])
    second = await _open(gateway_one, f"{user}-2", [team])
    assert await _subscribers(redis_client, channel) == 1
    assert await _subscribers(redis_client, "ws:{*") >= 1
    await first.close()
    assert await _quiet(second)
    assert await _subscribers(redis_client, channel) == 1
    await second.close()

    async def dropped() -> bool:
        return await _subscribers(redis_client, channel) == 0

    await eventually(dropped, what="the group's channel unsubscribed after its last member")


async def test_a_refresh_changes_the_groups_live(
    gateway_one: Gateway, publisher: AsyncPublisher, redis_client: aioredis.Redis, user: str, team: str
) -> None:
    """A refresh whose token names another group: the old one's messages stop, the new one's
    arrive, without a reconnect; the old channel is dropped with its last member."""
    other = f"{team}-other"
    async with await _open(gateway_one, user, [team], "&envelope=1") as ws:
        await ws.send(json.dumps({"type": "refresh", "token": make_token(user, groups=[other])}))
        assert (await _frames(ws, 1))[0]["type"] == "refreshed"

        async def joined() -> bool:
            return await _subscribers(redis_client, f"ws:{{{other}") == 1

        await eventually(joined, what="the new group's channel subscribed")
        assert await _subscribers(redis_client, f"ws:{{{team}") == 0
        await publisher.publish_group(team, "left")
        await publisher.publish_group(other, "joined")
        assert [(f["group"], f["data"]) for f in await _frames(ws, 1)] == [(other, "joined")]
        assert await _quiet(ws)


@pytest.mark.parametrize(
    "groups",
    [
        "team",
        ["ok", 3],
        ["{braced}"],
        ["with space"],
        ["*"],
        [""],
        [f"g{i}" for i in range(65)],
    ],
)
async def test_an_unusable_groups_claim_is_an_invalid_token(
    gateway_one: Gateway, user: str, groups: Any
) -> None:
    """401 before the upgrade; 4401 token_invalid after a bearer offer (a browser)."""
    token = make_token(user, groups=groups)
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{gateway_one.ws_url}?token={token}", open_timeout=10)
    assert refused.value.response.status_code == 401
    async with connect(gateway_one.ws_url, subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "token_invalid")


async def test_a_refresh_with_an_unusable_groups_claim_ends_the_socket_as_a_bad_token(
    gateway_one: Gateway, publisher: AsyncPublisher, user: str, team: str
) -> None:
    """As for any bad refresh: 4401, and its groups never changed (a bystander member is served)."""
    async with (
        await _open(gateway_one, user, [team], "&envelope=1") as ws,
        await _open(gateway_one, f"{user}-b", [team], "&envelope=1") as bystander,
    ):
        await ws.send(json.dumps({"type": "refresh", "token": make_token(user, groups=[{"x": 1}])}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        await publisher.publish_group(team, "still")
        assert [(f["group"], f["data"]) for f in await _frames(bystander, 1)] == [(team, "still")]


async def test_one_cursor_resumes_the_user_its_groups_and_broadcasts(
    gateway_one: Gateway, publisher: AsyncPublisher, user: str, team: str
) -> None:
    """The last frame's position is the connection's cursor: resuming with it replays what was
    missed from every source, once, in order per source, then live messages."""
    async with await _open(gateway_one, user, [team], "&envelope=1") as ws:
        await publisher.publish(user, {"u": 0})
        await publisher.publish_group(team, {"g": 0})
        await publisher.broadcast({"b": 0})
        await publisher.publish(user, {"u": 1})
        seen = await _frames(ws, 4)
    cursor = seen[-1]["position"]
    assert cursor.startswith("t") and len(cursor) < 400
    for i in (1, 2):
        await publisher.publish_group(team, {"g": i})
        await publisher.broadcast({"b": i})
        await publisher.publish(user, {"u": i + 1})
    async with await _open(gateway_one, user, [team], f"&since={cursor}") as ws:
        recovery, *replayed = await _frames(ws, 7)
        assert recovery == {"type": "recovery", "recovered": True, "replayed": 6}
        by_source: dict[str | None, list[Any]] = {}
        for frame in replayed:
            by_source.setdefault(frame.get("group"), []).append(frame["data"])
        assert by_source == {
            None: [{"u": 2}, {"u": 3}],
            team: [{"g": 1}, {"g": 2}],
            "*": [{"b": 1}, {"b": 2}],
        }
        await publisher.publish_group(team, {"g": 3})
        live = await _frames(ws, 1)
        assert [(f["group"], f["data"]) for f in live] == [(team, {"g": 3})]
        assert await _quiet(ws)
        last = live[-1]["position"]
    # The cursor of the last frame covers everything: resuming with it replays nothing.
    async with await _open(gateway_one, user, [team], f"&since={last}") as ws:
        assert await _frames(ws, 1) == [{"type": "recovery", "recovered": True, "replayed": 0}]
        assert await _quiet(ws)


async def test_a_user_only_position_resumes_groups_and_broadcasts_from_its_time(
    gateway_one: Gateway, publisher: AsyncPublisher, user: str, team: str
) -> None:
    """A position of the user's alone (what earlier releases gave, and what a socket gives until
    its first group message) stays a valid since: the groups' and broadcasts' messages published
    after that user message are replayed too."""
    async with await _open(gateway_one, user, [team], "&envelope=1") as ws:
        mine = await publisher.publish(user, {"u": 0})
        (frame,) = await _frames(ws, 1)
    assert frame["position"] == mine.position  # the user-only form, as before
    await publisher.publish_group(team, {"g": 1})
    await publisher.broadcast({"b": 1})
    async with await _open(gateway_one, user, [team], f"&since={mine.position}") as ws:
        recovery, *replayed = await _frames(ws, 3)
        assert recovery == {"type": "recovery", "recovered": True, "replayed": 2}
        assert sorted((f["group"], json.dumps(f["data"])) for f in replayed) == [
            ("*", '{"b": 1}'),
            (team, '{"g": 1}'),
        ]


async def test_a_cursor_whose_group_part_cannot_be_recovered_is_not_recovered(
    gateway_one: Gateway, publisher: AsyncPublisher, redis_client: aioredis.Redis, user: str, team: str
) -> None:
    """One source lost (its history deleted): recovered:false with the reason, nothing replayed."""
    async with await _open(gateway_one, user, [team], "&envelope=1") as ws:
        await publisher.publish_group(team, {"g": 0})
        (frame,) = await _frames(ws, 1)
    await redis_client.delete(f"{{ws:{{{team}}}:meta", f"{{ws:{{{team}}}:history")
    await publisher.publish_group(team, {"g": 1})
    async with await _open(gateway_one, user, [team], f"&since={frame['position']}") as ws:
        assert await _frames(ws, 1) == [
            {"type": "recovery", "recovered": False, "replayed": 0, "reason": "epoch"}
        ]


async def test_the_publisher_refuses_a_bad_group_id_before_sending() -> None:
    """ValueError, not the connection error a publish to this unreachable Redis would raise."""
    async with AsyncPublisher("redis://127.0.0.1:1") as publisher:
        for bad in ("", "*", "{x", "a}", "a b", "ctl:x", "x" * 257):
            with pytest.raises(ValueError, match="group id"):
                await publisher.publish_group(bad, "x")
    with Publisher("redis://127.0.0.1:1") as sync_publisher, pytest.raises(ValueError, match="group id"):
        sync_publisher.publish_group("{x", "x")


async def test_hostile_claims_and_membership_churn_cost_a_bystander_nothing(
    gateway_one: Gateway, redis_server: RedisServer, redis_client: aioredis.Redis, user: str
) -> None:
    """Handshakes with unusable claims, and sockets that refresh between two sets of 64 groups as
    fast as they may, while a bystander on the same worker is watched; afterwards the worker holds
    no group channel of theirs."""
    sets = [[f"{user}-{side}{i}" for i in range(64)] for side in ("a", "b")]
    bad_claims: list[Any] = [[f"g{i}" for i in range(65)], ["{x"], "x", [1], ["*"]]
    async with watching_bystander(gateway_one, redis_server.url) as bystander:
        for claim in bad_claims * 4:
            with pytest.raises(InvalidStatus):
                await connect(f"{gateway_one.ws_url}?token={make_token(user, groups=claim)}", open_timeout=10)
        churners = [await _open(gateway_one, f"{user}-{n}", sets[0], "&envelope=1") for n in range(3)]
        for round_ in range(10):
            for n, ws in enumerate(churners):
                token = make_token(f"{user}-{n}", groups=sets[(round_ + 1) % 2])
                await ws.send(json.dumps({"type": "refresh", "token": token}))
                assert (await _frames(ws, 1))[0]["type"] == "refreshed"
            await bystander.check()
        for ws in churners:
            await ws.close()
    channels = [f"ws:{{{group}" for group in sets[0] + sets[1]]

    async def none_held() -> bool:
        return not any(dict(await redis_client.pubsub_numsub(*channels)).values())

    await eventually(none_held, what="no churned group channel left subscribed")


@pytest.mark.parametrize(
    "since",
    [
        "t\u00b2",
        "t\u0663.u1-a",
        "t1.u1-a.x",
        "t1.g" + "0" * 10,
        "t1." + ".".join(["b1-a"] * 70),
        "t" + "9" * 14,
    ],
)
async def test_a_hostile_since_is_not_recovered_and_the_socket_is_served(
    gateway_one: Gateway, user: str, team: str, since: str
) -> None:
    """Garbage in the composite form: ``recovered:false`` ``invalid``, never a failed handshake."""
    async with await _open(gateway_one, user, [team], f"&since={quote(since)}") as ws:
        assert await _frames(ws, 1) == [
            {"type": "recovery", "recovered": False, "replayed": 0, "reason": "invalid"}
        ]
        assert await _quiet(ws)
