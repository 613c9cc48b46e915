"""The handshake pool: each user and each client address gets a bounded share of it."""

from __future__ import annotations

from gateway import close_codes
from gateway.admission.handshakes import HandshakePool


def test_a_user_past_its_share_is_refused_and_others_get_the_rest() -> None:
    pool = HandshakePool(size=10, per_user=2, per_address=8)
    assert pool.enter("alice", "a") is None
    assert pool.enter("alice", "b") is None
    assert pool.enter("alice", "c") is close_codes.TOO_MANY_HANDSHAKES
    assert all(pool.enter(f"user-{i}", f"address-{i}") is None for i in range(8))
    assert pool.count == 10
    assert pool.enter("bob", "d") is close_codes.OVERLOADED


def test_an_address_past_its_share_is_refused() -> None:
    pool = HandshakePool(size=10, per_user=2, per_address=3)
    assert all(pool.enter(f"user-{i}", "crowd") is None for i in range(3))
    assert pool.enter("user-3", "crowd") is close_codes.TOO_MANY_HANDSHAKES
    assert pool.enter("user-3", "elsewhere") is None


def test_leaving_gives_the_place_back_and_forgets_idle_keys() -> None:
    pool = HandshakePool(size=2, per_user=1, per_address=1)
    assert pool.enter("alice", "a") is None
    assert pool.enter("alice", "a") is close_codes.TOO_MANY_HANDSHAKES
    pool.leave("alice", "a")
    assert pool.count == 0
    assert pool._by_user == {} and pool._by_address == {}
    assert pool.enter("alice", "a") is None
