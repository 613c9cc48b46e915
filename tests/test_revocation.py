"""A disconnect revokes the user's older tokens: the stamp it writes, and the admission that reads
it in its own script, against a real redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.leases.limiter import Limiter
from gateway.leases.revocation import TokenRevoked, is_revoked
from gateway.publishing.publisher import AsyncPublisher, Publisher
from harness.paths import ROOT
from harness.redis_server import RedisServer, command_calls

DAY_MS = 86_400_000


def revoked_key(user: str) -> str:
    return f"{{ws:{user}}}:revoked"


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


def _never() -> None:
    raise AssertionError("not here")


def _limiter(client: aioredis.Redis, user: str) -> Limiter:
    return Limiter(client, "ws", f"w-{user}", 5, 30.0)


async def test_a_token_issued_before_a_disconnect_is_refused_and_a_later_one_admitted(
    client: aioredis.Redis, user: str
) -> None:
    limiter = _limiter(client, user)
    before = time.time() - 1
    assert await limiter.acquire(user, _never, issued_at=before) is not None  # no disconnect yet
    publisher = AsyncPublisher(client=client)
    await publisher.disconnect(user)
    with pytest.raises(TokenRevoked):
        await limiter.acquire(user, _never, issued_at=before)
    lease = await limiter.acquire(user, _never, issued_at=time.time() + 0.01)
    assert lease is not None
    # The connection learns the stamp: its refresh applies the same rule.
    assert lease.revoked_at > 0
    assert is_revoked(before, lease.revoked_at) and not is_revoked(time.time() + 0.01, lease.revoked_at)
    # A refused admission took no place.
    assert len(limiter.leases) == 2


async def test_a_token_without_iat_is_refused_while_the_users_stamp_lives(
    client: aioredis.Redis, user: str
) -> None:
    limiter = _limiter(client, user)
    assert await limiter.acquire(user, _never, issued_at=None) is not None
    await AsyncPublisher(client=client).disconnect(user)
    with pytest.raises(TokenRevoked):
        await limiter.acquire(user, _never, issued_at=None)
    await client.delete(revoked_key(user))  # what its TTL does
    assert await limiter.acquire(user, _never, issued_at=None) is not None
    assert not is_revoked(None, 0)
    assert is_revoked(None, 1)


async def test_one_users_disconnect_revokes_nobody_else(client: aioredis.Redis, user: str) -> None:
    await AsyncPublisher(client=client).disconnect(user)
    other = f"{user}-other"
    assert await _limiter(client, other).acquire(other, _never, issued_at=time.time() - 60) is not None


def test_the_stamp_has_the_revocation_ttl_and_never_moves_back(redis_server: RedisServer, user: str) -> None:
    client = redis_server.client()
    publisher = Publisher(redis_server.url, revocation_ttl=120)
    publisher.disconnect(user)
    first = int(client.get(revoked_key(user)))  # type: ignore[arg-type]
    assert abs(first - time.time() * 1000) < 5_000
    assert 110_000 < client.pttl(revoked_key(user)) <= 120_000
    # A disconnect of one connection revokes the user's older tokens too; a shorter TTL from
    # another publisher never shortens the key's life.
    Publisher(redis_server.url, revocation_ttl=10).disconnect(user, connection_id="h-1:1")
    assert int(client.get(revoked_key(user))) >= first  # type: ignore[arg-type]
    assert client.pttl(revoked_key(user)) > 100_000
    # A stamp from the future (another clock) is never moved back.
    client.set(revoked_key(user), first + DAY_MS)
    publisher.disconnect(user)
    assert int(client.get(revoked_key(user))) == first + DAY_MS  # type: ignore[arg-type]
    publisher.close()
    client.close()


def test_the_revocation_ttl_is_read_from_the_environment(
    redis_server: RedisServer, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_REVOCATION_TTL", "300")
    Publisher(redis_server.url).disconnect(user)
    client = redis_server.client()
    assert 290_000 < client.pttl(revoked_key(user)) <= 300_000
    monkeypatch.setenv("JWT_REVOCATION_TTL", "0")
    with pytest.raises(ValueError, match="JWT_REVOCATION_TTL"):
        Publisher(redis_server.url)
    client.close()


def test_cli_disconnect_revokes(redis_server: RedisServer, user: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "disconnect", user],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_server.url, "JWT_REVOCATION_TTL": "600"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    client = redis_server.client()
    assert 590_000 < client.pttl(revoked_key(user)) <= 600_000
    client.close()


async def test_the_check_rides_in_the_admissions_one_script_call(
    client: aioredis.Redis, redis_server: RedisServer, user: str
) -> None:
    """No extra round trip: an admission is still one EVALSHA and nothing else at top level."""
    limiter = _limiter(client, user)
    assert await limiter.acquire(user, _never, issued_at=time.time()) is not None  # tags named
    await AsyncPublisher(client=client).disconnect(user)
    sync = redis_server.client()
    before = command_calls(sync)
    with pytest.raises(TokenRevoked):
        await limiter.acquire(user, _never, issued_at=time.time() - 60)
    assert await limiter.acquire(user, _never, issued_at=time.time() + 0.01) is not None
    after = command_calls(sync)
    assert after["evalsha"] - before.get("evalsha", 0) == 2
    sync.close()
