"""What a ``PubSubSession`` (gateway/broker/session.py) wrote on its pub/sub connection and Redis
has not answered yet, so each reply is matched to its command; and the ``Verbs`` it writes.

Redis answers commands in order, one ``subscribe``/``unsubscribe`` reply (``ssubscribe``/
``sunsubscribe`` for shard channels) per channel named, or one error for the whole command. An
unsubscribe reply that is not the next answer expected was pushed by the server on its own (on a
Redis Cluster: the slot moved away); an error belongs to the oldest unanswered command.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot
from redis.exceptions import AskError, ResponseError

from gateway.broker.commands import by_slot, in_order

# A channel to write: its confirmation awaited (None: nobody waits), and whether its
# confirmation ends a gap (a re-subscription, so the gap fill runs).
Entry = tuple[bytes, asyncio.Future[bool] | None, bool]


@dataclass(frozen=True, slots=True)
class Verbs:
    """One kind of pub/sub: its commands, the kinds of its replies, and how the channels of one
    command are grouped."""

    subscribe: str
    unsubscribe: str
    message: bytes
    subscribed: bytes
    unsubscribed: bytes
    group: Callable[[list[Entry]], list[list[Entry]]]


PLAIN = Verbs("SUBSCRIBE", "UNSUBSCRIBE", b"message", b"subscribe", b"unsubscribe", in_order)
# Shard channels (Redis Cluster): one command may name channels of one slot only.
SHARDED = Verbs("SSUBSCRIBE", "SUNSUBSCRIBE", b"smessage", b"ssubscribe", b"sunsubscribe", by_slot)


@dataclass(slots=True)
class Written:
    """One SSUBSCRIBE or SUNSUBSCRIBE, until Redis answered each of its channels."""

    subscribe: bool
    channels: list[bytes]
    futures: list[asyncio.Future[bool] | None]
    resubscribe: list[bool]
    answered: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    future: asyncio.Future[bool] | None
    resubscribe: bool


class Ledger:
    def __init__(self, verbs: Verbs) -> None:
        self._verbs = verbs
        self._written: deque[Written] = deque()

    def __len__(self) -> int:
        """Commands written and not yet answered in full."""
        return len(self._written)

    def commands(self, entries: list[Entry], subscribe: bool = True) -> list[tuple[Any, ...]]:
        """One command per group of the verbs (at most a thousand channels), each recorded before it
        is written."""
        verb = self._verbs.subscribe if subscribe else self._verbs.unsubscribe
        commands: list[tuple[Any, ...]] = []
        for group in self._verbs.group(entries):
            written = Written(
                subscribe, [c for c, _, _ in group], [f for _, f, _ in group], [r for _, _, r in group]
            )
            self._written.append(written)
            commands.append((verb, *written.channels))
        return commands

    def answered(self, channel: bytes, subscribe: bool) -> Answer | None:
        """The entry this reply answers, or None when it answers nothing written (a push)."""
        head = self._written[0] if self._written else None
        if head is None or head.subscribe != subscribe or head.channels[head.answered] != channel:
            return None
        i = head.answered
        head.answered += 1
        if head.answered == len(head.channels):
            self._written.popleft()
        return Answer(head.futures[i], head.resubscribe[i])

    def refused(self, error: ResponseError) -> Written | None:
        """An error reply: the oldest command unanswered, which failed as a whole.

        A redirection (MOVED, ASK) names its slot: one that is not the oldest command's answers a
        SUNSUBSCRIBE already matched, when the node's push dropping that slot's channels came
        first and was taken for its answer. Nothing is left to undo: an empty SUNSUBSCRIBE."""
        head = self._written[0] if self._written else None
        if isinstance(error, AskError) and (head is None or key_slot(head.channels[0]) != error.slot_id):
            return Written(False, [], [], [])
        return self._written.popleft() if self._written else None

    def clear(self) -> None:
        self._written.clear()
