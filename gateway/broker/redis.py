"""``RedisBroker``: the worker's one pub/sub connection to a single Redis server.

SUBSCRIBE goes out when the hub says a user's first local connection arrived, UNSUBSCRIBE when it
says the last one left; changes made while a command is being written are batched into the next
command. The broker keeps no count of connections: only the confirmations still awaited, and the
number of user channels held.

The reader hands every payload to ``on_message`` synchronously and never awaits a client. A
worker-private control channel is always subscribed; ``probe.py`` publishes to it, so a
connection that is open but deaf is noticed and replaced. On any loss the broker reconnects with
jittered back-off and re-subscribes every user the hub lists, not what redis-py remembers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError

from gateway import keys
from gateway.broker import Broker, BrokerUnavailable, LocalUsers, MessageHandler, Resubscribed
from gateway.broker.commands import YIELD_EVERY, batched, confirmation, handler_failed, ignore, pubsub_options
from gateway.broker.probe import Probe
from gateway.tasks import cancel_and_wait, until_one_ends
from gateway.telemetry import metrics

log = logging.getLogger("gateway.subscriber")

_BACKOFF_FIRST = 0.1
_BACKOFF_CAP = 5.0


class RedisBroker(Broker):
    def __init__(
        self,
        redis_url: str,
        prefix: str,
        worker_id: str,
        probe_client: aioredis.Redis,
        on_message: MessageHandler,
        users: LocalUsers,
        probe_interval: float,
        on_resubscribed: Resubscribed | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        # Sentinel mode passes a pool that asks the sentinels at each connect (broker/sentinel.py).
        self._pool: ConnectionPool = pool or ConnectionPool.from_url(redis_url, **pubsub_options(worker_id))
        self._prefix = prefix
        self._prefix_len = len(prefix) + 1
        self._control = keys.control_channel(prefix, worker_id).encode()
        # Publishes (the probe's) go through a connection of its own, not the command pool.
        self._probe_client = probe_client
        self._on_message = on_message
        self._users = users
        self._probe = Probe(self.publish, self._control, probe_interval)
        self._on_resubscribed = on_resubscribed or ignore
        # Channels subscribed again after a loss, until Redis confirms each (then the hook runs).
        self._resubscribing: set[bytes] = set()

        self._channels = 0
        # Users whose SUBSCRIBE is queued or in flight: the future resolves True once Redis
        # confirms it, False if the connection is lost first. A confirmed user has no entry.
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self._to_subscribe: dict[str, None] = {}
        # Users to UNSUBSCRIBE, with their still-pending future if any (a return before the
        # write resumes it).
        self._to_unsubscribe: dict[str, asyncio.Future[bool] | None] = {}
        # Futures of SUBSCRIBEs written, by channel, in the order Redis will confirm them.
        self._inflight: dict[bytes, deque[asyncio.Future[bool]]] = {}
        self._dirty = asyncio.Event()
        self._conn: AbstractConnection | None = None
        self._ready = False
        self._lost_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        # Set by reconnect_now: ends the session, or the back-off wait, at once.
        self._move = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Connected, with the control channel confirmed."""
        return self._ready

    @property
    def channel_count(self) -> int:
        return self._channels

    def reconnect_now(self) -> None:
        """The master moved: reconnect (where the pool says) at once, not after the back-off;
        every user is subscribed again and the gap fill runs, as after any loss."""
        self._move.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-subscriber")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._pool.disconnect()

    async def subscribe(self, user_id: str) -> None:
        self._channels += 1
        metrics.REDIS_SUBSCRIPTIONS.inc()
        if not self._ready:
            # The next session subscribes every user the hub still lists.
            raise BrokerUnavailable("pub/sub connection is down")
        if user_id in self._to_unsubscribe:
            # The UNSUBSCRIBE was never written: the old subscription still stands.
            future = self._to_unsubscribe.pop(user_id)
            if future is None or future.done():
                return
        else:
            future = asyncio.get_running_loop().create_future()
            self._to_subscribe[user_id] = None
            self._dirty.set()
        self._pending[user_id] = future
        await confirmation(future)

    async def confirmed(self, user_id: str) -> None:
        if not self._ready:
            raise BrokerUnavailable("pub/sub connection is down")
        future = self._pending.get(user_id)
        if future is not None:
            await confirmation(future)

    def unsubscribe(self, user_id: str) -> None:
        self._channels -= 1
        metrics.REDIS_SUBSCRIPTIONS.dec()
        future = self._pending.pop(user_id, None)
        if future is not None and user_id in self._to_subscribe:
            # Never written: nothing to undo in Redis.
            del self._to_subscribe[user_id]
            if not future.done():
                future.set_result(False)
        elif self._conn is not None and (future is not None or self._ready):
            # Written in this session (confirmed, or its confirmation on the way). Before the
            # control channel is confirmed, a user with nothing pending was never written.
            self._to_unsubscribe[user_id] = future
            self._dirty.set()

    async def publish(self, channel: bytes, payload: bytes) -> int:
        return int(await self._probe_client.publish(channel, payload))

    async def _run(self) -> None:
        delay = _BACKOFF_FIRST
        while True:
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis pub/sub connection lost: %s", type(exc).__name__)
            except Exception:
                # A bug, not Redis: the worker must not stay deaf for the rest of its life.
                log.exception("redis pub/sub session failed; reconnecting")
            finally:
                was_ready = self._ready
                await self._teardown()
            if was_ready:
                # A working connection dropped: count it and retry at once, backing off after.
                metrics.REDIS_RECONNECTS.inc()
                self._lost_at = time.monotonic()
                delay = _BACKOFF_FIRST
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._move.wait(), delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)

    async def _session(self) -> None:
        self._move.clear()
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        self._conn = conn
        await conn.connect()  # type: ignore[no-untyped-call]
        # The hub is the truth: every user it lists now, whatever redis-py remembers.
        loop = asyncio.get_running_loop()
        channels = [self._control]
        for user_id in self._users():
            future: asyncio.Future[bool] = loop.create_future()
            self._pending[user_id] = future
            channel = self._channel(user_id)
            self._inflight.setdefault(channel, deque()).append(future)
            channels.append(channel)
        self._resubscribing = set(channels[1:])
        await self._write(batched("SUBSCRIBE", channels))
        await until_one_ends(self._read(conn), self._write_changes(), self._probe.run(), self._move.wait())

    async def _read(self, conn: AbstractConnection) -> None:
        on_message = self._on_message
        probe_returned = self._probe.returned
        prefix_len = self._prefix_len
        control = self._control
        dispatched = 0
        while True:
            reply: Any = await conn.read_response(timeout=math.inf)
            kind = reply[0]
            if kind == b"message":
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
            elif kind == b"subscribe":
                self._confirm(reply[1])

    def _confirm(self, channel: bytes) -> None:
        if channel == self._control:
            self._ready = True
            metrics.REDIS_DISCONNECTED.inc(time.monotonic() - self._lost_at)
            log.info("redis pub/sub ready with %d user channels", self._channels)
            return
        waiting = self._inflight.get(channel)
        if not waiting:
            return
        future = waiting.popleft()
        if not waiting:
            del self._inflight[channel]
        if not future.done():
            future.set_result(True)
        user_id = channel[self._prefix_len :].decode()
        if self._pending.get(user_id) is future:
            del self._pending[user_id]
        if self._resubscribing and channel in self._resubscribing:
            self._resubscribing.discard(channel)
            self._on_resubscribed(user_id)

    async def _write_changes(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            commands = batched("UNSUBSCRIBE", [self._channel(u) for u in self._to_unsubscribe])
            self._to_unsubscribe.clear()
            channels = []
            for user_id in self._to_subscribe:
                channel = self._channel(user_id)
                self._inflight.setdefault(channel, deque()).append(self._pending[user_id])
                channels.append(channel)
            self._to_subscribe.clear()
            commands += batched("SUBSCRIBE", channels)
            if commands:
                await self._write(commands)

    async def _write(self, commands: list[tuple[Any, ...]]) -> None:
        if self._conn is None:
            raise ConnectionError("pub/sub connection closed")
        await self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # redis-py can swallow a cancel that lands during a write (seen with redis 8.1):
            # honour it here, or the task outlives its session.
            raise asyncio.CancelledError

    async def _teardown(self) -> None:
        self._ready = False
        conn, self._conn = self._conn, None
        # Every confirmation still awaited is lost; the next session starts from the hub.
        for future in itertools.chain(self._pending.values(), *self._inflight.values()):
            if not future.done():
                future.set_result(False)
        self._inflight.clear()
        self._resubscribing.clear()
        self._pending.clear()
        self._to_subscribe.clear()
        self._to_unsubscribe.clear()
        self._dirty.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    def _channel(self, user_id: str) -> bytes:
        return keys.user_channel(self._prefix, user_id).encode()
