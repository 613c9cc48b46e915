"""How often, and how many bytes, one user may resume (``?since=``) on one worker.

A resume reads up to ``WEBSOCKET_HISTORY_REPLAY_CAP`` messages from Redis and queues them as
envelopes: one client looping resumes over a large history costs the worker and Redis far more
than it costs the client. Two token buckets per user bound it: resumes (``WEBSOCKET_RESUMES_PER_MINUTE``)
and replayed bytes (``WEBSOCKET_RESUME_BYTES_PER_MINUTE``), each a minute's worth at most,
refilled evenly. A resume is refused (1013 ``too_many_resumes``, before any Redis command) while
either is spent; the bytes Redis sent for a resume are charged once read, recovered or not (one
answered ``too_long`` cost its reading too), so one may overdraw the byte bucket, and the next
waits until it is paid back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Past this many users kept, those idle for a minute are forgotten, at most once a second.
_SWEEP_ABOVE = 1024


class ResumeBudget:
    __slots__ = ("_buckets", "_bytes_per_minute", "_clock", "_resumes_per_minute", "_swept_at")

    def __init__(
        self, resumes_per_minute: int, bytes_per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._resumes_per_minute = resumes_per_minute
        self._bytes_per_minute = bytes_per_minute
        self._clock = clock
        # user -> [resumes left, bytes left, when last refilled]
        self._buckets: dict[str, list[float]] = {}
        self._swept_at = clock()

    def allows(self, user_id: str) -> bool:
        """Whether ``user_id`` may resume now; if so, one resume is taken from its budget."""
        bucket = self._refilled(user_id)
        if bucket[0] < 1 or bucket[1] <= 0:
            return False
        bucket[0] -= 1
        return True

    def charge(self, user_id: str, replayed_bytes: int) -> None:
        """The bytes of history a resume of ``user_id`` read (replayed or not)."""
        self._refilled(user_id)[1] -= replayed_bytes

    def _refilled(self, user_id: str) -> list[float]:
        now = self._clock()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            if len(self._buckets) >= _SWEEP_ABOVE and now - self._swept_at >= 1:
                self._sweep(now)
            bucket = self._buckets[user_id] = [self._resumes_per_minute, self._bytes_per_minute, now]
            return bucket
        minutes = (now - bucket[2]) / 60
        bucket[0] = min(self._resumes_per_minute, bucket[0] + minutes * self._resumes_per_minute)
        bucket[1] = min(self._bytes_per_minute, bucket[1] + minutes * self._bytes_per_minute)
        bucket[2] = now
        return bucket

    def _sweep(self, now: float) -> None:
        """Forget the users idle for a minute: a minute refills a bucket, and a new one is full."""
        self._swept_at = now
        self._buckets = {user: bucket for user, bucket in self._buckets.items() if now - bucket[2] < 60}
