"""gateway/topology/name_lookup.py and gateway/server/resolving.py: with a name server that never answers,
redis-py's connects fail within their connect timeout, and the lookups hold one thread per name."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from harness import hung_resolver
from harness.hung_resolver import UNRESOLVABLE, HungResolver
from harness.paths import ROOT

# Run inside the hung resolver's namespace; prints what it measured as JSON.
_SCRIPT = """
import asyncio, json, os, sys, time
import redis, redis.asyncio as aioredis, uvloop
from redis.backoff import NoBackoff
from redis.retry import Retry
from gateway.server import resolving

resolving.install()
host = sys.argv[1]

def tasks():
    return len(os.listdir("/proc/self/task"))

def sync_ping():
    started = time.monotonic()
    try:
        redis.Redis(host=host, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)).ping()
    except redis.ConnectionError as exc:
        return time.monotonic() - started, str(exc)
    return None, "answered"

async def async_pings(n):
    clients = [aioredis.Redis(host=host, socket_connect_timeout=0.5, retry=None) for _ in range(n)]
    started = time.monotonic()
    results = await asyncio.gather(*(c.ping() for c in clients), return_exceptions=True)
    elapsed = time.monotonic() - started
    for c in clients:
        await c.aclose()
    return elapsed, [type(r).__name__ for r in results]

async def main():
    before = tasks()
    first = await async_pings(20)
    again = await async_pings(20)
    return before, first, again, tasks()

sync_elapsed, sync_error = sync_ping()
before, first, again, after = uvloop.run(main())
print(json.dumps({"sync": [sync_elapsed, sync_error], "first": first, "again": again,
                  "threads_added": after - before}))
"""


@pytest.fixture
def hung() -> Iterator[HungResolver]:
    why = hung_resolver.problem()
    if why is not None:
        pytest.skip(why)
    resolver = HungResolver()
    yield resolver
    resolver.close()


def test_a_name_server_that_never_answers_costs_connection_errors_not_threads(hung: HungResolver) -> None:
    """Sync and async clients get ConnectionError within the connect timeout (glibc alone waits
    10 s); 40 async connects add one lookup thread, and once a lookup missed its deadline the
    next connects fail at once."""
    run = subprocess.run(
        hung.wrap([sys.executable, "-c", _SCRIPT, UNRESOLVABLE]),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    measured = json.loads(run.stdout)
    sync_elapsed, sync_error = measured["sync"]
    assert sync_elapsed is not None and sync_elapsed < 2, measured
    assert "no answer looking up" in sync_error, measured
    first_elapsed, first_errors = measured["first"]
    assert first_errors == ["ConnectionError"] * 20 and first_elapsed < 3, measured
    again_elapsed, again_errors = measured["again"]
    assert again_errors == ["ConnectionError"] * 20 and again_elapsed < 0.5, measured
    # The sync ping's lookup (its own key: another family) may still be in flight too.
    assert measured["threads_added"] <= 2, measured
