"""Which Redis the gateway, the publisher library and the CLI talk to: one server (``REDIS_URL``),
a Redis Cluster (``REDIS_CLUSTER_NODES``) or the master the sentinels name (``REDIS_SENTINELS`` with
``REDIS_SENTINEL_MASTER``). In the last two, ``REDIS_URL`` gives only the scheme (``rediss`` for
TLS), the credentials and, for Sentinel, the database.

Command clients are built here for every mode; pub/sub is the broker's (gateway/broker/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeGuard
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio.cluster import ClusterNode

from gateway.config import table
from gateway.config.redis import check_topology

if TYPE_CHECKING:
    from gateway.topology.sentinels import AsyncSentinels

Mode = Literal["single", "cluster", "sentinel"]
HostPorts = tuple[tuple[str, int], ...]
# What a command client is in each mode; scripts, pipelines and single-key commands work on all.
AsyncClient = aioredis.Redis | aioredis.RedisCluster
SyncClient = redis.Redis | redis.RedisCluster
# What a command raises when Redis is out of reach: a cluster client that reaches no node raises
# RedisClusterException, which is not a RedisError; and a write on a connection the peer reset
# raises uvloop's RuntimeError ("the handler is closed", MagicStack/uvloop#506), which redis-py
# passes on as it is (seen with a Cluster master killed).
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
    RuntimeError,
)


def is_cluster(client: object) -> TypeGuard[aioredis.RedisCluster | redis.RedisCluster]:
    """A Redis Cluster client: keys of different slots live on different nodes, a pipeline is split
    by node, and a user's channel is a shard channel. Code outside this package asks this, not the
    client's class (a client given to the publisher was not built here)."""
    return isinstance(client, aioredis.RedisCluster | redis.RedisCluster)


class RedisSettings(Protocol):
    """The Redis fields of ``gateway.config.settings.Settings``, which this module does not import
    (nor it this one): settings hold values, the topology makes clients of them."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_cluster_nodes(self) -> HostPorts: ...
    @property
    def redis_sentinels(self) -> HostPorts: ...
    @property
    def redis_sentinel_master(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Topology:
    url: str
    cluster_nodes: HostPorts = ()
    sentinels: HostPorts = ()
    sentinel_master: str | None = None

    def __post_init__(self) -> None:
        check_topology(self.cluster_nodes, self.sentinels, self.sentinel_master)

    @classmethod
    def of(cls, settings: RedisSettings) -> Topology:
        """The topology a ``Settings`` names (or anything with its four Redis fields)."""
        return cls(
            settings.redis_url,
            settings.redis_cluster_nodes,
            settings.redis_sentinels,
            settings.redis_sentinel_master,
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Topology:
        return cls(
            table.REDIS_URL.from_environ(environ),
            table.REDIS_CLUSTER_NODES.from_environ(environ),
            table.REDIS_SENTINELS.from_environ(environ),
            table.REDIS_SENTINEL_MASTER.from_environ(environ),
        )

    @property
    def mode(self) -> Mode:
        if self.cluster_nodes:
            return "cluster"
        return "sentinel" if self.sentinels else "single"

    def describe(self) -> str:
        """For log lines and errors: where Redis is, without credentials."""
        if self.mode == "single":
            parts = urlsplit(self.url)
            return (
                f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
            )
        listed = ",".join(f"{host}:{port}" for host, port in self.cluster_nodes or self.sentinels)
        return (
            f"cluster {listed}" if self.mode == "cluster" else f"sentinel {self.sentinel_master} via {listed}"
        )

    def node_options(self) -> dict[str, Any]:
        """Credentials, TLS and database from ``REDIS_URL``, for the nodes of a cluster or Sentinel set."""
        parts = urlsplit(self.url)
        options: dict[str, Any] = {}
        if parts.username:
            options["username"] = unquote(parts.username)
        if parts.password:
            options["password"] = unquote(parts.password)
        if parts.scheme == "rediss":
            options["ssl"] = True
        return options

    def async_client(self, **options: Any) -> AsyncClient:
        """A command client; ``options`` are redis-py connection options (timeouts, client_name...)."""
        if self.mode == "cluster":
            nodes = [ClusterNode(host, port) for host, port in self.cluster_nodes]
            client = aioredis.RedisCluster(startup_nodes=nodes, **self.node_options(), **options)
            client.commands_parser = _CommandTableReadOnce()
            return client
        if self.mode == "sentinel":
            return self.async_sentinels().master(self.master_name, **options)
        return aioredis.Redis.from_url(self.url, **options)

    def sync_client(self, **options: Any) -> SyncClient:
        if self.mode == "cluster":
            from redis.cluster import ClusterNode as SyncClusterNode

            node: Any = SyncClusterNode  # untyped in redis-py
            nodes = [node(host, port) for host, port in self.cluster_nodes]
            return redis.RedisCluster(startup_nodes=nodes, **self.node_options(), **options)
        if self.mode == "sentinel":
            from gateway.topology.sentinels import SyncSentinels

            return SyncSentinels(list(self.sentinels), **self.node_options(), **self._database()).master(
                self.master_name, **options
            )
        return redis.Redis.from_url(self.url, **options)

    def _database(self) -> dict[str, int]:
        """Sentinel mode: the database number in ``REDIS_URL``'s path (``redis://:pw@/2``), if any."""
        path = urlsplit(self.url).path.strip("/")
        return {"db": int(path)} if path.isdigit() else {}

    @property
    def master_name(self) -> str:
        """``REDIS_SENTINEL_MASTER`` (Sentinel mode only)."""
        assert self.sentinel_master is not None
        return self.sentinel_master

    def async_sentinels(self) -> AsyncSentinels:
        """The sentinels, to ask for the master (Sentinel mode); see gateway/topology/sentinels.py."""
        from gateway.topology.sentinels import AsyncSentinels

        return AsyncSentinels(list(self.sentinels), **self.node_options(), **self._database())


class _CommandTableReadOnce(AsyncCommandsParser):
    """redis-py's cluster client (8.1) reads the COMMAND table again at every re-initialisation
    (after any node's connection error), from the first master it lists; when that master is
    dead and has no replica, the re-initialisation fails, and with it every later command of
    the client, on every master. The table is the same on every node and does not change under
    a running client: it is read once."""

    async def initialize(self, node: Any = None) -> None:
        if not self.commands:
            await super().initialize(node)
        elif node:
            self.node = node
