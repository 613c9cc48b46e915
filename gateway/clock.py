"""The time a connection lives by, handed to it so that a test can move it (harness/clock.py).

Two clocks: the wall clock, which a token's ``exp`` is counted in, and the event loop's, which the
server's protocol stamps ``Link.last_activity`` with and timers run on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """The wall clock, in seconds since the epoch (a token's ``exp``)."""
        ...

    def monotonic(self) -> float:
        """The event loop's clock (``Link.last_activity``, ``call_at``)."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback`` once ``monotonic()`` reaches ``when``."""
        ...


class LoopClock:
    """The real clocks: ``time.time`` and the running event loop's."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)


SYSTEM_CLOCK = LoopClock()
