from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PYTEST_REVERSE=1 runs the suite backwards: a test that passes only after another has run
    (shared Redis state, a reused user, a counter read as an absolute value) then fails."""
    if os.environ.get("PYTEST_REVERSE") == "1":
        items.reverse()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, for a test that kills, pauses or floods it."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway_one(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=1) as gateway:
        yield gateway


@pytest.fixture
def user() -> str:
    """A user id no other test uses, so tests can share one Redis."""
    return f"user-{uuid.uuid4().hex[:12]}"
