"""The broker: how a worker hears what backends publish for its local users.

The rest of the gateway sees only ``Broker``. Who is connected is the hub's to know
(``gateway/hub.py``): admission calls ``subscribe`` when the hub says a user's connection is the
first local one, ``confirmed`` for every later one, and ``unsubscribe`` when the hub says the last
one left. The calls pair up: one ``unsubscribe`` for each ``subscribe``, whatever it raised.

An implementation is built with a ``BrokerSetup`` (whatever else its topology needs) and must
guarantee:

- ``on_message(user_id, payload)`` is called for every payload published to a held user's channel,
  synchronously from its reader, in publish order per channel. The reader never awaits a client
  (the hub only queues), and binds the callback once, not per message. A message whose
  ``on_message`` raises, whatever the exception, costs that message only: the reader drops and
  counts it (``commands.handler_failed``) and keeps its session.
- ``subscribe`` and ``confirmed`` return only once the broker has confirmed the channel (Redis
  answered the SUBSCRIBE), so a socket accepted after them misses nothing published later; they
  raise ``BrokerUnavailable`` when it cannot be confirmed: not connected, or the connection lost
  before the confirmation. The caller then refuses the socket and rolls back. A caller cancelled
  while waiting does not cancel the confirmation other connections of the user wait for.
- ``users()`` (the hub's local users) is the truth after any reconnect: every user it lists is
  subscribed again, whatever the client library remembers; nothing is re-subscribed from the
  broker's own memory.
- ``ready`` is True only while connected with its own liveness check passing, and an open but
  deaf connection is noticed (a probe) and replaced, with jittered back-off.

Implementations, one per Redis topology, chosen from the settings by ``gateway/redis_wiring.py``
(the one place that knows the modes; the app only wires what it returns):

- ``redis.py``: ``RedisBroker``, one Redis server, one pub/sub connection per worker.
- ``sentinel.py``: ``SentinelBroker``, ``RedisBroker`` on a connection to the master the sentinels
  name, moved at once when they switch masters (``+switch-master``).
- ``cluster.py``: ``ClusterBroker``, Redis Cluster, shard channels (SSUBSCRIBE), one pub/sub
  connection per master owning a slot of a local user, following failovers and slot migrations:
  ``slot_map.py`` (which master owns which slots), ``shard.py`` (one master's connection, its
  users routed in and out), ``shard_links.py`` (a shard's connections, hooks and metrics).

The pub/sub core every broker uses, channel names only (which user or group a channel stands for
is the broker's): ``session.py`` (``PubSubSession``: one connection, its reader, reconnects with
back-off, ``probe.py`` replacing a deaf one), ``subscriptions.py`` (the channels held, changes
batched, confirmations awaited), ``ledger.py`` (replies matched to what was written, the
SUBSCRIBE and SSUBSCRIBE verbs), ``commands.py`` (users' channels, command batches,
confirmations, a failing handler counted).

Each answers for its topology in ``/healthz/redis`` (``redis_health``): nothing outside this
package tests which broker it holds.

History and recovery sit above the broker, between it and the hub (``on_message`` goes through
them), and do not know which implementation delivers. Control commands (disconnect a user
everywhere) travel on the user's own channel behind a 0xFF byte (``gateway/wire.py``): the broker
hands them on like any payload and the hub routes them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# The reader's callback: the user id (the channel without its prefix) and the payload as published.
MessageHandler = Callable[[str, bytes], None]
# The hub's local users, listed after a reconnect to subscribe them again.
LocalUsers = Callable[[], Iterable[str]]
# Called with each user whose channel was subscribed again after a reconnect, once Redis
# confirmed it, synchronously from the reader: the gap fill (gateway/history/gap.py) starts there.
Resubscribed = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BrokerSetup:
    """What every broker is built with, whatever its topology: the channel prefix and the worker's
    id (its control channel), where messages go, the hub's local users, how often the connection
    is probed (seconds), and who hears of a channel subscribed again (the gap fill)."""

    prefix: str
    worker_id: str
    on_message: MessageHandler
    users: LocalUsers
    probe_interval: float
    on_resubscribed: Resubscribed | None = None


class BrokerUnavailable(Exception):
    """The broker cannot confirm a subscription (not connected, or lost first); admission fails
    closed with 1013."""


@dataclass(frozen=True, slots=True)
class RedisHealth:
    """What ``/healthz/redis`` says of a broker's Redis: ``fields`` join the answer; ``verdict`` is
    its ``redis`` when the broker alone decides (``ok``: 200, anything else: 503), None when the
    command client's ping and ``ready`` decide."""

    fields: dict[str, Any] = field(default_factory=dict)
    verdict: str | None = None


class Broker(abc.ABC):
    """One worker's connection to the published messages; see the module docstring."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """Connected, and its liveness check passing: subscriptions can be confirmed."""

    @property
    @abc.abstractmethod
    def channel_count(self) -> int:
        """User channels held: one per user between its ``subscribe`` and ``unsubscribe``."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start connecting (in the background); reconnects until ``stop``."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop reading and close every connection."""

    @abc.abstractmethod
    async def subscribe(self, user_id: str) -> None:
        """The user's first local connection: subscribe its channel; return once confirmed."""

    @abc.abstractmethod
    async def confirmed(self, user_id: str) -> None:
        """A later local connection of a user already subscribed (or being subscribed): return
        once its channel is confirmed, sharing the first connection's wait."""

    @abc.abstractmethod
    def unsubscribe(self, user_id: str) -> None:
        """The user's last local connection left: drop its channel (without waiting)."""

    async def redis_health(self, timeout: float) -> RedisHealth:
        """What ``/healthz/redis`` adds for this topology, within ``timeout`` seconds; nothing by
        default."""
        return RedisHealth()

    @abc.abstractmethod
    async def publish(self, channel: bytes, payload: bytes) -> int:
        """Publish one payload on a channel; the number of subscribers Redis counted."""
