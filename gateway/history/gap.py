"""The gap fill: after the pub/sub connection was lost and regained, each re-subscribed user gets
what was published with history while the worker was deaf, in order, once, before newer messages.

The broker reports each user whose re-SUBSCRIBE Redis confirmed (synchronously, from its reader,
so nothing newer on that channel has been handed over yet); from then on the hub holds what
arrives for the user, this reads the user's history after the last offset delivered here, and
the hub delivers the gap and then what it held, dropping anything the gap already carried.
A gap that cannot be filled (history lost, trimmed, expired, longer than the replay cap) is told
to envelope sockets as ``{"type":"recovery","recovered":false,...}``; raw sockets just go on.
A user that got no history message here yet is read from the time its first connection here
arrived (the worker's clock against the entries' Redis clock: keep clocks in sync).

A user confirmed again while its read waits is read once; one confirmed again while its read is
in flight is read again after it, each read delivering only what it can have read (the hold's
generation, gateway/history/held.py). A hold past its cap gives the fill up (``overflow``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.history import envelope
from gateway.history.position import Position
from gateway.history.reader import HistoryReader, Reading
from gateway.history.state import HistoryState
from gateway.telemetry import metrics
from gateway.topology.modes import UNAVAILABLE

log = logging.getLogger("gateway.history")

# Users read in one pipelined round trip.
_BATCH = 500
# Pauses before reading again after a connection error; then the gap is given up.
_RETRY_DELAYS = (0.2, 0.5, 1.0)
# A user, the generation of its hold, and (epoch, offset) to read after.
_Gap = tuple[str, int, tuple[str, int]]


class HeldDelivery(Protocol):
    """What the gap fill needs of the hub (gateway/hub.py), which it does not import."""

    history: HistoryState

    def hold(self, user_id: str) -> int | None: ...

    def deliver_held(
        self, user_id: str, generation: int, gap: Position | None, entries: list[bytes]
    ) -> None: ...

    def notify(self, user_id: str, frame: bytes) -> None: ...


class GapFiller:
    def __init__(self, hub: HeldDelivery, reader: HistoryReader) -> None:
        self._hub = hub
        self._history = hub.history
        self._reader = reader
        # User -> the generation of its latest hold, in the order they were confirmed.
        self._waiting: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def resubscribed(self, user_id: str) -> None:
        """The broker's hook: the user's channel is confirmed again after a reconnect."""
        generation = self._hub.hold(user_id)
        if generation is None:
            return
        self._waiting[user_id] = generation
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._fill(), name="gateway-gap-fill")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _fill(self) -> None:
        await asyncio.sleep(0)  # the confirmations of one read arrive together: one batch
        while self._waiting:
            users = list(itertools.islice(self._waiting.items(), _BATCH))
            for user_id, _ in users:
                del self._waiting[user_id]
            gaps = [(u, g, start) for u, g in users if (start := self._start(u, g)) is not None]
            renewed: list[_Gap] = []
            for (user_id, generation, _), reading in await self._readings(gaps):
                if not self._history.holding(user_id, generation):
                    continue  # given up (overflow) or the user left while read: nothing to do
                joined = self._history.joined_at(user_id)
                if reading.result == "epoch" and joined is not None:
                    # The history was lost and began again (on a cluster: a failover before the
                    # replica had it): every entry of the new one since the user joined here is
                    # new to this worker. Envelope sockets still learn that the old one is gone.
                    self._hub.notify(user_id, envelope.recovery(False, 0, "epoch"))
                    renewed.append((user_id, generation, ("", joined)))
                else:
                    self._settle(user_id, generation, reading)
            for (user_id, generation, _), reading in await self._readings(renewed):
                self._settle(user_id, generation, reading)

    async def _readings(self, gaps: list[_Gap]) -> list[tuple[_Gap, Reading]]:
        """Each gap with its reading; none when Redis fails (those users are not filled)."""
        if not gaps:
            return []
        try:
            readings = await self._read([(u, epoch, after) for u, _, (epoch, after) in gaps])
        except UNAVAILABLE as exc:
            log.warning("gap fill failed for %d users: %s", len(gaps), type(exc).__name__)
            for user_id, generation, _ in gaps:
                self._not_filled(user_id, generation, "unavailable")
            return []
        return list(zip(gaps, readings, strict=True))

    def _settle(self, user_id: str, generation: int, reading: Reading) -> None:
        if not self._history.holding(user_id, generation):
            return
        if reading.result != "ok":
            if reading.result == "future":
                # Behind what was delivered here: a failover lost the history's last entries
                # (replication is asynchronous) and nothing was published since. The next publish
                # forks into a new epoch (publish.lua); one by an older publisher would not, and
                # its offsets must not be taken for ones delivered here.
                self._history.forget_position(user_id)
            self._not_filled(user_id, generation, reading.result)
            return
        metrics.GAP_FILLS.labels("filled" if reading.entries else "nothing_missed").inc()
        # The entries run up to the history's current offset, consecutive.
        start = Position(reading.epoch, reading.offset - len(reading.entries))
        self._hub.deliver_held(user_id, generation, start, reading.entries)

    async def _read(self, gaps: list[tuple[str, str, int]]) -> list[Reading]:
        """A read that meets a connection error is tried again: on a Redis Cluster the pub/sub
        connection can follow a failover a moment before the command client learns of it."""
        for delay in _RETRY_DELAYS:
            try:
                return await self._reader.read_many(gaps)
            except (RedisConnectionError, RedisTimeoutError):
                await asyncio.sleep(delay)
        return await self._reader.read_many(gaps)

    def _start(self, user_id: str, generation: int) -> tuple[str, int] | None:
        """(epoch, offset) to read after, or ("", time) for a user with no position yet; None
        when the read is not wanted any more."""
        if not self._history.holding(user_id, generation):
            return None
        last = self._history.last_delivered(user_id)
        if last is not None:
            return last.epoch, last.offset
        joined = self._history.joined_at(user_id)
        return None if joined is None else ("", joined)

    def _not_filled(self, user_id: str, generation: int, reason: str) -> None:
        if not self._history.holding(user_id, generation):
            return
        metrics.GAP_FILLS.labels(reason).inc()
        self._hub.notify(user_id, envelope.recovery(False, 0, reason))
        self._hub.deliver_held(user_id, generation, None, [])
