"""What the gateway listens on and how its sockets behave: addresses, ports, workers, the
WebSocket protocol's timers and options, and which origins and proxies it believes.

Rows of the one settings table (gateway/config/table.py), which orders them for docs/reference.md."""

from __future__ import annotations

from gateway.config.cpus import usable_cpus
from gateway.config.parsers import Computed, Setting, flag, integer, json_strings, number, text

WEBSOCKET_HOST = Setting(
    "WEBSOCKET_HOST", "host", "0.0.0.0", text("a host name or IP address"), "bind address"
)

WEBSOCKET_PORT = Setting("WEBSOCKET_PORT", "port", 8080, integer(1, 65535), "bind port")

METRICS_PORT = Setting(
    "METRICS_PORT",
    "metrics_port",
    0,
    integer(0, 65535),
    "`0`: `/metrics` and `/healthz/websocket` are served on `WEBSOCKET_PORT` with everything else; "
    "else they are served only on this port (on `WEBSOCKET_HOST`), which serves nothing but them, "
    "`/healthz` and `/healthz/redis`",
)

WEB_CONCURRENCY = Setting(
    "WEB_CONCURRENCY",
    "web_concurrency",
    Computed(usable_cpus, "usable CPUs"),
    integer(1, 256),
    "worker processes; unset: the CPUs the process may use, worked out at start-up: its CPU "
    "affinity, capped by its cgroup's CPU quota (a container's `--cpus`, a pod's CPU limit; "
    "cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`) rounded up, not the node's cores",
)

WEBSOCKET_IDLE_TIMEOUT = Setting(
    "WEBSOCKET_IDLE_TIMEOUT",
    "idle_timeout",
    300.0,
    number(1.0, 86_400.0),
    "seconds without any client frame (pongs count) before close (1001)",
)

CORS_ORIGINS = Setting(
    "CORS_ORIGINS",
    "cors_origins",
    (),
    json_strings("origins", '["https://app.example"]'),
    "allowed `Origin` values for the upgrade, exact match",
    shown="`[]` (any)",
)

WEBSOCKET_PING_INTERVAL = Setting(
    "WEBSOCKET_PING_INTERVAL",
    "ping_interval",
    20.0,
    number(0.0, 3600.0),
    "seconds between protocol pings (`0`: off)",
)

WEBSOCKET_PING_TIMEOUT = Setting(
    "WEBSOCKET_PING_TIMEOUT",
    "ping_timeout",
    20.0,
    number(0.1, 3600.0),
    "seconds a peer has to answer a ping; one that does not is closed",
)

WEBSOCKET_PER_MESSAGE_DEFLATE = Setting(
    "WEBSOCKET_PER_MESSAGE_DEFLATE",
    "per_message_deflate",
    False,
    flag(),
    "compression; it costs about 50 KiB per connection",
)

WEBSOCKET_DRAIN_WINDOW = Setting(
    "WEBSOCKET_DRAIN_WINDOW",
    "drain_window",
    10.0,
    number(0.0, 3600.0),
    "seconds a stopping worker has to close its sockets",
)

WEBSOCKET_HANDSHAKE_TIMEOUT = Setting(
    "WEBSOCKET_HANDSHAKE_TIMEOUT",
    "handshake_timeout",
    10.0,
    number(0.5, 300.0),
    "seconds a client has to send each request's headers (half-open sockets are closed), and an"
    " HTTP API request its body (else 408 `body_timeout`)",
)

FORWARDED_ALLOW_IPS = Setting(
    "FORWARDED_ALLOW_IPS",
    None,
    "127.0.0.1",
    text("comma-separated addresses or networks"),
    "proxies whose `X-Forwarded-For` is believed (read by gunicorn.conf.py)",
)
