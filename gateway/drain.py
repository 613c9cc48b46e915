"""Graceful drain: stop admitting, then close every socket with 1012 spread over a window.

Spreading the closes keeps a deploy from making every client reconnect in the same instant.
Each closing connection releases its lease and subscription on its own way out; a close frame
waits a second at most for Redis to confirm its release (gateway/leases/limiter.py), so the closes go
out on time whatever Redis does. The releases Redis has not confirmed get one more second when the
worker stops (the limiter's stop), not the drain's window: a stop is bounded whatever Redis does
(with no socket left, a few seconds), and a Redis that answers by then frees those places at once;
the rest lapse within the lease time, or gunicorn's master releases them.

Handshakes still in admission (waiting on Redis) when the drain begins are not served: the
endpoint refuses each with 1012 once its admission returns. The drain waits for them too, since
whatever uvicorn's shutdown finds still in a handshake it answers with HTTP 500.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from gateway import close_codes
from gateway.state import Gateway

log = logging.getLogger("gateway.drain")

# Beyond the window: time for the last close frames and lease releases (a close frame waits a
# second at most for its release).
_GRACE = 2.0
# Beyond that, for handshakes still waiting on Redis (its commands time out after 5 s). Together
# they stay inside gunicorn's graceful_timeout (the window plus 10 s) with uvicorn's own shutdown.
_ADMISSION_GRACE = 4.0
_POLL = 0.05


async def drain(gateway: Gateway, window: float) -> None:
    gateway.draining = True
    connections = gateway.hub.connections()
    log.info(
        "drain began: %d connections to close over %.1f s, %d handshakes in admission",
        len(connections),
        window,
        gateway.pending_handshakes,
    )
    random.shuffle(connections)
    loop = asyncio.get_running_loop()
    step = window / len(connections) if connections else 0.0
    timers = [loop.call_later(i * step, c.end, close_codes.DRAINING) for i, c in enumerate(connections)]
    try:
        if not await _until(
            lambda: not (gateway.hub.connection_count or gateway.pending_handshakes or gateway.serving),
            window + _GRACE,
        ):
            if gateway.hub.connection_count:
                log.warning("%d connections still open after the drain window", gateway.hub.connection_count)
            if not await _until(lambda: not gateway.pending_handshakes, _ADMISSION_GRACE):
                log.warning("%d handshakes still waiting on Redis at shutdown", gateway.pending_handshakes)
    finally:
        for timer in timers:
            timer.cancel()


async def _until(done: Callable[[], bool], seconds: float) -> bool:
    """Poll ``done`` until it holds (True) or ``seconds`` pass (False)."""
    try:
        async with asyncio.timeout(seconds):
            while not done():
                await asyncio.sleep(_POLL)
    except TimeoutError:
        return False
    return True
