"""What arrives for the users whose gap is being read, held until the read is delivered.

Each hold has a generation: one per confirmation of the user's channel after a reconnect, from
one counter of the worker. A user whose channel is lost and confirmed again while its gap's read
is in flight is marked with the new generation where its held messages stand: that read's
delivery may include only what was held before the mark (what arrived before the second outage),
since it cannot have read what the worker missed in the second one; the rest waits for the next
read. A delivery for a generation older than the user's hold (a fill given up, a user who left and
came back) delivers nothing.

At most ``cap`` messages are held per user (bounding a user's memory like a socket's outbox):
past it the fill is given up, and the caller delivers what was held and tells the user's
envelope sockets ``recovered:false`` (``overflow``).
"""

from __future__ import annotations

import logging

from gateway.telemetry import metrics

log = logging.getLogger("gateway.hub")


class _Held:
    __slots__ = ("first", "marks", "messages")

    def __init__(self, generation: int) -> None:
        self.first = generation
        self.messages: list[bytes] = []
        # (generation, how many messages were held when it began), one per later confirmation.
        self.marks: list[tuple[int, int]] = []


class Holds:
    """Per held user: its held messages and the generations of its holds."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._by_user: dict[str, _Held] = {}
        self._generation = 0

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._by_user

    def hold(self, user_id: str) -> int:
        """Start holding (or mark a new outage of a user held already); the hold's generation."""
        self._generation += 1
        held = self._by_user.get(user_id)
        if held is None:
            self._by_user[user_id] = _Held(self._generation)
        else:
            held.marks.append((self._generation, len(held.messages)))
        return self._generation

    def holding(self, user_id: str, generation: int) -> bool:
        """Whether a read for ``generation`` is still wanted: the user's hold has it."""
        held = self._by_user.get(user_id)
        return held is not None and held.first <= generation <= self._latest(held)

    def add(self, user_id: str, payload: bytes) -> list[bytes] | None:
        """Hold ``payload``; past the cap the hold is given up: what it held is returned, in order."""
        held = self._by_user[user_id]
        held.messages.append(payload)
        if len(held.messages) <= self._cap:
            return None
        del self._by_user[user_id]
        metrics.GAP_FILLS.labels("overflow").inc()
        log.warning(
            "gap fill given up for a user: more than %d messages arrived while its history was read",
            self._cap,
        )
        return held.messages

    def take(self, user_id: str, generation: int) -> list[bytes] | None:
        """What the read of ``generation`` may deliver (held before the next outage began), or
        None when that read is not wanted any more. The user stays held while marks remain."""
        if not self.holding(user_id, generation):
            return None
        held = self._by_user[user_id]
        later = [(g, at) for g, at in held.marks if g > generation]
        if not later:
            del self._by_user[user_id]
            return held.messages
        cut = later[0][1]
        delivered, held.messages = held.messages[:cut], held.messages[cut:]
        held.first = later[0][0]
        held.marks = [(g, at - cut) for g, at in later[1:]]
        return delivered

    def forget(self, user_id: str) -> None:
        self._by_user.pop(user_id, None)

    @staticmethod
    def _latest(held: _Held) -> int:
        return held.marks[-1][0] if held.marks else held.first
