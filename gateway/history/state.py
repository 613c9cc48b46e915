"""What history keeps per local user on this worker, apart from the hub's registry of sockets.

The hub (gateway/hub.py) holds one and updates it as users come and go and history messages pass;
the gap fill (gateway/history/gap.py) reads it. O(users): nothing is kept per message.

- the last history message delivered here: where a gap fill starts, and below which a message is
  a duplicate;
- when the user's first connection here arrived (ms, wall clock): where a gap fill starts for a
  user that got no history message here yet;
- the users whose gap is being read after a reconnect, and what arrived for them meanwhile
  (gateway/history/held.py).
"""

from __future__ import annotations

import time

from gateway.history.held import Holds
from gateway.history.position import Position


class HistoryState:
    def __init__(self, max_held: int) -> None:
        self._last: dict[str, Position] = {}
        self._joined: dict[str, int] = {}
        self.holds = Holds(max_held)

    def joined(self, user_id: str) -> None:
        """The user's first connection here arrived."""
        self._joined[user_id] = int(time.time() * 1000)

    def left(self, user_id: str) -> None:
        """The user's last connection here is gone: nothing of it is kept."""
        self._last.pop(user_id, None)
        self._joined.pop(user_id, None)
        self.holds.forget(user_id)

    def deliverable(self, user_id: str, position: Position) -> bool:
        """Whether a history message at ``position`` is new here; if so, it is the user's last."""
        last = self._last.get(user_id)
        if last is not None and last.covers(position.epoch, position.offset):
            return False  # delivered already: by a gap fill that read it before it arrived live
        self._last[user_id] = position
        return True

    def last_delivered(self, user_id: str) -> Position | None:
        return self._last.get(user_id)

    def forget_position(self, user_id: str) -> None:
        """The user's history went back (a promoted replica lacked its last entries): what is
        published next takes a new epoch (a fork), or with an older publisher reuses offsets
        delivered here, and is no copy of them either way."""
        self._last.pop(user_id, None)

    def joined_at(self, user_id: str) -> int | None:
        """When the user's first connection here arrived, ms on the wall clock."""
        return self._joined.get(user_id)

    def holding(self, user_id: str, generation: int) -> bool:
        return self.holds.holding(user_id, generation)
