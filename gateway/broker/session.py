"""``PubSubSession``: a worker's pub/sub connection to one Redis server, kept subscribed to its
``Subscriptions`` (``subscriptions.py``), for every broker (``redis.py`` with SUBSCRIBE,
``shard.py`` with SSUBSCRIBE).

The reader hands every message to ``on_message`` synchronously and never awaits a client. A
worker-private control channel is always subscribed; ``probe.py`` publishes to it, so a connection
that is open but deaf is noticed and replaced. On any loss the session reconnects with jittered
back-off and subscribes again the channels its broker wants (``wanted``), not what redis-py
remembers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from gateway.broker.commands import YIELD_EVERY, ChannelHandler, handler_failed
from gateway.broker.probe import Probe
from gateway.broker.subscriptions import Subscriptions
from gateway.tasks import cancel_and_wait, until_one_ends

log = logging.getLogger("gateway.subscriber")

_BACKOFF_FIRST = 0.1


@dataclass(slots=True)
class SessionHooks:
    """What a session calls in its broker; channels as Redis names them."""

    # A fresh pub/sub connection, not yet connected: one per session.
    connection: Callable[[], AbstractConnection]
    # The control channel of the next session (raises ConnectionError when there is none).
    control: Callable[[], bytes]
    # The probe's publish to the control channel, through a connection of its own.
    publish: Callable[[bytes, bytes], Awaitable[object]]
    on_message: ChannelHandler
    # The control channel is confirmed: seconds since the last connection was lost (None: none was).
    ready: Callable[[float | None], None]
    # The session ended and was torn down; True if it had been ready.
    lost: Callable[[bool], None]
    # The channels to subscribe at each connect; None: every channel held.
    wanted: Callable[[], Iterable[bytes]] | None = None


class PubSubSession:
    def __init__(
        self,
        subscriptions: Subscriptions,
        hooks: SessionHooks,
        probe_interval: float,
        backoff_cap: float,
        lost_at: float | None = None,
    ) -> None:
        self._subscriptions = subscriptions
        self._hooks = hooks
        self._probe_interval = probe_interval
        self._backoff_cap = backoff_cap
        self._conn: AbstractConnection | None = None
        # When the connection was lost (or the wait for the first began), for the gap's metric.
        self._lost_at = lost_at
        self._task: asyncio.Task[None] | None = None
        # Set by reconnect_now: ends the session, or the back-off wait, at once.
        self._move = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Connected, with the control channel confirmed."""
        return self._subscriptions.ready

    def start(self, task_name: str) -> None:
        self._task = asyncio.create_task(self._run(), name=task_name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._teardown()

    def reconnect_now(self) -> None:
        """Reconnect at once, not after the back-off; every channel is subscribed again."""
        self._move.set()

    async def _run(self) -> None:
        name = self._subscriptions.name
        delay = _BACKOFF_FIRST
        while True:
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis pub/sub connection%s lost: %s", name, type(exc).__name__)
            except Exception:
                # A bug, not Redis: the worker must not stay deaf for the rest of its life.
                log.exception("redis pub/sub connection%s failed; reconnecting", name)
            finally:
                was_ready = self._subscriptions.ready
                await self._teardown()
            self._subscriptions.opening = False
            if was_ready:
                # A working connection dropped: retry at once, backing off after.
                self._lost_at = time.monotonic()
                delay = _BACKOFF_FIRST
            self._hooks.lost(was_ready)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._move.wait(), delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff_cap)

    async def _session(self) -> None:
        self._move.clear()
        control = self._hooks.control()
        conn = self._conn = self._hooks.connection()
        await conn.connect()  # type: ignore[no-untyped-call]
        wanted = self._hooks.wanted
        await self._write(self._subscriptions.opened(control, None if wanted is None else wanted()))
        probe = Probe(self._hooks.publish, control, self._probe_interval)
        await until_one_ends(self._read(conn, probe), self._write_changes(), probe.run(), self._move.wait())

    async def _read(self, conn: AbstractConnection, probe: Probe) -> None:
        subscriptions = self._subscriptions
        verbs = subscriptions.verbs
        message, subscribed, unsubscribed = verbs.message, verbs.subscribed, verbs.unsubscribed
        on_message = self._hooks.on_message
        probe_returned = probe.returned
        control = subscriptions.control
        dispatched = 0
        while True:
            try:
                reply: Any = await conn.read_response(timeout=math.inf)
            except ResponseError as exc:
                subscriptions.refused(exc)
                continue
            kind = reply[0]
            if kind == message:
                channel = reply[1]
                if channel == control:
                    probe_returned()
                else:
                    try:
                        on_message(channel, reply[2])
                    except Exception:
                        handler_failed()
                    dispatched = (dispatched + 1) % YIELD_EVERY
                    if not dispatched:
                        await asyncio.sleep(0)
            elif kind == subscribed:
                if subscriptions.answered(reply[1], subscribe=True):
                    self._hooks.ready(None if self._lost_at is None else time.monotonic() - self._lost_at)
            elif kind == unsubscribed:
                subscriptions.answered(reply[1], subscribe=False)

    async def _write_changes(self) -> None:
        while True:
            await self._subscriptions.changed.wait()
            commands = self._subscriptions.changes()
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
        conn, self._conn = self._conn, None
        self._subscriptions.closed()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
