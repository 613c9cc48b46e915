"""What one user, one connection or one worker may hold or send.

Rows of the one settings table (gateway/config/table.py), which orders them for docs/reference.md."""

from __future__ import annotations

from gateway import payload_limit
from gateway.config.parsers import Setting, byte_size, integer, number

WEBSOCKET_MAX_CONNECTIONS_PER_USER = Setting(
    "WEBSOCKET_MAX_CONNECTIONS_PER_USER",
    "max_connections_per_user",
    5,
    integer(1, 10_000),
    "cluster-wide, across all workers and hosts",
)

WEBSOCKET_SEND_QUEUE_SIZE = Setting(
    "WEBSOCKET_SEND_QUEUE_SIZE",
    "send_queue_size",
    256,
    integer(1, 100_000),
    "frames queued per connection before it is closed as a slow consumer",
)

WEBSOCKET_MAX_MESSAGE_SIZE = Setting(
    "WEBSOCKET_MAX_MESSAGE_SIZE",
    "max_inbound_message_size",
    4096,
    integer(128, 16 * 1024 * 1024),
    "largest client frame in bytes (larger: close 1009)",
)

WEBSOCKET_MAX_PAYLOAD_SIZE = Setting(
    payload_limit.VARIABLE,
    "max_payload_size",
    payload_limit.DEFAULT_MAX_PAYLOAD_SIZE,
    byte_size(payload_limit.SMALLEST, payload_limit.LARGEST),
    "largest published payload in bytes (larger: dropped by the gateway, refused by the publisher "
    "library); see [Payload size](publishing.md#payload-size)",
)

WEBSOCKET_MAX_CONNECTIONS_PER_WORKER = Setting(
    "WEBSOCKET_MAX_CONNECTIONS_PER_WORKER",
    "max_connections_per_worker",
    10_000,
    integer(1, 1_000_000),
    "beyond it new connections are closed with 1013",
)

WEBSOCKET_LEASE_TTL = Setting(
    "WEBSOCKET_LEASE_TTL",
    "lease_ttl",
    30.0,
    number(1.0, 3600.0),
    "seconds a dead host's places in the per-user limit keep counting (each worker renews its key every"
    " third of it; docs/limits.md)",
)

WEBSOCKET_MAX_PENDING_HANDSHAKES = Setting(
    "WEBSOCKET_MAX_PENDING_HANDSHAKES",
    "max_pending_handshakes",
    1000,
    integer(1, 100_000),
    "handshakes a worker admits at once (waiting on Redis); beyond: 1013 `overloaded`; a user may"
    " hold as many of them as it may hold connections, beyond: 1013 `too_many_handshakes`",
)

WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS = Setting(
    "WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS",
    "max_pending_handshakes_per_address",
    100,
    integer(1, 100_000),
    "of those, how many one client address may hold (after `FORWARDED_ALLOW_IPS`: behind a proxy"
    " that does not forward, every client shares its address); beyond: 1013 `too_many_handshakes`",
)

WEBSOCKET_CLIENT_MESSAGES_PER_SECOND = Setting(
    "WEBSOCKET_CLIENT_MESSAGES_PER_SECOND",
    "client_messages_per_second",
    10.0,
    number(0.1, 10_000.0),
    "client messages, pings and pongs allowed per second (bursts of twice that); beyond: 1008",
)
