"""The largest payload the gateway delivers, shared by the gateway (settings, hub) and the
publisher library, which imports only this, redis, the key names and the settings table (which
reads ``WEBSOCKET_MAX_PAYLOAD_SIZE`` within these bounds).

Why a limit at all: a worker reads every user's messages through one Redis pub/sub connection,
and Redis cuts a subscriber whose output buffer passes ``client-output-buffer-limit pubsub``
(32 MiB hard by default), so one huge publish costs every user of that worker what is
published until it reconnects. The limit also bounds a connection's memory: at most
``WEBSOCKET_SEND_QUEUE_SIZE`` frames of at most this size wait for a slow client (an envelope
frame at most ``envelope.MAX_OVERHEAD`` bytes more, escapes included: gateway/history/envelope.py).
"""

from __future__ import annotations

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
