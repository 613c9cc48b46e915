"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright's Python
client. Playwright is only the driver here: its own browser downloads are never installed, the
browser is the distribution's (``scripts/ensure-chromium``), so the tests run what users run.

A page may reach the loopback servers the tests start and nothing else: every other request is
aborted and recorded, so a page that pulls a script from a CDN fails its test instead of
depending on the network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Route, sync_playwright

# Launching takes about a second; a minute means something is wrong, not slow.
LAUNCH_TIMEOUT_MS = 60_000
# Every page action and wait (goto, click, wait_for_function) gives up after this.
ACTION_TIMEOUT_MS = 10_000
_LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


class ChromiumMissing(RuntimeError):
    """No Chromium binary to drive; the message says where it was looked for."""


def chromium_path() -> Path:
    """``$CHROMIUM``, else Debian's /usr/bin/chromium, else ``chromium`` on the PATH."""
    configured = os.environ.get("CHROMIUM")
    candidates = [configured] if configured else ["/usr/bin/chromium", shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    looked = configured or "/usr/bin/chromium and the PATH"
    raise ChromiumMissing(f"no chromium at {looked}: run scripts/ensure-chromium (apt-get install chromium)")


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed (and its processes gone) when the block ends."""
    path = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(path), headless=True, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What a page did that a test may want to assert on or print when it fails."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@contextlib.contextmanager
def new_page(browser: Browser) -> Iterator[tuple[Page, PageLog]]:
    """A page in a fresh context (no cookies or storage shared with other tests), bounded waits,
    loopback-only requests, and a log of its uncaught errors, console lines and blocked requests."""
    log = PageLog()
    context = browser.new_context()
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)

    def only_loopback(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in _LOOPBACK or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            log.blocked.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("pageerror", lambda error: log.errors.append(str(error)))
    page.on("console", lambda message: _record_console(log, message))
    try:
        yield page, log
    finally:
        with contextlib.suppress(Error):
            context.close()


def _record_console(log: PageLog, message: ConsoleMessage) -> None:
    log.console.append(f"{message.type}: {message.text}")
