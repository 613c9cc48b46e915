"""The liveness probe of a pub/sub connection.

A connection can stay open and hear nothing (Redis paused, a half-open socket behind a NAT): no
error ever comes. So the broker subscribes a worker-private control channel (which also keeps its
reader alive with zero users) and every ``interval`` publishes to it through another connection;
if the probe does not come back through the reader within ``interval``, ``run`` raises and the
broker replaces the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

_PROBE = b"probe"


class Probe:
    def __init__(
        self, publish: Callable[[bytes, bytes], Awaitable[object]], channel: bytes, interval: float
    ) -> None:
        self._publish = publish
        self._channel = channel
        self._interval = interval
        self._returned = asyncio.Event()

    def returned(self) -> None:
        """The reader saw a message on the control channel."""
        self._returned.set()

    async def run(self) -> None:
        """Probe until one does not come back in time: then raise TimeoutError."""
        while True:
            await asyncio.sleep(self._interval)
            self._returned.clear()
            try:
                async with asyncio.timeout(self._interval):
                    await self._publish(self._channel, _PROBE)
                    await self._returned.wait()
            except TimeoutError:
                raise TimeoutError("control channel probe did not come back") from None
