"""Protocol pings for every socket of a worker from one timer.

uvicorn gave each socket two timers (the next ping, then the pong's deadline), built a ping frame
per socket with its own random payload, and woke the event loop for each socket on its own: at
20,000 idle sockets those wake-ups were most of a worker's idle CPU. Here a worker has one timer
that ticks while sockets are due. Each socket waits in the bucket of the tick its next event
falls in (a ping to send, or a pong's deadline), and a tick sends one pre-built ping frame, the
same payload for every socket in it, to all its due sockets in one go.

A tick is a tenth of the shorter of the interval and the timeout, and at most a second: a ping is
sent and a dead peer is closed at most that much later than its time.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import os
import weakref
from typing import Protocol

_LOG = logging.getLogger("gateway.keepalive")
_MAX_TICK = 1.0
_MIN_TICK = 0.01
_SLACK = 0.002


class Pinged(Protocol):
    def keepalive_due(self, now: float, ping: bytes, payload: bytes) -> None:
        """Its time came: send ``ping`` (whose payload is ``payload``) if one is due, or close
        if its pong is late, then schedule its next time on the wheel, or stop."""


class Keepalive:
    """The worker's ping wheel: buckets of sockets by the tick they are next due at."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, timeout: float) -> None:
        self._loop = loop
        self.interval = interval
        self.timeout = timeout
        self.tick = max(_MIN_TICK, min(_MAX_TICK, min(interval, timeout) / 10))
        self._buckets: dict[int, dict[Pinged, None]] = {}
        self._slots: list[int] = []  # a heap of the buckets' ticks (some perhaps emptied since)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0
        # Pongs answer this worker's pings only: a payload from its own counter, from a random start.
        self._payloads = int.from_bytes(os.urandom(4), "big")

    def __len__(self) -> int:
        return sum(map(len, self._buckets.values()))

    def schedule(self, member: Pinged, at: float) -> int:
        """Visit ``member`` at the first tick at or after loop time ``at``; returns its bucket,
        for ``discard``."""
        slot = math.ceil(at / self.tick)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            heapq.heappush(self._slots, slot)
            if self._timer is None or slot < self._timer_slot:
                self._arm(slot)
        bucket[member] = None
        return slot

    def discard(self, member: Pinged, slot: int) -> None:
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.pop(member, None)
            if not bucket:
                del self._buckets[slot]  # its heap entry goes when its tick comes

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        # A little after the tick: a loop may fire a timer up to its clock's resolution early.
        self._timer = self._loop.call_at(slot * self.tick + _SLACK, self._run)

    def _run(self) -> None:
        self._timer = None
        now = self._loop.time()
        current = math.floor(now / self.tick)
        slots = self._slots
        due = []
        while slots and slots[0] <= current:
            bucket = self._buckets.pop(heapq.heappop(slots), None)
            if bucket:
                due.append(bucket)
        if due:
            self._payloads = (self._payloads + 1) & 0xFFFFFFFF
            payload = self._payloads.to_bytes(4, "big")
            ping = b"\x89\x04" + payload  # a final, unmasked ping frame (RFC 6455 5.5.2)
            for bucket in due:
                for member in bucket:
                    try:
                        member.keepalive_due(now, ping, payload)
                    except Exception:
                        # One socket's failure must not cost the others their pings: this one
                        # is not pinged again (its idle timeout still ends it).
                        _LOG.exception("a socket's keepalive failed; it is no longer pinged")
        if slots:
            self._arm(slots[0])  # what the visits scheduled may have armed it for a later tick


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Keepalive] = weakref.WeakKeyDictionary()


def keepalive_for(loop: asyncio.AbstractEventLoop, interval: float, timeout: float) -> Keepalive:
    """The loop's wheel (a worker runs one loop, with one interval and timeout)."""
    wheel = _WHEELS.get(loop)
    if wheel is None:
        wheel = _WHEELS[loop] = Keepalive(loop, interval, timeout)
    return wheel
