"""Which Redis, and the names and probes the gateway uses on it.

Rows of the one settings table (gateway/config/table.py), which orders them for docs/reference.md."""

from __future__ import annotations

from gateway.config.parsers import Setting, SettingsError, host_ports, name_part, number, optional_text, url

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

REDIS_PROBE_INTERVAL = Setting(
    "REDIS_PROBE_INTERVAL",
    "redis_probe_interval",
    5.0,
    number(0.1, 300.0),
    "seconds between probes of the pub/sub connection through the control channel",
)


def check_topology(
    cluster_nodes: tuple[tuple[str, int], ...],
    sentinels: tuple[tuple[str, int], ...],
    sentinel_master: str | None,
) -> None:
    """The Redis variables against each other: one server, a Cluster or Sentinel, never two."""
    if cluster_nodes and sentinels:
        raise SettingsError("REDIS_CLUSTER_NODES and REDIS_SENTINELS: set one of them, not both")
    if sentinels and not sentinel_master:
        raise SettingsError("REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS")
    if sentinel_master and not sentinels:
        raise SettingsError("REDIS_SENTINEL_MASTER: set only with REDIS_SENTINELS")
