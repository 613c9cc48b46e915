"""Waiting on a condition with a deadline, never on a fixed sleep.

``wait_for`` blocks (for sync tests and fixtures); ``eventually`` awaits (for async tests, so the
event loop the test's clients run on keeps running between checks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


async def eventually(
    condition: Callable[[], Awaitable[Any]], timeout: float = 5.0, what: str = "", interval: float = 0.01
) -> Any:
    """The async ``wait_for``: await ``condition`` until it is truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(interval)


def in_thread(check: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """A blocking check (a sync Redis call, an HTTP scrape, a log file, a socket read) as a condition
    for ``eventually``: it runs in a worker thread, so the event loop is not stalled while it waits."""
    return lambda: asyncio.to_thread(check)
