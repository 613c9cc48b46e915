"""The HTTP API is for the inside network: deploy/nginx.conf, the public listener, answers 404 for
every path under /api, with a valid key too, and forwards none of it; the gateway's own port, which
backends reach from inside, serves it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.api_client import API_KEY, call
from harness.gateway_process import Gateway, running_gateway
from harness.nginx import Nginx, nginx_binary, running_nginx
from harness.redis_server import RedisServer
from harness.waiting import wait_for

pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="nginx not found: run scripts/ensure-nginx")


@pytest.fixture(scope="module")
def edge(redis_server: RedisServer) -> Iterator[tuple[Gateway, Nginx]]:
    with running_gateway(redis_server.url, workers=1, WEBSOCKET_API_KEYS=API_KEY) as gateway:
        with running_nginx([gateway.port]) as nginx:
            yield gateway, nginx


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/publish"),
        ("POST", "/api/publish/batch"),
        ("POST", "/api/disconnect"),
        ("POST", "/api/online"),
        ("GET", "/api/openapi.json"),
        ("POST", "/api/../api/publish"),
        ("POST", "/API/publish"),
        ("POST", "//api/publish"),
    ],
)
def test_the_load_balancer_does_not_expose_the_api(
    edge: tuple[Gateway, Nginx], method: str, path: str
) -> None:
    _, nginx = edge
    body = {"user": "edge-user", "data": 1}
    assert call(nginx.port, path, body, method=method).status == 404
    # Answered by nginx itself: no line of the access log names an upstream. nginx writes the
    # line once the answer is out, so the test may read the log first: wait for it.
    lines = wait_for(lambda: nginx.access_log().splitlines(), timeout=5, what="nginx's access log line")
    assert all(line.endswith("upstream=-") for line in lines), lines


def test_the_gateways_own_port_serves_it_to_backends_inside(edge: tuple[Gateway, Nginx]) -> None:
    gateway, _ = edge
    assert call(gateway.port, "/api/publish", {"user": "edge-user", "data": 1}).status == 200
