"""Every setting, declared once: its variable, ``Settings`` field, default, parser and meaning.

The rows live by topic (``server``, ``redis``, ``tokens``, ``limits``, ``history``, ``api``,
``operations``);
this module is the one table they make. ``Settings.from_environ`` reads through it, the settings
table of docs/reference.md is generated from it (``markdown_table``; tests/test_settings.py checks it),
and the CLI and the publisher library take their defaults from it. Standard library and the payload
limit only: the publisher imports it. Checks that need two settings (the JWT key against the
algorithm) are in settings.py.
"""

from __future__ import annotations

from typing import Any

from gateway.config.api import (
    WEBSOCKET_API_HISTORY_LENGTH,
    WEBSOCKET_API_HISTORY_TTL,
    WEBSOCKET_API_KEYS,
    WEBSOCKET_API_MAX_BODY_SIZE,
)
from gateway.config.history import (
    WEBSOCKET_HISTORY_REPLAY_CAP,
    WEBSOCKET_RESUME_BYTES_PER_MINUTE,
    WEBSOCKET_RESUMES_PER_MINUTE,
)
from gateway.config.limits import (
    WEBSOCKET_CLIENT_MESSAGES_PER_SECOND,
    WEBSOCKET_LEASE_TTL,
    WEBSOCKET_MAX_CONNECTIONS_PER_USER,
    WEBSOCKET_MAX_CONNECTIONS_PER_WORKER,
    WEBSOCKET_MAX_MESSAGE_SIZE,
    WEBSOCKET_MAX_PAYLOAD_SIZE,
    WEBSOCKET_MAX_PENDING_HANDSHAKES,
    WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS,
    WEBSOCKET_SEND_QUEUE_SIZE,
)
from gateway.config.operations import (
    LOG_FORMAT,
    PROMETHEUS_MULTIPROC_DIR,
    WEBSOCKET_DEV_CONSOLE,
    WEBSOCKET_DEV_CONSOLE_PORT,
)
from gateway.config.parsers import Setting
from gateway.config.redis import (
    REDIS_CHANNEL_PREFIX,
    REDIS_CLUSTER_NODES,
    REDIS_PROBE_INTERVAL,
    REDIS_SENTINEL_MASTER,
    REDIS_SENTINELS,
    REDIS_URL,
)
from gateway.config.server import (
    CORS_ORIGINS,
    FORWARDED_ALLOW_IPS,
    METRICS_PORT,
    WEB_CONCURRENCY,
    WEBSOCKET_DRAIN_WINDOW,
    WEBSOCKET_HANDSHAKE_TIMEOUT,
    WEBSOCKET_HOST,
    WEBSOCKET_IDLE_TIMEOUT,
    WEBSOCKET_PER_MESSAGE_DEFLATE,
    WEBSOCKET_PING_INTERVAL,
    WEBSOCKET_PING_TIMEOUT,
    WEBSOCKET_PORT,
)
from gateway.config.tokens import (
    JWT_ALGORITHM,
    JWT_AUDIENCE,
    JWT_ISSUER,
    JWT_LEEWAY,
    JWT_REVOCATION_TTL,
    JWT_SECRET_KEY,
)

# Each row by its variable's name (``table.REDIS_URL``), the table, and the rows that fill Settings.
__all__ = [
    "ALL",
    "CORS_ORIGINS",
    "FORWARDED_ALLOW_IPS",
    "GATEWAY",
    "JWT_ALGORITHM",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "JWT_LEEWAY",
    "JWT_REVOCATION_TTL",
    "JWT_SECRET_KEY",
    "LOG_FORMAT",
    "METRICS_PORT",
    "PROMETHEUS_MULTIPROC_DIR",
    "REDIS_CHANNEL_PREFIX",
    "REDIS_CLUSTER_NODES",
    "REDIS_PROBE_INTERVAL",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_URL",
    "WEBSOCKET_API_HISTORY_LENGTH",
    "WEBSOCKET_API_HISTORY_TTL",
    "WEBSOCKET_API_KEYS",
    "WEBSOCKET_API_MAX_BODY_SIZE",
    "WEBSOCKET_CLIENT_MESSAGES_PER_SECOND",
    "WEBSOCKET_DEV_CONSOLE",
    "WEBSOCKET_DEV_CONSOLE_PORT",
    "WEBSOCKET_DRAIN_WINDOW",
    "WEBSOCKET_HANDSHAKE_TIMEOUT",
    "WEBSOCKET_HISTORY_REPLAY_CAP",
    "WEBSOCKET_HOST",
    "WEBSOCKET_IDLE_TIMEOUT",
    "WEBSOCKET_LEASE_TTL",
    "WEBSOCKET_MAX_CONNECTIONS_PER_USER",
    "WEBSOCKET_MAX_CONNECTIONS_PER_WORKER",
    "WEBSOCKET_MAX_MESSAGE_SIZE",
    "WEBSOCKET_MAX_PAYLOAD_SIZE",
    "WEBSOCKET_MAX_PENDING_HANDSHAKES",
    "WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS",
    "WEBSOCKET_PER_MESSAGE_DEFLATE",
    "WEBSOCKET_PING_INTERVAL",
    "WEBSOCKET_PING_TIMEOUT",
    "WEBSOCKET_PORT",
    "WEBSOCKET_RESUMES_PER_MINUTE",
    "WEBSOCKET_RESUME_BYTES_PER_MINUTE",
    "WEBSOCKET_SEND_QUEUE_SIZE",
    "WEB_CONCURRENCY",
    "markdown_table",
]

# In the order of docs/reference.md.
ALL: tuple[Setting[Any], ...] = (
    WEBSOCKET_HOST,
    WEBSOCKET_PORT,
    METRICS_PORT,
    WEB_CONCURRENCY,
    WEBSOCKET_MAX_CONNECTIONS_PER_USER,
    WEBSOCKET_IDLE_TIMEOUT,
    REDIS_URL,
    REDIS_CLUSTER_NODES,
    REDIS_SENTINELS,
    REDIS_SENTINEL_MASTER,
    REDIS_CHANNEL_PREFIX,
    JWT_SECRET_KEY,
    JWT_ALGORITHM,
    JWT_AUDIENCE,
    JWT_ISSUER,
    JWT_LEEWAY,
    JWT_REVOCATION_TTL,
    CORS_ORIGINS,
    WEBSOCKET_SEND_QUEUE_SIZE,
    WEBSOCKET_MAX_MESSAGE_SIZE,
    WEBSOCKET_MAX_PAYLOAD_SIZE,
    WEBSOCKET_PING_INTERVAL,
    WEBSOCKET_PING_TIMEOUT,
    WEBSOCKET_PER_MESSAGE_DEFLATE,
    WEBSOCKET_MAX_CONNECTIONS_PER_WORKER,
    WEBSOCKET_DRAIN_WINDOW,
    REDIS_PROBE_INTERVAL,
    WEBSOCKET_LEASE_TTL,
    WEBSOCKET_HANDSHAKE_TIMEOUT,
    WEBSOCKET_MAX_PENDING_HANDSHAKES,
    WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS,
    WEBSOCKET_CLIENT_MESSAGES_PER_SECOND,
    WEBSOCKET_HISTORY_REPLAY_CAP,
    WEBSOCKET_RESUMES_PER_MINUTE,
    WEBSOCKET_RESUME_BYTES_PER_MINUTE,
    WEBSOCKET_API_KEYS,
    WEBSOCKET_API_MAX_BODY_SIZE,
    WEBSOCKET_API_HISTORY_LENGTH,
    WEBSOCKET_API_HISTORY_TTL,
    WEBSOCKET_DEV_CONSOLE,
    WEBSOCKET_DEV_CONSOLE_PORT,
    FORWARDED_ALLOW_IPS,
    PROMETHEUS_MULTIPROC_DIR,
    LOG_FORMAT,
)
# The ones that fill a Settings field.
GATEWAY = tuple(setting for setting in ALL if setting.field is not None)


def markdown_table() -> str:
    """The settings table of docs/reference.md, so the two cannot drift apart."""
    rows = ["| variable | default | accepted | meaning |", "|---|---|---|---|"]
    for s in ALL:
        rows.append(f"| `{s.variable}` | {s.shown_default()} | {s.parser.accepts} | {s.doc} |")
    return "\n".join(rows)
