"""What a page's ``onclose`` reads when the gateway refuses a token or an Origin carried the way
browsers carry them (the bearer subprotocol): the table's close code and reason, not 1006."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from harness.gateway_process import Gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token

# Opens a socket with the given subprotocols and settles with what onclose saw.
_CLOSE_SEEN = """([url, protocols]) => new Promise((resolve) => {
    const ws = new WebSocket(url, protocols);
    ws.onclose = (event) => resolve({code: event.code, reason: event.reason, protocol: ws.protocol});
})"""


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    """Pages from http://127.0.0.1:<port> are allowed; the same server as http://localhost:<port>
    is another Origin, which is not."""
    gateway = Gateway(redis_server.url, workers=1)
    gateway.env["CORS_ORIGINS"] = json.dumps([f"http://127.0.0.1:{gateway.port}"])
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.close()


@pytest.mark.parametrize(
    ("protocols", "code", "reason"),
    [
        (["bearer"], 4401, "token_missing"),
        (["bearer", "not.a.jwt"], 4401, "token_invalid"),
        (["bearer", make_token("page-user", ttl=-60)], 4001, "token_expired"),
    ],
    ids=["missing", "invalid", "expired"],
)
def test_a_page_reads_each_token_refusal(
    gateway: Gateway, page: Page, protocols: list[str], code: int, reason: str
) -> None:
    page.goto(f"http://127.0.0.1:{gateway.port}/healthz")
    seen = page.evaluate(_CLOSE_SEEN, [gateway.ws_url, protocols])
    assert seen == {"code": code, "reason": reason, "protocol": "bearer"}


def test_a_page_from_another_origin_reads_4403(gateway: Gateway, page: Page) -> None:
    page.goto(f"http://localhost:{gateway.port}/healthz")
    seen = page.evaluate(_CLOSE_SEEN, [gateway.ws_url, ["bearer", make_token("page-user")]])
    assert seen == {"code": 4403, "reason": "origin_forbidden", "protocol": "bearer"}


def test_a_page_from_the_allowed_origin_is_served(gateway: Gateway, page: Page) -> None:
    """The same token from the allowed Origin opens; the page then closes it itself (1000)."""
    page.goto(f"http://127.0.0.1:{gateway.port}/healthz")
    seen = page.evaluate(
        """([url, token]) => new Promise((resolve) => {
            const ws = new WebSocket(url, ["bearer", token]);
            ws.onopen = () => ws.close(1000, "done");
            ws.onclose = (event) => resolve({code: event.code, reason: event.reason, protocol: ws.protocol});
        })""",
        [gateway.ws_url, make_token("page-user")],
    )
    assert seen == {"code": 1000, "reason": "done", "protocol": "bearer"}
