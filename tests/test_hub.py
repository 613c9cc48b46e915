"""The hub hands each payload to every local connection of its user, synchronously."""

from __future__ import annotations

from prometheus_client import REGISTRY

from gateway.hub import Hub
from harness.outbox import Outbox


def test_delivery_reaches_every_connection_of_the_user_and_no_one_else() -> None:
    hub = Hub()
    alice_1, alice_2, bob = Outbox(), Outbox(), Outbox()
    hub.add("alice", alice_1)
    hub.add("alice", alice_2)
    hub.add("bob", bob)
    hub.deliver("alice", '{"n":"é"}'.encode())
    assert alice_1.frames == alice_2.frames == ['{"n":"é"}'.encode()]
    assert bob.frames == []
    assert (hub.connection_count, hub.user_count) == (3, 2)


def test_add_says_first_and_remove_says_last() -> None:
    """The hub is the registry admission asks: subscribe on the first connection of a user,
    unsubscribe after the last; ``user_ids`` is what the broker re-subscribes after a reconnect."""
    hub = Hub()
    alice_1, alice_2, bob = Outbox(), Outbox(), Outbox()
    assert hub.add("alice", alice_1) is True
    assert hub.add("alice", alice_2) is False
    assert hub.add("bob", bob) is True
    assert sorted(hub.user_ids()) == ["alice", "bob"]
    assert hub.remove("alice", alice_1) is False
    assert hub.remove("alice", alice_2) is True
    assert hub.user_ids() == ["bob"]
    assert hub.add("alice", alice_1) is True


def test_removing_the_last_connection_forgets_the_user() -> None:
    hub = Hub()
    outbox = Outbox()
    hub.add("alice", outbox)
    hub.remove("alice", outbox)
    hub.deliver("alice", b"late")
    assert outbox.frames == []
    assert (hub.connection_count, hub.user_count) == (0, 0)


def test_a_payload_that_is_not_utf8_is_dropped_not_sent() -> None:
    """A text frame must be valid UTF-8: the payload is dropped and the next one still goes."""
    hub = Hub()
    outbox = Outbox()
    hub.add("alice", outbox)
    hub.deliver("alice", b"\xff\xfe")
    hub.deliver("alice", b"ok")
    assert outbox.frames == [b"ok"]


class BrokenOutbox(Outbox):
    def push(self, payload: bytes, received_at: float) -> None:
        raise RuntimeError("unable to perform operation on a closed transport")


def test_a_connection_that_fails_to_take_a_message_costs_no_one_else_theirs() -> None:
    """Delivery runs in the worker's pub/sub reader: a failing socket is ended (1011) and the
    user's other sockets still get the message, and the next one."""
    hub = Hub()
    broken, healthy = BrokenOutbox(), Outbox()
    hub.add("alice", broken)
    hub.add("alice", healthy)
    hub.deliver("alice", b"one")
    hub.deliver("alice", b"two")
    assert healthy.frames == [b"one", b"two"]
    assert broken.codes == [1011, 1011]


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("websocket_messages_dropped_total", {"reason": reason}) or 0.0


def test_a_payload_over_the_limit_is_dropped_and_counted() -> None:
    """Memory per connection stays bounded by queue length x limit: a larger payload is dropped,
    counted once per connection it would have reached, and the next one still goes."""
    hub = Hub(max_payload_size=8)
    alice_1, alice_2, bob = Outbox(), Outbox(), Outbox()
    hub.add("alice", alice_1)
    hub.add("alice", alice_2)
    hub.add("bob", bob)
    before = _dropped("too_large")
    hub.deliver("alice", b"123456789")
    hub.deliver("alice", b"12345678")
    hub.deliver("bob", b"ok")
    assert alice_1.frames == alice_2.frames == [b"12345678"]
    assert bob.frames == [b"ok"]
    assert _dropped("too_large") == before + 2
