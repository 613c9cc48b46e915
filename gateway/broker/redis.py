"""The worker's one Redis pub/sub connection.

Channels are reference counted per user: SUBSCRIBE goes out on a user's first local
connection and UNSUBSCRIBE after the last one leaves. Changes made while a command is being
written are batched into the next command. ``subscribe`` returns only once Redis has confirmed
the subscription, so a connection accepted after it misses nothing published later.

The reader hands every payload to ``on_message`` synchronously and never awaits a client. A
worker-private control channel is always subscribed: it carries a periodic probe published
through a client of its own, so a connection that is open but deaf is noticed and replaced. On
any loss the subscriber reconnects with jittered back-off and re-subscribes every user it
counts, from its own reference counts rather than redis-py's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError

from gateway import keys, metrics
from gateway.tasks import cancel_and_wait

log = logging.getLogger("gateway.subscriber")

MessageHandler = Callable[[str, bytes], None]

# Redis accepts far more, but a bounded command keeps one resubscribe from stalling the reader.
_CHANNELS_PER_COMMAND = 1000
# One socket read can hold thousands of messages, all parsed without awaiting. Outboxes are
# flushed when the reader yields, so a larger slice puts more of a user's frames in one write;
# this one bounds how long other sockets wait (a few milliseconds).
_YIELD_EVERY = 256
_BACKOFF_FIRST = 0.1
_BACKOFF_CAP = 5.0


class SubscriberUnavailable(Exception):
    """Redis is not reachable through the pub/sub connection; admission fails closed."""


class Subscriber:
    def __init__(
        self,
        redis_url: str,
        prefix: str,
        worker_id: str,
        probe_client: aioredis.Redis,
        on_message: MessageHandler,
        probe_interval: float,
    ) -> None:
        # RESP2: messages arrive as plain arrays; under RESP3 redis-py routes each one through
        # its push-notification handlers, which format a debug string per message.
        self._pool: ConnectionPool = ConnectionPool.from_url(
            redis_url,
            protocol=2,
            socket_connect_timeout=5,
            # Bounds the connection handshake; message reads pass their own (infinite) timeout.
            socket_timeout=5,
            client_name=f"gateway-sub:{worker_id}",
        )
        self._prefix = prefix
        self._prefix_len = len(prefix) + 1
        self._control = keys.control_channel(prefix, worker_id).encode()
        self._probe_client = probe_client
        self._on_message = on_message
        self._probe_interval = probe_interval

        self._refs: dict[str, int] = {}
        # The future each counted user's subscription resolves (True: confirmed, False: lost).
        self._confirmed: dict[str, asyncio.Future[bool]] = {}
        self._to_subscribe: dict[str, None] = {}
        self._to_unsubscribe: dict[str, asyncio.Future[bool]] = {}
        # A done future shared by every confirmed user (made in the loop, at the first session).
        self._settled: asyncio.Future[bool] | None = None
        # Futures of SUBSCRIBEs written, by channel, in the order Redis will confirm them.
        self._inflight: dict[bytes, deque[asyncio.Future[bool]]] = {}
        self._dirty = asyncio.Event()
        self._conn: AbstractConnection | None = None
        self._ready = False
        self._probe_returned = asyncio.Event()
        self._lost_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Connected, with the control channel confirmed."""
        return self._ready

    @property
    def user_count(self) -> int:
        return len(self._refs)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-subscriber")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._pool.disconnect()

    async def subscribe(self, user_id: str) -> None:
        """Count one more local connection of the user; return once Redis confirms the channel."""
        if not self._ready:
            raise SubscriberUnavailable("pub/sub connection is down")
        refs = self._refs.get(user_id, 0) + 1
        self._refs[user_id] = refs
        if refs == 1:
            pending = self._to_unsubscribe.pop(user_id, None)
            if pending is not None:
                # The UNSUBSCRIBE was never written: the old subscription still stands.
                self._confirmed[user_id] = pending
            else:
                self._confirmed[user_id] = asyncio.get_running_loop().create_future()
                self._to_subscribe[user_id] = None
                self._dirty.set()
            metrics.REDIS_SUBSCRIPTIONS.inc()
        try:
            confirmed = await asyncio.shield(self._confirmed[user_id])
        except BaseException:
            self.unsubscribe(user_id)
            raise
        if not confirmed:
            self.unsubscribe(user_id)
            raise SubscriberUnavailable("pub/sub connection lost before the subscription")

    def unsubscribe(self, user_id: str) -> None:
        """Count one local connection of the user less; the last one unsubscribes."""
        refs = self._refs[user_id] - 1
        if refs:
            self._refs[user_id] = refs
            return
        del self._refs[user_id]
        future = self._confirmed.pop(user_id)
        if user_id in self._to_subscribe:
            del self._to_subscribe[user_id]
            if not future.done():
                future.set_result(False)
        elif self._conn is not None:
            self._to_unsubscribe[user_id] = future
            self._dirty.set()
        metrics.REDIS_SUBSCRIPTIONS.dec()

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
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)

    async def _session(self) -> None:
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        self._conn = conn
        await conn.connect()  # type: ignore[no-untyped-call]
        # Local truth: every user counted now, whatever redis-py remembers.
        loop = asyncio.get_running_loop()
        if self._settled is None:
            self._settled = loop.create_future()
            self._settled.set_result(True)
        users = list(self._refs)
        for user_id in users:
            future: asyncio.Future[bool] = loop.create_future()
            self._confirmed[user_id] = future
            self._inflight.setdefault(self._channel(user_id), deque()).append(future)
        await self._write(_batched("SUBSCRIBE", [self._control] + [self._channel(u) for u in users]))
        tasks = [
            asyncio.create_task(self._read(conn), name="gateway-subscriber-reader"),
            asyncio.create_task(self._write_changes(), name="gateway-subscriber-writer"),
            asyncio.create_task(self._probe(), name="gateway-subscriber-probe"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionError("pub/sub task stopped")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, conn: AbstractConnection) -> None:
        on_message = self._on_message
        prefix_len = self._prefix_len
        control = self._control
        dispatched = 0
        while True:
            reply: Any = await conn.read_response(timeout=math.inf)
            kind = reply[0]
            if kind == b"message":
                channel = reply[1]
                if channel == control:
                    self._probe_returned.set()
                else:
                    on_message(channel[prefix_len:].decode(), reply[2])
                    dispatched += 1
                    if dispatched == _YIELD_EVERY:
                        dispatched = 0
                        await asyncio.sleep(0)
            elif kind == b"subscribe":
                self._confirm(reply[1])

    def _confirm(self, channel: bytes) -> None:
        if channel == self._control:
            self._ready = True
            metrics.REDIS_DISCONNECTED.inc(time.monotonic() - self._lost_at)
            log.info("redis pub/sub ready with %d user channels", len(self._refs))
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
        if self._settled is not None and self._confirmed.get(user_id) is future:
            # Confirmed users share one settled future instead of each keeping theirs for life.
            self._confirmed[user_id] = self._settled

    async def _write_changes(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            commands = _batched("UNSUBSCRIBE", [self._channel(u) for u in self._to_unsubscribe])
            self._to_unsubscribe.clear()
            channels = []
            for user_id in self._to_subscribe:
                channel = self._channel(user_id)
                self._inflight.setdefault(channel, deque()).append(self._confirmed[user_id])
                channels.append(channel)
            self._to_subscribe.clear()
            commands += _batched("SUBSCRIBE", channels)
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

    async def _probe(self) -> None:
        """Publish to our control channel; if it does not come back in time the connection is deaf."""
        while True:
            await asyncio.sleep(self._probe_interval)
            self._probe_returned.clear()
            try:
                async with asyncio.timeout(self._probe_interval):
                    await self._probe_client.publish(self._control, b"probe")
                    await self._probe_returned.wait()
            except TimeoutError:
                raise TimeoutError("control channel probe did not come back") from None

    async def _teardown(self) -> None:
        self._ready = False
        conn, self._conn = self._conn, None
        for waiting in self._inflight.values():
            for future in waiting:
                if not future.done():
                    future.set_result(False)
        self._inflight.clear()
        for user_id in self._to_subscribe:
            future = self._confirmed[user_id]
            if not future.done():
                future.set_result(False)
        self._to_subscribe.clear()
        self._to_unsubscribe.clear()
        self._dirty.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    def _channel(self, user_id: str) -> bytes:
        return keys.user_channel(self._prefix, user_id).encode()


def _batched(command: str, channels: list[bytes]) -> list[tuple[Any, ...]]:
    step = _CHANNELS_PER_COMMAND
    return [(command, *channels[i : i + step]) for i in range(0, len(channels), step)]
