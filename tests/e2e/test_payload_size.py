"""A published payload over WEBSOCKET_MAX_PAYLOAD_SIZE, on a real gunicorn and a real Redis."""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families

from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE
from harness.clients import admit
from harness.gateway_process import Gateway
from harness.redis_server import RedisServer
from harness.waiting import eventually, in_thread


def _dropped_too_large(gateway: Gateway) -> float:
    status, body = gateway.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "websocket_messages_dropped_total" and sample.labels == {"reason": "too_large"}:
                return sample.value
    return 0.0


async def test_a_raw_publish_over_the_limit_is_dropped_and_costs_no_one_a_message(
    gateway_one: Gateway, redis_server: RedisServer, user: str
) -> None:
    """A backend that bypasses the publisher library PUBLISHes one byte over the default limit:
    the gateway drops it (counted, one log line), the user gets the next message first, and a
    bystander on the same worker gets theirs."""
    target = await admit(gateway_one.ws_url, user)
    bystander = await admit(gateway_one.ws_url, f"{user}-bystander")
    assert not isinstance(target, int) and not isinstance(bystander, int)
    before = _dropped_too_large(gateway_one)
    try:
        with redis_server.client() as client:
            oversized = json.dumps({"blob": "x" * DEFAULT_MAX_PAYLOAD_SIZE})
            assert client.publish(f"ws:{user}", oversized) == 1
            assert client.publish(f"ws:{user}-bystander", '{"n":1}') == 1
            assert client.publish(f"ws:{user}", '{"n":2}') == 1
        assert await asyncio.wait_for(bystander.recv(), 10) == '{"n":1}'
        assert await asyncio.wait_for(target.recv(), 10) == '{"n":2}'
        await eventually(
            in_thread(lambda: _dropped_too_large(gateway_one) == before + 1),
            timeout=10,
            what="the drop to be counted",
        )
        line = f"dropped a published payload of {len(oversized)} bytes"
        assert line in gateway_one.log()
        assert "xxxx" not in gateway_one.log()
    finally:
        await target.close()
        await bystander.close()
