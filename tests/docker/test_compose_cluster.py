"""`docker compose --profile cluster up`: the Redis Cluster of compose.yaml and the gateway on it.
Skipped, with the reason, where no engine answers (tests/docker/test_compose_stack.py says how to
run these)."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.docker_engine import engine_problem
from harness.paths import ROOT
from harness.tokens import make_token

pytestmark = pytest.mark.docker

_problem = engine_problem()
if _problem is not None:
    pytest.skip(_problem, allow_module_level=True)
pytest.importorskip("testcontainers", reason="testcontainers is not installed: pip install -e '.[docker]'")

from testcontainers.compose import DockerCompose  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

SECRET = secrets.token_urlsafe(32)
# The cluster profile's services only: the default stack is not needed here.
SERVICES = [*(f"redis-cluster-{n}" for n in range(1, 7)), "redis-cluster-create", "gateway-cluster"]


@pytest.fixture(scope="module")
def cluster_stack() -> Iterator[DockerCompose]:
    with tempfile.TemporaryDirectory() as directory:
        env_file = Path(directory) / "test.env"
        env_file.write_text(f"JWT_SECRET_KEY={SECRET}\nGRAFANA_ADMIN_PASSWORD={secrets.token_urlsafe(16)}\n")
        compose = DockerCompose(
            context=str(ROOT),
            compose_file_name="compose.yaml",
            env_file=str(env_file),
            build=True,
            wait=True,
            profiles=["cluster"],
            services=SERVICES,
        )
        with compose:
            yield compose


async def test_the_cluster_profile_delivers_spublish_and_the_cli_through_the_cluster_gateway(
    cluster_stack: DockerCompose,
) -> None:
    """The one-shot create made 3 masters; a client of gateway-cluster receives a raw SPUBLISH sent
    through any node (redis-cli -c follows MOVED) and a publish from the CLI."""
    stdout, _, code = cluster_stack.exec_in_container(
        ["redis-cli", "cluster", "info"], service_name="redis-cluster-1"
    )
    assert code == 0 and "cluster_state:ok" in stdout and "cluster_size:3" in stdout, stdout
    port = cluster_stack.get_service_port("gateway-cluster", 8080)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/redis", timeout=5) as response:
        assert response.status == 200  # every master answers and the pub/sub connections are up
    user = f"user-{uuid.uuid4().hex[:12]}"
    url = f"ws://127.0.0.1:{port}/ws"
    async with connect(f"{url}?token={make_token(user, secret=SECRET)}", open_timeout=20) as ws:
        stdout, _, code = cluster_stack.exec_in_container(
            ["redis-cli", "-c", "SPUBLISH", f"ws:{user}", "raw"], service_name="redis-cluster-1"
        )
        assert code == 0 and stdout.strip() == "1", stdout
        assert await asyncio.wait_for(ws.recv(), 10) == "raw"
        stdout, _, code = cluster_stack.exec_in_container(
            ["python", "-m", "gateway", "publish", user, '"from the CLI"'], service_name="gateway-cluster"
        )
        assert code == 0, stdout
        assert await asyncio.wait_for(ws.recv(), 10) == '"from the CLI"'
