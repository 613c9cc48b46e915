"""A connection's groups and the broadcast: memberships in the hub, their channels in the broker.

As for users (gateway/admission/subscription.py), the hub says when a connection is a group's
first member here (subscribe its channel) and when the last one left (drop it), so a worker holds
a group's channel only while a local connection is a member: one channel, however many members.
Every connection is a member of the broadcast. Admission waits until every channel is confirmed
(the new ones asked for in one batch; nothing to wait for a group another connection holds). A
refresh naming other groups (``change``) leaves the old ones and joins the new ones at once, their
new channels confirmed in the background.
"""

from __future__ import annotations

import asyncio
import logging

from gateway import keys
from gateway.broker import Broker, BrokerUnavailable
from gateway.hub import Hub, Outbox

log = logging.getLogger("gateway.groups")


class Memberships:
    """The groups one connection is a member of here (the broadcast's too), each held once."""

    __slots__ = ("_broker", "_closed", "_held", "_hub", "_outbox", "_tasks")

    def __init__(self, hub: Hub, broker: Broker, outbox: Outbox) -> None:
        self._hub = hub
        self._broker = broker
        self._outbox = outbox
        self._held: list[str] = []
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> list[str]:
        return list(self._held)

    async def join(self, groups: tuple[str, ...]) -> None:
        """Join ``groups`` and the broadcast; return once every channel is confirmed. Raises
        ``BrokerUnavailable`` (or a cancellation) with every membership rolled back."""
        try:
            await self._join_each((keys.BROADCAST, *groups))
        except BaseException:
            self.leave()
            raise

    def change(self, groups: tuple[str, ...]) -> None:
        """A refresh's token names ``groups``: leave the others and join the new ones now, their
        channels confirmed in the background."""
        wanted = {*groups, keys.BROADCAST}
        for group in [g for g in self._held if g not in wanted]:
            self._leave(group)
        waits = self._ask(groups)
        if waits:
            task = asyncio.create_task(self._confirm(waits), name="gateway-group-join")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def leave(self) -> None:
        """Leave every group: the connection is gone (a refresh after it joins nothing)."""
        self._closed = True
        for group in list(self._held):
            self._leave(group)

    async def _join_each(self, groups: tuple[str, ...]) -> None:
        waits = self._ask(groups)
        if not waits:
            return
        # wait, not gather: a cancelled join leaves the subscriptions' own waits alone.
        done, _ = await asyncio.wait(waits)
        for wait in done:
            error = None if wait.cancelled() else wait.exception()
            if error is not None:
                raise error  # BrokerUnavailable

    async def _confirm(self, waits: list[asyncio.Future[None]]) -> None:
        await asyncio.wait(waits)
        if any(not w.cancelled() and isinstance(w.exception(), BrokerUnavailable) for w in waits):
            # The hub lists them: the broker subscribes them again once Redis is back.
            log.info("groups joined by a refresh wait for Redis")

    def _ask(self, groups: tuple[str, ...]) -> list[asyncio.Future[None]]:
        """Register each group not held yet in the hub and ask for its channel, all in this step,
        so the broker writes them in one batch; the waits for their confirmations."""
        waits: list[asyncio.Future[None]] = []
        if self._closed:
            return waits
        for group in groups:
            if group in self._held:
                continue
            self._held.append(group)
            source = keys.group_source(group)
            first = self._hub.add_member(group, self._outbox)
            # A task's first step runs before whatever the loop runs next (a rollback, a leave):
            # every subscribe is made before its unsubscribe, so the two stay paired.
            call = self._broker.subscribe(source) if first else self._broker.confirmed(source)
            wait = asyncio.ensure_future(call)
            wait.add_done_callback(_retrieved)
            waits.append(wait)
        return waits

    def _leave(self, group: str) -> None:
        self._held.remove(group)
        if self._hub.remove_member(group, self._outbox):
            self._broker.unsubscribe(keys.group_source(group))


def _retrieved(task: asyncio.Future[None]) -> None:
    # Read even when no one awaits it any more (a join cancelled or failed): no warning logged.
    if not task.cancelled():
        task.exception()
