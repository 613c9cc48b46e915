"""gateway/leases/dead_workers.py: the master's LeaseReleaser never waits on Redis, releases what Redis
answers for in batches, and leaves the rest to lapse with one line."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
import redis
import redis.asyncio as aioredis

from gateway.leases.dead_workers import LeaseReleaser, release_workers
from gateway.leases.limiter import Limiter
from harness.redis_server import RedisServer, leases_key
from harness.waiting import wait_for


def _never_lost() -> None:
    raise AssertionError("no lease should be lost here")


async def _hold(url: str, workers: list[str], user: str) -> None:
    """Each worker takes one place of ``user`` and lists it, as a live worker does."""
    client = aioredis.Redis.from_url(url)
    for worker in workers:
        assert await Limiter(client, "ws", worker, 10, 30).acquire(user, _never_lost)
    await client.aclose()


def _releaser(server: RedisServer, log: logging.Logger) -> LeaseReleaser:
    return LeaseReleaser(
        lambda: redis.Redis(port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5),
        "ws",
        30,
        log,
    )


async def test_release_workers_frees_the_places_of_every_worker_named(
    redis_server: RedisServer, user: str
) -> None:
    workers = [f"w{n}-{user}" for n in range(8)]
    await _hold(redis_server.url, workers, user)
    with redis.Redis(port=redis_server.port) as client:
        assert release_workers(client, "ws", workers) == 8
        assert client.hlen(leases_key(user)) == 0


async def test_released_once_a_paused_redis_answers_again(
    own_redis: RedisServer, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    """add() returns at once while Redis is SIGSTOPped; the queued workers are released, in one
    line, once it answers again."""
    workers = [f"w{n}-{user}" for n in range(4)]
    await _hold(own_redis.url, workers, user)
    log = logging.getLogger("test.releaser")
    releaser = _releaser(own_redis, log)
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        for pid, worker in enumerate(workers):
            releaser.add(worker, pid)
        # An add() that waited on Redis would take the client's 0.5 s timeout at least.
        assert time.monotonic() - started < 0.4
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    with caplog.at_level(logging.INFO, logger="test.releaser"), own_redis.client() as client:
        wait_for(lambda: client.hlen(leases_key(user)) == 0, timeout=10, what="the places released")
        wait_for(lambda: any("released" in r.message for r in caplog.records), timeout=5, what="a log line")
        releaser.finish(2)
    assert sum(int(r.getMessage().split()[1]) for r in caplog.records) == 4


async def test_a_stop_while_redis_hangs_waits_its_timeout_and_logs_one_line(
    own_redis: RedisServer, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _hold(own_redis.url, [f"w-{user}"], user)
    releaser = _releaser(own_redis, logging.getLogger("test.releaser"))
    with own_redis.paused(), caplog.at_level(logging.INFO, logger="test.releaser"):
        for pid in range(8):
            releaser.add(f"w{pid}-{user}", pid)
        started = time.monotonic()
        releaser.finish(1.0)
        assert time.monotonic() - started < 1.5
    (line,) = [r.getMessage() for r in caplog.records]
    assert "8 workers" in line and "they lapse on their own" in line
