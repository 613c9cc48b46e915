"""The HTTP API through a real gunicorn and a real Redis: each route does what the publisher
library does, and a position it answers resumes a client (idempotency: test_api_idempotency.py)."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway.publishing.publisher import AsyncPublisher
from harness.api_client import API_KEY, OTHER_API_KEY, call, envelope_socket, frames_until, post
from harness.clients import admit
from harness.fault_proxy import Fault, FaultProxy
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

KEYS = f"{API_KEY},{OTHER_API_KEY}"


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[Gateway]:
    # Two workers: concurrent callers meet in two processes, as behind a load balancer.
    with running_gateway(redis_server.url, workers=2, WEBSOCKET_API_KEYS=KEYS) as gateway:
        yield gateway


async def test_a_publish_reaches_the_user_with_the_position_it_answered(api: Gateway, user: str) -> None:
    async with await envelope_socket(api, user) as ws:
        answer = await post(api, "/api/publish", {"user": user, "data": {"n": 1}})
        assert answer.status == 200, answer.body
        assert answer.headers["content-type"] == "application/json"
        result = answer.json()
        assert result["receivers"] == 1 and result["position"]
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame == {"type": "message", "position": result["position"], "data": {"n": 1}}


async def test_a_string_is_sent_as_the_string_and_other_values_as_compact_json(
    api: Gateway, user: str
) -> None:
    async with connect(f"{api.ws_url}?token={make_token(user)}") as ws:
        await admit_pong(ws)
        for data, wire in [("plain text", "plain text"), ({"a": [1, 2]}, '{"a":[1,2]}'), (3.5, "3.5")]:
            assert (await post(api, "/api/publish", {"user": user, "data": data})).status == 200
            assert await asyncio.wait_for(ws.recv(), 5) == wire


async def admit_pong(ws: ClientConnection) -> None:
    await ws.send('{"type":"ping"}')
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def test_without_history_the_position_is_null_and_the_frame_has_none(api: Gateway, user: str) -> None:
    async with await envelope_socket(api, user) as ws:
        answer = await post(api, "/api/publish", {"user": user, "data": "x", "history": False})
        assert answer.json() == {"receivers": 1, "position": None}
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "message", "data": "x"}


NODE_PUBLISH = textwrap.dedent(
    """
    const [port, key, user] = process.argv.slice(1);
    const response = await fetch(`http://127.0.0.1:${port}/api/publish`, {
      method: "POST",
      headers: {"Authorization": `Bearer ${key}`, "Content-Type": "application/json"},
      body: JSON.stringify({user, data: {from: "node"}}),
    });
    if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
    console.log((await response.json()).position);
    """
)


async def test_node_and_curl_publish_with_history_and_a_client_resumes_from_their_positions(
    api: Gateway, redis_server: RedisServer, user: str
) -> None:
    """Backends in other languages: a Node script (fetch) and curl publish while the user is away;
    a client that resumes from the position before them gets both, in order."""
    async with AsyncPublisher(redis_server.url) as publisher:
        before = (await publisher.publish(user, {"from": "python"})).position
    node = await asyncio.to_thread(
        subprocess.run,
        ["node", "--input-type=module", "-e", NODE_PUBLISH, str(api.port), API_KEY, user],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    curl = await asyncio.to_thread(
        subprocess.run,
        [
            *("curl", "-sS", "--fail-with-body", "-H", f"Authorization: Bearer {API_KEY}"),
            *(
                "-H",
                "Content-Type: application/json",
                "--data",
                json.dumps({"user": user, "data": "from curl"}),
            ),
            f"http://127.0.0.1:{api.port}/api/publish",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    positions = [node.stdout.strip(), json.loads(curl.stdout)["position"]]
    async with await envelope_socket(api, user, since=before) as ws:
        frames = await frames_until(ws, "from curl")
    assert frames == [
        {"type": "recovery", "recovered": True, "replayed": 2},
        {"type": "message", "position": positions[0], "data": {"from": "node"}},
        {"type": "message", "position": positions[1], "data": "from curl"},
    ]


async def test_a_batch_answers_in_order_with_each_bad_message_in_its_place(api: Gateway, user: str) -> None:
    async with await envelope_socket(api, user) as ws:
        messages: list[dict[str, Any]] = [
            {"user": user, "data": 1},
            {"user": "has space", "data": 2},
            {"user": user, "data": 3, "history": False},
            {"user": user},
            {"group": "*", "data": 4},
            {"user": user, "data": 5, "idempotency_key": "batch-key"},
        ]
        answer = await post(api, "/api/publish/batch", {"messages": messages})
        assert answer.status == 200, answer.body
        results = answer.json()["results"]
        assert results[1:5] == [
            {"error": "invalid_user"},
            {"receivers": 1, "position": None},
            {"error": "missing_data"},
            {"error": "invalid_group"},
        ]
        assert results[0]["receivers"] == results[5]["receivers"] == 1
        frames = await frames_until(ws, 5)
    assert [(f["data"], f.get("position")) for f in frames] == [
        (1, results[0]["position"]),
        (3, None),
        (5, results[5]["position"]),
    ]


async def test_a_group_and_a_broadcast_reach_members_with_their_source_once_per_key(
    api: Gateway, user: str
) -> None:
    """A group publish reaches the group's members only, a broadcast everyone, each frame naming
    its source; an idempotency key is the target's: the same key publishes once to the group and
    once to the broadcast, and a repeat answers the first position again."""
    group = f"team-{user}"
    member = await connect(f"{api.ws_url}?token={make_token(user, groups=[group])}&envelope=1")
    other = await connect(f"{api.ws_url}?token={make_token(f'{user}-x')}&envelope=1")
    async with member, other:
        first = await post(api, "/api/publish", {"group": group, "data": "g", "idempotency_key": "k"})
        again = await post(api, "/api/publish", {"group": group, "data": "g", "idempotency_key": "k"})
        everyone = await post(api, "/api/publish", {"broadcast": True, "data": "b", "idempotency_key": "k"})
        assert first.status == again.status == everyone.status == 200, (first.body, everyone.body)
        assert first.json()["position"] and again.json() == {**first.json(), "repeated": True}
        assert everyone.json()["position"] and "repeated" not in everyone.json()
        seen = await frames_until(member, "b")
        assert [(f["data"], f["group"]) for f in seen] == [("g", group), ("b", "*")]
        assert [(f["data"], f["group"]) for f in await frames_until(other, "b")] == [("b", "*")]


async def test_an_empty_batch_answers_no_results(api: Gateway) -> None:
    answer = await post(api, "/api/publish/batch", {"messages": []})
    assert (answer.status, answer.json()) == (200, {"results": []})


async def test_online_counts_live_connections_and_disconnect_closes_them(api: Gateway, user: str) -> None:
    other = f"{user}-other"
    sockets = [await admit(api.ws_url, user) for _ in range(2)]
    assert all(isinstance(ws, ClientConnection) for ws in sockets)
    answer = await post(api, "/api/online", {"users": [user, other, user]})
    assert answer.json() == {"online": {user: 2, other: 0}}

    assert (await post(api, "/api/disconnect", {"user": user})).json() == {"disconnected": 2}
    for ws in sockets:
        assert isinstance(ws, ClientConnection)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 4003
    assert (await post(api, "/api/online", {"users": [user]})).json() == {"online": {user: 0}}


async def test_requests_are_counted_by_route_and_status_without_user_or_key(api: Gateway, user: str) -> None:
    before = scrape(api)
    await post(api, "/api/publish", {"user": user, "data": 1})
    await post(api, "/api/publish", {"user": user, "data": 1}, key="wrong" * 8)
    await post(api, f"/api/{user}", {})
    await post(api, f"/api/{user}", {}, key=None)
    after = scrape(api)

    def grew(**labels: str) -> float:
        name = "websocket_api_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew(route="/api/publish", status="200") == 1
    assert grew(route="/api/publish", status="401") == 1
    assert grew(route="other", status="404") == grew(route="other", status="401") == 1
    assert value(after, "websocket_api_request_duration_seconds_count", route="/api/publish") >= 2
    for (_, labels), _n in after.items():
        for _label, text in labels:
            assert user not in text and API_KEY not in text


async def test_many_requests_share_one_keep_alive_connection(api: Gateway, user: str) -> None:
    def twenty() -> list[int]:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        try:
            return [
                call(api.port, "/api/publish", {"user": user, "data": n}, connection=conn).status
                for n in range(20)
            ]
        finally:
            conn.close()

    assert await asyncio.to_thread(twenty) == [200] * 20


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_without_keys_the_api_does_not_exist(gateway_one: Gateway, method: str) -> None:
    for path in ["/api/publish", "/api/openapi.json", "/api/nothing"]:
        assert call(gateway_one.port, path, {"user": "a", "data": 1}, method=method).status == 404


async def test_a_batch_is_one_round_trip_to_redis(own_redis: RedisServer) -> None:
    """With every Redis reply delayed 0.2 s each way, 200 messages answer within a few round trips
    (one by one they would take 80 s)."""
    with (
        FaultProxy(own_redis.port) as proxy,
        running_gateway(proxy.url, workers=1, WEBSOCKET_API_KEYS=API_KEY) as gateway,
    ):
        await eventually(in_thread(lambda: gateway.get("/healthz/redis")[0] == 200), timeout=10)
        for history in (True, False):  # loads both scripts before the delay
            assert (
                await post(gateway, "/api/publish", {"user": "warm", "data": 0, "history": history})
            ).status == 200
        messages = [{"user": f"rt-{n % 20}", "data": n, "history": n % 2 == 0} for n in range(200)]
        with proxy.injected(Fault.LATENCY, 30, latency=0.2):
            started = time.monotonic()
            answer = await post(gateway, "/api/publish/batch", {"messages": messages})
            elapsed = time.monotonic() - started
        assert answer.status == 200 and len(answer.json()["results"]) == 200
        assert elapsed < 4 * 0.4, f"{elapsed:.1f} s: more than three round trips"
