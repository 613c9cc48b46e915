"""A publish through the HTTP API whose Redis reply is cut after the script ran, with no
idempotency key: the caller made one call, so the message goes out once at most (the library's
promise: "never sent twice"); a caller that needs it delivered retries with a key. Real gunicorn,
real Redis behind harness/fault_proxy.py."""

from __future__ import annotations

import asyncio

import pytest

from harness.api_client import API_KEY, post, published_until_end
from harness.fault_proxy import Fault, FaultProxy
from harness.gateway_process import running_gateway
from harness.redis_server import RedisServer
from harness.waiting import eventually, in_thread


@pytest.mark.parametrize("history", [True, False])
async def test_one_call_whose_reply_was_cut_is_not_published_twice(
    own_redis: RedisServer, user: str, history: bool
) -> None:
    """Deliveries are counted by a subscriber of the user's channel on Redis itself (the gateway
    serves no socket, so nothing else of it through the proxy meets the cut)."""
    listener = own_redis.client().pubsub()
    listener.subscribe(f"ws:{user}")
    with (
        FaultProxy(own_redis.port) as proxy,
        running_gateway(proxy.url, workers=1, WEBSOCKET_API_KEYS=API_KEY) as gateway,
    ):
        await eventually(in_thread(lambda: gateway.get("/healthz/redis")[0] == 200), timeout=10)
        # Loads the script: the cut must meet the publish's reply, not a NOSCRIPT before it.
        warm = {"user": f"{user}-warm", "data": 0, "history": history}
        assert (await post(gateway, "/api/publish", warm)).status == 200
        proxy.inject(Fault.CUT, 10, after_bytes=1)
        first = await post(gateway, "/api/publish", {"user": user, "data": "once", "history": history})
        proxy.heal()
        assert first.status in (200, 503), first.body
        await post(gateway, "/api/publish", {"user": user, "data": "end", "history": False})

    seen = await asyncio.to_thread(published_until_end, listener)
    listener.close()
    delivered = sum(data.endswith(b"once") for data in seen)
    if first.status == 200 and delivered == 1:
        pytest.skip("the cut met another reply than the publish's (the pub/sub probe's)")
    assert delivered <= 1, seen
