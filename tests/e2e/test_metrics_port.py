"""METRICS_PORT: /metrics and /healthz/websocket leave the public port for a port of their own."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harness.gateway_process import Gateway, running_gateway
from harness.ports import free_port
from harness.redis_server import RedisServer
from harness.tokens import make_token

METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=2, METRICS_PORT=str(METRICS_PORT)) as gw:
        yield gw


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize(
    ("path", "public", "metrics"),
    [
        ("/metrics", 404, 200),
        ("/healthz/websocket", 404, 200),
        ("/healthz", 200, 200),
        ("/healthz/redis", 200, 200),
        ("/nowhere", 404, 404),
    ],
)
def test_each_path_is_served_on_its_port(gateway: Gateway, path: str, public: int, metrics: int) -> None:
    assert (_status(gateway.port, path), _status(METRICS_PORT, path)) == (public, metrics)


async def test_websockets_are_served_only_on_the_public_port(gateway: Gateway) -> None:
    token = make_token("metrics-port-user")
    async with connect(f"{gateway.ws_url}?token={token}") as ws:
        await ws.send('{"type":"ping"}')
        assert await ws.recv() == '{"type":"pong"}'
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{METRICS_PORT}/ws?token={token}"):
            pass
    assert refused.value.response.status_code == 404
