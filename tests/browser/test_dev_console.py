"""The development console (WEBSOCKET_DEV_CONSOLE): a page served by the gateway that connects
with the repository's JS client, shows what happens on the socket, and publishes to its user."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from gateway.publishing.publisher import Publisher
from harness.browser import PageLog
from harness.gateway_process import Gateway, running_gateway
from harness.paths import ROOT
from harness.redis_server import RedisServer

CLIENT = ROOT / "clients" / "js" / "src" / "index.js"
needs_client = pytest.mark.skipif(
    not CLIENT.exists(), reason="the JS client (clients/js/src/index.js) is not in this checkout"
)


@pytest.fixture(scope="module")
def console(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=1, WEBSOCKET_DEV_CONSOLE="true") as gateway:
        yield gateway


def _entries(page: Page, kind: str) -> list[str]:
    return page.locator(f'#log li[data-kind="{kind}"] .text').all_inner_texts()


@needs_client
def test_the_console_connects_and_shows_a_published_message(
    console: Gateway, page: Page, page_log: PageLog, user: str, tmp_path: Path
) -> None:
    """Load, connect as a typed user, publish through the page: the message shows with its
    position, every request stayed on the gateway, and the page raised nothing."""
    page.set_viewport_size({"width": 1100, "height": 760})
    page.goto(f"http://127.0.0.1:{console.console_port}/dev")
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    page.fill("#user", user)
    page.click("#connect")
    expect(page.locator("#state")).to_have_text("open")
    page.fill("#payload", json.dumps({"hello": "from the console", "n": 1}))
    page.click("#publish")
    message = page.locator('#log li[data-kind="message"] .text')
    expect(message).to_have_count(1)
    assert re.fullmatch(r'\{"hello":"from the console","n":1\} @ \S+', message.inner_text())
    expect(page.locator("#published")).to_contain_text("1 worker(s)")
    assert any(text.startswith("open (subprotocol bearer)") for text in _entries(page, "socket"))
    assert not any("eyJ" in text and len(text) > 40 for text in _entries(page, "sent"))
    screenshot = tmp_path / "dev-console.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("DEV_CONSOLE_SCREENSHOT"):  # refreshes docs/dev-console.png on request
        shutil.copyfile(screenshot, os.environ["DEV_CONSOLE_SCREENSHOT"])
    page.click("#close")
    expect(page.locator("#state")).to_have_text("closed")
    assert page_log.errors == [] and page_log.blocked == []


@needs_client
def test_the_console_shows_why_it_cannot_connect_and_each_close_code(
    console: Gateway, redis_server: RedisServer, page: Page, user: str
) -> None:
    """A user id no token can be minted for is reported with the gateway's answer; a backend's
    disconnect shows as its close code and reason (4003 disconnected)."""
    page.goto(f"http://127.0.0.1:{console.console_port}/dev")
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    page.fill("#user", "has space")
    page.click("#connect")
    expect(page.locator('#log li[data-kind="error"]').first).to_contain_text("HTTP 400")
    page.click("#close")
    expect(page.locator("#state")).to_have_text("closed")
    page.fill("#user", user)
    page.click("#connect")
    expect(page.locator("#state")).to_have_text("open")
    publisher = Publisher(redis_url=redis_server.url)
    try:
        assert publisher.disconnect(user) == 1
    finally:
        publisher.close()
    expect(page.locator('#log li[data-kind="close"] .text').first).to_have_text("4003 disconnected")


@needs_client
def test_close_then_connect_resumes_from_the_last_position(
    console: Gateway, redis_server: RedisServer, page: Page, page_log: PageLog, user: str
) -> None:
    """A message published while the console was closed arrives at the next Connect as the same
    user, replayed from the history (the client connects with since)."""
    page.goto(f"http://127.0.0.1:{console.console_port}/dev")
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    page.fill("#user", user)
    page.click("#connect")
    expect(page.locator("#state")).to_have_text("open")
    with Publisher(redis_url=redis_server.url) as publisher:
        publisher.publish(user, "before")
        messages = page.locator('#log li[data-kind="message"] .text')
        expect(messages).to_have_count(1)
        page.click("#close")
        expect(page.locator("#state")).to_have_text("closed")
        publisher.publish(user, "while closed")
    page.click("#connect")
    expect(messages).to_have_count(2)
    assert messages.nth(1).inner_text().startswith('"while closed" @ ')
    recovery = page.locator('#log li[data-kind="recovery"] .text').last
    expect(recovery).to_contain_text('"recovered":true')
    assert page_log.errors == []
