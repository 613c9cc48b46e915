"""harness/bystander.py, the hostile tests' invariant: quiet when nothing happens, and it notices
a worker that stalls."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from harness.bystander import watching_bystander
from harness.gateway_process import Gateway
from harness.redis_server import RedisServer


async def test_a_quiet_worker_leaves_the_bystander_unharmed(
    gateway_one: Gateway, redis_server: RedisServer
) -> None:
    async with watching_bystander(gateway_one, redis_server.url) as bystander:
        await asyncio.sleep(0.3)  # the watch itself is under test: let it publish for a while
        await bystander.check()
    assert len(bystander.received) >= 5 and bystander.received == sorted(bystander.sent)


async def test_a_stalled_worker_fails_the_latency_invariant(
    gateway_one: Gateway, redis_server: RedisServer
) -> None:
    """The worker stopped (SIGSTOP) for a second mid-watch: every message is still delivered
    afterwards, late, and the watch says so."""
    (worker,) = gateway_one.worker_pids()
    with pytest.raises(AssertionError, match="bystander latency"):
        async with watching_bystander(gateway_one, redis_server.url):
            os.kill(worker, signal.SIGSTOP)
            try:
                await asyncio.sleep(1.0)  # the stall being simulated
            finally:
                os.kill(worker, signal.SIGCONT)
