"""Idempotency keys through a real gunicorn and Redis: concurrent retries deliver once, a retry
after a lost answer or a 503 publishes at most once, and the key is forgotten after the history's
TTL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness.api_client import API_KEY, Answer, call, envelope_socket, frames_until, post, published_until_end
from harness.fault_proxy import Fault, FaultProxy
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.waiting import eventually, in_thread


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[Gateway]:
    # Two workers: concurrent callers meet in two processes, as behind a load balancer.
    with running_gateway(redis_server.url, workers=2, WEBSOCKET_API_KEYS=API_KEY) as gateway:
        yield gateway


async def test_concurrent_retries_with_one_idempotency_key_deliver_once(api: Gateway, user: str) -> None:
    """Many callers with the same key at once: one publish, every caller answered its position."""
    body = {"user": user, "data": "once", "idempotency_key": f"order-{uuid.uuid4()}"}
    async with await envelope_socket(api, user) as ws:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: call(api.port, "/api/publish", body), range(32)))
        assert {a.status for a in answers} == {200}
        results = [a.json() for a in answers]
        assert len({r["position"] for r in results}) == 1
        assert sum(1 for r in results if not r.get("repeated")) == 1
        await post(api, "/api/publish", {"user": user, "data": "end"})
        frames = await frames_until(ws, "end")
    assert [f["data"] for f in frames] == ["once", "end"]
    assert frames[0]["position"] == results[0]["position"]


async def test_a_key_is_per_user_and_another_key_publishes_again(api: Gateway, user: str) -> None:
    key = f"k-{uuid.uuid4()}"
    first = (await post(api, "/api/publish", {"user": user, "data": 1, "idempotency_key": key})).json()
    other_user = (
        await post(api, "/api/publish", {"user": f"{user}-2", "data": 1, "idempotency_key": key})
    ).json()
    other_key = (
        await post(api, "/api/publish", {"user": user, "data": 1, "idempotency_key": key + "x"})
    ).json()
    assert "repeated" not in other_user and "repeated" not in other_key
    assert other_key["position"] != first["position"]


async def test_an_idempotency_key_is_forgotten_after_the_history_ttl(
    redis_server: RedisServer, user: str
) -> None:
    with running_gateway(
        redis_server.url, workers=1, WEBSOCKET_API_KEYS=API_KEY, WEBSOCKET_API_HISTORY_TTL="1"
    ) as gateway:
        body = {"user": user, "data": "again", "idempotency_key": "ttl-key"}
        first = (await post(gateway, "/api/publish", body)).json()
        assert (await post(gateway, "/api/publish", body)).json() == {**first, "repeated": True}

        async def published_anew() -> dict[str, Any] | None:
            result = (await post(gateway, "/api/publish", body)).json()
            return None if result.get("repeated") else result

        later = await eventually(published_anew, timeout=10, interval=0.1, what="the key to expire")
        assert later["position"] != first["position"]


async def test_redis_not_answering_is_503_and_a_retry_publishes_once(
    own_redis: RedisServer, user: str
) -> None:
    with running_gateway(own_redis.url, workers=1, WEBSOCKET_API_KEYS=API_KEY) as gateway:
        await eventually(in_thread(lambda: gateway.get("/healthz/redis")[0] == 200), timeout=10)
        own_redis.stop()
        body = {"user": user, "data": "x", "idempotency_key": "k1"}
        answer = await post(gateway, "/api/publish", body)
        assert (answer.status, answer.json()) == (503, {"error": "redis_unavailable"})
        batch = await post(
            gateway, "/api/publish/batch", {"messages": [body, {"user": "bad user", "data": 1}]}
        )
        assert (batch.status, batch.json()) == (503, {"error": "redis_unavailable"})
        for path, other in [("/api/disconnect", {"user": user}), ("/api/online", {"users": [user]})]:
            assert (await post(gateway, path, other)).status == 503
        own_redis.start()

        async def served() -> Answer | None:
            answer = await post(gateway, "/api/publish", body)
            return answer if answer.status == 200 else None

        first = await eventually(served, timeout=15, interval=0.1, what="Redis back")
        assert (await post(gateway, "/api/publish", body)).json() == {**first.json(), "repeated": True}
        assert gateway.get("/healthz")[0] == 200


async def test_a_reply_lost_after_the_publish_ran_is_not_published_twice(
    own_redis: RedisServer, user: str
) -> None:
    """The script ran but its reply was cut: the API sends nothing again (its client retries
    nothing), the caller is answered 503 and retries, and the idempotency key answers the retry
    as a repeat. Deliveries are counted by a subscriber
    of the user's channel on Redis itself (the cut must hit the publish's reply, and nothing else
    of the gateway's through the proxy may reply meanwhile: it serves no socket)."""
    listener = own_redis.client().pubsub()
    listener.subscribe(f"ws:{user}")
    with (
        FaultProxy(own_redis.port) as proxy,
        running_gateway(proxy.url, workers=1, WEBSOCKET_API_KEYS=API_KEY) as gateway,
    ):
        await eventually(in_thread(lambda: gateway.get("/healthz/redis")[0] == 200), timeout=10)
        # Loads the script: the cut must meet the publish's reply, not a NOSCRIPT before it.
        assert (await post(gateway, "/api/publish", {"user": f"{user}-warm", "data": 0})).status == 200
        body = {"user": user, "data": "paid", "idempotency_key": "payment-1"}
        proxy.inject(Fault.CUT, 10, after_bytes=1)
        first = await post(gateway, "/api/publish", body)
        proxy.heal()
        # Evidence that the cut hit this publish: a 503 for the caller to retry.
        assert first.status == 503, first.body
        retry = (await post(gateway, "/api/publish", body)).json()
        assert retry["repeated"] is True
        await post(gateway, "/api/publish", {"user": user, "data": "end", "history": False})

    seen = await asyncio.to_thread(published_until_end, listener)
    listener.close()
    assert len(seen) == 2 and seen[0].endswith(b" paid")
