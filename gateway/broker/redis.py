"""``RedisBroker``: the worker's one pub/sub connection to a single Redis server.

SUBSCRIBE goes out when the hub says a user's first local connection arrived, UNSUBSCRIBE when it
says the last one left. The broker keeps no count of connections, only the number of user
channels held; its ``Subscriptions`` (``subscriptions.py``) hold the channels and the
confirmations still awaited, its ``PubSubSession`` (``session.py``) the connection, the reader
and the reconnects. After any loss every user the hub lists is subscribed again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.asyncio.connection import ConnectionPool

from gateway import keys
from gateway.broker import Broker, BrokerSetup
from gateway.broker.commands import UserChannels, ignore, pubsub_options
from gateway.broker.ledger import PLAIN
from gateway.broker.session import PubSubSession, SessionHooks
from gateway.broker.subscriptions import Subscriptions
from gateway.telemetry import metrics

log = logging.getLogger("gateway.subscriber")

_BACKOFF_CAP = 5.0


class RedisBroker(Broker):
    def __init__(
        self,
        redis_url: str,
        probe_client: aioredis.Redis,
        setup: BrokerSetup,
        pool: ConnectionPool | None = None,
    ) -> None:
        # Sentinel mode passes a pool that asks the sentinels at each connect (broker/sentinel.py).
        options = pubsub_options(setup.worker_id)
        self._pool: ConnectionPool = pool or ConnectionPool.from_url(redis_url, **options)
        self._user_channels = channels = UserChannels(setup.prefix)
        control = keys.control_channel(setup.prefix, setup.worker_id).encode()
        # Publishes (the probe's) go through a connection of its own, not the command pool.
        self._probe_client = probe_client
        self._users = setup.users
        resubscribed = setup.on_resubscribed or ignore
        self._channels = 0
        self._subscriptions = Subscriptions(PLAIN, "", lambda channel: resubscribed(channels.user(channel)))
        hooks = SessionHooks(
            connection=self._pool.make_connection,
            control=lambda: control,
            publish=self.publish,
            on_message=channels.messages(setup.on_message),
            ready=self._ready,
            lost=self._lost,
            wanted=self._wanted,
        )
        # The gap's metric counts from here until the first connection is ready.
        self._session = PubSubSession(
            self._subscriptions, hooks, setup.probe_interval, _BACKOFF_CAP, lost_at=time.monotonic()
        )

    @property
    def ready(self) -> bool:
        """Connected, with the control channel confirmed."""
        return self._session.ready

    @property
    def channel_count(self) -> int:
        return self._channels

    def reconnect_now(self) -> None:
        """The master moved: reconnect (where the pool says) at once, not after the back-off;
        every user is subscribed again and the gap fill runs, as after any loss."""
        self._session.reconnect_now()

    def start(self) -> None:
        self._session.start("gateway-subscriber")

    async def stop(self) -> None:
        await self._session.stop()
        await self._pool.disconnect()

    async def subscribe(self, user_id: str) -> None:
        self._channels += 1
        metrics.REDIS_SUBSCRIPTIONS.inc()
        await self._subscriptions.subscribe(self._user_channels.channel(user_id))

    async def confirmed(self, user_id: str) -> None:
        await self._subscriptions.confirmed(self._user_channels.channel(user_id))

    def unsubscribe(self, user_id: str) -> None:
        self._channels -= 1
        metrics.REDIS_SUBSCRIPTIONS.dec()
        self._subscriptions.unsubscribe(self._user_channels.channel(user_id))

    async def publish(self, channel: bytes, payload: bytes) -> int:
        return int(await self._probe_client.publish(channel, payload))

    def _wanted(self) -> Iterable[bytes]:
        # The hub is the truth after a reconnect: every user it lists now.
        return [self._user_channels.channel(user_id) for user_id in self._users()]

    def _ready(self, gap: float | None) -> None:
        metrics.REDIS_DISCONNECTED.inc(gap or 0.0)
        log.info("redis pub/sub ready with %d user channels", self._channels)

    def _lost(self, was_ready: bool) -> None:
        if was_ready:
            metrics.REDIS_RECONNECTS.inc()
