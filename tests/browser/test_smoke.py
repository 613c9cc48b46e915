"""Chromium reaches a real gateway: a page loads over HTTP and opens a WebSocket with the bearer
subprotocol, as a browser application does."""

from __future__ import annotations

import json

from playwright.sync_api import Page

from harness.browser import PageLog
from harness.gateway_process import Gateway
from harness.tokens import make_token

# Opens a socket with the token in the subprotocol, pings, and settles with what came back.
_PING_OVER_BEARER = """([url, token]) => new Promise((resolve) => {
    const ws = new WebSocket(url, ["bearer", token]);
    ws.onopen = () => ws.send(JSON.stringify({type: "ping"}));
    ws.onmessage = (event) => { resolve({protocol: ws.protocol, frame: event.data}); ws.close(1000); };
    ws.onclose = (event) => resolve({code: event.code, reason: event.reason});
})"""


def test_a_page_served_by_the_gateway_loads(gateway_one: Gateway, page: Page, page_log: PageLog) -> None:
    """Chromium loads /healthz from a gateway on a free port and sees its JSON."""
    response = page.goto(f"http://127.0.0.1:{gateway_one.port}/healthz")
    assert response is not None and response.status == 200
    assert json.loads(page.inner_text("body")) == {"status": "ok"}
    assert page_log.errors == [] and page_log.blocked == []


def test_a_page_opens_a_websocket_with_the_bearer_subprotocol(
    gateway_one: Gateway, page: Page, user: str
) -> None:
    """The gateway selects ``bearer``, which Chromium requires before it opens the socket."""
    page.goto(f"http://127.0.0.1:{gateway_one.port}/healthz")
    result = page.evaluate(_PING_OVER_BEARER, [gateway_one.ws_url, make_token(user)])
    assert result == {"protocol": "bearer", "frame": '{"type":"pong"}'}
