"""The largest payload the gateway delivers, shared by the gateway (settings, hub) and the
publisher library, which imports only this, redis and the key names.

Why a limit at all: a worker reads every user's messages through one Redis pub/sub connection,
and Redis cuts a subscriber whose output buffer passes ``client-output-buffer-limit pubsub``
(32 MiB hard by default), so one huge publish costs every user of that worker what is
published until it reconnects. The limit also bounds a connection's memory: at most
``WEBSOCKET_SEND_QUEUE_SIZE`` payloads of at most this size wait for a slow client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

VARIABLE = "WEBSOCKET_MAX_PAYLOAD_SIZE"
# Notifications are small; 64 KiB leaves room for a rich one and keeps the worst-case queue
# of one connection (256 x 64 KiB) at 16 MiB.
DEFAULT_MAX_PAYLOAD_SIZE = 64 * 1024
SMALLEST = 64
# Half of Redis's default hard pub/sub buffer limit: a larger payload is one publish from a cut.
LARGEST = 16 * 1024 * 1024


class PayloadTooLarge(ValueError):
    """The encoded payload is longer than the limit; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"payload of {size} bytes is over {VARIABLE} ({limit} bytes): the gateway would drop it"
        )
        self.size = size
        self.limit = limit


def max_payload_size_from_environ(environ: Mapping[str, str] | None = None) -> int:
    """``WEBSOCKET_MAX_PAYLOAD_SIZE`` in bytes, else the default; ValueError names the variable."""
    raw = (os.environ if environ is None else environ).get(VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_PAYLOAD_SIZE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not SMALLEST <= value <= LARGEST:
        raise ValueError(f"{VARIABLE}: an integer from {SMALLEST} to {LARGEST} (bytes), got {raw!r}")
    return value
