"""The gap fill's holds: generations per confirmation, releases that deliver only what their read
can cover, and a cap."""

from __future__ import annotations

from prometheus_client import REGISTRY

from gateway.history.held import Holds


def test_a_release_delivers_what_was_held_and_ends_the_hold() -> None:
    holds = Holds(cap=10)
    generation = holds.hold("alice")
    assert holds.add("alice", b"1") is None
    assert holds.add("alice", b"2") is None
    assert holds.take("alice", generation) == [b"1", b"2"]
    assert "alice" not in holds
    assert holds.take("alice", generation) is None


def test_a_read_in_flight_across_a_second_outage_releases_only_what_came_before_it() -> None:
    """Confirmed, 'a' held, lost and confirmed again, 'b' held: the first read releases 'a' only;
    the second read (its generation) releases 'b' and ends the hold."""
    holds = Holds(cap=10)
    first = holds.hold("alice")
    holds.add("alice", b"a")
    second = holds.hold("alice")
    holds.add("alice", b"b")
    assert holds.holding("alice", first) and holds.holding("alice", second)
    assert holds.take("alice", first) == [b"a"]
    assert "alice" in holds
    assert not holds.holding("alice", first)  # its release was taken: a repeat delivers nothing
    assert holds.take("alice", first) is None
    assert holds.take("alice", second) == [b"b"]
    assert "alice" not in holds


def test_three_outages_during_one_read() -> None:
    """The first read releases what came before the second outage; one read after the third
    covers the second and the third."""
    holds = Holds(cap=10)
    first = holds.hold("alice")
    holds.add("alice", b"a")
    holds.hold("alice")
    holds.add("alice", b"b")
    third = holds.hold("alice")
    holds.add("alice", b"c")
    assert holds.take("alice", first) == [b"a"]
    assert holds.take("alice", third) == [b"b", b"c"]
    assert "alice" not in holds


def test_a_release_of_an_earlier_hold_delivers_nothing() -> None:
    """The user left and came back, or the fill was given up: an old read's release is stale."""
    holds = Holds(cap=10)
    old = holds.hold("alice")
    holds.forget("alice")
    new = holds.hold("alice")
    holds.add("alice", b"x")
    assert holds.take("alice", old) is None
    assert holds.take("alice", new) == [b"x"]


def test_past_the_cap_the_hold_is_given_up_and_returns_everything_in_order() -> None:
    before = REGISTRY.get_sample_value("websocket_gap_fills_total", {"result": "overflow"}) or 0.0
    holds = Holds(cap=2)
    generation = holds.hold("alice")
    assert holds.add("alice", b"1") is None
    assert holds.add("alice", b"2") is None
    assert holds.add("alice", b"3") == [b"1", b"2", b"3"]
    assert "alice" not in holds
    assert not holds.holding("alice", generation)
    after = REGISTRY.get_sample_value("websocket_gap_fills_total", {"result": "overflow"}) or 0.0
    assert after - before == 1
