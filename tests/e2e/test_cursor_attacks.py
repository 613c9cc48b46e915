"""Hostile and unlucky resumes of the one cursor: none may claim ``recovered:true`` while skipping
or doubling messages of the user, a group or the broadcast, nor cost Redis more than the replay
cap allows. Real Redis, real gunicorn, real clients, the publisher library."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.history.cursor import group_hash
from gateway.publishing.publisher import AsyncPublisher
from harness.bystander import watching_bystander
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token

_LENGTH = 5  # the user's history length cap


async def _open(gateway: Gateway, user: str, team: str, query: str) -> ClientConnection:
    token = make_token(user, groups=[team])
    return await connect(f"{gateway.ws_url}?token={token}{query}", open_timeout=10)


async def _frames(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(count)]


async def test_a_user_only_position_whose_entry_was_trimmed_does_not_skip_group_messages(
    own_redis: RedisServer, user: str
) -> None:
    """The client's last frame was a user message, so its cursor is the user-only form, and the
    groups are read from that message's time. When the length cap pushed exactly that entry out
    (the ones after it are all still there, so the user's own part recovers), the time is gone:
    the group and broadcast messages missed meanwhile must be replayed, or the resume must say
    ``recovered:false``, never ``recovered:true`` without them."""
    team = f"team-{uuid.uuid4().hex[:10]}"
    with running_gateway(own_redis.url, workers=1) as gateway:
        async with AsyncPublisher(own_redis.url, history_length=_LENGTH) as publisher:
            first = await _open(gateway, user, team, "&envelope=1")
            await publisher.publish(user, {"to": "user", "seq": 0})
            (frame,) = await _frames(first, 1)
            position = frame["position"]
            assert "." not in position  # the user-only form
            await first.close()
            await publisher.publish_group(team, {"to": "group", "seq": 0})
            await publisher.broadcast({"to": "everyone", "seq": 0})
            for seq in range(1, _LENGTH + 1):  # exactly enough to trim the client's last entry
                await publisher.publish(user, {"to": "user", "seq": seq})
        async with await _open(gateway, user, team, f"&since={position}") as resumed:
            (recovery,) = await _frames(resumed, 1)
            assert recovery["type"] == "recovery"
            if recovery["recovered"]:
                replay = await _frames(resumed, recovery["replayed"])
                got = sorted((f["data"]["to"], f["data"]["seq"]) for f in replay)
                users = [("user", s) for s in range(1, _LENGTH + 1)]
                assert got == [("everyone", 0), ("group", 0), *users]
            else:
                assert recovery["reason"] == "trimmed"


async def test_a_user_only_position_whose_entry_was_trimmed_recovers_when_nothing_else_was_sent(
    own_redis: RedisServer, user: str
) -> None:
    """As before groups: with no group or broadcast message in Redis, nothing else can have been
    missed, and the user's own messages after that entry are all there."""
    with running_gateway(own_redis.url, workers=1) as gateway:
        async with AsyncPublisher(own_redis.url, history_length=_LENGTH) as publisher:
            position = (await publisher.publish(user, 0)).position
            await publisher.publish_many([(user, seq) for seq in range(1, _LENGTH + 1)])
        token = make_token(user)
        async with connect(f"{gateway.ws_url}?token={token}&since={position}", open_timeout=10) as ws:
            recovery, *replay = await _frames(ws, 1 + _LENGTH)
    assert recovery == {"type": "recovery", "recovered": True, "replayed": _LENGTH}
    assert [f["data"] for f in replay] == list(range(1, _LENGTH + 1))


async def _refresh(ws: ClientConnection, user: str, groups: list[str]) -> None:
    await ws.send(json.dumps({"type": "refresh", "token": make_token(user, groups=groups)}))
    (refreshed,) = await _frames(ws, 1)
    assert refreshed["type"] == "refreshed"


async def test_a_group_left_and_joined_again_by_refreshes_is_not_replayed_twice(
    own_redis: RedisServer, user: str
) -> None:
    """Member of the team, given its message and a broadcast (the cursor is composite); a
    refresh leaves the team, another joins it again; the last frame (a user message) is resumed
    from: the team's message was given once, and the resume must not give it again while saying
    recovered:true."""
    team = f"team-{uuid.uuid4().hex[:10]}"
    with running_gateway(own_redis.url, workers=1) as gateway:
        async with AsyncPublisher(own_redis.url) as publisher:
            async with await _open(gateway, user, team, "&envelope=1") as ws:
                await publisher.publish_group(team, {"to": "group", "seq": 0})
                await publisher.broadcast({"to": "everyone", "seq": 0})
                given = await _frames(ws, 2)
                assert [f["group"] for f in given] == [team, "*"]
                await _refresh(ws, user, [])
                await _refresh(ws, user, [team])
                await publisher.publish(user, {"to": "user", "seq": 0})
                (last,) = await _frames(ws, 1)
            async with await _open(gateway, user, team, f"&since={last['position']}") as resumed:
                (recovery,) = await _frames(resumed, 1)
                replay = await _frames(resumed, recovery["replayed"])
    assert recovery["recovered"] is False or [f["data"] for f in replay] == []


async def test_a_resume_over_the_cap_makes_redis_send_no_more_than_the_cap_allows(
    own_redis: RedisServer, user: str
) -> None:
    """A member of 64 groups, each with a full history, resumes from a composite cursor of long
    ago (``t0``: every source from the start; any old cursor does the same). The replay cap bounds
    the whole replay, so the answer is ``too_long``; what Redis sent the worker to find that out
    must stay within about what the cap allows (cap entries of the largest size), not the cap
    per source."""
    cap, size = 10, 16 * 1024
    teams = [f"{user}-team{i}" for i in range(64)]
    with running_gateway(own_redis.url, workers=1, WEBSOCKET_HISTORY_REPLAY_CAP=str(cap)) as gateway:
        async with AsyncPublisher(own_redis.url, history_length=cap) as publisher:
            for team in teams:
                for _ in range(cap):
                    await publisher.publish_group(team, "x" * size)
        redis = own_redis.client()
        sent_before = int(redis.info("stats")["total_net_output_bytes"])
        token = make_token(user, groups=teams)
        async with connect(f"{gateway.ws_url}?token={token}&since=t0", open_timeout=10) as ws:
            (recovery,) = await _frames(ws, 1)
        sent = int(redis.info("stats")["total_net_output_bytes"]) - sent_before
    assert recovery == {"type": "recovery", "recovered": False, "replayed": 0, "reason": "too_long"}
    assert sent < 2 * cap * size + 256 * 1024, f"Redis sent {sent} bytes for a too_long resume"


# Two group ids whose cursor names (ten hex digits of their hash) are the same: a few seconds of
# hashing finds such a pair, so a backend naming groups after what users type can meet one.
_TWINS = ("room-22675", "room-1695464")


async def test_two_groups_of_one_name_in_the_cursor_are_not_replayed_twice(
    own_redis: RedisServer, user: str
) -> None:
    """A member of both twins is given a message of each; a resume from the last frame must not
    give either again while saying recovered:true (the cursor cannot tell their positions apart)."""
    assert group_hash(_TWINS[0]) == group_hash(_TWINS[1])
    token = make_token(user, groups=list(_TWINS))
    with running_gateway(own_redis.url, workers=1) as gateway:
        async with AsyncPublisher(own_redis.url) as publisher:
            async with connect(f"{gateway.ws_url}?token={token}&envelope=1", open_timeout=10) as ws:
                for twin in _TWINS:
                    await publisher.publish_group(twin, twin)
                given = await _frames(ws, 2)
            assert sorted(f["group"] for f in given) == sorted(_TWINS)
            since = given[-1]["position"]
            async with connect(f"{gateway.ws_url}?token={token}&since={since}", open_timeout=10) as ws:
                (recovery,) = await _frames(ws, 1)
                replay = await _frames(ws, recovery["replayed"])
    assert recovery["recovered"] is False or replay == [], replay


async def test_a_resume_over_the_cap_is_charged_what_redis_sent_for_it(
    own_redis: RedisServer, user: str
) -> None:
    """The user's full history is read with the group's count; the group's one message takes the
    replay over the cap (``too_long``). What Redis sent (the user's entries, over the minute's
    byte budget) is charged all the same: the next resume is refused before any Redis read, and a
    bystander on the worker is served throughout."""
    cap, size, budget = 10, 16 * 1024, 64 * 1024
    team = f"team-{uuid.uuid4().hex[:10]}"
    settings = {"WEBSOCKET_HISTORY_REPLAY_CAP": str(cap), "WEBSOCKET_RESUME_BYTES_PER_MINUTE": str(budget)}
    with running_gateway(own_redis.url, workers=1, **settings) as gateway:
        async with watching_bystander(gateway, own_redis.url):
            async with AsyncPublisher(own_redis.url) as publisher:
                for _ in range(cap):
                    await publisher.publish(user, "x" * size)
                await publisher.publish_group(team, "over the cap")
            answers = []
            for _ in range(2):
                try:
                    async with await _open(gateway, user, team, "&since=t0") as ws:
                        answers.append((await _frames(ws, 1))[0].get("reason"))
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None
                    answers.append(closed.rcvd.reason)
    assert answers == ["too_long", "too_many_resumes"]
