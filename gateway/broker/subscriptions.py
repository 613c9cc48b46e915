"""``Subscriptions``: the channels one pub/sub connection holds and what it owes Redis for them,
with no I/O of its own (``session.py`` reads and writes).

A channel is held from ``subscribe`` (or ``adopt``) to ``unsubscribe`` (or ``release``).
``subscribe`` and ``confirmed`` return once Redis confirmed the channel; changes made while a
command is being written are batched into the next (``changes``), and a channel dropped and taken
again before anything was written costs no command. The ledger (``ledger.py``) matches each reply
to its command. Channels only: what a channel stands for (a user, a group) is the broker's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import ResponseError

from gateway.broker import BrokerUnavailable
from gateway.broker.commands import confirmation
from gateway.broker.ledger import Entry, Ledger, Verbs

log = logging.getLogger("gateway.subscriber")


class Subscriptions:
    def __init__(
        self,
        verbs: Verbs,
        name: str,
        on_resubscribed: Callable[[bytes], None],
        displaced: Callable[[list[bytes]], None] | None = None,
        opening: bool = False,
    ) -> None:
        self.verbs = verbs
        # For logs and errors: "" (the one Redis) or " to host:port".
        self.name = name
        # Called with each channel confirmed again after a loss (the gap fill starts there).
        self._on_resubscribed = on_resubscribed
        # The server dropped these channels or refused them (a Redis Cluster slot moved): the
        # broker routes them again. None: it never should, and doing so ends the session.
        self._displaced = displaced
        # Channels held, or to be (between subscribe or adopt, and unsubscribe or release).
        self.held: set[bytes] = set()
        # Held channels the server dropped or refused, until the broker routes them again.
        self.dropped: set[bytes] = set()
        # Channels never confirmed yet: their confirmation is a first one (no gap fill).
        self._first: set[bytes] = set()
        # Channels whose SUBSCRIBE is queued or in flight: the future resolves True once Redis
        # confirms it, False if the connection is lost first. A confirmed channel has no entry.
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self._to_subscribe: dict[bytes, None] = {}
        # Channels to UNSUBSCRIBE, with their still-pending future if any (a return before the
        # write resumes it).
        self._to_unsubscribe: dict[bytes, asyncio.Future[bool] | None] = {}
        self._ledger = Ledger(verbs)
        # Set when ``changes`` has something to write.
        self.changed = asyncio.Event()
        # A connection is open (what was written on it may need undoing).
        self.connected = False
        self.control = b""
        # Connected, with the control channel confirmed.
        self.ready = False
        # While True (until a first connection fails), subscriptions queue instead of failing.
        self.opening = opening

    @property
    def unanswered(self) -> int:
        """Commands written that Redis has not answered in full."""
        return len(self._ledger)

    async def subscribe(self, channel: bytes) -> None:
        self.held.add(channel)
        if not (self.ready or self.opening):
            # The next connection subscribes every channel wanted then.
            raise BrokerUnavailable(f"pub/sub connection{self.name} is down")
        if channel in self._to_unsubscribe:
            # The UNSUBSCRIBE was never written: the old subscription still stands.
            future = self._to_unsubscribe.pop(channel)
            if future is None or future.done():
                return
        else:
            future = asyncio.get_running_loop().create_future()
            self._to_subscribe[channel] = None
            self._first.add(channel)
            self.changed.set()
        self._pending[channel] = future
        await confirmation(future)

    async def confirmed(self, channel: bytes) -> None:
        if not (self.ready or self.opening):
            raise BrokerUnavailable(f"pub/sub connection{self.name} is down")
        future = self._pending.get(channel)
        if future is not None:
            await confirmation(future)

    def unsubscribe(self, channel: bytes) -> None:
        self.held.discard(channel)
        self._first.discard(channel)
        was_dropped = channel in self.dropped
        self.dropped.discard(channel)
        future = self._pending.pop(channel, None)
        if future is not None and (channel in self._to_subscribe or was_dropped):
            # Never written, or no longer held by the server: nothing to undo in Redis.
            self._to_subscribe.pop(channel, None)
            if not future.done():
                future.set_result(False)
        elif self.connected and (future is not None or self.ready) and not was_dropped:
            # Written on this connection (confirmed, or its confirmation on the way). Before the
            # control channel is confirmed, a channel with nothing pending was never written.
            self._to_unsubscribe[channel] = future
            self.changed.set()

    def release(self, channel: bytes) -> tuple[asyncio.Future[bool] | None, bool]:
        """The channel moved to another connection: its confirmation still awaited, and whether it
        would be its first. Nothing is sent: the server dropped the channel itself, or is gone."""
        self.held.discard(channel)
        self.dropped.discard(channel)
        self._to_subscribe.pop(channel, None)
        first = channel in self._first
        self._first.discard(channel)
        return self._pending.pop(channel, None), first

    def adopt(self, channel: bytes, future: asyncio.Future[bool] | None, first: bool) -> None:
        """Subscribe a channel moved here, or dropped and routed here again; its later waits share
        this confirmation, and ``on_resubscribed`` follows it (unless first)."""
        self.held.add(channel)
        self.dropped.discard(channel)
        if first:
            self._first.add(channel)
        self._pending[channel] = future or asyncio.get_running_loop().create_future()
        self._to_subscribe[channel] = None
        self.changed.set()

    def opened(self, control: bytes, wanted: Iterable[bytes] | None) -> list[tuple[Any, ...]]:
        """A connection is open: the commands that subscribe the control channel and every channel
        wanted (None: every channel held), whatever redis-py remembers."""
        self.connected, self.control = True, control
        loop = asyncio.get_running_loop()
        entries: list[Entry] = [(control, None, False)]
        for channel in self.held if wanted is None else wanted:
            future = self._pending.get(channel)
            if future is None:
                future = self._pending[channel] = loop.create_future()
            entries.append((channel, future, channel not in self._first))
        # What queued while connecting is part of it.
        self._to_subscribe.clear()
        self.dropped.clear()
        return self._ledger.commands(entries)

    def changes(self) -> list[tuple[Any, ...]]:
        """The commands that write what changed since the last call."""
        self.changed.clear()
        gone: list[Entry] = [(channel, None, False) for channel in self._to_unsubscribe]
        self._to_unsubscribe.clear()
        entries: list[Entry] = [(c, self._pending.get(c), c not in self._first) for c in self._to_subscribe]
        self._to_subscribe.clear()
        return self._ledger.commands(gone, subscribe=False) + self._ledger.commands(entries)

    def answered(self, channel: bytes, subscribe: bool) -> bool:
        """A subscribe or unsubscribe reply; True when it confirms the control channel (ready)."""
        answer = self._ledger.answered(channel, subscribe)
        if answer is None and not subscribe:
            # An unsubscribe nobody asked for: the server gave the channel up (its slot moved).
            if channel == self.control:
                raise ConnectionError(f"pub/sub connection{self.name}: control channel dropped")
            self._displace([channel])
        if answer is None or not subscribe:
            return False
        if channel == self.control:
            self.ready = True
            return True
        future = answer.future
        if future is None:
            return False
        if self._pending.get(channel) is future:
            del self._pending[channel]
            self._first.discard(channel)
        elif self._to_unsubscribe.get(channel) is not future:
            return False  # moved to another connection since: that one settles it
        # (Still to be unsubscribed: a return before the write finds the subscription standing.)
        if not future.done():
            future.set_result(True)
        if answer.resubscribe:
            self._on_resubscribed(channel)
        return False

    def refused(self, exc: ResponseError) -> None:
        """An error answers the oldest command: none of its channels is held (MOVED, CLUSTERDOWN)."""
        head = self._ledger.refused(exc)
        if head is None or self._displaced is None:
            raise exc
        if not head.subscribe:
            return
        if self.control in head.channels:
            raise exc
        reason = str(exc).split(" ", 1)[0]
        log.info("redis pub/sub connection%s: %s refused: %s", self.name, self.verbs.subscribe, reason)
        self._displace(head.channels)

    def _displace(self, channels: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        moved = [channel for channel in channels if channel in self.held]
        for channel in moved:
            self.dropped.add(channel)
            # Its later waits last until it is subscribed again, wherever that is.
            if channel not in self._pending:
                self._pending[channel] = loop.create_future()
        if moved:
            if self._displaced is None:
                raise ConnectionError(f"pub/sub connection{self.name}: {len(moved)} channels dropped")
            self._displaced(moved)

    def closed(self) -> None:
        """The connection is gone: every confirmation still awaited here is lost (the next
        connection starts from the broker's truth)."""
        self.ready = self.connected = False
        for future in self._pending.values():
            if not future.done():
                future.set_result(False)
        self._pending.clear()
        for collection in (self._to_subscribe, self._to_unsubscribe, self._ledger, self.dropped):
            collection.clear()
        self.changed.clear()
