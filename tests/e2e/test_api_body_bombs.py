"""A buggy or hostile backend holding an API key sends bodies within the size limit that cost far
more to parse than their size suggests (millions of tiny JSON values). The worker it lands on
serves WebSocket clients too: a bystander there must notice nothing. Real Redis, real gunicorn."""

from __future__ import annotations

import asyncio
import http.client

from harness.api_client import API_KEY, call
from harness.bystander import watching_bystander
from harness.gateway_process import running_gateway
from harness.redis_server import RedisServer

# Within the default WEBSOCKET_API_MAX_BODY_SIZE (4 MiB): about 1.4 million empty lists.
_BOMB = b'{"messages":[' + b",".join([b"[]"] * 1_390_000) + b"]}"


async def test_bodies_of_millions_of_tiny_values_cost_a_bystander_nothing(own_redis: RedisServer) -> None:
    with running_gateway(own_redis.url, workers=1, WEBSOCKET_API_KEYS=API_KEY) as gateway:

        def flood() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
            for _ in range(8):
                answer = call(gateway.port, "/api/publish/batch", raw=_BOMB, connection=connection)
                assert answer.status == 413, answer.body
            connection.close()

        async with watching_bystander(gateway, own_redis.url) as bystander:
            await asyncio.to_thread(flood)
            await bystander.check()
