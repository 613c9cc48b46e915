"""A worker's Redis parts for each topology: the command client and the pub/sub broker.

``build_redis(settings, worker_id)`` is the one place that knows the modes; the lifespan in
``gateway/app.py`` only wires what it returns.

- single: a bounded ``BlockingConnectionPool`` (an admission storm queues for a connection) and
  ``RedisBroker`` with a probe connection of its own.
- cluster: a ``RedisCluster`` command client and ``ClusterBroker`` (gateway/broker/cluster.py),
  and a second command client for the limiter's background work (beats, releases sent again):
  after a node's connection error redis-py closes every connection of a cluster client, and a
  dead master's beats and releases, retried in the background, would cut off admissions in
  flight to the live ones.
  redis-py's cluster client has no blocking pool: past ``max_connections`` per node it raises
  instead of queueing, so the bound is wider than the single mode's (an admission that meets it
  is refused with 1013, like any Redis error). It retries a command after a connection error or
  a MOVED on its own, re-reading the slot map, with a short back-off.
- sentinel: the single mode's bounded pool and probe connection, each connection made to the
  master the sentinels name (gateway/topology/sentinels.py), and ``SentinelBroker``
  (gateway/broker/sentinel.py), which also moves the command connections at a switch.

With the HTTP API on, each mode adds a command client for its publishes that never sends a
command again after a connection error (``_never_again``): a reply lost after the script ran
leaves the message published or not, and sending it again could publish it twice. A cluster
client still follows MOVED and ASK (the node did not run the command). The client connects on
first use, and is built only when ``WEBSOCKET_API_KEYS`` is set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.broker import Broker, BrokerSetup
from gateway.broker.cluster import ClusterBroker
from gateway.broker.redis import RedisBroker
from gateway.broker.sentinel import SentinelBroker
from gateway.config.settings import Settings
from gateway.topology.modes import AsyncClient, Topology

_COMMAND_CONNECTIONS = 16
# Per node and worker, in cluster mode (see above).
_CLUSTER_NODE_CONNECTIONS = 64


def _retry_once_on_a_fresh_connection() -> Retry:
    """After a Redis restart every idle pooled connection is stale, and without this each one
    would fail one command (a refused admission) before being replaced. Every command the
    gateway sends is safe to repeat: the lease scripts are idempotent per connection id, and a
    repeated probe is harmless. Timeouts are not repeated: Redis is slow, not gone."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _never_again() -> Retry:
    """For the HTTP API's publishes, which must go at most once: its caller is answered 503 and
    retries, with an idempotency key where a second delivery matters."""
    return Retry(NoBackoff(), 0)


def _connection(name: str, worker_id: str, retry: Retry | None = None) -> dict[str, Any]:
    """Options every command and probe connection of a single Redis or a sentinel master shares."""
    return {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "client_name": f"{name}:{worker_id}",
        "retry": retry or _retry_once_on_a_fresh_connection(),
    }


BrokerFactory = Callable[[BrokerSetup], Broker]


@dataclass
class RedisParts:
    client: AsyncClient
    # Builds the broker once the hub and the gap fill exist (they need the client); the setup
    # carries them.
    broker: BrokerFactory
    # Called at shutdown, after the broker stopped.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # For the limiter's background work, where it needs a client of its own (cluster mode).
    background: AsyncClient | None = None
    # For the HTTP API's publishes, when it is on (see above).
    api: AsyncClient | None = None

    async def aclose(self) -> None:
        for close in self.closers:
            await close()


def build_redis(settings: Settings, worker_id: str) -> RedisParts:
    mode = Topology.of(settings).mode
    if mode == "cluster":
        return _cluster(settings, worker_id)
    if mode == "sentinel":
        return _sentinel(settings, worker_id)
    return _single(settings, worker_id)


def _single(settings: Settings, worker_id: str) -> RedisParts:
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=_COMMAND_CONNECTIONS,
        timeout=5,
        **_connection("gateway", worker_id),
    )
    client = aioredis.Redis.from_pool(pool)
    # The probe has a connection of its own: queued behind an admission storm for a pooled
    # one, it would come back late and tear down a healthy pub/sub connection.
    probe_client = aioredis.Redis.from_url(
        settings.redis_url, single_connection_client=True, **_connection("gateway-probe", worker_id)
    )

    def broker(setup: BrokerSetup) -> Broker:
        return RedisBroker(settings.redis_url, probe_client, setup)

    parts = RedisParts(client, broker, [probe_client.aclose, client.aclose])
    if settings.api_keys:
        api_pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=_COMMAND_CONNECTIONS,
            timeout=5,
            **_connection("gateway-api", worker_id, _never_again()),
        )
        parts.api = aioredis.Redis.from_pool(api_pool)
        parts.closers.append(parts.api.aclose)
    return parts


def _cluster_client(settings: Settings, name: str, retry: Retry) -> AsyncClient:
    return Topology.of(settings).async_client(
        max_connections=_CLUSTER_NODE_CONNECTIONS,
        socket_connect_timeout=2,
        socket_timeout=5,
        client_name=name,
        retry=retry,
    )


def _cluster(settings: Settings, worker_id: str) -> RedisParts:
    client, background = (
        _cluster_client(
            settings, f"gateway:{worker_id}", Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3)
        )
        for _ in range(2)
    )

    def broker(setup: BrokerSetup) -> Broker:
        return ClusterBroker(Topology.of(settings), setup)

    parts = RedisParts(client, broker, [client.aclose, background.aclose], background)
    if settings.api_keys:
        parts.api = _cluster_client(settings, f"gateway-api:{worker_id}", _never_again())
        parts.closers.append(parts.api.aclose)
    return parts


def _sentinel(settings: Settings, worker_id: str) -> RedisParts:
    topology = Topology.of(settings)
    sentinels = topology.async_sentinels()
    client = sentinels.master(
        topology.master_name,
        max_connections=_COMMAND_CONNECTIONS,
        timeout=5,
        **_connection("gateway", worker_id),
    )
    # One connection, as in single mode (see there).
    probe_client = sentinels.master(
        topology.master_name, max_connections=1, **_connection("gateway-probe", worker_id)
    )
    # Moved at a switch like the others (the broker's follower).
    api = (
        sentinels.master(
            topology.master_name,
            max_connections=_COMMAND_CONNECTIONS,
            timeout=5,
            **_connection("gateway-api", worker_id, _never_again()),
        )
        if settings.api_keys
        else None
    )
    command_clients = (client, probe_client) if api is None else (client, probe_client, api)

    def broker(setup: BrokerSetup) -> Broker:
        return SentinelBroker(topology, sentinels, probe_client, setup, command_clients=command_clients)

    closers: list[Callable[[], Awaitable[None]]] = [c.aclose for c in command_clients[1:]]
    return RedisParts(client, broker, [*closers, client.aclose, sentinels.aclose], api=api)
