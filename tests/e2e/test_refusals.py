"""Handshakes refused before the upgrade: the documented HTTP status, and no Redis command."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer, command_calls
from harness.tokens import SECRET, make_token

ALLOWED_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def quiet_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(quiet_redis: RedisServer) -> Iterator[Gateway]:
    # A long probe interval keeps the gateway's own traffic out of the command counts.
    with running_gateway(
        quiet_redis.url, workers=1, REDIS_PROBE_INTERVAL="300", CORS_ORIGINS=f'["{ALLOWED_ORIGIN}"]'
    ) as gw:
        yield gw


def _rsa_private_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _unsigned(claims: dict[str, object]) -> str:
    return jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]


def _bad_tokens() -> dict[str, str]:
    exp = int(time.time()) + 3600
    return {
        "bad signature": jwt.encode({"sub": "u", "exp": exp}, SECRET + "x", algorithm="HS256"),
        "wrong HMAC algorithm": jwt.encode({"sub": "u", "exp": exp}, SECRET, algorithm="HS512"),
        "RS256 token": jwt.encode({"sub": "u", "exp": exp}, _rsa_private_pem(), algorithm="RS256"),
        "alg none": _unsigned({"sub": "u", "exp": exp}),
        "expired": make_token("u", ttl=-60),
        "no sub": jwt.encode({"exp": exp}, SECRET, algorithm="HS256"),
        "no exp": jwt.encode({"sub": "u"}, SECRET, algorithm="HS256"),
        "garbage": "not.a.jwt",
        "5 KB": "a" * 5000,
    }


async def _status_of(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return int(refused.value.response.status_code)


async def test_bad_tokens_get_401_and_cost_no_redis_command(
    gateway: Gateway, quiet_redis: RedisServer
) -> None:
    """Every bad, missing or expired token is refused with 401 before any Redis work."""
    client = quiet_redis.client()
    before = command_calls(client)
    assert await _status_of(gateway.ws_url) == 401
    for name, token in _bad_tokens().items():
        assert await _status_of(f"{gateway.ws_url}?token={token}") == 401, name
        headers = {"Authorization": f"Bearer {token}"}
        assert await _status_of(gateway.ws_url, additional_headers=headers) == 401, name
    assert command_calls(client) == before
    client.close()


async def test_a_100_kb_token_is_refused_by_the_http_parser(
    gateway: Gateway, quiet_redis: RedisServer
) -> None:
    """An oversized request line gets 414 and an oversized header 431, at once, with no Redis work."""
    client = quiet_redis.client()
    before = command_calls(client)
    token = "a" * 100_000
    assert await _status_of(f"{gateway.ws_url}?token={token}", open_timeout=5) == 414
    headers = {"Authorization": f"Bearer {token}"}
    assert await _status_of(gateway.ws_url, additional_headers=headers, open_timeout=5) == 431
    assert command_calls(client) == before
    assert gateway.get("/healthz")[0] == 200
    client.close()


async def test_origin_not_allowed_gets_403_and_costs_no_redis_command(
    gateway: Gateway, quiet_redis: RedisServer
) -> None:
    """An Origin outside CORS_ORIGINS is refused with 403; the listed one is accepted."""
    client = quiet_redis.client()
    before = command_calls(client)
    url = f"{gateway.ws_url}?token={make_token('u')}"
    assert await _status_of(url, origin="https://evil.example") == 403
    assert command_calls(client) == before
    async with connect(url, origin=ALLOWED_ORIGIN) as ws:  # type: ignore[arg-type]
        assert ws.response.status_code == 101
    client.close()


async def test_refusals_are_logged_without_the_token(gateway: Gateway) -> None:
    """The refusal log line names the reason; neither token nor query string is in any log line."""
    token = make_token("u", ttl=-60)
    # Refusals of its own: the log must not need another test to have run first.
    await _status_of(f"{gateway.ws_url}?token={token}")
    await _status_of(f"{gateway.ws_url}?token=not.a.jwt")
    status, _ = gateway.get(f"/ws?token={token}")
    assert status in {400, 404, 426}  # a plain GET is not a handshake; it still must not log the token
    log = gateway.log()
    assert "refused token_expired" in log
    assert "refused token_invalid" in log
    assert token not in log
    assert "token=" not in log
