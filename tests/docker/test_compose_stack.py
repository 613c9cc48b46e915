"""The stack in Docker: testcontainers' Redis under a local gateway, and `docker compose up` of
compose.yaml reached through its load balancer. Skipped, with the reason, where no engine answers.

On a machine with Docker: `.venv/bin/pip install -e '.[test,docker]'` then
`.venv/bin/pytest -m docker tests/docker` (docs/deploy.md)."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.docker_engine import engine_problem
from harness.gateway_process import running_gateway
from harness.paths import ROOT
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

pytestmark = pytest.mark.docker


_problem = engine_problem()
if _problem is not None:
    pytest.skip(_problem, allow_module_level=True)
pytest.importorskip("testcontainers", reason="testcontainers is not installed: pip install -e '.[docker]'")

from testcontainers.compose import DockerCompose  # noqa: E402

try:  # newer testcontainers moved it, and the old module warns (an error under our filterwarnings)
    from testcontainers.community.redis import RedisContainer
except ImportError:
    from testcontainers.redis import RedisContainer  # type: ignore[no-redef]
from websockets.asyncio.client import connect  # noqa: E402

SECRET = secrets.token_urlsafe(32)


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def redis_container_url() -> Iterator[str]:
    with RedisContainer("redis:7.4-alpine") as container:
        host = container.get_container_host_ip()
        yield f"redis://{host}:{container.get_exposed_port(6379)}"


async def test_a_gateway_on_a_redis_container_delivers(redis_container_url: str) -> None:
    """testcontainers' Redis in place of the private redis-server: admission and delivery work."""
    import redis

    user = f"user-{uuid.uuid4().hex[:12]}"
    with running_gateway(redis_container_url, workers=2) as gateway:
        async with connect(f"{gateway.ws_url}?token={make_token(user)}") as ws:
            with redis.Redis.from_url(redis_container_url) as client:
                assert client.publish(f"ws:{user}", "from a container") == 1
            assert await asyncio.wait_for(ws.recv(), 10) == "from a container"


@pytest.fixture(scope="module")
def stack() -> Iterator[DockerCompose]:
    with tempfile.TemporaryDirectory() as directory:
        env_file = Path(directory) / "test.env"
        env_file.write_text(
            f"JWT_SECRET_KEY={SECRET}\nGRAFANA_ADMIN_PASSWORD={secrets.token_urlsafe(16)}\nWEB_CONCURRENCY=2\n"
        )
        compose = DockerCompose(
            context=str(ROOT), compose_file_name="compose.yaml", env_file=str(env_file), build=True, wait=True
        )
        with compose:
            yield compose


async def test_the_stack_serves_through_the_load_balancer_and_prometheus_scrapes_every_replica(
    stack: DockerCompose,
) -> None:
    """docker compose up: a client through nginx on :8080 receives a publish; Prometheus has both
    replicas up and sees the connection."""
    user = f"user-{uuid.uuid4().hex[:12]}"
    lb = f"ws://127.0.0.1:{stack.get_service_port('lb', 8080)}/ws"
    prometheus = f"http://127.0.0.1:{stack.get_service_port('prometheus', 9090)}"
    token = make_token(user, secret=SECRET)
    async with connect(f"{lb}?token={token}", open_timeout=20) as ws:
        assert ws.response.headers["x-gateway-worker"]
        stdout, _, code = stack.exec_in_container(
            ["python", "-m", "gateway", "publish", user, '{"via": "compose"}'], service_name="gateway"
        )
        assert code == 0, stdout
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"via": "compose"}

        def both_replicas_up() -> bool:
            targets = http_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
            up = [t for t in targets if t["labels"]["job"] == "gateway" and t["health"] == "up"]
            return len(up) == 2

        await eventually(
            in_thread(both_replicas_up), timeout=60, interval=1, what="Prometheus to scrape both replicas"
        )

        def sees_the_connection() -> bool:
            query = urllib.request.quote("sum(websocket_active_connections)")
            result = http_json(f"{prometheus}/api/v1/query?query={query}")["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= 1

        await eventually(
            in_thread(sees_the_connection),
            timeout=60,
            interval=1,
            what="Prometheus to see the open connection",
        )
