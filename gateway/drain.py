"""Graceful drain: stop admitting, then close every socket with 1012 spread over a window.

Spreading the closes keeps a deploy from making every client reconnect in the same instant.
Each closing connection releases its lease and subscription on its own way out.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from gateway import close_codes

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.drain")

# Beyond the window: time for the last close frames and lease releases.
_GRACE = 2.0


async def drain(gateway: Gateway, window: float) -> None:
    gateway.draining = True
    connections = gateway.hub.connections()
    if not connections:
        return
    log.info("draining %d connections over %.1f s", len(connections), window)
    random.shuffle(connections)
    loop = asyncio.get_running_loop()
    step = window / len(connections)
    timers = [loop.call_later(i * step, c.end, close_codes.DRAINING) for i, c in enumerate(connections)]
    try:
        async with asyncio.timeout(window + _GRACE):
            while gateway.hub.connection_count:
                await asyncio.sleep(0.05)
    except TimeoutError:
        log.warning("%d connections still open after the drain window", gateway.hub.connection_count)
    finally:
        for timer in timers:
            timer.cancel()
