"""The dev console's HTTP side: nothing without WEBSOCKET_DEV_CONSOLE; with it, tokens and
publishing on a port of its own on 127.0.0.1, for the developer's own machine only."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import jwt
import pytest
from websockets.asyncio.client import connect

from harness.gateway_process import Gateway, running_gateway
from harness.nginx import proxy_config, running_nginx
from harness.ports import listening_addresses
from harness.redis_server import RedisServer
from harness.tokens import SECRET, make_token

_PATHS = ["/dev", "/dev/console.js", "/dev/console.css", "/dev/gateway-client.js"]


@pytest.fixture(scope="module")
def console(redis_server: RedisServer) -> Iterator[Gateway]:
    # The public port on every address, as a gateway reachable from other machines has it.
    env = {"WEBSOCKET_DEV_CONSOLE": "true", "WEBSOCKET_HOST": "0.0.0.0"}
    with running_gateway(redis_server.url, workers=1, **env) as gateway:
        yield gateway


def _request(
    port: int, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    all_headers = {"Connection": "close", **({"Content-Type": "application/json"} if data else {})}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={**all_headers, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def test_a_proxy_on_the_same_host_cannot_mint_tokens(console: Gateway) -> None:
    """A local nginx in front of the public port that names a loopback Host and forwards no
    client address: every request it passes comes from 127.0.0.1 with Host 127.0.0.1."""
    same_host_proxy = proxy_config("proxy_set_header Host 127.0.0.1;")
    with running_nginx([console.port], same_host_proxy) as nginx:
        assert _request(nginx.port, "/healthz")[0] == 200  # the proxy does reach the gateway
        status, body = _request(nginx.port, "/dev/token", {"user": "alice", "ttl": 60})
        assert status == 404, body
        assert _request(nginx.port, "/dev/publish", {"payload": "x"})[0] == 404


def test_the_console_listens_on_loopback_only(console: Gateway) -> None:
    assert listening_addresses(console.console_port) == {"0100007F"}
    assert listening_addresses(console.port) == {"00000000"}


def test_on_the_public_port_every_console_path_is_404(console: Gateway) -> None:
    for path in [*_PATHS, "/dev/", "/dev/anything"]:
        assert _request(console.port, path)[0] == 404, path
    for path in ["/dev/token", "/dev/publish"]:
        assert _request(console.port, path, {"user": "alice"})[0] == 404, path
    assert _request(console.port, "/healthz")[0] == 200


def test_no_header_moves_a_request_to_the_console_port(console: Gateway) -> None:
    """What a proxy, or a client through it, could say about where a request was headed."""
    where = f"127.0.0.1:{console.console_port}"
    headers = {
        "Host": where,
        "X-Forwarded-For": "127.0.0.1",
        "X-Forwarded-Host": where,
        "X-Forwarded-Port": str(console.console_port),
        "Forwarded": f"for=127.0.0.1;host={where}",
    }
    assert _request(console.port, "/dev/token", {"user": "alice"}, headers)[0] == 404


def test_on_the_console_port_only_the_console_and_its_socket_are_served(console: Gateway) -> None:
    for path in ["/healthz", "/metrics", "/healthz/websocket", "/nowhere"]:
        assert _request(console.console_port, path)[0] == 404, path


def test_a_taken_console_port_stops_start_up(redis_server: RedisServer) -> None:
    """Another process on the console's port: one line naming the variable, and exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = Gateway(
            redis_server.url, 1, WEBSOCKET_DEV_CONSOLE="true", WEBSOCKET_DEV_CONSOLE_PORT=str(port)
        )
        try:
            with pytest.raises(AssertionError, match="gunicorn exited with 2"):
                gateway.start()
            assert f"WEBSOCKET_DEV_CONSOLE_PORT {port} on 127.0.0.1 is not free" in gateway.log()
        finally:
            gateway.close()


def test_without_the_flag_every_console_path_is_404(gateway_one: Gateway) -> None:
    for path in _PATHS:
        assert _request(gateway_one.port, path)[0] == 404, path
    for path in ["/dev/token", "/dev/publish"]:
        assert _request(gateway_one.port, path, {"user": "alice"})[0] == 404, path
    with pytest.raises(OSError):  # nothing listens on the console's port
        _request(gateway_one.console_port, "/dev")


def test_with_the_flag_the_page_is_served_with_a_strict_policy(console: Gateway) -> None:
    status, body = _request(console.console_port, "/dev")
    assert status == 200 and b"<title>Gateway dev console</title>" in body
    assert b"http://" not in body and b"https://" not in body  # nothing from elsewhere
    request = urllib.request.Request(f"http://127.0.0.1:{console.console_port}/dev")
    with urllib.request.urlopen(request, timeout=5) as response:
        policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "WEBSOCKET_DEV_CONSOLE is on" in console.log()


def test_the_page_names_its_icon_so_no_favicon_request_404s(console: Gateway) -> None:
    """Without a named icon a browser asks for /favicon.ico, and its 404 shows in the console."""
    status, body = _request(console.console_port, "/dev")
    icon = re.search(rb'<link rel="icon" href="(/dev/[^"]+)"', body)
    assert status == 200 and icon, body[:400]
    request = urllib.request.Request(f"http://127.0.0.1:{console.console_port}{icon[1].decode()}")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["content-type"] == "image/svg+xml"
        assert response.read().startswith(b"<svg")


def test_a_token_is_minted_for_the_user_typed(console: Gateway) -> None:
    status, body = _request(console.console_port, "/dev/token", {"user": "alice", "ttl": 60})
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
    assert _request(console.console_port, "/dev/token", body, headers)[0] == status


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "attacker.example"},  # a DNS-rebinding page reaching 127.0.0.1 under its own name
        {"X-Forwarded-For": "203.0.113.9"},  # a remote client behind the trusted proxy
    ],
)
def test_only_the_developers_machine_is_answered(console: Gateway, headers: dict[str, str]) -> None:
    assert _request(console.console_port, "/dev", headers=headers)[0] == 403
    assert _request(console.console_port, "/dev/token", {"user": "alice"}, headers)[0] == 403


async def test_publish_reaches_the_tokens_user_with_history(console: Gateway, user: str) -> None:
    token = make_token(user)
    # The page's socket: /ws on the console's own port.
    url = f"ws://127.0.0.1:{console.console_port}/ws?envelope=1"
    async with connect(url, subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]
        headers = {"Authorization": f"Bearer {token}"}
        status, body = await asyncio.to_thread(
            _request, console.console_port, "/dev/publish", {"payload": '{"n": 1}'}, headers
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
    status, body = _request(console.console_port, "/dev/publish", {"payload": "x"}, headers)
    assert (status, json.loads(body)) == (401, {"error": reason})
