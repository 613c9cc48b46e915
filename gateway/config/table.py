"""Every setting, declared once: its variable, ``Settings`` field, default, parser and meaning.

``Settings.from_environ`` reads through this table, the README's settings table is generated from
it (``markdown_table``; tests/test_settings.py checks the README), and the CLI and the publisher
library take their defaults from it. Standard library and the payload limit only: the publisher
imports it. Checks that need two settings (the JWT key against the algorithm) are in settings.py.
"""

from __future__ import annotations

import os
from typing import Any

from gateway import payload_limit
from gateway.config.parsers import (
    Computed,
    Setting,
    byte_size,
    choice,
    flag,
    host_ports,
    integer,
    json_strings,
    name_part,
    number,
    optional_text,
    required,
    text,
    url,
)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _cores() -> int:
    return os.cpu_count() or 1


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
    Computed(_cores, "cores"),
    integer(1, 256),
    "worker processes; unset: the number of cores (`os.cpu_count()`), worked out at start-up",
)
WEBSOCKET_MAX_CONNECTIONS_PER_USER = Setting(
    "WEBSOCKET_MAX_CONNECTIONS_PER_USER",
    "max_connections_per_user",
    5,
    integer(1, 10_000),
    "cluster-wide, across all workers and hosts",
)
WEBSOCKET_IDLE_TIMEOUT = Setting(
    "WEBSOCKET_IDLE_TIMEOUT",
    "idle_timeout",
    300.0,
    number(1.0, 86_400.0),
    "seconds without any client frame (pongs count) before close (1001)",
)
REDIS_URL = Setting(
    "REDIS_URL",
    "redis_url",
    "redis://localhost:6379",
    url(("redis", "rediss", "unix")),
    "Redis for pub/sub and limits; the publisher library and the CLI read it too",
)
REDIS_CLUSTER_NODES = Setting(
    "REDIS_CLUSTER_NODES",
    "redis_cluster_nodes",
    (),
    host_ports(),
    "Redis Cluster mode: some of the cluster's nodes (the rest is discovered); user channels are "
    "shard channels (SSUBSCRIBE / SPUBLISH); `REDIS_URL` then gives only the scheme (`rediss` for "
    "TLS) and the credentials",
    shown="unset: one Redis",
)
REDIS_SENTINELS = Setting(
    "REDIS_SENTINELS",
    "redis_sentinels",
    (),
    host_ports(),
    "Sentinel mode: the sentinels to ask for the master `REDIS_SENTINEL_MASTER`; `REDIS_URL` then "
    "gives only the scheme, credentials and database",
    shown="unset: one Redis",
)
REDIS_SENTINEL_MASTER = Setting(
    "REDIS_SENTINEL_MASTER",
    "redis_sentinel_master",
    None,
    optional_text("a master name known to the sentinels"),
    "the master's name in Sentinel mode; required with `REDIS_SENTINELS`",
)
REDIS_CHANNEL_PREFIX = Setting(
    "REDIS_CHANNEL_PREFIX",
    "channel_prefix",
    "ws",
    name_part(),
    "channel is `{prefix}:{user_id}`; the publisher library and the CLI read it too",
)
JWT_SECRET_KEY = Setting(
    "JWT_SECRET_KEY",
    "jwt_secret_key",
    "",
    required("a secret or a PEM public key", "an HS* secret, or a PEM public key for RS*/ES*"),
    "HS* secret of at least 32 / 48 / 64 bytes (HS256 / HS384 / HS512), or the PEM public key for "
    "RS*/PS* (RSA, 2048 bits or more), ES256/384/512 (EC on P-256/P-384/P-521) or EdDSA "
    "(Ed25519, Ed448); checked at start-up",
    shown="none: required",
)
JWT_ALGORITHM = Setting(
    "JWT_ALGORITHM",
    "jwt_algorithm",
    "HS256",
    choice(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS),
    "the one accepted algorithm; `none` is always refused",
)
JWT_AUDIENCE = Setting(
    "JWT_AUDIENCE",
    "jwt_audience",
    None,
    optional_text("any text"),
    "when set, the `aud` claim is required and checked",
    shown="unset",
)
JWT_ISSUER = Setting(
    "JWT_ISSUER",
    "jwt_issuer",
    None,
    optional_text("any text"),
    "when set, the `iss` claim is required and checked",
    shown="unset",
)
JWT_LEEWAY = Setting(
    "JWT_LEEWAY",
    "jwt_leeway",
    5.0,
    number(0.0, 300.0),
    "seconds of clock skew allowed on `exp`: a token is good until `exp` plus this, at the handshake,"
    " in a refresh and for the session's end (4001)",
)
JWT_REVOCATION_TTL = Setting(
    "JWT_REVOCATION_TTL",
    None,
    86_400.0,
    number(1.0, 31_622_400.0),
    "seconds a disconnect refuses the user's tokens issued before it: at least your tokens' longest "
    "lifetime (`exp` - `iat`); read by the publisher library and the CLI, which write it",
)
CORS_ORIGINS = Setting(
    "CORS_ORIGINS",
    "cors_origins",
    (),
    json_strings("origins", '["https://app.example"]'),
    "allowed `Origin` values for the upgrade, exact match",
    shown="`[]` (any)",
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
    "library); see [Payload size](#payload-size)",
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
WEBSOCKET_MAX_CONNECTIONS_PER_WORKER = Setting(
    "WEBSOCKET_MAX_CONNECTIONS_PER_WORKER",
    "max_connections_per_worker",
    10_000,
    integer(1, 1_000_000),
    "beyond it new connections are closed with 1013",
)
WEBSOCKET_DRAIN_WINDOW = Setting(
    "WEBSOCKET_DRAIN_WINDOW",
    "drain_window",
    10.0,
    number(0.0, 3600.0),
    "seconds a stopping worker has to close its sockets",
)
REDIS_PROBE_INTERVAL = Setting(
    "REDIS_PROBE_INTERVAL",
    "redis_probe_interval",
    5.0,
    number(0.1, 300.0),
    "seconds between probes of the pub/sub connection through the control channel",
)
WEBSOCKET_LEASE_TTL = Setting(
    "WEBSOCKET_LEASE_TTL",
    "lease_ttl",
    30.0,
    number(1.0, 3600.0),
    "seconds a connection's place in the per-user limit lives unless renewed (renewed every third of it)",
)
WEBSOCKET_HANDSHAKE_TIMEOUT = Setting(
    "WEBSOCKET_HANDSHAKE_TIMEOUT",
    "handshake_timeout",
    10.0,
    number(0.5, 300.0),
    "seconds a client has to send each request's headers (half-open sockets are closed)",
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
WEBSOCKET_DEV_CONSOLE = Setting(
    "WEBSOCKET_DEV_CONSOLE",
    "dev_console",
    False,
    flag(),
    "development only (`make run` sets it): `/dev`, a page that connects with the JS client, mints"
    " tokens for any user and publishes to them, on `WEBSOCKET_DEV_CONSOLE_PORT` only; never in"
    " production",
)
WEBSOCKET_DEV_CONSOLE_PORT = Setting(
    "WEBSOCKET_DEV_CONSOLE_PORT",
    "dev_console_port",
    0,
    integer(0, 65535),
    "with `WEBSOCKET_DEV_CONSOLE` only: the console's own listener, always on 127.0.0.1 (whatever"
    " `WEBSOCKET_HOST` says), serving `/dev` and its files and `/ws` for its page; `/dev` is 404 on"
    " every other port",
    shown="`0`: `WEBSOCKET_PORT` + 1",
)
# Read by gunicorn.conf.py, not part of Settings.
WEBSOCKET_HISTORY_REPLAY_CAP = Setting(
    "WEBSOCKET_HISTORY_REPLAY_CAP",
    "history_replay_cap",
    100,
    integer(1, 10_000),
    "most history messages replayed to one resuming socket (`?since=`) or one user after a pub/sub"
    " reconnect; a longer gap is not recovered (`recovered:false`)",
)
WEBSOCKET_RESUMES_PER_MINUTE = Setting(
    "WEBSOCKET_RESUMES_PER_MINUTE",
    "resumes_per_minute",
    60,
    integer(1, 1_000_000),
    "resumes (`?since=`) one user may make on one worker per minute (a minute's worth at once, then"
    " evenly); beyond: 1013 `too_many_resumes`, before any Redis command",
)
WEBSOCKET_RESUME_BYTES_PER_MINUTE = Setting(
    "WEBSOCKET_RESUME_BYTES_PER_MINUTE",
    "resume_bytes_per_minute",
    64 * 1024 * 1024,
    byte_size(64 * 1024, 1 << 40),
    "bytes of history one user's resumes may replay on one worker per minute (one replay may"
    " overdraw it; the next waits until it is paid back); beyond: 1013 `too_many_resumes`",
)
FORWARDED_ALLOW_IPS = Setting(
    "FORWARDED_ALLOW_IPS",
    None,
    "127.0.0.1",
    text("comma-separated addresses or networks"),
    "proxies whose `X-Forwarded-For` is believed (read by gunicorn.conf.py)",
)
PROMETHEUS_MULTIPROC_DIR = Setting(
    "PROMETHEUS_MULTIPROC_DIR",
    None,
    None,
    optional_text("a directory"),
    "multiprocess metrics directory, emptied at start (gunicorn.conf.py makes one when unset)",
    shown="a fresh temporary directory",
)
LOG_FORMAT = Setting(
    "LOG_FORMAT",
    None,
    "text",
    choice({"text", "json"}),
    "`json`: every log line (gunicorn's, uvicorn's, the gateway's) one JSON object with `time`, "
    "`level`, `logger`, `message`, `worker` and `pid` (read by gunicorn.conf.py)",
)

# In the README's order.
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
    WEBSOCKET_DEV_CONSOLE,
    WEBSOCKET_DEV_CONSOLE_PORT,
    FORWARDED_ALLOW_IPS,
    PROMETHEUS_MULTIPROC_DIR,
    LOG_FORMAT,
)
# The ones that fill a Settings field.
GATEWAY = tuple(setting for setting in ALL if setting.field is not None)


def markdown_table() -> str:
    """The README's settings table, so the two cannot drift apart."""
    rows = ["| variable | default | accepted | meaning |", "|---|---|---|---|"]
    for s in ALL:
        rows.append(f"| `{s.variable}` | {s.shown_default()} | {s.parser.accepts} | {s.doc} |")
    return "\n".join(rows)
