"""Places given back until Redis confirms it, for the limiter (gateway/leases/limiter.py).

A release Redis never answered (a write pause during a planned failover, a hang past the command
timeout, a dead Cluster master) would keep the user's place until its lease lapses, and the
user, connected nowhere, refused 4029 meanwhile. So would an admission whose acquire went out
and never came back: Redis may run it still. Each such place stays pending here, and one
background task sends what is pending again, with back-off, until Redis confirms each one. A
user's pending releases also go ahead of this worker's next acquire for that user
(``ahead_of``), in its round trip, so that acquire never finds them.

A release is sent at once, and its caller waits for the answer a moment at most: a close frame
(a drain's 1012 too) goes out on time whatever Redis does, and the release goes on behind it.
Every reply is judged alone: on a Redis Cluster a dead master keeps only its own users' places
pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from gateway.tasks import cancel_and_wait
from gateway.topology import scripts
from gateway.topology.modes import UNAVAILABLE, AsyncClient
from gateway.topology.scripts import Call

log = logging.getLogger("gateway.limiter")

# Past this many pending places (a long outage with a storm of admissions) the oldest are left
# to lapse on their own, one lease time at most.
_MAX_PENDING = 10_000
# Calls per pipelined round trip when many are pending (a drain while Redis was away).
_BATCH = 1000
_BACKOFF_FIRST = 0.1
_BACKOFF_CAP = 2.0

# (connection id, user id, tombstone ms) -> the release script call (gateway/lua/release.lua).
MakeCall = Callable[[str, str, int], Call]


class Releases:
    def __init__(self, client: AsyncClient, make_call: MakeCall) -> None:
        self._client = client
        self._make_call = make_call
        # Connection id -> (user id, tombstone ms), oldest first; and each user's pending ids.
        self._pending: dict[str, tuple[str, int]] = {}
        self._by_user: dict[str, set[str]] = {}
        # First sends still on their way (their callers stopped waiting, or will), and by user.
        self._sending: set[asyncio.Task[None]] = set()
        self._sending_for: dict[str, set[asyncio.Future[None]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dropping = False
        self._failing = False

    @property
    def unsettled(self) -> int:
        """Places given back that Redis has not confirmed yet."""
        return len(self._pending) + sum(1 for send in self._sending if not send.done())

    def start(self) -> None:
        self._task = asyncio.create_task(self._retry(), name="gateway-releases")

    async def release(self, connection_id: str, user_id: str, keep_ms: int, wait: float) -> None:
        """Give a place back; wait ``wait`` seconds at most for Redis to confirm it. ``keep_ms``:
        the tombstone's life (gateway/lua/release.lua), 0 for none."""
        send = asyncio.ensure_future(self._send_first(connection_id, user_id, keep_ms))
        self._sending.add(send)
        send.add_done_callback(self._sending.discard)
        self._sending_for.setdefault(user_id, set()).add(send)
        send.add_done_callback(lambda _: self._sent_for(user_id, send))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(send), wait)

    def _sent_for(self, user_id: str, send: asyncio.Future[None]) -> None:
        sends = self._sending_for.get(user_id)
        if sends is not None:
            sends.discard(send)
            if not sends:
                del self._sending_for[user_id]

    async def settled(self, user_id: str, wait: float) -> bool:
        """Wait ``wait`` seconds at most for the user's releases on their way to Redis; False
        when there were none (an admission at the limit has nothing to wait for)."""
        sends = self._sending_for.get(user_id)
        if not sends:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*sends, return_exceptions=True)), wait)
        return True

    async def _send_first(self, connection_id: str, user_id: str, keep_ms: int) -> None:
        try:
            await scripts.run(self._client, [self._make_call(connection_id, user_id, keep_ms)])
        except UNAVAILABLE as exc:
            self._note_failure(exc)
            self.add(connection_id, user_id, keep_ms)
        except asyncio.CancelledError:
            self.add(connection_id, user_id, keep_ms)
            raise

    def add(self, connection_id: str, user_id: str, keep_ms: int) -> None:
        """Keep a place pending until Redis confirms its release, and send it soon."""
        if connection_id not in self._pending and len(self._pending) >= _MAX_PENDING:
            self._forget(next(iter(self._pending)))
            if not self._dropping:  # once per outage, not once per refused admission
                self._dropping = True
                log.warning("too many unconfirmed releases: the oldest places lapse on their own")
        self._pending[connection_id] = (user_id, keep_ms)
        self._by_user.setdefault(user_id, set()).add(connection_id)
        self._wake.set()

    def _forget(self, connection_id: str) -> None:
        entry = self._pending.pop(connection_id, None)
        if entry is None:
            return
        ids = self._by_user.get(entry[0])
        if ids is not None:
            ids.discard(connection_id)
            if not ids:
                del self._by_user[entry[0]]

    def ahead_of(self, user_id: str) -> list[tuple[str, Call]]:
        """The user's pending releases, to go ahead of an acquire; ``judge`` their replies."""
        return [
            (connection_id, self._make_call(connection_id, user_id, self._pending[connection_id][1]))
            for connection_id in self._by_user.get(user_id, ())
        ]

    def judge(self, connection_ids: Sequence[str], replies: Sequence[Any]) -> bool:
        """Drop the releases Redis confirmed; True when every reply is a confirmation."""
        confirmed = True
        for connection_id, reply in zip(connection_ids, replies, strict=True):
            if isinstance(reply, Exception):
                confirmed = False
            else:
                self._forget(connection_id)
        return confirmed

    async def settle(self) -> None:
        """Send every pending release now; raises the first error if Redis did not confirm one
        (what it did not confirm stays pending)."""
        while self._pending:
            batch = list(itertools.islice(self._pending.items(), _BATCH))
            calls = [self._make_call(connection_id, *entry) for connection_id, entry in batch]
            replies = await scripts.run_apart(self._client, calls)
            if not self.judge([connection_id for connection_id, _ in batch], replies):
                raise next(reply for reply in replies if isinstance(reply, Exception))
        self._dropping = False

    def _note_failure(self, exc: BaseException) -> None:
        if not self._failing:  # once per outage, not once per release
            self._failing = True
            log.warning("a lease release got no answer (%s); sent until confirmed", type(exc).__name__)

    async def _retry(self) -> None:
        delay = _BACKOFF_FIRST
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.settle()
            except UNAVAILABLE as exc:
                self._note_failure(exc)
            except Exception:
                # A bug, not Redis: this task must not end, or no release is retried again.
                log.exception("retrying the unconfirmed lease releases failed")
            else:
                if self._failing and not self._sending:
                    self._failing = False
                    log.info("every unconfirmed lease release is confirmed")
                delay = _BACKOFF_FIRST
                continue
            self._wake.set()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)

    async def stop(self, timeout: float) -> None:
        """Stop retrying; give what is still unconfirmed ``timeout`` seconds more."""
        await cancel_and_wait(self._task)
        self._task = None
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*self._sending, return_exceptions=True)
                await self.settle()
        except (TimeoutError, *UNAVAILABLE) as exc:  # type: ignore[misc]  # a tuple, unpacked
            for send in list(self._sending):
                await cancel_and_wait(send)
            log.warning(
                "%d lease releases unconfirmed at shutdown (%s): those places lapse within the lease"
                " time, or gunicorn's master releases them",
                self.unsettled,
                type(exc).__name__,
            )
