"""The dev console's HTTP side: nothing without WEBSOCKET_DEV_CONSOLE; with it, tokens and
publishing for the developer's own machine only."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import jwt
import pytest
from websockets.asyncio.client import connect

from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import SECRET, make_token

_PATHS = ["/dev", "/dev/console.js", "/dev/console.css", "/dev/gateway-client.js"]


@pytest.fixture(scope="module")
def console(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=1, WEBSOCKET_DEV_CONSOLE="true") as gateway:
        yield gateway


def _request(
    gateway: Gateway, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    all_headers = {"Connection": "close", **({"Content-Type": "application/json"} if data else {})}
    request = urllib.request.Request(
        f"http://127.0.0.1:{gateway.port}{path}", data=data, headers={**all_headers, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def test_without_the_flag_every_console_path_is_404(gateway_one: Gateway) -> None:
    for path in _PATHS:
        assert _request(gateway_one, path)[0] == 404, path
    for path in ["/dev/token", "/dev/publish"]:
        assert _request(gateway_one, path, {"user": "alice"})[0] == 404, path


def test_with_the_flag_the_page_is_served_with_a_strict_policy(console: Gateway) -> None:
    status, body = _request(console, "/dev")
    assert status == 200 and b"<title>Gateway dev console</title>" in body
    assert b"http://" not in body and b"https://" not in body  # nothing from elsewhere
    request = urllib.request.Request(f"http://127.0.0.1:{console.port}/dev")
    with urllib.request.urlopen(request, timeout=5) as response:
        policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "WEBSOCKET_DEV_CONSOLE is on" in console.log()


def test_a_token_is_minted_for_the_user_typed(console: Gateway) -> None:
    status, body = _request(console, "/dev/token", {"user": "alice", "ttl": 60})
    assert status == 200
    answer = json.loads(body)
    claims = jwt.decode(answer["token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] == answer["exp"]
    assert abs(answer["exp"] - (time.time() + 60)) < 5


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"user": "has space"}, {}, 400),
        ({"user": "alice", "ttl": 0}, {}, 400),
        ({"user": "alice", "ttl": 10**9}, {}, 400),
        ([1, 2], {}, 400),
        (b"not json", {}, 400),
        ({"user": "alice"}, {"Content-Type": "text/plain"}, 415),
    ],
)
def test_a_bad_token_request_gets_one_answer(
    console: Gateway, body: object, headers: dict[str, str], status: int
) -> None:
    assert _request(console, "/dev/token", body, headers)[0] == status


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "attacker.example"},  # a DNS-rebinding page reaching 127.0.0.1 under its own name
        {"X-Forwarded-For": "203.0.113.9"},  # a remote client behind the trusted proxy
    ],
)
def test_only_the_developers_machine_is_answered(console: Gateway, headers: dict[str, str]) -> None:
    assert _request(console, "/dev", headers=headers)[0] == 403
    assert _request(console, "/dev/token", {"user": "alice"}, headers)[0] == 403


async def test_publish_reaches_the_tokens_user_with_history(console: Gateway, user: str) -> None:
    token = make_token(user)
    async with connect(f"{console.ws_url}?envelope=1", subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        headers = {"Authorization": f"Bearer {token}"}
        status, body = await asyncio.to_thread(
            _request, console, "/dev/publish", {"payload": '{"n": 1}'}, headers
        )
        assert status == 200
        answer = json.loads(body)
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert answer["receivers"] == 1 and answer["position"]
    assert frame == {"type": "message", "position": answer["position"], "data": {"n": 1}}


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "token_missing"),
        ("Bearer not.a.jwt", "token_invalid"),
        (f"Bearer {make_token('u', ttl=-60)}", "token_expired"),
        (f"Basic {make_token('u')}", "token_missing"),
    ],
)
def test_publish_needs_a_valid_token(console: Gateway, authorization: str | None, reason: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    status, body = _request(console, "/dev/publish", {"payload": "x"}, headers)
    assert (status, json.loads(body)) == (401, {"error": reason})
