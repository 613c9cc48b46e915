"""FakeClock: a gateway.clock.Clock that moves only when a test says so, running the timers that
come due on the way. Expiry and idle timeouts become tests without a sleep."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Wall time starts at the real time (tokens minted now are valid), the loop's clock at 0."""

    def __init__(self) -> None:
        self._wall_at_zero = time.time()
        self._now = 0.0
        self._timers: list[tuple[float, int, FakeTimer, Callable[[], object]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._wall_at_zero + self._now

    def monotonic(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._timers, (when, next(self._order), timer, callback))
        return timer

    @property
    def pending(self) -> int:
        """Timers set and neither run nor cancelled."""
        return sum(1 for _, _, timer, _ in self._timers if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move both clocks on by ``seconds``, running each timer due by then at its time, in
        order (one a callback sets is run too if it falls due in the same stretch)."""
        until = self._now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, timer, callback = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                callback()
        self._now = until
