from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer

# Hypothesis' 200 ms deadline per example and its slow-generation check measure the machine, not
# the code: a 2-core CI machine running servers beside the test can stall one example past them.
# Tests bound what they must in their own terms; a test's own @settings still overrides this.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PYTEST_REVERSE=1 runs the suite backwards: a test that passes only after another has run
    (shared Redis state, a reused user, a counter read as an absolute value) then fails. Each test
    is marked by the slow servers it starts (browser, cluster, sentinel), which ``make test-quick``
    leaves out."""
    for item in items:
        for marker in _slow_parts(item):
            item.add_marker(marker)
    if os.environ.get("PYTEST_REVERSE") == "1":
        items.reverse()


# A marker for each slow part, and the harness function that starts it.
_STARTERS = {"cluster": "running_cluster", "sentinel": "running_sentinel", "browser": "chromium"}


def _slow_parts(item: pytest.Item) -> set[str]:
    """The parts a test starts: named in its function or in any fixture it uses, however deep."""
    info = getattr(item, "_fixtureinfo", None)
    functions = [getattr(item, "function", None)]
    if info is not None:
        functions += [d.func for defs in info.name2fixturedefs.values() for d in defs]
    names: set[str] = set()
    for function in functions:
        code = getattr(inspect.unwrap(function), "__code__", None) if function is not None else None
        if code is not None:
            names.update(code.co_names)
    return {marker for marker, starter in _STARTERS.items() if starter in names}


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
