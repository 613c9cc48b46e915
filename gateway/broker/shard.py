"""``Shard``: one worker's pub/sub connection to one Redis Cluster master (for ``ClusterBroker``).

It holds the shard channels of the users the broker routed to this master: one SSUBSCRIBE per
slot (Redis refuses one naming two slots), changes made during a write batched into the next.
The ledger (``ledger.py``) matches each reply to its command: an ``sunsubscribe`` it does not
expect was pushed by the node (the slot moved away), and that user, like those of an SSUBSCRIBE
answered by an error (MOVED), is handed back to the broker (``displaced``) to be routed again.

Its probe SPUBLISHes to a control channel placed in one of the master's slots; a probe that does
not come back replaces the connection. On any loss the shard tells the broker (a slot map
refresh) and reconnects with jittered back-off, unless the broker moved its users and retired it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from gateway import keys
from gateway.broker import BrokerUnavailable
from gateway.broker.commands import YIELD_EVERY, confirmation, handler_failed
from gateway.broker.ledger import Entry, Ledger
from gateway.broker.probe import Probe
from gateway.broker.shard_links import ShardHooks, ShardLinks
from gateway.broker.slot_map import Address, address_text
from gateway.tasks import cancel_and_wait, until_one_ends

log = logging.getLogger("gateway.subscriber")

_BACKOFF_FIRST = 0.1
_BACKOFF_CAP = 2.0


class Shard:
    def __init__(self, address: Address, links: ShardLinks, prefix: str, hooks: ShardHooks) -> None:
        self.address = address
        self.links = links
        self._prefix, self._prefix_len = prefix, len(prefix) + 1
        self._hooks = hooks
        # Users routed here (subscribed, or to be): the broker's to add, move and drop.
        self.users: set[str] = set()
        # Users never confirmed anywhere yet: their confirmation is a first one (no gap fill).
        self._first: set[str] = set()
        # Users whose channel the node dropped or refused; the broker routes them again.
        self.displaced: set[str] = set()
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self._to_subscribe: dict[str, None] = {}
        self._to_unsubscribe: dict[str, asyncio.Future[bool] | None] = {}
        self._ledger = Ledger()
        self._dirty = asyncio.Event()
        self._conn: AbstractConnection | None = None
        self._control = b""
        self._ready = False
        # Until its first connection fails, subscriptions queue for it (it is being opened).
        self.opening = True
        self._lost_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def name(self) -> str:
        return address_text(self.address)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"gateway-shard-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._teardown()
        await self.links.close()

    async def subscribe(self, user_id: str) -> None:
        self.users.add(user_id)
        if not (self._ready or self.opening):
            raise BrokerUnavailable(f"pub/sub connection to {self.name} is down")
        if user_id in self._to_unsubscribe:
            future = self._to_unsubscribe.pop(user_id)
            if future is None or future.done():
                return
        else:
            future = asyncio.get_running_loop().create_future()
            self._to_subscribe[user_id] = None
            self._first.add(user_id)
            self._dirty.set()
        self._pending[user_id] = future
        await confirmation(future)

    async def confirmed(self, user_id: str) -> None:
        if not (self._ready or self.opening):
            raise BrokerUnavailable(f"pub/sub connection to {self.name} is down")
        future = self._pending.get(user_id)
        if future is not None:
            await confirmation(future)

    def unsubscribe(self, user_id: str) -> None:
        self.users.discard(user_id)
        self._first.discard(user_id)
        was_displaced = user_id in self.displaced
        self.displaced.discard(user_id)
        future = self._pending.pop(user_id, None)
        if future is not None and (user_id in self._to_subscribe or was_displaced):
            # Never written, or no longer held by the node: nothing to undo in Redis.
            self._to_subscribe.pop(user_id, None)
            if not future.done():
                future.set_result(False)
        elif self._conn is not None and (future is not None or self._ready) and not was_displaced:
            self._to_unsubscribe[user_id] = future
            self._dirty.set()

    def release(self, user_id: str) -> tuple[asyncio.Future[bool] | None, bool]:
        """The user moved to another master: its confirmation still awaited, and whether it would
        be its first. Nothing is sent: the node dropped the channel itself, or is gone."""
        self.users.discard(user_id)
        self.displaced.discard(user_id)
        self._to_subscribe.pop(user_id, None)
        first = user_id in self._first
        self._first.discard(user_id)
        return self._pending.pop(user_id, None), first

    def adopt(self, user_id: str, future: asyncio.Future[bool] | None, first: bool) -> None:
        """Subscribe a user moved here, or displaced and routed here again; its later
        connections wait for this confirmation, and the gap fill follows it (unless first)."""
        self.users.add(user_id)
        self.displaced.discard(user_id)
        if first:
            self._first.add(user_id)
        self._pending[user_id] = future or asyncio.get_running_loop().create_future()
        self._to_subscribe[user_id] = None
        self._dirty.set()

    async def _run(self) -> None:
        delay = _BACKOFF_FIRST
        while True:
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis pub/sub connection to %s lost: %s", self.name, type(exc).__name__)
            except Exception:
                log.exception("redis pub/sub session with %s failed; reconnecting", self.name)
            was_ready = self._ready
            await self._teardown()
            self.opening = False
            if was_ready:
                self.links.count_reconnect(self._hooks.label(self.address))
                self._lost_at = time.monotonic()
                delay = _BACKOFF_FIRST
            self._hooks.trouble(self.address)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)

    async def _session(self) -> None:
        control = self._hooks.control_channel(self.address)
        if control is None:
            raise ConnectionError(f"{self.name} serves no slot")
        self._control = control.encode()
        conn = self.links.pubsub_connection()
        self._conn = conn
        await conn.connect()  # type: ignore[no-untyped-call]
        # Everything routed here now; what queued while connecting is part of it.
        loop = asyncio.get_running_loop()
        entries: list[Entry] = [(self._control, None, False)]
        for user_id in self.users:
            future = self._pending.get(user_id)
            if future is None:
                future = self._pending[user_id] = loop.create_future()
            entries.append((self._channel(user_id), future, user_id not in self._first))
        self._to_subscribe.clear()
        self.displaced.clear()
        await self._write(self._ledger.commands(entries))
        probe = Probe(self.links.spublish, self._control, self.links.probe_interval)
        await until_one_ends(self._read(conn, probe), self._write_changes(), probe.run())

    async def _read(self, conn: AbstractConnection, probe: Probe) -> None:
        on_message = self._hooks.on_message
        probe_returned = probe.returned
        prefix_len = self._prefix_len
        control = self._control
        dispatched = 0
        while True:
            try:
                reply: Any = await conn.read_response(timeout=math.inf)
            except ResponseError as exc:
                self._refused(exc)
                continue
            kind = reply[0]
            if kind == b"smessage":
                channel = reply[1]
                if channel == control:
                    probe_returned()
                else:
                    try:
                        on_message(channel[prefix_len:].decode(), reply[2])
                    except Exception:
                        handler_failed()
                    dispatched = (dispatched + 1) % YIELD_EVERY
                    if not dispatched:
                        await asyncio.sleep(0)
            elif kind == b"ssubscribe":
                self._answered(reply[1], subscribe=True)
            elif kind == b"sunsubscribe":
                self._answered(reply[1], subscribe=False)

    def _answered(self, channel: bytes, subscribe: bool) -> None:
        answer = self._ledger.answered(channel, subscribe)
        if answer is None and not subscribe:
            # An ``sunsubscribe`` nobody asked for: the node gave the slot away.
            if channel == self._control:
                raise ConnectionError(f"the control channel's slot left {self.name}")
            self._displace([channel[self._prefix_len :].decode()])
        if answer is None or not subscribe:
            return
        if channel == self._control:
            self._ready = True
            if self._lost_at is not None:
                self.links.count_gap(time.monotonic() - self._lost_at, self._hooks.label(self.address))
            return
        future = answer.future
        user_id = channel[self._prefix_len :].decode()
        if future is None or self._pending.get(user_id) is not future:
            return  # moved on since (left, moved, subscribed again): not this one's to settle
        del self._pending[user_id]
        self._first.discard(user_id)
        if not future.done():
            future.set_result(True)
        if answer.resubscribe:
            self._hooks.on_resubscribed(user_id)

    def _refused(self, exc: ResponseError) -> None:
        """An error answers the oldest command: none of its channels is held (MOVED, CLUSTERDOWN)."""
        head = self._ledger.refused(exc)
        if head is None:
            raise exc
        if not head.subscribe:
            return
        if self._control in head.channels:
            raise exc
        log.info("%s refused an SSUBSCRIBE: %s", self.name, str(exc).split(" ", 1)[0])
        self._displace([channel[self._prefix_len :].decode() for channel in head.channels])

    def _displace(self, users: list[str]) -> None:
        loop = asyncio.get_running_loop()
        moved = [user_id for user_id in users if user_id in self.users]
        for user_id in moved:
            self.displaced.add(user_id)
            # Its later connections wait until it is subscribed again, wherever that is.
            if user_id not in self._pending:
                self._pending[user_id] = loop.create_future()
        if moved:
            self._hooks.displaced(self.address, moved)

    async def _write_changes(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            gone: list[Entry] = [(self._channel(u), None, False) for u in self._to_unsubscribe]
            self._to_unsubscribe.clear()
            entries: list[Entry] = [
                (self._channel(u), self._pending.get(u), u not in self._first) for u in self._to_subscribe
            ]
            self._to_subscribe.clear()
            commands = self._ledger.commands(gone, subscribe=False) + self._ledger.commands(entries)
            if commands:
                await self._write(commands)

    async def _write(self, commands: list[tuple[Any, ...]]) -> None:
        if self._conn is None:
            raise ConnectionError("pub/sub connection closed")
        await self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError  # see RedisBroker._write

    async def _teardown(self) -> None:
        self._ready = False
        conn, self._conn = self._conn, None
        for future in self._pending.values():
            if not future.done():
                future.set_result(False)
        self._pending.clear()
        for collection in (self._to_subscribe, self._to_unsubscribe, self._ledger, self.displaced):
            collection.clear()
        self._dirty.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    def _channel(self, user_id: str) -> bytes:
        return keys.user_channel(self._prefix, user_id).encode()
