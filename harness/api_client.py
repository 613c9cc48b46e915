"""A plain HTTP client of the gateway's API (``/api/*``), with full control of what it sends: the
key, the method, the content type and the raw body, for tests that send it wrong on purpose; and
the envelope client that checks what a publish delivered."""

from __future__ import annotations

import asyncio
import http.client
import json
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from harness.gateway_process import Gateway
from harness.tokens import make_token

# At least 32 characters, as WEBSOCKET_API_KEYS requires.
API_KEY = "test-api-key-0123456789abcdefghijklmnop"
OTHER_API_KEY = "test-api-key-second-0123456789abcdefghij"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    port: int,
    path: str,
    body: Any = None,
    *,
    key: str | None = API_KEY,
    method: str = "POST",
    content_type: str | None = "application/json",
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    connection: http.client.HTTPConnection | None = None,
) -> Answer:
    """One request; ``body`` is sent as JSON unless ``raw`` is given. With ``connection`` the
    request goes on it (keep-alive), else on a connection of its own."""
    sent = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    head = dict(headers or {})
    if key is not None:
        head["Authorization"] = f"Bearer {key}"
    if content_type is not None and sent is not None:
        head["Content-Type"] = content_type
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=sent, headers=head)
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        if connection is None:
            conn.close()


async def post(gateway: Gateway, path: str, body: Any, **options: Any) -> Answer:
    """``call`` from a thread, for async tests."""
    return await asyncio.to_thread(call, gateway.port, path, body, **options)


async def envelope_socket(gateway: Gateway, user: str, since: str | None = None) -> ClientConnection:
    query = f"&since={since}" if since else "&envelope=1"
    return await connect(f"{gateway.ws_url}?token={make_token(user)}{query}", open_timeout=10)


async def frames_until(ws: ClientConnection, last: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Envelope frames up to the message whose data is ``last``."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1].get("data") != last:
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return frames


def published_until_end(listener: Any) -> list[bytes]:
    """What a pub/sub ``listener`` (a sync redis-py PubSub) receives, up to a message ending in
    ``end``: the tests publish that last, so everything before it has arrived."""
    seen: list[bytes] = []
    while not seen or not seen[-1].endswith(b"end"):
        message = listener.get_message(timeout=5)
        assert message is not None, f"only {seen} arrived"
        if message["type"] == "message":
            seen.append(message["data"])
    return seen
