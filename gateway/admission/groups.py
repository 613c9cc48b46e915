"""A connection's groups and the broadcast: memberships in the hub, their channels in the broker.

As for users (gateway/admission/subscription.py), the hub says when a connection is a group's
first member here (subscribe its channel) and when the last one left (drop it), so a worker holds
a group's channel only while a local connection is a member: one channel, however many members.
Every connection is a member of the broadcast. Admission waits until every channel is confirmed
(a round trip for each group new to the worker, none for one another connection holds); a refresh
naming other groups (``change``) leaves the old ones at once and joins the new ones in the
background, each live from its confirmation.
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

    __slots__ = ("_broker", "_closed", "_held", "_hub", "_outbox", "_tasks", "_wanted")

    def __init__(self, hub: Hub, broker: Broker, outbox: Outbox) -> None:
        self._hub = hub
        self._broker = broker
        self._outbox = outbox
        self._held: list[str] = []
        self._wanted: set[str] = {keys.BROADCAST}
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> list[str]:
        return list(self._held)

    async def join(self, groups: tuple[str, ...]) -> None:
        """Join ``groups`` and the broadcast; return once every channel is confirmed. Raises
        ``BrokerUnavailable`` (or a cancellation) with every membership rolled back."""
        self._wanted = {*groups, keys.BROADCAST}
        try:
            await self._join_each((keys.BROADCAST, *groups))
        except BaseException:
            self.leave()
            raise

    def change(self, groups: tuple[str, ...]) -> None:
        """A refresh's token names ``groups``: leave the others now, join the new ones."""
        self._wanted = {*groups, keys.BROADCAST}
        for group in [g for g in self._held if g not in self._wanted]:
            self._leave(group)
        new = tuple(g for g in groups if g not in self._held)
        if new and not self._closed:
            task = asyncio.create_task(self._join_later(new), name="gateway-group-join")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def leave(self) -> None:
        """Leave every group: the connection is gone (a join still under way adds nothing)."""
        self._closed = True
        for group in list(self._held):
            self._leave(group)

    async def _join_later(self, groups: tuple[str, ...]) -> None:
        try:
            await self._join_each(groups)
        except BrokerUnavailable:
            # The hub lists it: the broker subscribes it again once Redis is back.
            log.info("a group joined by a refresh waits for Redis")

    async def _join_each(self, groups: tuple[str, ...]) -> None:
        for group in groups:
            # Checked when it is its turn: the connection may have left, or a newer refresh
            # dropped the group, while an earlier one waited.
            if self._closed or group in self._held or group not in self._wanted:
                continue
            self._held.append(group)
            source = keys.group_source(group)
            # The hub registration and the subscribe (or its wait) in one step, as for users.
            if self._hub.add_member(group, self._outbox):
                await self._broker.subscribe(source)
            else:
                await self._broker.confirmed(source)

    def _leave(self, group: str) -> None:
        self._held.remove(group)
        if self._hub.remove_member(group, self._outbox):
            self._broker.unsubscribe(keys.group_source(group))
