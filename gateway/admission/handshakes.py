"""Handshakes in admission on one worker: one pool, and a bounded share of it per user and per
client address.

A handshake holds a place in the pool while it waits on Redis (its lease, its subscription, a
resume's read). Were the pool all there is, one user (or one address holding many users' tokens)
sending handshakes without pause would fill it, and everyone else would be refused with 1013
``overloaded``. A user may hold as many places as it may hold connections (more could not all be
admitted), an address ``WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS``; past its share a handshake
is refused with 1013 ``too_many_handshakes`` and the rest of the pool stays free for others.
"""

from __future__ import annotations

from gateway import close_codes
from gateway.close_codes import Refusal


class HandshakePool:
    __slots__ = ("_by_address", "_by_user", "_per_address", "_per_user", "_size", "count")

    def __init__(self, size: int, per_user: int, per_address: int) -> None:
        self._size = size
        self._per_user = per_user
        self._per_address = per_address
        # Only keys holding a place: a user or address leaves the dict with its last handshake.
        self._by_user: dict[str, int] = {}
        self._by_address: dict[str, int] = {}
        self.count = 0

    def enter(self, user_id: str, address: str) -> Refusal | None:
        """Take a place for a handshake; the refusal when the pool or a share is full."""
        if self.count >= self._size:
            return close_codes.OVERLOADED
        held_by_user = self._by_user.get(user_id, 0)
        held_by_address = self._by_address.get(address, 0)
        if held_by_user >= self._per_user or held_by_address >= self._per_address:
            return close_codes.TOO_MANY_HANDSHAKES
        self._by_user[user_id] = held_by_user + 1
        self._by_address[address] = held_by_address + 1
        self.count += 1
        return None

    def leave(self, user_id: str, address: str) -> None:
        """Give back the place ``enter`` took."""
        self.count -= 1
        _decrement(self._by_user, user_id)
        _decrement(self._by_address, address)


def _decrement(held: dict[str, int], key: str) -> None:
    left = held[key] - 1
    if left:
        held[key] = left
    else:
        del held[key]
