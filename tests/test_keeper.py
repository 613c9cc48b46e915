"""The keeper's reading of an acquire's ``created``: the worker's key under a tag was gone only if
a reply had shown it before that acquire was sent. Acquires sent together, a burst of handshakes
that waited out a Redis pause, come back in any order; taking the first reply to say "created"
for a loss re-asserted the places, and the releases meanwhile left tombstones that refused the
user (4029) for a lease time (it failed test_admission_races once in seven runs)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.leases.keeper import Keeper, Terms


@dataclass
class _Lease:
    user_id: str
    connection_id: str
    tag: str = "ws:worker"
    extend_at: float = 0.0

    @property
    def member(self) -> str:
        return self.connection_id

    def lost(self) -> None:
        raise AssertionError("not lost")

    def revoked(self) -> None:
        raise AssertionError("not revoked")


def _keeper() -> Keeper:
    unused: Any = None  # took() and gave_back() never reach Redis or the index
    return Keeper(unused, unused, Terms("ws", 3, 30_000, 60_000), {}, lambda: 0)


def test_acquires_sent_together_whose_replies_cross_find_nothing_gone() -> None:
    keeper = _keeper()
    sent = time.monotonic()
    # Redis ran b's acquire first (it created the key), but a's reply came back first.
    keeper.took(_Lease("a", "w:1"), sent, created=False)
    keeper.took(_Lease("b", "w:2"), sent, created=True)
    assert keeper.lost_keys == {}
    assert keeper.held == {"ws:worker": 2}


def test_a_key_created_after_a_reply_showed_it_was_gone() -> None:
    keeper = _keeper()
    keeper.took(_Lease("a", "w:1"), time.monotonic(), created=True)
    # Sent after a's reply: the key existed before this call ran, so "created" means it was lost.
    keeper.took(_Lease("b", "w:2"), time.monotonic(), created=True)
    assert set(keeper.lost_keys) == {"ws:worker"}


def test_a_tag_given_back_in_full_starts_again() -> None:
    keeper = _keeper()
    first = _Lease("a", "w:1")
    keeper.took(first, time.monotonic(), created=True)
    keeper.gave_back(first)
    keeper.took(_Lease("b", "w:2"), time.monotonic(), created=True)
    assert keeper.lost_keys == {}


def test_a_second_creator_in_replies_sent_together_shows_a_loss() -> None:
    """One key has one creator: two acquires that both created it saw it lost in between."""
    keeper = _keeper()
    sent = time.monotonic()
    keeper.took(_Lease("a", "w:1"), sent, created=True)
    keeper.took(_Lease("b", "w:2"), sent, created=True)
    assert set(keeper.lost_keys) == {"ws:worker"}


def test_a_key_that_may_have_lapsed_stays_so() -> None:
    """Found gone where it may have lapsed: a later reply does not make it "lost by Redis", which
    would restore places that lapsed."""
    keeper = _keeper()
    keeper.took(_Lease("a", "w:1"), time.monotonic(), created=True)
    keeper.lost_keys["ws:worker"] = ""
    keeper.took(_Lease("b", "w:2"), time.monotonic(), created=True)
    assert keeper.lost_keys == {"ws:worker": ""}
