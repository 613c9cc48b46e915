"""``Shard``: one worker's pub/sub connection to one Redis Cluster master (for ``ClusterBroker``).

It holds the shard channels of the users the broker routed to this master, in its
``Subscriptions`` (``subscriptions.py``), on a ``PubSubSession`` (``session.py``) that writes one
SSUBSCRIBE per slot (Redis refuses one naming two slots). An ``sunsubscribe`` the session did not
ask for was pushed by the node (the slot moved away): that user, like those of an SSUBSCRIBE
answered by an error (MOVED), is handed back to the broker (``displaced``) to be routed again.

Its probe SPUBLISHes to a control channel placed in one of the master's slots; a probe that does
not come back replaces the connection. On any loss the shard tells the broker (a slot map
refresh) and reconnects with jittered back-off, unless the broker moved its users and retired it.
"""

from __future__ import annotations

import asyncio

from gateway.broker.commands import UserChannels
from gateway.broker.ledger import SHARDED
from gateway.broker.session import PubSubSession, SessionHooks
from gateway.broker.shard_links import ShardHooks, ShardLinks
from gateway.broker.slot_map import Address, address_text
from gateway.broker.subscriptions import Subscriptions

_BACKOFF_CAP = 2.0


class Shard:
    def __init__(self, address: Address, links: ShardLinks, prefix: str, hooks: ShardHooks) -> None:
        self.address = address
        self.links = links
        self._hooks = hooks
        self._channels = channels = UserChannels(prefix)
        # Until its first connection fails, subscriptions queue for it (it is being opened).
        self._subscriptions = Subscriptions(
            SHARDED,
            f" to {self.name}",
            lambda channel: hooks.on_resubscribed(channels.user(channel)),
            displaced=self._displaced,
            opening=True,
        )
        session_hooks = SessionHooks(
            connection=links.pubsub_connection,
            control=self._control,
            publish=links.spublish,
            on_message=channels.messages(hooks.on_message),
            ready=self._ready,
            lost=self._lost,
        )
        self._session = PubSubSession(self._subscriptions, session_hooks, links.probe_interval, _BACKOFF_CAP)

    @property
    def ready(self) -> bool:
        return self._subscriptions.ready

    @property
    def opening(self) -> bool:
        return self._subscriptions.opening

    @property
    def name(self) -> str:
        return address_text(self.address)

    @property
    def channel_count(self) -> int:
        """Users routed here (subscribed, or to be): the broker's to add, move and drop."""
        return len(self._subscriptions.held)

    @property
    def has_displaced(self) -> bool:
        """Some users' channels were dropped or refused by the node: the broker routes them again."""
        return bool(self._subscriptions.dropped)

    def displaced(self, user_id: str) -> bool:
        return self._channels.channel(user_id) in self._subscriptions.dropped

    def start(self) -> None:
        self._session.start(f"gateway-shard-{self.name}")

    async def stop(self) -> None:
        await self._session.stop()
        await self.links.close()

    async def subscribe(self, user_id: str) -> None:
        await self._subscriptions.subscribe(self._channels.channel(user_id))

    async def confirmed(self, user_id: str) -> None:
        await self._subscriptions.confirmed(self._channels.channel(user_id))

    def unsubscribe(self, user_id: str) -> None:
        self._subscriptions.unsubscribe(self._channels.channel(user_id))

    def release(self, user_id: str) -> tuple[asyncio.Future[bool] | None, bool]:
        """The user moved to another master: its confirmation still awaited, and whether it would
        be its first. Nothing is sent: the node dropped the channel itself, or is gone."""
        return self._subscriptions.release(self._channels.channel(user_id))

    def adopt(self, user_id: str, future: asyncio.Future[bool] | None, first: bool) -> None:
        """Subscribe a user moved here, or displaced and routed here again; its later
        connections wait for this confirmation, and the gap fill follows it (unless first)."""
        self._subscriptions.adopt(self._channels.channel(user_id), future, first)

    def _control(self) -> bytes:
        control = self._hooks.control_channel(self.address)
        if control is None:
            raise ConnectionError(f"{self.name} serves no slot")
        return control.encode()

    def _displaced(self, channels: list[bytes]) -> None:
        self._hooks.displaced(self.address, [self._channels.user(channel) for channel in channels])

    def _ready(self, gap: float | None) -> None:
        if gap is not None:
            self.links.count_gap(gap, self._hooks.label(self.address))

    def _lost(self, was_ready: bool) -> None:
        if was_ready:
            self.links.count_reconnect(self._hooks.label(self.address))
        self._hooks.trouble(self.address)
