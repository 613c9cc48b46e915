from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers import Gateway, RedisServer, running_gateway


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
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
