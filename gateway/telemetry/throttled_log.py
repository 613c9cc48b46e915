"""Log lines that anyone outside can repeat at will (a publisher's bad payloads, a client's bad
frames), rate-limited: a flood of them must not flood the log or cost the worker its time.

Each line is keyed by its format string, which every call site keeps constant (the arguments vary,
the key does not), so the keys are as few as the call sites. A key gets a burst of ``BURST`` lines,
then one every ``INTERVAL`` seconds; the next line written after some were held back says how
many. The metrics still count every event: the log only samples them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

BURST = 5
INTERVAL = 10.0


class _Bucket:
    __slots__ = ("at", "suppressed", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = float(BURST)
        self.at = now
        self.suppressed = 0


class ThrottledLog:
    """A logger's lines, at most ``BURST`` per key and then one per ``INTERVAL``."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def info(self, msg: str, *args: object) -> None:
        self._log(logging.INFO, msg, args, exc_info=False)

    def warning(self, msg: str, *args: object) -> None:
        self._log(logging.WARNING, msg, args, exc_info=False)

    def exception(self, msg: str, *args: object) -> None:
        """An error with the traceback of the exception being handled."""
        self._log(logging.ERROR, msg, args, exc_info=True)

    def _log(self, level: int, msg: str, args: tuple[object, ...], exc_info: bool) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        bucket = self._buckets.get(msg)
        if bucket is None:
            bucket = self._buckets[msg] = _Bucket(now)
        bucket.tokens = min(BURST, bucket.tokens + (now - bucket.at) / INTERVAL)
        bucket.at = now
        if bucket.tokens < 1:
            bucket.suppressed += 1
            return
        bucket.tokens -= 1
        if bucket.suppressed:
            msg, args = f"{msg} (and %d more like it, not logged)", (*args, bucket.suppressed)
            bucket.suppressed = 0
        # stacklevel: the record names the call site, not this module.
        self.logger.log(level, msg, *args, exc_info=exc_info, stacklevel=3)
