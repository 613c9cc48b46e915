"""A log line a client can trigger at will, written at most once per interval per process: the
line says how many were left out since the last one (the metrics count every case)."""

from __future__ import annotations

import logging
import time


class ThrottledLog:
    def __init__(self, logger: logging.Logger, level: int, interval: float = 10.0) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._next_at = 0.0
        self._left_out = 0

    def log(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._left_out += 1
            return
        self._next_at = now + self._interval
        if self._left_out:
            message += " (and %d more like it left out)"
            args = (*args, self._left_out)
            self._left_out = 0
        self._logger.log(self._level, message, *args)
